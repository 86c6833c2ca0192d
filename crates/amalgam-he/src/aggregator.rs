//! The aggregator's side of a fallback round (spec §5.3, §5.6). It holds no key and no seed: it
//! verifies and adds signed uploads, closes the cohort (at a target count or the driver's
//! deadline), forwards each member its views, collects released piece sums and publishes only
//! the decoded sum — never a phase, a residual or a body.

use std::collections::BTreeMap;

use amalgam_proto::SiteId;

use crate::error::HeError;
use crate::kahe::{self, KeyVector};
use crate::release::PieceSumRelease;
use crate::round::RoundSetup;
use crate::statement::CohortStatement;
use crate::upload::{KeptUpload, SignedUpload, UploadView, verify};
use crate::wire::{SNAPSHOT_HE_AGGREGATOR, put_words, read_field_words};
use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use sha2::{Digest, Sha256};

/// When the cohort closes: at the deadline only, or as soon as `target` uploads arrived
/// (asynchronous, FedBuff-style buffer), whichever the driver sees first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Close when the driver's deadline passes.
    OnDeadline,
    /// Close at `target` uploads or at the deadline.
    OnTargetOrDeadline(usize),
}

/// What the aggregator keeps of an upload besides its bodies (which go into the sum).
struct Kept {
    digest: [u8; 32],
    upload: KeptUpload,
}

/// The aggregator of one fallback round.
pub struct HeAggregator {
    setup: RoundSetup,
    closing: Closing,
    uploads: BTreeMap<u16, Kept>,
    body_sum: Vec<u64>,
    statement: Option<CohortStatement>,
    piece_sums: BTreeMap<u16, (u8, KeyVector)>,
    releases: Vec<PieceSumRelease>,
}

impl core::fmt::Debug for HeAggregator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "HeAggregator(round {}, {} uploads)",
            self.setup.round(),
            self.uploads.len()
        )
    }
}

impl HeAggregator {
    /// A fresh round.
    pub fn new(setup: RoundSetup, closing: Closing) -> Self {
        let body_sum = vec![0; setup.params().body_len()];
        Self {
            setup,
            closing,
            uploads: BTreeMap::new(),
            body_sum,
            statement: None,
            piece_sums: BTreeMap::new(),
            releases: Vec::new(),
        }
    }

    /// Accepts one signed upload while the cohort is open. On `Err`, nothing changed.
    pub fn receive(&mut self, upload: &SignedUpload) -> Result<(), HeError> {
        if self.statement.is_some() {
            return Err(HeError::WrongState("the cohort is closed"));
        }
        let ctx = *self.setup.context();
        let site = upload.header.site;
        let key = self.setup.sites().key(site)?;
        if self.uploads.contains_key(&site.0) {
            return Err(HeError::DuplicateSite { site: site.0 });
        }
        if self.uploads.len() >= self.setup.params().max_sites() as usize {
            return Err(HeError::CohortSize {
                size: self.uploads.len() + 1,
                min: self.setup.min_cohort(),
                max: self.setup.params().max_sites() as usize,
            });
        }
        if upload.bodies.len() != self.setup.params().body_len()
            || upload.boxes.len() != self.setup.committee().size()
        {
            return Err(HeError::LengthMismatch {
                what: "upload",
                expected: self.setup.params().body_len(),
                got: upload.bodies.len(),
            });
        }
        let message = upload.message(&ctx);
        if !verify(key, &message, &upload.signature) {
            return Err(HeError::BadSignature {
                what: "upload",
                signer: site.index(),
            });
        }
        if !self
            .setup
            .accepts_model(upload.header.model_round, &upload.header.model_digest)
        {
            return Err(HeError::StaleModel);
        }
        kahe::add_bodies(&mut self.body_sum, &upload.bodies);
        self.uploads.insert(
            site.0,
            Kept {
                digest: upload.digest(&ctx),
                upload: KeptUpload::of(upload),
            },
        );
        Ok(())
    }

    /// Sites accepted so far.
    pub fn responded(&self) -> Vec<SiteId> {
        self.uploads.keys().map(|&s| SiteId(s)).collect()
    }

    /// Whether the cohort is closed.
    pub fn is_closed(&self) -> bool {
        self.statement.is_some()
    }

    /// Whether an asynchronous round reached its target count.
    pub fn target_reached(&self) -> bool {
        matches!(self.closing, Closing::OnTargetOrDeadline(t) if self.uploads.len() >= t)
    }

    /// Closes the cohort: the statement names exactly the uploads in the sum. Refused (nothing
    /// changed) below the minimum cohort.
    pub fn close(&mut self) -> Result<CohortStatement, HeError> {
        if let Some(s) = &self.statement {
            return Ok(s.clone());
        }
        if self.uploads.len() < self.setup.min_cohort() {
            return Err(HeError::CohortSize {
                size: self.uploads.len(),
                min: self.setup.min_cohort(),
                max: self.setup.params().max_sites() as usize,
            });
        }
        let s = CohortStatement {
            members: self
                .uploads
                .iter()
                .map(|(&s, k)| (SiteId(s), k.digest))
                .collect(),
        };
        self.statement = Some(s.clone());
        Ok(s)
    }

    /// The upload views to forward to `member` (its boxes; never bodies).
    pub fn views_for(&self, member: usize) -> Vec<UploadView> {
        self.uploads
            .values()
            .filter_map(|k| k.upload.view_for(member))
            .collect()
    }

    /// Accepts a member's release: signed by that member, for the closed statement, only pieces
    /// it holds; a second holder's sum must equal the first (else one of them lies). On `Err`,
    /// nothing changed.
    pub fn accept_release(&mut self, release: &PieceSumRelease) -> Result<(), HeError> {
        let statement = self
            .statement
            .as_ref()
            .ok_or(HeError::WrongState("the cohort is not closed"))?;
        let ctx = self.setup.context();
        let committee = self.setup.committee();
        let member = usize::from(release.member);
        let keys = committee.member(member)?;
        if release.statement_digest != statement.digest(ctx) {
            return Err(HeError::NotSigned);
        }
        if !release.verifies(&keys.identity, ctx) {
            return Err(HeError::BadSignature {
                what: "piece sums",
                signer: member,
            });
        }
        for (i, (p, v)) in release.sums.iter().enumerate() {
            let piece = usize::from(*p);
            if !committee.holds(member, piece) || release.sums[..i].iter().any(|(q, _)| q == p) {
                return Err(HeError::BadPieceSum {
                    piece,
                    reason: "not held by the sender, or listed twice",
                });
            }
            if let Some((first, known)) = self.piece_sums.get(p)
                && known != v
            {
                return Err(HeError::InconsistentPieceSum {
                    piece,
                    first: usize::from(*first),
                    second: member,
                });
            }
        }
        for (p, v) in &release.sums {
            self.piece_sums
                .entry(*p)
                .or_insert_with(|| (release.member, v.clone()));
        }
        Ok(())
    }

    /// The decoded sum over the statement's cohort, once every piece has a released sum.
    pub fn finish(&self) -> Result<Vec<u64>, HeError> {
        let statement = self
            .statement
            .as_ref()
            .ok_or(HeError::WrongState("the cohort is not closed"))?;
        let pieces = self.setup.committee().pieces();
        if self.piece_sums.len() < pieces {
            return Err(HeError::PiecesMissing {
                missing: pieces - self.piece_sums.len(),
            });
        }
        let mut key = KeyVector::zero();
        for (_, v) in self.piece_sums.values() {
            key.add_assign(v);
        }
        kahe::decode_sum(
            self.setup.params(),
            self.setup.context(),
            statement.members.len(),
            &self.body_sum,
            &key,
        )
    }
}

impl HeAggregator {
    /// The persisted round (no secret: bodies are summed, boxes sealed). Holds the kept
    /// uploads, the body sum, whether the cohort is closed and every accepted release.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(SNAPSHOT_HE_AGGREGATOR);
        w.u64(self.setup.round());
        w.bytes(self.setup.context());
        match self.closing {
            Closing::OnDeadline => {
                w.u8(0);
                w.u32(0);
            }
            Closing::OnTargetOrDeadline(t) => {
                w.u8(1);
                w.u32(t as u32);
            }
        }
        w.count(self.uploads.len());
        for k in self.uploads.values() {
            k.upload.encode(&mut w);
        }
        put_words(&mut w, &self.body_sum);
        w.bool(self.statement.is_some());
        w.count(self.releases.len());
        for r in &self.releases {
            w.bytes_prefixed(&r.to_bytes());
        }
        w.into_bytes()
    }

    /// Rebuilds the round from [`HeAggregator::snapshot`] bytes, re-checking what can be
    /// re-checked: every kept upload's signature, site, model and uniqueness, the statement
    /// (recomputed from the uploads, never read), and every release (replayed through
    /// [`HeAggregator::accept_release`]).
    pub fn restore(bytes: &[u8], setup: RoundSetup) -> Result<Self, HeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(SNAPSHOT_HE_AGGREGATOR)?;
        if r.u64("round")? != setup.round() || &r.array::<32>("context")? != setup.context() {
            return Err(HeError::WrongRound);
        }
        let closing = match (r.u8("closing")?, r.u32("target")?) {
            (0, 0) => Closing::OnDeadline,
            (1, t) => Closing::OnTargetOrDeadline(t as usize),
            _ => {
                return Err(HeError::Decode(amalgam_proto::DecodeError::InvalidValue {
                    field: "closing",
                    reason: "unknown closing rule",
                }));
            }
        };
        let mut agg = Self::new(setup, closing);
        let max = agg.setup.params().max_sites() as usize;
        let n = r.count("uploads", 0, max)?;
        let ctx = *agg.setup.context();
        for _ in 0..n {
            let kept = KeptUpload::decode(&mut r, &agg.setup)?;
            let site = kept.header.site;
            let key = agg.setup.sites().key(site)?;
            let message = kept.message(&ctx);
            if !verify(key, &message, &kept.signature) {
                return Err(HeError::BadSignature {
                    what: "upload",
                    signer: site.index(),
                });
            }
            if !agg
                .setup
                .accepts_model(kept.header.model_round, &kept.header.model_digest)
            {
                return Err(HeError::StaleModel);
            }
            let digest: [u8; 32] = Sha256::digest(&message).into();
            if agg
                .uploads
                .insert(
                    site.0,
                    Kept {
                        digest,
                        upload: kept,
                    },
                )
                .is_some()
            {
                return Err(HeError::DuplicateSite { site: site.0 });
            }
        }
        agg.body_sum = read_field_words(&mut r, agg.setup.params().body_len(), "body_sum")?;
        if r.bool("closed")? {
            agg.close()?;
        }
        let releases = r.count("releases", 0, agg.setup.committee().size() * 64)?;
        for _ in 0..releases {
            let len = r.count("release_len", 0, usize::MAX >> 1)?;
            let release = PieceSumRelease::from_bytes(r.bytes(len, "release")?, &agg.setup)?;
            agg.accept_release(&release)?;
        }
        r.finish("HeAggregator")?;
        Ok(agg)
    }
}
