//! One fallback round's synchronous state: the `HeAggregator`, the idempotency records of
//! every upload, signature and release, the cohort statement and the end. Every method either
//! changes the state and returns the events to persist, or refuses and changes nothing.

use std::collections::BTreeMap;

use amalgam_he::{
    Closing, CohortStatement, HeAggregator, HeError, PieceSumRelease, RoundSetup, SignedUpload,
    StatementSignature,
};
use amalgam_net::api::UploadReceipt;
use amalgam_net::fallback_api::{FallbackResult, encode_frames};
use amalgam_net::summary::LedgerSummary;
use amalgam_net::{Problem, ProblemCode};
use amalgam_proto::SiteId;
use amalgam_proto::codec::{Decode, Encode};
use sha2::{Digest, Sha256};

use super::setup::{FallbackSetups, setup_for};
use crate::consortium::DeadlineBounds;
use crate::events::{EventKind, NewEvent};
use crate::round::Window;

/// Event phase of a site upload (the log's unique upload key is (round, phase, sender)).
pub const PH_UPLOAD: u8 = 0x40;
/// Event phase of the cohort close (body: release window ‖ statement bytes).
pub const PH_CLOSE: u8 = 0x41;
/// Event phase of a decryptor's statement signature (a public `Summary` event).
pub const PH_SIGNATURE: u8 = 0x42;
/// Event phase of a decryptor's release (a secret `Other` event, shredded at round end).
pub const PH_RELEASE: u8 = 0x43;
/// Event phase of a site's signed ledger summary after the round (a public `Summary` event,
/// accepted also after the round ended: the site uploads it in its epilogue).
pub const PH_SITE_SUMMARY: u8 = 0x44;
/// `Other` kind of a release.
pub const KIND_RELEASE: u16 = 0x40;
/// Decryptor `j` is recorded as sender `DECRYPTOR_SENDER + j` (sites are below 2^16).
pub const DECRYPTOR_SENDER: u32 = 0x1_0000;

/// An accepted request: the response bytes and the events to append before they leave
/// (none for an identical re-send). `Debug` goes through [`NewEvent`]'s, which redacts bodies.
#[derive(Debug)]
pub struct Accepted {
    /// The response body.
    pub response: Vec<u8>,
    /// Events to persist first.
    pub events: Vec<NewEvent>,
}

/// How a fallback round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackEnd {
    /// The quorum released and the sum decoded.
    Finished(FallbackResult),
    /// Aborted (public reason).
    Aborted(String),
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn receipt(round: u64, what: &str, body: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&UploadReceipt {
        round,
        phase: what.to_owned(),
        sha256: hex::encode(sha(body)),
    })
    .unwrap_or_default()
}

fn he_problem(e: &HeError) -> Problem {
    let code = match e {
        HeError::Decode(_) | HeError::LengthMismatch { .. } => ProblemCode::BodyMalformed,
        HeError::DuplicateSite { .. } => ProblemCode::PeerDuplicate,
        _ => ProblemCode::ProtocolRefused,
    };
    Problem::new(code, format!("{e} (code {})", e.code()))
}

fn malformed(what: &str, e: impl core::fmt::Display) -> Problem {
    Problem::new(
        ProblemCode::BodyMalformed,
        format!("{what} does not decode: {e}"),
    )
}

/// A previously accepted body from one sender: its digest and the response it got.
#[derive(Debug, Clone)]
struct Seen {
    sha: [u8; 32],
    response: Vec<u8>,
}

/// Idempotency: the identical body again gets the stored response; another one is 409.
fn repeat(seen: Option<&Seen>, body: &[u8]) -> Option<Result<Accepted, Problem>> {
    let s = seen?;
    Some(if s.sha == sha(body) {
        Ok(Accepted {
            response: s.response.clone(),
            events: Vec::new(),
        })
    } else {
        Err(Problem::new(
            ProblemCode::PeerDuplicate,
            "a different body from this sender was already accepted in this round",
        ))
    })
}

/// One fallback round.
pub struct FallbackRound {
    round: u64,
    setup: RoundSetup,
    agg: HeAggregator,
    bounds: DeadlineBounds,
    window: Window,
    uploads: BTreeMap<u16, Seen>,
    statement: Option<(CohortStatement, Vec<u8>)>,
    signatures: BTreeMap<u8, (StatementSignature, Seen)>,
    releases: BTreeMap<u8, Seen>,
    /// Each site's signed ledger summary after the round (its anchor).
    summaries: BTreeMap<u16, Vec<u8>>,
    end: Option<FallbackEnd>,
    generation: u64,
}

impl core::fmt::Debug for FallbackRound {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "FallbackRound({}, {} uploads)",
            self.round,
            self.uploads.len()
        )
    }
}

impl FallbackRound {
    /// Opens fallback round `round` (refused unless the policy allows it and the id is a
    /// fallback id) with its collection window; returns the `RoundOpen` event.
    pub fn open(
        setups: &dyn FallbackSetups,
        keys: &super::keys::CommitteeKeys,
        bounds: DeadlineBounds,
        round: u64,
        window: Window,
    ) -> Result<(Self, NewEvent), String> {
        let setup = setup_for(setups, keys, round)?;
        window.check(bounds)?;
        let target = setups.target(round);
        let closing = match target {
            Some(t) => Closing::OnTargetOrDeadline(t),
            None => Closing::OnDeadline,
        };
        let mut body = window.encode().to_vec();
        body.extend_from_slice(&(target.unwrap_or(0) as u32).to_be_bytes());
        let event = NewEvent {
            round,
            kind: EventKind::RoundOpen,
            phase: 0,
            sender: None,
            body,
            response: None,
        };
        Ok((
            Self {
                round,
                agg: HeAggregator::new(setup.clone(), closing),
                setup,
                bounds,
                window,
                uploads: BTreeMap::new(),
                statement: None,
                signatures: BTreeMap::new(),
                releases: BTreeMap::new(),
                summaries: BTreeMap::new(),
                end: None,
                generation: 0,
            },
            event,
        ))
    }

    /// The round id.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The round's setup.
    pub fn setup(&self) -> &RoundSetup {
        &self.setup
    }

    /// The committee index of the decryptor with raw identity key `key`.
    pub fn member_index(&self, key: &[u8; 32]) -> Option<usize> {
        let c = self.setup.committee();
        (0..c.size()).find(|&j| c.member(j).is_ok_and(|m| m.identity.as_bytes() == key))
    }

    /// The open window (collection, then release).
    pub fn window(&self) -> Window {
        self.window
    }

    /// Changes at every close (timers re-arm on it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How the round ended, if it did.
    pub fn end(&self) -> Option<&FallbackEnd> {
        self.end.as_ref()
    }

    /// Whether the cohort closed.
    pub fn is_closed(&self) -> bool {
        self.statement.is_some()
    }

    /// Whether an asynchronous round reached its target (the service then closes it).
    pub fn target_reached(&self) -> bool {
        self.statement.is_none() && self.end.is_none() && self.agg.target_reached()
    }

    /// After a restart: the open window's deadline becomes at least `deadline_ms`, never
    /// later than its opening plus the manifest's longest phase.
    pub fn extend_deadline(&mut self, deadline_ms: u64) {
        let latest = self.window.opened_ms.saturating_add(
            self.bounds
                .max_s
                .max(self.bounds.min_s)
                .saturating_mul(1000),
        );
        self.window.deadline_ms = self.window.deadline_ms.max(deadline_ms.min(latest));
    }

    /// The exact length of a site's upload in this round (the body bound).
    pub fn upload_len(&self) -> usize {
        let c = self.setup.committee();
        let boxes: usize = (0..c.size())
            .map(|j| 4 + amalgam_he::seed_box::box_len(c.held_by(j).len()))
            .sum();
        4 + 2
            + 32
            + 8
            + 32
            + 4
            + 32 * c.pieces()
            + 4
            + boxes
            + 8 * self.setup.params().body_len()
            + 64
    }

    /// The largest release of this round (the body bound).
    pub fn max_release_len(&self) -> usize {
        let c = self.setup.committee();
        4 + 1 + 32 + 4 + c.pieces() * (2 + 8 * amalgam_he::params::N) + 64
    }

    /// SHA-256 of the upload accepted from `site`, if any (kept after the round ends: only
    /// bodies are shredded).
    pub fn upload_digest(&self, site: SiteId) -> Option<[u8; 32]> {
        self.uploads.get(&site.0).map(|s| s.sha)
    }

    /// A site's signed ledger summary of this round (amalgam-net's [`LedgerSummary`], as after
    /// a masking round), verified before it is stored: signed by that site's manifest key,
    /// naming `consortium`, this round id and that site, with an entry count not below
    /// `min_entries` (the site's previous accepted summary, masking or fallback). Accepted
    /// whether or not the round ended; one per site; a refusal changes nothing.
    pub fn site_summary(
        &mut self,
        site: SiteId,
        bytes: &[u8],
        consortium: &[u8; 32],
        min_entries: u64,
    ) -> Result<Accepted, Problem> {
        if bytes.is_empty() || bytes.len() > LedgerSummary::LEN {
            return Err(Problem::new(
                ProblemCode::BodyTooLarge,
                format!("a summary is 1..={} bytes", LedgerSummary::LEN),
            ));
        }
        let response = receipt(self.round, "summary", bytes);
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
        let key =
            self.setup.sites().key(site).map_err(|_| {
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
                phase: PH_SITE_SUMMARY,
                sender: Some(u32::from(site.0)),
                body: bytes.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    /// The stored summary of `site`.
    pub fn summary_of(&self, site: SiteId) -> Option<&[u8]> {
        self.summaries.get(&site.0).map(Vec::as_slice)
    }

    /// The ledger entry count of `site`'s stored summary (verified when stored).
    pub fn summary_entries(&self, site: SiteId) -> Option<u64> {
        let b = self.summaries.get(&site.0)?;
        let key = self.setup.sites().key(site).ok()?;
        LedgerSummary::verify(b, key).ok().map(|s| s.entries)
    }

    /// A site's signed upload. On `Err`, nothing changed.
    pub fn upload(&mut self, site: SiteId, bytes: &[u8]) -> Result<Accepted, Problem> {
        if let Some(r) = repeat(self.uploads.get(&site.0), bytes) {
            return r;
        }
        self.open_for("upload")?;
        if self.statement.is_some() {
            return Err(Problem::new(
                ProblemCode::RoundWrongPhase,
                "the cohort is closed",
            ));
        }
        let up =
            SignedUpload::from_bytes(bytes, &self.setup).map_err(|e| malformed("upload", e))?;
        if up.header.site != site {
            return Err(Problem::new(
                ProblemCode::ProtocolRefused,
                "the upload's site field is not the authenticated site",
            ));
        }
        self.agg.receive(&up).map_err(|e| he_problem(&e))?;
        let response = receipt(self.round, "fallback-upload", bytes);
        self.uploads.insert(
            site.0,
            Seen {
                sha: sha(bytes),
                response: response.clone(),
            },
        );
        Ok(Accepted {
            events: vec![NewEvent {
                round: self.round,
                kind: EventKind::Upload,
                phase: PH_UPLOAD,
                sender: Some(u32::from(site.0)),
                body: bytes.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    fn open_for(&self, what: &str) -> Result<(), Problem> {
        match &self.end {
            None => Ok(()),
            Some(FallbackEnd::Finished(_)) => Err(Problem::new(
                ProblemCode::RoundClosed,
                format!("the round finished; no {what} is accepted"),
            )),
            Some(FallbackEnd::Aborted(r)) => Err(Problem::new(
                ProblemCode::RoundClosed,
                format!("the round aborted ({r}); no {what} is accepted"),
            )),
        }
    }

    fn require_statement(&self) -> Result<&CohortStatement, Problem> {
        self.statement.as_ref().map(|(s, _)| s).ok_or_else(|| {
            Problem::new(ProblemCode::RoundWrongPhase, "the cohort is not closed yet")
        })
    }

    fn abort(&mut self, reason: &str) -> Vec<NewEvent> {
        self.end = Some(FallbackEnd::Aborted(reason.to_owned()));
        self.forget_secrets();
        self.generation += 1;
        let mut body = vec![1u8];
        body.extend_from_slice(reason.as_bytes());
        vec![NewEvent {
            round: self.round,
            kind: EventKind::RoundEnd,
            phase: 0,
            sender: None,
            body,
            response: None,
        }]
    }

    /// Closes the cohort (the statement names exactly the uploads in the sum) and opens the
    /// release window `next`. At the deadline, a cohort below m, or releases still missing
    /// after the cohort closed, abort the round. Without `at_deadline`, a close that cannot
    /// happen is refused and nothing changes.
    pub fn close(&mut self, next: Window, at_deadline: bool) -> Result<Vec<NewEvent>, String> {
        if self.end.is_some() {
            return Err("the round ended".into());
        }
        if self.statement.is_some() {
            return if at_deadline {
                Ok(self.abort("piece-sum releases missing at the deadline"))
            } else {
                Err("the cohort is already closed".into())
            };
        }
        if self.agg.responded().len() < self.setup.min_cohort() {
            return if at_deadline {
                Ok(self.abort("fewer uploads than the minimum cohort at the deadline"))
            } else {
                Err("fewer uploads than the minimum cohort".into())
            };
        }
        next.check(self.bounds)?;
        let s = self.agg.close().map_err(|e| e.to_string())?;
        let bytes = s.to_bytes();
        let mut body = next.encode().to_vec();
        body.extend_from_slice(&bytes);
        self.statement = Some((s, bytes));
        self.window = next;
        self.generation += 1;
        Ok(vec![NewEvent {
            round: self.round,
            kind: EventKind::PhaseClose,
            phase: PH_CLOSE,
            sender: None,
            body,
            response: None,
        }])
    }

    /// The views for decryptor `member` (framed `UploadView`s): boxes and digests, never
    /// bodies.
    /// Refused with 410 once the round ended: its aggregation state is dropped then.
    pub fn views(&self, member: usize) -> Result<Vec<u8>, Problem> {
        if self.end.is_some() {
            return Err(Problem::new(
                ProblemCode::RoundClosed,
                "the round ended; its views are gone",
            ));
        }
        let views: Vec<Vec<u8>> = self
            .agg
            .views_for(member)
            .iter()
            .map(Encode::to_bytes)
            .collect();
        Ok(encode_frames(&views))
    }

    /// Drops the ended round's aggregation state (ciphertext sums, seed boxes, piece sums),
    /// so that nothing of it stays in memory after the shred: an aborted round with a single
    /// upload would otherwise keep that site's ciphertext as its body sum.
    fn forget_secrets(&mut self) {
        self.agg = HeAggregator::new(self.setup.clone(), Closing::OnDeadline);
    }

    /// The statement bytes, once closed.
    pub fn statement_bytes(&self) -> Option<&[u8]> {
        self.statement.as_ref().map(|(_, b)| b.as_slice())
    }

    /// Every collected signature, framed, in member order.
    pub fn signatures(&self) -> Vec<u8> {
        let s: Vec<Vec<u8>> = self
            .signatures
            .values()
            .map(|(sig, _)| sig.to_bytes())
            .collect();
        encode_frames(&s)
    }

    /// A decryptor's signature on the closed statement. On `Err`, nothing changed.
    pub fn signature(&mut self, member: usize, bytes: &[u8]) -> Result<Accepted, Problem> {
        let m = u8::try_from(member).map_err(|_| Problem::new(ProblemCode::Internal, "member"))?;
        if let Some(r) = repeat(self.signatures.get(&m).map(|(_, s)| s), bytes) {
            return r;
        }
        self.open_for("signature")?;
        let digest = self.require_statement()?.digest(self.setup.context());
        let sig =
            StatementSignature::from_bytes(bytes, &()).map_err(|e| malformed("signature", e))?;
        if sig.member != m {
            return Err(Problem::new(
                ProblemCode::ProtocolRefused,
                "the signature's member field is not the authenticated decryptor",
            ));
        }
        let key = self
            .setup
            .committee()
            .member(member)
            .map_err(|e| he_problem(&e))?
            .identity;
        if !sig.verifies(&key, &digest) {
            return Err(Problem::new(
                ProblemCode::ProtocolRefused,
                "the signature does not verify on the closed statement",
            ));
        }
        let response = receipt(self.round, "fallback-signature", bytes);
        self.signatures.insert(
            m,
            (
                sig,
                Seen {
                    sha: sha(bytes),
                    response: response.clone(),
                },
            ),
        );
        Ok(Accepted {
            events: vec![NewEvent {
                round: self.round,
                kind: EventKind::Summary,
                phase: PH_SIGNATURE,
                sender: Some(DECRYPTOR_SENDER + u32::from(m)),
                body: bytes.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    /// A decryptor's piece-sum release; with every piece present the sum is decoded and the
    /// round finishes (or aborts if it does not decode). On `Err`, nothing changed.
    pub fn release(&mut self, member: usize, bytes: &[u8]) -> Result<Accepted, Problem> {
        let m = u8::try_from(member).map_err(|_| Problem::new(ProblemCode::Internal, "member"))?;
        if let Some(r) = repeat(self.releases.get(&m), bytes) {
            return r;
        }
        self.open_for("release")?;
        let statement = self.require_statement()?.clone();
        let rel =
            PieceSumRelease::from_bytes(bytes, &self.setup).map_err(|e| malformed("release", e))?;
        if rel.member != m {
            return Err(Problem::new(
                ProblemCode::ProtocolRefused,
                "the release's member field is not the authenticated decryptor",
            ));
        }
        self.agg.accept_release(&rel).map_err(|e| he_problem(&e))?;
        let response = receipt(self.round, "fallback-release", bytes);
        self.releases.insert(
            m,
            Seen {
                sha: sha(bytes),
                response: response.clone(),
            },
        );
        let mut events = vec![NewEvent {
            round: self.round,
            kind: EventKind::Other(KIND_RELEASE),
            phase: PH_RELEASE,
            sender: Some(DECRYPTOR_SENDER + u32::from(m)),
            body: bytes.to_vec(),
            response: Some(response.clone()),
        }];
        match self.agg.finish() {
            Ok(sum) => {
                let result = FallbackResult {
                    round: self.round,
                    sum,
                    contributors: statement.sites().map(|s| s.0).collect(),
                    statement_sha256: hex::encode(sha(self.statement_bytes().unwrap_or(&[]))),
                };
                let mut body = vec![0u8];
                body.extend_from_slice(&serde_json::to_vec(&result).unwrap_or_default());
                self.end = Some(FallbackEnd::Finished(result));
                self.forget_secrets();
                self.generation += 1;
                events.push(NewEvent {
                    round: self.round,
                    kind: EventKind::RoundEnd,
                    phase: 0,
                    sender: None,
                    body,
                    response: None,
                });
            }
            Err(HeError::PiecesMissing { .. }) => {}
            Err(e) => events.extend(self.abort(&format!(
                "the cohort sum did not decode (code {})",
                e.code()
            ))),
        }
        Ok(Accepted { response, events })
    }

    /// The result, once finished.
    pub fn result(&self) -> Option<&FallbackResult> {
        match &self.end {
            Some(FallbackEnd::Finished(r)) => Some(r),
            _ => None,
        }
    }

    /// A digest of the whole round state (tests compare it before and after a refusal).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.agg.snapshot());
        for (s, v) in &self.uploads {
            h.update(s.to_be_bytes());
            h.update(v.sha);
        }
        if let Some((_, b)) = &self.statement {
            h.update(b);
        }
        for (m, (_, v)) in &self.signatures {
            h.update([*m]);
            h.update(v.sha);
        }
        for (m, v) in &self.releases {
            h.update([*m]);
            h.update(v.sha);
        }
        h.update(format!("{:?}", self.end));
        h.update(self.window.encode());
        h.finalize().into()
    }

    /// Restores one event of a round whose secret bodies were shredded (it ended): uploads and
    /// releases keep their digests and responses for idempotent re-sends, the statement and
    /// signatures are re-verified, the end is read from the public `RoundEnd` record.
    pub(crate) fn restore_shredded(
        &mut self,
        kind: EventKind,
        sender: Option<u32>,
        body: &[u8],
        body_sha: [u8; 32],
        response: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let seen = || Seen {
            sha: body_sha,
            response: response.clone().unwrap_or_default(),
        };
        match kind {
            EventKind::Upload => {
                let site = sender
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or("upload sender out of range")?;
                if self.uploads.insert(site, seen()).is_some() {
                    return Err("two uploads from one site".into());
                }
            }
            EventKind::PhaseClose => {
                let (w, s) = body.split_at_checked(16).ok_or("malformed close")?;
                let w = Window::decode(w).ok_or("malformed close window")?;
                w.check(self.bounds)?;
                let st = CohortStatement::from_bytes(s, &()).map_err(|e| e.to_string())?;
                self.statement = Some((st, s.to_vec()));
                self.window = w;
            }
            EventKind::Summary => {
                let member = sender
                    .and_then(|s| s.checked_sub(DECRYPTOR_SENDER))
                    .and_then(|m| usize::try_from(m).ok())
                    .ok_or("signature sender out of range")?;
                self.signature(member, body).map_err(|p| p.detail)?;
            }
            EventKind::Other(KIND_RELEASE) => {
                let member = sender
                    .and_then(|s| s.checked_sub(DECRYPTOR_SENDER))
                    .and_then(|m| u8::try_from(m).ok())
                    .ok_or("release sender out of range")?;
                if self.releases.insert(member, seen()).is_some() {
                    return Err("two releases from one decryptor".into());
                }
            }
            EventKind::RoundEnd => {
                let (flag, rest) = body.split_first().ok_or("empty round end")?;
                self.end = Some(match flag {
                    0 => {
                        let r: FallbackResult =
                            serde_json::from_slice(rest).map_err(|e| e.to_string())?;
                        if r.round != self.round {
                            return Err("result for another round".into());
                        }
                        FallbackEnd::Finished(r)
                    }
                    1 => FallbackEnd::Aborted(String::from_utf8_lossy(rest).into_owned()),
                    _ => return Err("unknown round end".into()),
                });
                self.forget_secrets();
            }
            _ => return Err("event out of place".into()),
        }
        Ok(())
    }
}
