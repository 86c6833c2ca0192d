//! The signed ledger summary a site posts after each round (`POST /v1/rounds/{r}/summary`):
//! the aggregator verifies it before storing it and serves it back as the site's anchor, the
//! point its ledger must never fall behind. Fixed-size canonical encoding, Ed25519
//! `verify_strict`, domain-separated. The format is shared by the site (which signs it) and
//! the server (which verifies it).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

const SUMMARY_DOMAIN: &[u8] = b"amalgam/v1/site/ledger-summary\0";

/// Why a statement does not decode or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Wrong length.
    #[error("{what} must be {expected} bytes, got {got}")]
    Length {
        /// Statement kind.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// Unknown reason code.
    #[error("unknown decline reason {0}")]
    Reason(u8),
    /// The ε field is not a non-negative number (or +∞).
    #[error("epsilon in the summary is not a non-negative number")]
    Epsilon,
    /// The signature does not verify under the given key.
    #[error("{0} signature does not verify")]
    Signature(&'static str),
}

/// A signed summary of the site's ledger after a round: entry count, head, ε spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LedgerSummary {
    /// The consortium.
    pub consortium_digest: [u8; 32],
    /// The round just run.
    pub round: u64,
    /// The site's index.
    pub site: u16,
    /// Entries in the ledger.
    pub entries: u64,
    /// Hash of the last entry.
    pub head: [u8; 32],
    /// Cumulative ε of the privacy unit "site update per round" (+∞ without privacy).
    pub epsilon: f64,
}

impl LedgerSummary {
    /// Encoded length: 32 + 8 + 2 + 8 + 32 + 8 + 64.
    pub const LEN: usize = 154;

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(90);
        b.extend_from_slice(&self.consortium_digest);
        b.extend_from_slice(&self.round.to_be_bytes());
        b.extend_from_slice(&self.site.to_be_bytes());
        b.extend_from_slice(&self.entries.to_be_bytes());
        b.extend_from_slice(&self.head);
        b.extend_from_slice(&self.epsilon.to_bits().to_be_bytes());
        b
    }

    /// Body ‖ signature over domain ‖ body.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let body = self.body();
        let sig = key.sign(&[SUMMARY_DOMAIN, &body].concat());
        [body, sig.to_bytes().to_vec()].concat()
    }

    /// Decodes and verifies `bytes` under `key`.
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Self, StatementError> {
        if bytes.len() != Self::LEN {
            return Err(StatementError::Length {
                what: "ledger summary",
                expected: Self::LEN,
                got: bytes.len(),
            });
        }
        let (body, sig) = bytes.split_at(90);
        let sig = Signature::from_slice(sig).map_err(|_| StatementError::Signature("summary"))?;
        key.verify_strict(&[SUMMARY_DOMAIN, body].concat(), &sig)
            .map_err(|_| StatementError::Signature("summary"))?;
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&body[..32]);
        let mut head = [0u8; 32];
        head.copy_from_slice(&body[50..82]);
        let epsilon = f64::from_bits(u64_at(82));
        if epsilon.is_nan() || epsilon < 0.0 {
            return Err(StatementError::Epsilon);
        }
        Ok(Self {
            consortium_digest: digest,
            round: u64_at(32),
            site: u16::from_be_bytes([body[40], body[41]]),
            entries: u64_at(42),
            head,
            epsilon,
        })
    }
}
