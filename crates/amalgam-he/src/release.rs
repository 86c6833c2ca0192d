//! A member's release: for every piece it holds, the cohort sum of that piece's expansion
//! (spec §5.5). Signed, bound to the round context and the statement digest, and re-sendable for
//! the one statement the member signed; holders of the same piece must agree, so a lying member
//! is exposed by the others.

use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::kahe::KeyVector;
use crate::params::N;
use crate::round::RoundSetup;
use crate::wire::{MSG_HE_PIECE_SUMS, put_words, read_field_words};

/// Per-piece cohort sums from one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceSumRelease {
    /// The releasing member.
    pub member: u8,
    /// The statement the sums are for.
    pub statement_digest: [u8; 32],
    /// (piece id, cohort sum in the NTT domain), ascending piece ids, every piece it holds.
    pub sums: Vec<(u16, KeyVector)>,
    /// Member signature.
    pub signature: [u8; 64],
}

fn message(
    round_context: &[u8; 32],
    member: u8,
    digest: &[u8; 32],
    sums: &[(u16, KeyVector)],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam/v2/he-piece-sums");
    h.update(round_context);
    h.update([member]);
    h.update(digest);
    for (p, v) in sums {
        h.update(p.to_be_bytes());
        for w in v.values() {
            h.update(w.to_be_bytes());
        }
    }
    h.finalize().into()
}

impl PieceSumRelease {
    /// Signs the sums.
    pub(crate) fn sign(
        key: &SigningKey,
        round_context: &[u8; 32],
        member: usize,
        statement_digest: [u8; 32],
        sums: Vec<(u16, KeyVector)>,
    ) -> Self {
        let m = message(round_context, member as u8, &statement_digest, &sums);
        Self {
            member: member as u8,
            statement_digest,
            signature: key.sign(&m).to_bytes(),
            sums,
        }
    }

    /// Whether `key` signed these sums.
    pub fn verifies(&self, key: &VerifyingKey, round_context: &[u8; 32]) -> bool {
        let m = message(
            round_context,
            self.member,
            &self.statement_digest,
            &self.sums,
        );
        key.verify_strict(&m, &Signature::from_bytes(&self.signature))
            .is_ok()
    }
}

impl Encode for PieceSumRelease {
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_PIECE_SUMS);
        w.u8(self.member);
        w.bytes(&self.statement_digest);
        w.count(self.sums.len());
        for (p, v) in &self.sums {
            w.u16(*p);
            put_words(w, v.values());
        }
        w.bytes(&self.signature);
    }
}

impl Decode for PieceSumRelease {
    type Context = RoundSetup;
    const NAME: &'static str = "PieceSumRelease";
    fn decode(r: &mut Reader<'_>, setup: &RoundSetup) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_PIECE_SUMS)?;
        let member = r.u8("member")?;
        let statement_digest = r.array("statement_digest")?;
        let n = r.count("sums", 1, setup.committee().pieces())?;
        let mut sums = Vec::with_capacity(n);
        for _ in 0..n {
            let p = r.u16("piece")?;
            let v = read_field_words(r, N, "piece_sum")?;
            let v = KeyVector::from_values(v).map_err(|_| DecodeError::InvalidValue {
                field: "piece_sum",
                reason: "not a key vector",
            })?;
            sums.push((p, v));
        }
        Ok(Self {
            member,
            statement_digest,
            sums,
            signature: r.array("signature")?,
        })
    }
}
