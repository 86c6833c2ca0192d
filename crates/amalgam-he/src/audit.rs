//! Append-only, hash-chained log of every decryption the decryptor performs: round,
//! contributors, digest of the aggregate and the outcome. Each entry's hash covers the previous
//! one, so an auditor holding the last hash detects any removed, reordered or altered entry.

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{DecodeError, SiteId};
use sha2::{Digest, Sha256};

use crate::wire::MSG_HE_AUDIT_ENTRY;

/// Domain-separation label of audit-entry hashes.
pub const AUDIT_LABEL: &[u8] = b"amalgam/v1/he/audit";

/// What a decryption produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sums were released; digest of their encoding (u64 each, big-endian).
    Released {
        /// SHA-256 of the released values.
        result_digest: [u8; 32],
    },
    /// The aggregate was decrypted but failed the noise or range check; nothing was released.
    Refused {
        /// Stable error code (see `protocol-spec/he-fallback.md` §6).
        code: String,
    },
}

/// One decryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Hash of the previous entry (all zero for the first).
    pub prev: [u8; 32],
    /// Round decrypted.
    pub round: u64,
    /// Contributing sites.
    pub contributors: Vec<SiteId>,
    /// SHA-256 of the aggregate's ciphertext sum.
    pub aggregate_digest: [u8; 32],
    /// Result.
    pub outcome: Outcome,
}

impl Encode for AuditEntry {
    /// Header (type 0x45), prev, round, contributor count and ids, aggregate digest, outcome
    /// tag (0 released + digest, 1 refused + code length (u32) + code bytes).
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_AUDIT_ENTRY);
        w.bytes(&self.prev);
        w.u64(self.round);
        w.count(self.contributors.len());
        for s in &self.contributors {
            w.u16(s.0);
        }
        w.bytes(&self.aggregate_digest);
        match &self.outcome {
            Outcome::Released { result_digest } => {
                w.u8(0);
                w.bytes(result_digest);
            }
            Outcome::Refused { code } => {
                w.u8(1);
                w.bytes_prefixed(code.as_bytes());
            }
        }
    }
}

/// Longest error code an audit entry may carry.
const MAX_CODE_LEN: usize = 64;

impl Decode for AuditEntry {
    type Context = ();
    const NAME: &'static str = "HeAuditEntry";

    /// Strict decoding (persisted logs are read back as untrusted input).
    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_AUDIT_ENTRY)?;
        let prev = r.array("audit.prev")?;
        let round = r.u64("audit.round")?;
        let count = r.count("audit.contributors", 0, usize::from(u16::MAX))?;
        let mut contributors: Vec<SiteId> = Vec::with_capacity(count);
        for _ in 0..count {
            let site = SiteId(r.u16("audit.contributors")?);
            if contributors.last().is_some_and(|p| *p >= site) {
                return Err(DecodeError::InvalidValue {
                    field: "audit.contributors",
                    reason: "not strictly increasing",
                });
            }
            contributors.push(site);
        }
        let aggregate_digest = r.array("audit.aggregate_digest")?;
        let outcome = match r.u8("audit.outcome")? {
            0 => Outcome::Released {
                result_digest: r.array("audit.result_digest")?,
            },
            1 => {
                let raw = r.bytes_prefixed("audit.code", 1, MAX_CODE_LEN)?;
                let code = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidValue {
                    field: "audit.code",
                    reason: "not UTF-8",
                })?;
                Outcome::Refused {
                    code: code.to_owned(),
                }
            }
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "audit.outcome",
                    reason: "must be 0 or 1",
                });
            }
        };
        Ok(Self {
            prev,
            round,
            contributors,
            aggregate_digest,
            outcome,
        })
    }
}

impl AuditEntry {
    /// `SHA-256(label || encoding)`: what the next entry's `prev` holds.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(AUDIT_LABEL);
        h.update(self.to_bytes());
        h.finalize().into()
    }
}

/// The decryptor's audit log (in memory; the service persists each entry as it is appended).
#[derive(Clone, Debug, Default)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
}

impl AuditLog {
    /// Appends an entry chained to the current head.
    pub(crate) fn append(
        &mut self,
        round: u64,
        contributors: Vec<SiteId>,
        aggregate_digest: [u8; 32],
        outcome: Outcome,
    ) {
        let prev = self.head();
        self.entries.push(AuditEntry {
            prev,
            round,
            contributors,
            aggregate_digest,
            outcome,
        });
    }

    /// Hash of the last entry (all zero when empty).
    pub fn head(&self) -> [u8; 32] {
        self.entries.last().map_or([0; 32], AuditEntry::hash)
    }

    /// Rebuilds a log from persisted entries, refusing a broken chain.
    pub(crate) fn from_entries(entries: Vec<AuditEntry>) -> Option<Self> {
        let log = Self { entries };
        verify_chain(&log.entries, &log.head()).then_some(log)
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }
}

/// Checks that `entries` form an unbroken chain from the empty log to `head`.
pub fn verify_chain(entries: &[AuditEntry], head: &[u8; 32]) -> bool {
    let mut prev = [0u8; 32];
    for e in entries {
        if e.prev != prev {
            return false;
        }
        prev = e.hash();
    }
    &prev == head
}

/// Digest of released sums, as recorded in the log.
pub fn result_digest(values: &[u64]) -> [u8; 32] {
    crate::messages::words_digest(values)
}
