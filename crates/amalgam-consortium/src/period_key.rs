//! A decryptor's key-period certificate (spec consortium.md §4.2, he-fallback.md §2): member
//! j's X25519 box key for period p, signed by j's identity key over (consortium digest, p, j,
//! valid rounds [p·P, (p+1)·P), key). Sites encrypt seeds only to a key whose period covers the
//! round, so a box secret serves at most P rounds and is then destroyed.
//!
//! Wire form (fixed 159 bytes, strict): `"AMPK" 0x01 ‖ consortium_digest[32] ‖ u64 period ‖
//! u16 member ‖ u64 first_round ‖ u64 end_round ‖ box_key[32] ‖ signature[64]`, integers
//! big-endian. The signature is amalgam-he's period-key certificate
//! ([`amalgam_he::MemberKeys::certify_period`]); the identity is the manifest's, never the
//! sender's word.

use amalgam_he::{MemberKeys, PeriodScope};
use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Reader, Writer};
use ed25519_dalek::VerifyingKey;

/// First bytes of an encoded certificate.
pub const MAGIC: &[u8] = b"AMPK\x01";
/// Exact encoded length.
pub const ENCODED_LEN: usize = 5 + 32 + 8 + 2 + 8 + 8 + 32 + 64;

/// One member's certified box key for one key period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodCertificate {
    /// The consortium it was issued for.
    pub consortium_digest: [u8; 32],
    /// Key period p.
    pub period: u64,
    /// Committee member index j.
    pub member: u16,
    /// First round id of the period, p·P.
    pub first_round: u64,
    /// First round id after it, (p+1)·P.
    pub end_round: u64,
    /// X25519 box public key.
    pub box_key: [u8; 32],
    /// The member identity's Ed25519 signature.
    pub signature: [u8; 64],
}

impl PeriodCertificate {
    /// The certificate carried by amalgam-he member keys (None for a bare, unscoped one).
    pub fn from_member_keys(keys: &MemberKeys) -> Option<Self> {
        let s = keys.scope?;
        Some(Self {
            consortium_digest: s.consortium_digest,
            period: keys.period,
            member: s.member,
            first_round: s.first_round,
            end_round: s.end_round,
            box_key: keys.box_key,
            signature: keys.certificate,
        })
    }

    /// The amalgam-he member keys this certificate claims for `identity` (not yet verified).
    pub fn member_keys(&self, identity: VerifyingKey) -> MemberKeys {
        MemberKeys {
            identity,
            period: self.period,
            box_key: self.box_key,
            certificate: self.signature,
            scope: Some(PeriodScope {
                consortium_digest: self.consortium_digest,
                member: self.member,
                first_round: self.first_round,
                end_round: self.end_round,
            }),
        }
    }

    /// Whether `identity` signed this certificate (strict Ed25519).
    pub fn verify(&self, identity: &VerifyingKey) -> bool {
        self.member_keys(*identity).verify()
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(ENCODED_LEN);
        w.bytes(MAGIC);
        w.bytes(&self.consortium_digest);
        w.u64(self.period);
        w.u16(self.member);
        w.u64(self.first_round);
        w.u64(self.end_round);
        w.bytes(&self.box_key);
        w.bytes(&self.signature);
        w.into_bytes()
    }

    /// Strict decoding: exact length, magic, no trailing bytes (the signature is checked
    /// against the manifest by [`crate::fallback::check_certificate`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != ENCODED_LEN {
            return Err(DecodeError::InvalidValue {
                field: "period certificate",
                reason: "wrong length",
            });
        }
        let mut r = Reader::new(bytes);
        if r.bytes(MAGIC.len(), "magic")? != MAGIC {
            return Err(DecodeError::InvalidValue {
                field: "magic",
                reason: "not a period certificate v1",
            });
        }
        let c = Self {
            consortium_digest: r.array("consortium_digest")?,
            period: r.u64("period")?,
            member: r.u16("member")?,
            first_round: r.u64("first_round")?,
            end_round: r.u64("end_round")?,
            box_key: r.array("box_key")?,
            signature: r.array("signature")?,
        };
        r.finish("period certificate")?;
        Ok(c)
    }
}
