//! Cohort statements and the committee's signatures on them (spec §5.4).
//!
//! A statement names the cohort of a round: the round context, the sites in ascending order and
//! the digest of each one's signed upload. Members sign the statement digest; a member signs at
//! most one statement per round, and releases only after Q distinct members signed the identical
//! statement. With 2Q − c > c_d any two quorums share an honest member, so two different
//! cohorts (S and S ∖ {v}, whose key sums differ by k_v) can never both be released.

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{DecodeError, SiteId};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::params::MAX_SITES;
use crate::wire::{MSG_HE_STATEMENT, MSG_HE_STATEMENT_SIGNATURE};

/// The cohort of one round: (site, upload digest), sites strictly ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CohortStatement {
    /// Cohort members and their upload digests.
    pub members: Vec<(SiteId, [u8; 32])>,
}

impl CohortStatement {
    /// The digest members sign: `H(label ‖ round context ‖ encoding)`.
    pub fn digest(&self, round_context: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"amalgam/v2/he-cohort");
        h.update(round_context);
        h.update(self.to_bytes());
        h.finalize().into()
    }

    /// The cohort's sites.
    pub fn sites(&self) -> impl Iterator<Item = SiteId> + '_ {
        self.members.iter().map(|(s, _)| *s)
    }
}

impl Encode for CohortStatement {
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_STATEMENT);
        w.count(self.members.len());
        for (s, d) in &self.members {
            w.u16(s.0);
            w.bytes(d);
        }
    }
}

impl Decode for CohortStatement {
    type Context = ();
    const NAME: &'static str = "CohortStatement";
    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_STATEMENT)?;
        let n = r.count("members", 1, MAX_SITES as usize)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let site = SiteId(r.u16("site")?);
            let digest = r.array("upload_digest")?;
            if members
                .last()
                .is_some_and(|(prev, _): &(SiteId, _)| prev.0 >= site.0)
            {
                return Err(DecodeError::InvalidValue {
                    field: "site",
                    reason: "sites must be strictly ascending",
                });
            }
            members.push((site, digest));
        }
        Ok(Self { members })
    }
}

/// One member's signature on a statement digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementSignature {
    /// The signing member's index.
    pub member: u8,
    /// Ed25519 signature over `label ‖ statement digest`.
    pub signature: [u8; 64],
}

fn statement_message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = b"amalgam/v2/he-cohort-signature".to_vec();
    m.extend_from_slice(digest);
    m
}

impl StatementSignature {
    /// Signs `digest` as member `member`.
    pub(crate) fn sign(key: &SigningKey, member: usize, digest: &[u8; 32]) -> Self {
        Self {
            member: member as u8,
            signature: key.sign(&statement_message(digest)).to_bytes(),
        }
    }

    /// Whether this is `key`'s valid signature on `digest`.
    pub fn verifies(&self, key: &VerifyingKey, digest: &[u8; 32]) -> bool {
        key.verify_strict(
            &statement_message(digest),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

impl Encode for StatementSignature {
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_STATEMENT_SIGNATURE);
        w.u8(self.member);
        w.bytes(&self.signature);
    }
}

impl Decode for StatementSignature {
    type Context = ();
    const NAME: &'static str = "StatementSignature";
    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_STATEMENT_SIGNATURE)?;
        Ok(Self {
            member: r.u8("member")?,
            signature: r.array("signature")?,
        })
    }
}
