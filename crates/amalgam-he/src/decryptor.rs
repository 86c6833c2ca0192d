//! The decryptor role: the only holder of the secret key. It decrypts an aggregate only if
//!
//! 1. the round has not been decrypted before (at most one decryption per round);
//! 2. at least the minimum cohort of distinct manifest sites signed contributions for this
//!    round under the pinned key (each checked with `verify_strict` over its mask attestation);
//! 3. the aggregator's contributor list is exactly the attested set; and
//! 4. the aggregate's masks are exactly the sum of the attested masks.
//!
//! Check 4 binds the aggregate to the signed contributions without the decryptor ever seeing a
//! single site's bodies: masks `a ⊛ r + e1` carry no plaintext, and an aggregate whose bodies are
//! not the matching sum decrypts to noise that the residual check refuses (spec §4). Every
//! decryption, released or refused, is appended to the audit log.

use std::collections::{BTreeMap, BTreeSet};

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{DecodeError, DecryptorRole, SiteId};

use crate::audit::{AuditEntry, AuditLog, Outcome, result_digest};
use crate::ciphertext::add_words;
use crate::consortium::HeConsortium;
use crate::decrypt::decrypt_sum;
use crate::error::HeError;
use crate::keys::DecryptionKey;
use crate::keys::KeyFingerprint;
use crate::messages::{AggregateClaim, MaskAttestation};
use crate::params::LWE_DIMENSION;
use crate::wire::SNAPSHOT_HE_DECRYPTOR;

/// Most audit entries a persisted decryptor state may hold (one per round).
const MAX_AUDIT_ENTRIES: usize = 1 << 20;
/// Longest encoded audit entry: header, digests, 65535 contributors, a code.
const MAX_AUDIT_ENTRY_BYTES: usize = 4 + 32 + 8 + 4 + 2 * 65_535 + 32 + 1 + 4 + 64;

/// Attested contributions of one round, collected before the claim is opened. Holds only masks.
#[derive(Debug)]
pub struct MaskIntake {
    round: u64,
    attested: BTreeMap<SiteId, [u8; 32]>,
    mask_sum: Vec<u64>,
}

impl MaskIntake {
    /// Sites attested so far.
    pub fn attested(&self) -> Vec<SiteId> {
        self.attested.keys().copied().collect()
    }
}

/// A claim together with the attestations that back it: what [`DecryptorRole::decrypt`] takes.
#[derive(Debug)]
pub struct DecryptionRequest {
    /// Attestations admitted with [`Decryptor::admit`].
    pub intake: MaskIntake,
    /// The aggregator's aggregate.
    pub claim: AggregateClaim,
}

/// The released result of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundSum {
    /// The round.
    pub round: u64,
    /// Who contributed.
    pub contributors: Vec<SiteId>,
    /// Exact sums of the contributors' inputs.
    pub values: Vec<u64>,
}

/// The decryptor: secret key, consortium configuration, rounds already decrypted, audit log.
pub struct Decryptor {
    key: DecryptionKey,
    consortium: HeConsortium,
    decrypted: BTreeSet<u64>,
    audit: AuditLog,
}

impl Decryptor {
    /// Takes ownership of the key; refuses a key that is not the one pinned in the configuration.
    pub fn new(key: DecryptionKey, consortium: HeConsortium) -> Result<Self, HeError> {
        let got = key.public_key().fingerprint();
        if &got != consortium.key() {
            return Err(HeError::KeyMismatch {
                expected: consortium.key().to_hex(),
                got: got.to_hex(),
            });
        }
        Ok(Self {
            key,
            consortium,
            decrypted: BTreeSet::new(),
            audit: AuditLog::default(),
        })
    }

    /// Starts collecting attestations for `round`; refuses a round already decrypted.
    pub fn open(&self, round: u64) -> Result<MaskIntake, HeError> {
        if self.decrypted.contains(&round) {
            return Err(HeError::AlreadyDecrypted { round });
        }
        let words = self.consortium.params().list_count() * LWE_DIMENSION;
        Ok(MaskIntake {
            round,
            attested: BTreeMap::new(),
            mask_sum: vec![0; words],
        })
    }

    /// Admits one attestation: right round, manifest site, pinned key, not yet attested, valid
    /// signature. On error the intake is unchanged.
    pub fn admit(&self, intake: &mut MaskIntake, a: &MaskAttestation) -> Result<(), HeError> {
        let identity = self
            .consortium
            .check_origin(a.round, intake.round, a.site, &a.key)?;
        if intake.attested.contains_key(&a.site) {
            return Err(HeError::DuplicateContribution { site: a.site.0 });
        }
        if intake.attested.len() >= self.consortium.params().max_sites() as usize {
            return Err(HeError::TooManyContributions {
                sites: intake.attested.len() as u32,
                max_sites: self.consortium.params().max_sites(),
            });
        }
        if a.masks.len() != intake.mask_sum.len() {
            return Err(HeError::LengthMismatch {
                expected: intake.mask_sum.len(),
                got: a.masks.len(),
            });
        }
        a.verify(identity)?;
        add_words(&mut intake.mask_sum, &a.masks);
        intake.attested.insert(a.site, a.bodies_digest);
        Ok(())
    }

    /// The audit log.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// State to persist after every decryption (no secret in it): header (type 0x73), the key
    /// fingerprint, then the audit entries (count u32, each length-prefixed). The rounds already
    /// decrypted are exactly the rounds in the log.
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(SNAPSHOT_HE_DECRYPTOR);
        w.bytes(&self.consortium.key().0);
        w.count(self.audit.entries().len());
        for e in self.audit.entries() {
            w.bytes_prefixed(&e.to_bytes());
        }
        w.into_bytes()
    }

    /// Restarts a decryptor from [`Self::state_bytes`], so that a restart cannot make it decrypt
    /// a round twice. Refuses state for another key and a broken chain; with `published_head`
    /// (the head last published to auditors) it also refuses state that was rolled back.
    pub fn resume(
        key: DecryptionKey,
        consortium: HeConsortium,
        state: &[u8],
        published_head: Option<&[u8; 32]>,
    ) -> Result<Self, HeError> {
        let mut r = Reader::new(state);
        r.expect_header(SNAPSHOT_HE_DECRYPTOR)?;
        let fingerprint = KeyFingerprint(r.array("decryptor.key")?);
        let count = r.count("decryptor.audit", 0, MAX_AUDIT_ENTRIES)?;
        let mut entries = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let raw = r.bytes_prefixed("decryptor.audit", 1, MAX_AUDIT_ENTRY_BYTES)?;
            entries.push(AuditEntry::from_bytes(raw, &())?);
        }
        r.finish("HeDecryptorState")?;
        if &fingerprint != consortium.key() {
            return Err(HeError::KeyMismatch {
                expected: consortium.key().to_hex(),
                got: fingerprint.to_hex(),
            });
        }
        let audit =
            AuditLog::from_entries(entries).ok_or(HeError::Decode(DecodeError::InvalidValue {
                field: "decryptor.audit",
                reason: "entries do not form a hash chain",
            }))?;
        if published_head.is_some_and(|h| h != &audit.head()) {
            return Err(HeError::AuditRollback);
        }
        let mut d = Self::new(key, consortium)?;
        d.decrypted = audit.entries().iter().map(|e| e.round).collect();
        d.audit = audit;
        Ok(d)
    }

    /// Checks 1-4 of the module docs; nothing changes if any fails.
    fn check(&self, req: &DecryptionRequest) -> Result<(), HeError> {
        let (intake, claim) = (&req.intake, &req.claim);
        if self.decrypted.contains(&claim.round) {
            return Err(HeError::AlreadyDecrypted { round: claim.round });
        }
        if claim.round != intake.round {
            return Err(HeError::WrongRound {
                expected: intake.round,
                got: claim.round,
            });
        }
        if &claim.key != self.consortium.key() {
            return Err(HeError::KeyMismatch {
                expected: self.consortium.key().to_hex(),
                got: claim.key.to_hex(),
            });
        }
        let need = self.consortium.min_cohort();
        if intake.attested.len() < need {
            return Err(HeError::CohortTooSmall {
                have: intake.attested.len(),
                need,
            });
        }
        if !claim.contributors.iter().eq(intake.attested.keys())
            || claim.sum.sites() as usize != intake.attested.len()
        {
            return Err(HeError::ContributorMismatch {
                claimed: claim.contributors.len(),
                attested: intake.attested.len(),
            });
        }
        if claim.sum.len() != self.consortium.params().vector_len() as usize {
            return Err(HeError::LengthMismatch {
                expected: self.consortium.params().vector_len() as usize,
                got: claim.sum.len(),
            });
        }
        if let Some(index) = claim
            .sum
            .masks()
            .iter()
            .zip(&intake.mask_sum)
            .position(|(a, b)| a != b)
        {
            return Err(HeError::MaskSumMismatch { index });
        }
        Ok(())
    }
}

impl DecryptorRole for Decryptor {
    type Aggregate = DecryptionRequest;
    type Output = RoundSum;
    type Error = HeError;

    /// Decrypts once per round. A claim that fails checks 1-4 is refused without decrypting
    /// and without consuming the round; once decrypted, the round is consumed and logged whether
    /// the result is released or refused by the noise and range checks.
    fn decrypt(&mut self, req: DecryptionRequest) -> Result<RoundSum, HeError> {
        self.check(&req)?;
        let claim = req.claim;
        let result = decrypt_sum(&self.key, self.consortium.params(), &claim.sum);
        let outcome = match &result {
            Ok(values) => Outcome::Released {
                result_digest: result_digest(values),
            },
            Err(e) => Outcome::Refused {
                code: e.code().to_owned(),
            },
        };
        self.decrypted.insert(claim.round);
        self.audit.append(
            claim.round,
            claim.contributors.clone(),
            claim.sum_digest(),
            outcome,
        );
        let values = result?;
        Ok(RoundSum {
            round: claim.round,
            contributors: claim.contributors,
            values,
        })
    }
}
