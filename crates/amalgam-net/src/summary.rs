//! The signed ledger summary a site posts after each round (`POST /v1/rounds/{r}/summary`):
//! the aggregator verifies it before storing it and serves it back as the site's anchor, the
//! point its ledger must never fall behind. Fixed-size canonical encoding, Ed25519
//! `verify_strict`, domain-separated. The format is shared by the site (which signs it) and
//! the server (which verifies it).
//!
//! Version 2 also carries the record-level ledger's anchor (record-dp.md §8): kept only in
//! the plant's own state, that anchor is reset together with the ledger by an operator who
//! restores or deletes both; published and signed here it leaves the plant. The server stores
//! the signed bytes and reads nothing of the record fields.
//!
//! A version 1 summary (the site-level body alone, 154 bytes, signed under the v1 domain),
//! which aggregators upgraded from v1 still hold, verifies as a summary with no record anchor:
//! v1 had none, so that is all it says. It is never confused with v2 (other length, other
//! domain), and nothing signs v1 any more.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

const SUMMARY_DOMAIN: &[u8] = b"amalgam/v2/site/ledger-summary\0";
/// Domain of a version 1 summary (read, never written).
const SUMMARY_DOMAIN_V1: &[u8] = b"amalgam/v1/site/ledger-summary\0";
/// Length of a version 1 summary: the site-level body and the signature.
pub const V1_LEN: usize = SITE_BODY + 64;

/// Length of the site-level part of the body.
const SITE_BODY: usize = 90;
/// Length of the record part: tag ‖ dataset ‖ ledger id ‖ entries ‖ head ‖ ε.
const RECORD_BODY: usize = 1 + 32 + 32 + 8 + 32 + 8;
/// Whole body.
const BODY: usize = SITE_BODY + RECORD_BODY;
/// Tag of a summary without record-level DP (every other record byte is then zero).
const RECORD_NONE: u8 = 0;
/// Tag of a summary carrying a record ledger's anchor.
const RECORD_SOME: u8 = 1;

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
    /// The record part is neither a well-formed "none" nor a record anchor.
    #[error("record part of the summary: {0}")]
    Record(&'static str),
    /// The signature does not verify under the given key.
    #[error("{0} signature does not verify")]
    Signature(&'static str),
}

/// The anchor of a dataset's record-level ledger, as published in a [`LedgerSummary`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordAnchor {
    /// The dataset (the id of its declared name, record-dp.md §8) the ledger is for.
    pub dataset: [u8; 32],
    /// The ledger's identity: the hash of its genesis entry.
    pub ledger_id: [u8; 32],
    /// Entries in the record ledger.
    pub entries: u64,
    /// Hash of its last entry.
    pub head: [u8; 32],
    /// Record-level ε spent at the policy's δ (non-negative, or +∞).
    pub epsilon: f64,
}

/// A signed summary of the site's ledger after a round: entry count, head, ε spent, and the
/// record ledger's anchor when record-level DP is on.
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
    /// The record ledger's anchor; `None` when record-level DP is off.
    pub record: Option<RecordAnchor>,
}

/// A non-negative ε with one encoding of zero: −0.0 (which compares equal to 0.0 but has other
/// bytes, so one statement would have two signed forms) is refused like any negative.
fn valid_epsilon(e: f64) -> bool {
    !e.is_nan() && e.is_sign_positive()
}

/// The bytes of ε as signed: −0.0 is written as 0.0, so a signer never emits the form that
/// [`valid_epsilon`] refuses.
fn epsilon_bits(e: f64) -> [u8; 8] {
    let e = if e == 0.0 { 0.0 } else { e };
    e.to_bits().to_be_bytes()
}

impl LedgerSummary {
    /// Encoded length: 32 + 8 + 2 + 8 + 32 + 8, the record part 1 + 32 + 32 + 8 + 32 + 8,
    /// and the 64-byte signature.
    pub const LEN: usize = BODY + 64;

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(BODY);
        b.extend_from_slice(&self.consortium_digest);
        b.extend_from_slice(&self.round.to_be_bytes());
        b.extend_from_slice(&self.site.to_be_bytes());
        b.extend_from_slice(&self.entries.to_be_bytes());
        b.extend_from_slice(&self.head);
        b.extend_from_slice(&epsilon_bits(self.epsilon));
        match &self.record {
            None => b.resize(BODY, 0),
            Some(r) => {
                b.push(RECORD_SOME);
                b.extend_from_slice(&r.dataset);
                b.extend_from_slice(&r.ledger_id);
                b.extend_from_slice(&r.entries.to_be_bytes());
                b.extend_from_slice(&r.head);
                b.extend_from_slice(&epsilon_bits(r.epsilon));
            }
        }
        b
    }

    /// Body ‖ signature over domain ‖ body.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let body = self.body();
        let sig = key.sign(&[SUMMARY_DOMAIN, &body].concat());
        [body, sig.to_bytes().to_vec()].concat()
    }

    /// Decodes and verifies `bytes` under `key`: a version 2 summary, or a version 1 one
    /// (module docs), which carries no record anchor.
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Self, StatementError> {
        let (domain, body_len) = match bytes.len() {
            Self::LEN => (SUMMARY_DOMAIN, BODY),
            V1_LEN => (SUMMARY_DOMAIN_V1, SITE_BODY),
            got => {
                return Err(StatementError::Length {
                    what: "ledger summary",
                    expected: Self::LEN,
                    got,
                });
            }
        };
        let (body, sig) = bytes.split_at(body_len);
        let sig = Signature::from_slice(sig).map_err(|_| StatementError::Signature("summary"))?;
        key.verify_strict(&[domain, body].concat(), &sig)
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
        if !valid_epsilon(epsilon) {
            return Err(StatementError::Epsilon);
        }
        let record = if body_len == BODY {
            decode_record(&body[SITE_BODY..])?
        } else {
            None
        };
        Ok(Self {
            consortium_digest: digest,
            round: u64_at(32),
            site: u16::from_be_bytes([body[40], body[41]]),
            entries: u64_at(42),
            head,
            epsilon,
            record,
        })
    }
}

/// Strict decoding of the record part: "none" is the tag 0 followed by zeros only, an anchor
/// is the tag 1 with a valid ε; any other byte pattern is refused, so no two encodings mean
/// the same summary.
fn decode_record(r: &[u8]) -> Result<Option<RecordAnchor>, StatementError> {
    if r.len() != RECORD_BODY {
        return Err(StatementError::Record("wrong length"));
    }
    let arr32 = |i: usize| {
        let mut a = [0u8; 32];
        a.copy_from_slice(&r[i..i + 32]);
        a
    };
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&r[i..i + 8]);
        u64::from_be_bytes(a)
    };
    match r[0] {
        RECORD_NONE if r[1..].iter().all(|&b| b == 0) => Ok(None),
        RECORD_NONE => Err(StatementError::Record("\"none\" with non-zero fields")),
        RECORD_SOME => {
            let epsilon = f64::from_bits(u64_at(105));
            if !valid_epsilon(epsilon) {
                return Err(StatementError::Record(
                    "epsilon is not a non-negative number",
                ));
            }
            // A record ledger always holds its genesis entry.
            let entries = u64_at(65);
            if entries == 0 {
                return Err(StatementError::Record("an anchor of no entries"));
            }
            Ok(Some(RecordAnchor {
                dataset: arr32(1),
                ledger_id: arr32(33),
                entries,
                head: arr32(73),
                epsilon,
            }))
        }
        _ => Err(StatementError::Record("unknown tag")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn summary(record: Option<RecordAnchor>) -> LedgerSummary {
        LedgerSummary {
            consortium_digest: [3; 32],
            round: 9,
            site: 4,
            entries: 12,
            head: [5; 32],
            epsilon: 1.5,
            record,
        }
    }

    fn anchor() -> RecordAnchor {
        RecordAnchor {
            dataset: [7; 32],
            ledger_id: [8; 32],
            entries: 3,
            head: [9; 32],
            epsilon: 0.75,
        }
    }

    /// Signs raw body bytes the way `sign` does, so a test can forge a well-signed but
    /// malformed body: decoding must still refuse it.
    fn sign_body(body: &[u8], key: &SigningKey) -> Vec<u8> {
        let sig = key.sign(&[SUMMARY_DOMAIN, body].concat());
        [body, &sig.to_bytes()].concat()
    }

    #[test]
    fn record_anchor_and_none_round_trip() {
        let key = SigningKey::from_bytes(&[1; 32]);
        for s in [
            summary(None),
            summary(Some(anchor())),
            summary(Some(RecordAnchor {
                epsilon: f64::INFINITY,
                ..anchor()
            })),
        ] {
            let b = s.sign(&key);
            assert_eq!(b.len(), LedgerSummary::LEN);
            assert_eq!(LedgerSummary::verify(&b, &key.verifying_key()).unwrap(), s);
        }
        // A signer holding −0.0 writes the one encoding of zero, which verifies as 0.0.
        let zero = summary(Some(RecordAnchor {
            epsilon: -0.0,
            ..anchor()
        }));
        let b = zero.sign(&key);
        let back = LedgerSummary::verify(&b, &key.verifying_key()).unwrap();
        assert!(back.record.unwrap().epsilon.is_sign_positive());
        assert_eq!(
            b,
            summary(Some(RecordAnchor {
                epsilon: 0.0,
                ..anchor()
            }))
            .sign(&key)
        );
    }

    /// The attacker's best move against a published record anchor: alter any byte of the
    /// record part (fewer entries, an older head, another ledger id, a smaller ε, or "none"
    /// in place of the anchor) and keep the signature. Every such change is refused.
    #[test]
    fn altered_record_fields_do_not_verify() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let b = summary(Some(anchor())).sign(&key);
        for i in SITE_BODY..BODY {
            let mut t = b.clone();
            t[i] ^= 1;
            assert!(
                LedgerSummary::verify(&t, &key.verifying_key()).is_err(),
                "byte {i}"
            );
        }
        let none = summary(None).sign(&key);
        let mut spliced = b;
        spliced[SITE_BODY..BODY].copy_from_slice(&none[SITE_BODY..BODY]);
        assert!(LedgerSummary::verify(&spliced, &key.verifying_key()).is_err());
    }

    /// A v1 summary (the site-level body under the v1 domain) verifies as a summary without
    /// a record anchor, so an aggregator upgraded from v1 keeps serving the anchors it holds;
    /// every mix of the two versions is refused: a v2 body under the v1 domain, a v1 body
    /// under the v2 domain, a v2 summary cut to v1's length, a v1 summary padded to v2's.
    #[test]
    fn v1_summaries_read_as_record_none_and_mixed_versions_are_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let vk = key.verifying_key();
        let site = summary(Some(anchor()));
        let v2 = site.sign(&key);
        let site_body = &v2[..SITE_BODY];
        let v1 = [
            site_body,
            &key.sign(&[SUMMARY_DOMAIN_V1, site_body].concat())
                .to_bytes(),
        ]
        .concat();
        assert_eq!(v1.len(), V1_LEN);
        let read = LedgerSummary::verify(&v1, &vk).unwrap();
        assert_eq!(
            read,
            LedgerSummary {
                record: None,
                ..site
            }
        );
        let body = &v2[..BODY];
        let v2_body_v1_domain = [
            body,
            &key.sign(&[SUMMARY_DOMAIN_V1, body].concat()).to_bytes(),
        ]
        .concat();
        let v1_body_v2_domain = [
            site_body,
            &key.sign(&[SUMMARY_DOMAIN, site_body].concat()).to_bytes(),
        ]
        .concat();
        let mut padded = v1.clone();
        padded.resize(LedgerSummary::LEN, 0);
        for bad in [
            v2_body_v1_domain,
            v1_body_v2_domain,
            v2[..V1_LEN].to_vec(),
            padded,
        ] {
            assert!(LedgerSummary::verify(&bad, &vk).is_err());
        }
        assert!(matches!(
            LedgerSummary::verify(&v2[..V1_LEN - 1], &vk),
            Err(StatementError::Length { got, .. }) if got == V1_LEN - 1
        ));
    }

    /// Signed by the site's own key yet malformed: "none" with stray bytes, an unknown tag,
    /// a negative (−0.0 included) or NaN record ε, an anchor of zero entries. Strict decoding refuses each with a record error.
    #[test]
    fn well_signed_malformed_record_parts_are_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let vk = key.verifying_key();
        let none = summary(None).sign(&key)[..BODY].to_vec();
        let some = summary(Some(anchor())).sign(&key)[..BODY].to_vec();
        let mut stray = none;
        stray[BODY - 1] = 1;
        let mut tag = some.clone();
        tag[SITE_BODY] = 2;
        let mut negative = some.clone();
        negative[BODY - 8..].copy_from_slice(&(-1.0f64).to_bits().to_be_bytes());
        let mut empty = some.clone();
        empty[SITE_BODY + 65..SITE_BODY + 73].copy_from_slice(&0u64.to_be_bytes());
        let mut negative_zero = some.clone();
        negative_zero[BODY - 8..].copy_from_slice(&(-0.0f64).to_bits().to_be_bytes());
        let mut nan = some;
        nan[BODY - 8..].copy_from_slice(&f64::NAN.to_bits().to_be_bytes());
        for body in [stray, tag, negative, negative_zero, empty, nan] {
            assert!(matches!(
                LedgerSummary::verify(&sign_body(&body, &key), &vk),
                Err(StatementError::Record(_))
            ));
        }
    }
}
