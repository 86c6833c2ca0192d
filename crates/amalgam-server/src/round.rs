//! One round's state on the aggregator: the protocol [`Aggregator`], the idempotency table,
//! the downloads served, deadlines and the round's end. Synchronous and I/O-free: every
//! mutation returns the events that must be appended before its response leaves, and every
//! refusal leaves the state unchanged (the protocol's own guarantee, checked by snapshot in
//! the tests). Replaying the events through the same methods rebuilds the state
//! ([`crate::replay`]).

use std::collections::{BTreeMap, BTreeSet};

use amalgam_net::api::{self, RoundResult, RoundStatus, UploadReceipt};
use amalgam_net::summary::LedgerSummary;
use amalgam_net::{Problem, ProblemCode};
use amalgam_proto::codec::{Decode, Encode};
use amalgam_proto::error::{Error as ProtoError, Misbehaviour};
use amalgam_proto::messages::ToAggregator;
use amalgam_proto::{
    AggregateOutput, Aggregator, AggregatorStep, Manifest, Phase, RoundParams, SiteId,
};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::consortium::{ConsortiumView, DeadlineBounds};
use crate::events::{EventKind, KIND_DECLINE, NewEvent};
use crate::limits::max_upload_len;

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundEnd {
    /// The sum was unmasked.
    Finished(AggregateOutput),
    /// A phase could not close by its deadline (public reason).
    Aborted(String),
}

/// What a download request finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadView {
    /// The bytes served to this site at the close of the phase (always the same bytes).
    Ready(Vec<u8>),
    /// The phase closed and this site is not among its recipients.
    NothingForYou,
    /// The phase has not closed yet.
    NotYet,
    /// The round aborted before this phase closed.
    Closed,
    /// The round ended and its secret bodies were crypto-shredded: nothing can be re-sent.
    Shredded,
}

/// An accepted (or repeated) request: the response and the events to persist first.
#[derive(Debug)]
pub struct Accepted {
    /// Response body (JSON receipt).
    pub response: Vec<u8>,
    /// Events to append before responding (empty for an identical repeat).
    pub events: Vec<NewEvent>,
}

/// One round.
pub struct RoundState {
    round: u64,
    model_digest: [u8; 32],
    context_digest: [u8; 32],
    params: RoundParams,
    manifest: Manifest,
    agg: Aggregator,
    /// (phase code, site) → (SHA-256 of the accepted body, response).
    accepted: BTreeMap<(u8, u16), ([u8; 32], Vec<u8>)>,
    /// The latest accepted upload of each site (its rollback check).
    latest: BTreeMap<u16, Vec<u8>>,
    /// (closed phase code, recipient) → bytes served.
    downloads: BTreeMap<(u8, u16), Vec<u8>>,
    closed: BTreeSet<u8>,
    expected: BTreeSet<u16>,
    declined: BTreeMap<u16, [u8; 64]>,
    summaries: BTreeMap<u16, Vec<u8>>,
    window: Window,
    bounds: DeadlineBounds,
    generation: u64,
    end: Option<RoundEnd>,
    /// The round's secret bodies (uploads, downloads, declines) were crypto-shredded.
    shredded: bool,
}

impl core::fmt::Debug for RoundState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RoundState")
            .field("round", &self.round)
            .field("phase", &self.agg.phase())
            .finish_non_exhaustive()
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The receipt for an accepted body, from its SHA-256 (computed once by the caller, which
/// also keeps it for the idempotency check).
fn receipt(round: u64, phase: &str, body_sha256: &[u8; 32]) -> Vec<u8> {
    serde_json::to_vec(&UploadReceipt {
        round,
        phase: phase.to_owned(),
        sha256: hex::encode(body_sha256),
    })
    .unwrap_or_default()
}

fn site_code(id: SiteId) -> Option<u32> {
    Some(u32::from(id.0))
}

/// The problem for a protocol refusal. Only the error's public description is shown: proto
/// errors name phases, fields, bounds and site ids, never values, seeds, shares or keys.
fn proto_problem(e: &ProtoError) -> Problem {
    let code = match e {
        ProtoError::Decode { .. } => ProblemCode::BodyMalformed,
        ProtoError::PeerMisbehaved {
            kind: Misbehaviour::WrongPhase { .. },
            ..
        } => ProblemCode::RoundWrongPhase,
        ProtoError::PeerMisbehaved {
            kind: Misbehaviour::Duplicate,
            ..
        } => ProblemCode::PeerDuplicate,
        _ => ProblemCode::ProtocolRefused,
    };
    Problem::new(code, format!("{} ({})", e, e.code()))
}

/// A phase's time window, Unix ms: the instant it opened and its deadline. Persisted with the
/// decision that opens the phase (16 bytes: opened ‖ deadline, big-endian), so a restart
/// knows how long the phase may still last under the manifest's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the phase opened.
    pub opened_ms: u64,
    /// Its deadline.
    pub deadline_ms: u64,
}

impl Window {
    /// The 16 persisted bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.opened_ms.to_be_bytes());
        b[8..].copy_from_slice(&self.deadline_ms.to_be_bytes());
        b
    }

    /// Parses exactly 16 bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b = <[u8; 16]>::try_from(b).ok()?;
        let (o, d) = b.split_at(8);
        Some(Self {
            opened_ms: u64::from_be_bytes(o.try_into().ok()?),
            deadline_ms: u64::from_be_bytes(d.try_into().ok()?),
        })
    }

    /// The latest deadline the manifest allows for this phase: opened + max.
    fn latest_ms(&self, b: DeadlineBounds) -> u64 {
        self.opened_ms
            .saturating_add(b.max_s.max(b.min_s).saturating_mul(1000))
    }

    /// Refuses a window whose length is outside the manifest's bounds.
    pub fn check(&self, b: DeadlineBounds) -> Result<(), String> {
        let earliest = self.opened_ms.saturating_add(b.min_s.saturating_mul(1000));
        if self.deadline_ms < earliest || self.deadline_ms > self.latest_ms(b) {
            return Err(format!(
                "phase deadline outside the manifest's bounds ({}..={} s after its opening)",
                b.min_s, b.max_s
            ));
        }
        Ok(())
    }
}

/// Why a phase did not close.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// The protocol refused the close (too few sites, unrecoverable secret...).
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The next phase's window is outside the manifest's bounds.
    #[error("{0}")]
    Window(String),
}

impl RoundState {
    /// Opens `round` bound to `model_digest`, first phase window `window` (within the
    /// manifest's deadline bounds, else refused).
    pub fn open(
        consortium: &dyn ConsortiumView,
        round: u64,
        model_digest: [u8; 32],
        window: Window,
    ) -> Result<(Self, NewEvent), String> {
        let bounds = consortium.deadline_bounds();
        window.check(bounds)?;
        let params = consortium.round_params(round)?;
        let manifest = consortium.proto_manifest();
        let context_digest = consortium.context_digest(&model_digest);
        let agg = Aggregator::with_context_digest(params, manifest.clone(), context_digest, round)
            .map_err(|e| e.to_string())?;
        let expected = (0..params.n() as u16)
            .filter(|&i| params.contains(SiteId(i)))
            .collect();
        let mut body = model_digest.to_vec();
        body.extend_from_slice(&window.encode());
        let event = NewEvent {
            round,
            kind: EventKind::RoundOpen,
            phase: Phase::AdvertiseKeys.code(),
            sender: None,
            body,
            response: None,
        };
        Ok((
            Self {
                round,
                model_digest,
                context_digest,
                params,
                manifest,
                agg,
                accepted: BTreeMap::new(),
                latest: BTreeMap::new(),
                downloads: BTreeMap::new(),
                closed: BTreeSet::new(),
                expected,
                declined: BTreeMap::new(),
                summaries: BTreeMap::new(),
                window,
                bounds,
                generation: 0,
                end: None,
                shredded: false,
            },
            event,
        ))
    }

    /// Round id.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The round parameters.
    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    /// The phase being collected (Finished / Aborted once ended).
    pub fn phase(&self) -> Phase {
        match &self.end {
            Some(RoundEnd::Aborted(_)) => Phase::Aborted,
            Some(RoundEnd::Finished(_)) => Phase::Finished,
            None => self.agg.phase(),
        }
    }

    /// The model digest the round is bound to.
    pub fn model_digest(&self) -> [u8; 32] {
        self.model_digest
    }

    /// Whether the round's secret bodies were crypto-shredded.
    pub fn is_shredded(&self) -> bool {
        self.shredded
    }

    /// After the round's key was shredded in the log: the secret bodies held in memory go
    /// too (downloads, latest uploads); digests, receipts, declines' existence and the result
    /// stay. Only an ended round can be shredded.
    pub fn mark_shredded(&mut self) {
        if self.end.is_some() {
            self.shredded = true;
            self.downloads.clear();
            self.latest.clear();
            // The protocol state holds the masked inputs, encrypted key shares and unmask
            // shares: none stay after the shred. The idempotency record stays: it holds only
            // each accepted body's SHA-256 and its receipt (built from that digest), so an
            // identical re-send after the end still gets 200 with the original response.
            if let Ok(empty) = Aggregator::with_context_digest(
                self.params,
                self.manifest.clone(),
                self.context_digest,
                self.round,
            ) {
                self.agg = empty;
            }
        }
    }

    /// How many message bodies of the round this state still holds in memory (latest
    /// uploads, served downloads): none once shredded. The idempotency record (digests and
    /// receipts, no bodies) is not counted.
    pub fn held_bodies(&self) -> usize {
        self.latest.len() + self.downloads.len()
    }

    /// Rebuilds the idempotency record of one upload of a shredded round from its logged
    /// digest: the receipt is a function of the digest, so the original response is exact.
    pub fn restore_accepted(&mut self, phase: Phase, site: SiteId, body_sha256: [u8; 32]) {
        if let Some(seg) = api::phase_segment(phase) {
            let response = receipt(self.round, seg, &body_sha256);
            self.accepted
                .insert((phase.code(), site.0), (body_sha256, response));
        }
    }

    /// Rebuilds an ended round whose secret bodies were shredded from its public record
    /// (its `RoundEnd` body): nothing of it can be re-verified, the result is the log's.
    pub fn restore_shredded(&mut self, end_body: &[u8]) -> Result<(), String> {
        self.end = Some(decode_end(end_body)?);
        self.expected.clear();
        self.generation += 1;
        self.shredded = true;
        Ok(())
    }

    /// Deadline of the open phase, Unix ms (meaningless once ended).
    pub fn deadline_ms(&self) -> u64 {
        self.window.deadline_ms
    }

    /// The open phase's window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Restart grace: moves the open phase's deadline to at least `deadline_ms`, but never
    /// past the manifest's maximum phase length counted from the phase's persisted opening.
    /// Not persisted; every restart recomputes it from the logged window, so repeated
    /// restarts cannot stretch the phase beyond that bound.
    pub fn extend_deadline(&mut self, deadline_ms: u64) {
        let cap = self
            .window
            .latest_ms(self.bounds)
            .max(self.window.deadline_ms);
        self.window.deadline_ms = self.window.deadline_ms.max(deadline_ms).min(cap);
    }

    /// Number of phase closes so far (a timer acts only on the generation it was set for).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How the round ended.
    pub fn end(&self) -> Option<&RoundEnd> {
        self.end.as_ref()
    }

    /// The protocol state's snapshot bytes (for the unchanged-on-refusal checks).
    pub fn protocol_snapshot(&self) -> Vec<u8> {
        use amalgam_proto::Snapshot;
        self.agg.snapshot()
    }

    /// Whether every expected participant of the open phase has answered.
    pub fn all_answered(&self) -> bool {
        if self.end.is_some() {
            return false;
        }
        let responded: BTreeSet<u16> = self.agg.responded().iter().map(|s| s.0).collect();
        !self.expected.is_empty() && self.expected.is_subset(&responded)
    }

    /// Largest body accepted on the upload route of `phase`.
    pub fn max_upload(&self, phase: Phase) -> usize {
        max_upload_len(&self.params, phase)
    }

    /// An upload from authenticated site `site` on the route of `phase`. An identical re-send
    /// gets the original response; a different one 409 `peer.duplicate`; every refusal leaves
    /// the state unchanged.
    pub fn upload(
        &mut self,
        site: SiteId,
        phase: Phase,
        bytes: &[u8],
    ) -> Result<Accepted, Problem> {
        let seg = api::phase_segment(phase)
            .ok_or_else(|| Problem::new(ProblemCode::BadRequest, "no uploads in this phase"))?;
        if let Some((digest, response)) = self.accepted.get(&(phase.code(), site.0)) {
            return if *digest == sha(bytes) {
                Ok(Accepted {
                    response: response.clone(),
                    events: Vec::new(),
                })
            } else {
                Err(Problem::new(
                    ProblemCode::PeerDuplicate,
                    format!("a different {seg} upload from this site was already accepted"),
                ))
            };
        }
        if let Some(end) = &self.end {
            return Err(closed_problem(end));
        }
        if bytes.len() > self.max_upload(phase) {
            return Err(Problem::new(
                ProblemCode::BodyTooLarge,
                format!(
                    "{seg} bodies are at most {} bytes in this round",
                    self.max_upload(phase)
                ),
            ));
        }
        let current = self.agg.phase();
        if phase != current {
            return Err(Problem::new(
                ProblemCode::RoundWrongPhase,
                format!("round {} is collecting {current}, not {phase}", self.round),
            ));
        }
        if self.declined.contains_key(&site.0) {
            return Err(Problem::new(
                ProblemCode::RoundWrongPhase,
                "this site declined the round",
            ));
        }
        let msg = ToAggregator::from_bytes(bytes, &self.params).map_err(|e| {
            Problem::new(
                ProblemCode::BodyMalformed,
                format!("{} does not decode: {e}", phase),
            )
        })?;
        if msg.sender() != site {
            return Err(Problem::new(
                ProblemCode::ProtocolRefused,
                "the message's sender field is not the authenticated site",
            ));
        }
        self.agg.receive(msg).map_err(|e| proto_problem(&e))?;
        let digest = sha(bytes);
        let response = receipt(self.round, seg, &digest);
        self.accepted
            .insert((phase.code(), site.0), (digest, response.clone()));
        self.latest.insert(site.0, bytes.to_vec());
        Ok(Accepted {
            events: vec![NewEvent {
                round: self.round,
                kind: EventKind::Upload,
                phase: phase.code(),
                sender: site_code(site),
                body: bytes.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    /// A signed decline before AdvertiseKeys closes: the site is not expected and not counted
    /// as a dropout. `signature` is over [`api::decline_message`].
    pub fn decline(&mut self, site: SiteId, signature: &[u8]) -> Result<Accepted, Problem> {
        if let Some(prev) = self.declined.get(&site.0) {
            return if prev.as_slice() == signature {
                Ok(Accepted {
                    response: receipt(self.round, "decline", &sha(signature)),
                    events: Vec::new(),
                })
            } else {
                Err(Problem::new(
                    ProblemCode::PeerDuplicate,
                    "a different decline was accepted",
                ))
            };
        }
        if let Some(end) = &self.end {
            return Err(closed_problem(end));
        }
        if self.agg.phase() != Phase::AdvertiseKeys {
            return Err(Problem::new(
                ProblemCode::RoundWrongPhase,
                "declines are accepted only while AdvertiseKeys is open",
            ));
        }
        if self.agg.responded().contains(&site) {
            return Err(Problem::new(
                ProblemCode::PeerDuplicate,
                "this site already advertised keys in this round",
            ));
        }
        let sig: [u8; 64] = signature.try_into().map_err(|_| {
            Problem::new(
                ProblemCode::BodyMalformed,
                "a decline is a 64-byte signature",
            )
        })?;
        let key: &VerifyingKey = self.manifest.key(site).ok_or_else(|| {
            Problem::new(ProblemCode::AuthUnknownPeer, "site not in the manifest")
        })?;
        key.verify_strict(
            &api::decline_message(&self.context_digest, self.round),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| {
            Problem::new(
                ProblemCode::ProtocolRefused,
                "decline signature does not verify",
            )
        })?;
        self.declined.insert(site.0, sig);
        self.expected.remove(&site.0);
        let response = receipt(self.round, "decline", &sha(signature));
        Ok(Accepted {
            events: vec![NewEvent {
                round: self.round,
                kind: EventKind::Other(KIND_DECLINE),
                phase: Phase::AdvertiseKeys.code(),
                sender: site_code(site),
                body: signature.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    /// A site's signed ledger summary (amalgam-net's [`LedgerSummary`]), verified before it is
    /// stored: signed by that site's manifest key, naming this consortium (`consortium`), this
    /// round and that site, with an entry count not below `min_entries` (the site's previous
    /// accepted summary). One per site and round; a refusal changes nothing.
    pub fn summary(
        &mut self,
        site: SiteId,
        bytes: &[u8],
        consortium: &[u8; 32],
        min_entries: u64,
    ) -> Result<Accepted, Problem> {
        // The summary's exact length, as in the fallback scheme: a body longer than
        // the current format is refused before anything is hashed or stored.
        if bytes.is_empty() || bytes.len() > LedgerSummary::LEN {
            return Err(Problem::new(
                ProblemCode::BodyTooLarge,
                format!("a summary is 1..={} bytes", LedgerSummary::LEN),
            ));
        }
        let response = receipt(self.round, "summary", &sha(bytes));
        if let Some(prev) = self.summaries.get(&site.0) {
            return if prev.as_slice() == bytes {
                Ok(Accepted {
                    response,
                    events: Vec::new(),
                })
            } else {
                Err(Problem::new(
                    ProblemCode::PeerDuplicate,
                    "a different summary was accepted",
                ))
            };
        }
        let key = self.manifest.key(site).ok_or_else(|| {
            Problem::new(ProblemCode::AuthUnknownPeer, "site not in the manifest")
        })?;
        crate::summary::check_posted_summary(
            bytes,
            key,
            consortium,
            self.round,
            site.0,
            min_entries,
        )?;
        self.summaries.insert(site.0, bytes.to_vec());
        Ok(Accepted {
            events: vec![NewEvent {
                round: self.round,
                kind: EventKind::Summary,
                phase: self.phase().code(),
                sender: site_code(site),
                body: bytes.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    /// Closes the open phase with whoever answered. On success returns the close decision,
    /// the downloads and (last phase) the round's end. On failure: if `at_deadline`, the round
    /// aborts (one `RoundEnd` event); otherwise nothing changes and the error is returned.
    ///
    /// `next` is the next phase's window; outside the manifest's bounds it is refused
    /// before anything changes.
    pub fn close(&mut self, next: Window, at_deadline: bool) -> Result<Vec<NewEvent>, CloseError> {
        if self.end.is_some() {
            return Ok(Vec::new());
        }
        next.check(self.bounds).map_err(CloseError::Window)?;
        let phase = self.agg.phase();
        match self.agg.close_phase() {
            Ok(step) => {
                let mut events = vec![NewEvent {
                    round: self.round,
                    kind: EventKind::PhaseClose,
                    phase: phase.code(),
                    sender: None,
                    body: next.encode().to_vec(),
                    response: None,
                }];
                self.closed.insert(phase.code());
                self.generation += 1;
                self.window = next;
                match step {
                    AggregatorStep::Send(list) => {
                        self.expected = list.iter().map(|(to, _)| to.0).collect();
                        for (to, msg) in list {
                            let bytes = msg.to_bytes();
                            self.downloads.insert((phase.code(), to.0), bytes.clone());
                            events.push(NewEvent {
                                round: self.round,
                                kind: EventKind::Download,
                                phase: phase.code(),
                                sender: site_code(to),
                                body: bytes,
                                response: None,
                            });
                        }
                    }
                    AggregatorStep::Finished(out) => {
                        self.expected.clear();
                        self.end = Some(RoundEnd::Finished(out));
                        // The published result is the public record: it survives shredding.
                        let mut body = vec![0];
                        if let Some(r) = self.result() {
                            body.extend(serde_json::to_vec(&r).unwrap_or_default());
                        }
                        events.push(NewEvent {
                            round: self.round,
                            kind: EventKind::RoundEnd,
                            phase: Phase::Finished.code(),
                            sender: None,
                            body,
                            response: None,
                        });
                    }
                }
                Ok(events)
            }
            Err(e) if at_deadline => {
                let reason = format!(
                    "{phase} could not close at its deadline: {e} ({})",
                    e.code()
                );
                let mut body = vec![1];
                body.extend_from_slice(reason.as_bytes());
                self.end = Some(RoundEnd::Aborted(reason));
                self.generation += 1;
                self.expected.clear();
                Ok(vec![NewEvent {
                    round: self.round,
                    kind: EventKind::RoundEnd,
                    phase: Phase::Aborted.code(),
                    sender: None,
                    body,
                    response: None,
                }])
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The download of `phase` for `site`.
    pub fn download(&self, site: SiteId, phase: Phase) -> DownloadView {
        if self.shredded {
            // An aborted round answers as aborted (the site counts it so); a finished one
            // says its messages are gone (the site fetches the result instead).
            return match self.end {
                Some(RoundEnd::Aborted(_)) => DownloadView::Closed,
                _ => DownloadView::Shredded,
            };
        }
        if let Some(b) = self.downloads.get(&(phase.code(), site.0)) {
            return DownloadView::Ready(b.clone());
        }
        if self.closed.contains(&phase.code()) {
            return DownloadView::NothingForYou;
        }
        match self.end {
            Some(_) => DownloadView::Closed,
            None => DownloadView::NotYet,
        }
    }

    /// The latest upload `site` sent in this round.
    pub fn latest_of(&self, site: SiteId) -> Option<&[u8]> {
        self.latest.get(&site.0).map(Vec::as_slice)
    }

    /// The ledger entry count of `site`'s stored summary of this round (verified when stored).
    pub fn summary_entries(&self, site: SiteId) -> Option<u64> {
        let b = self.summaries.get(&site.0)?;
        let key = self.manifest.key(site)?;
        LedgerSummary::verify(b, key).ok().map(|s| s.entries)
    }

    /// Stored summary of `site`.
    pub fn summary_of(&self, site: SiteId) -> Option<&[u8]> {
        self.summaries.get(&site.0).map(Vec::as_slice)
    }

    /// The published result, once finished.
    pub fn result(&self) -> Option<RoundResult> {
        match &self.end {
            Some(RoundEnd::Finished(out)) => Some(RoundResult {
                round: self.round,
                sum: out.sum.clone(),
                contributors: out.contributors.iter().map(|s| s.0).collect(),
                dropped: out.dropped.iter().map(|s| s.0).collect(),
                blamed: out.blamed.iter().map(|s| s.0).collect(),
            }),
            _ => None,
        }
    }

    /// Public status.
    pub fn status(&self) -> RoundStatus {
        let phase = self.phase();
        let open = self.end.is_none();
        RoundStatus {
            round: self.round,
            scheme: "masking".into(),
            phase: api::phase_segment(phase)
                .map(str::to_owned)
                .unwrap_or_else(|| phase.to_string().to_lowercase()),
            deadline_ms: open.then_some(self.window.deadline_ms),
            responded: if open {
                self.agg.responded().len() as u32
            } else {
                0
            },
            expected: self.expected.len() as u32,
            model_digest: hex::encode(self.model_digest),
            aborted: match &self.end {
                Some(RoundEnd::Aborted(r)) => Some(r.clone()),
                _ => None,
            },
        }
    }
}

fn closed_problem(end: &RoundEnd) -> Problem {
    match end {
        RoundEnd::Finished(_) => Problem::new(ProblemCode::RoundClosed, "the round is finished"),
        RoundEnd::Aborted(r) => {
            Problem::new(ProblemCode::RoundClosed, format!("the round aborted: {r}"))
        }
    }
}

/// Parses a `RoundEnd` body: `0 ‖ JSON RoundResult` (finished) or `1 ‖ reason` (aborted).
fn decode_end(body: &[u8]) -> Result<RoundEnd, String> {
    use amalgam_proto::{AggregateOutput, SiteId};
    match body.split_first() {
        Some((0, json)) => {
            let r: RoundResult =
                serde_json::from_slice(json).map_err(|e| format!("RoundEnd result: {e}"))?;
            let ids = |v: &[u16]| v.iter().map(|&s| SiteId(s)).collect::<Vec<_>>();
            Ok(RoundEnd::Finished(AggregateOutput {
                sum: r.sum,
                contributors: ids(&r.contributors),
                dropped: ids(&r.dropped),
                blamed: ids(&r.blamed),
            }))
        }
        Some((1, reason)) => Ok(RoundEnd::Aborted(
            String::from_utf8(reason.to_vec()).map_err(|_| "RoundEnd reason is not UTF-8")?,
        )),
        _ => Err("malformed RoundEnd body".into()),
    }
}
