//! The signed statement a site sends besides protocol messages and declines (amalgam-net's
//! `api::decline_message`): a ledger summary (after each
//! round, so the aggregator can serve it back as an anchor the site's ledger must not fall
//! behind). Fixed-size canonical encodings, Ed25519 `verify_strict`, domain-separated.

pub use amalgam_net::summary::{LedgerSummary, RecordAnchor, StatementError};

/// Why a site declines a round. Each depends only on public parameters (the manifest and the
/// rounds the site took part in), so a decline reveals nothing about the site's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineReason {
    /// Another round would exceed the site's ε cap.
    BudgetExceeded = 1,
    /// The site took part in `max_aborted_rounds` aborted rounds of this campaign.
    AbortCapReached = 2,
    /// The previous round's published model did not match the site's own computation.
    ModelMismatch = 3,
    /// The local run would take the dataset's record-level ε past its cap.
    RecordBudgetExceeded = 4,
}

impl DeclineReason {
    /// The reason's code (for logs; declines on the wire carry no reason).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reason of a code.
    pub fn from_code(c: u8) -> Result<Self, StatementError> {
        Ok(match c {
            1 => Self::BudgetExceeded,
            2 => Self::AbortCapReached,
            3 => Self::ModelMismatch,
            4 => Self::RecordBudgetExceeded,
            other => return Err(StatementError::Reason(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn statements_round_trip_and_refuse_tampering() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert!(
            LedgerSummary::verify(
                &LedgerSummary {
                    consortium_digest: [0; 32],
                    round: 0,
                    site: 0,
                    entries: 0,
                    head: [0; 32],
                    epsilon: 0.0,
                    record: None,
                }
                .sign(&key),
                &other
            )
            .is_err()
        );
        let s = LedgerSummary {
            consortium_digest: [3; 32],
            round: 9,
            site: 4,
            entries: 12,
            head: [5; 32],
            epsilon: 1.5,
            record: None,
        };
        let b = s.sign(&key);
        assert_eq!(LedgerSummary::verify(&b, &key.verifying_key()).unwrap(), s);
        let mut t = b.clone();
        t[45] ^= 1;
        assert!(LedgerSummary::verify(&t, &key.verifying_key()).is_err());
        assert!(LedgerSummary::verify(&b[1..], &key.verifying_key()).is_err());
        for r in [
            DeclineReason::BudgetExceeded,
            DeclineReason::AbortCapReached,
            DeclineReason::ModelMismatch,
            DeclineReason::RecordBudgetExceeded,
        ] {
            assert_eq!(DeclineReason::from_code(r.code()).unwrap(), r);
        }
    }
}
