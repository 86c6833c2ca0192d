//! Messages of an HE round and their canonical, strictly decoded layouts in the protocol
//! crate's codec (`protocol-spec/he-fallback.md` §3).
//!
//! A site's contribution is signed with its long-term Ed25519 identity key over a domain-separated
//! statement `(round, site, key fingerprint, SHA-256 of the masks, SHA-256 of the bodies)`, so a
//! contribution cannot be replayed into another round, attributed to another site or redirected
//! to another decryption key, and the decryptor can check a contribution's signature from its
//! masks alone, without ever receiving its bodies (which carry the plaintext).

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{DecodeError, SiteId};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::ciphertext::{CiphertextSum, EncryptedVector};
use crate::error::HeError;
use crate::keys::KeyFingerprint;
use crate::params::{HeParams, LWE_DIMENSION};
use crate::wire::{
    MSG_HE_AGGREGATE_CLAIM, MSG_HE_CONTRIBUTION, MSG_HE_MASK_ATTESTATION, put_words, read_words,
};

/// Domain-separation label of the statement a site signs.
pub const CONTRIBUTION_LABEL: &[u8] = b"amalgam/v1/he/contribution";

/// SHA-256 of `u64` words in big-endian order (the codec's byte order).
pub fn words_digest(words: &[u64]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = [0u8; 8 * 256];
    for chunk in words.chunks(256) {
        for (b, w) in buf.chunks_exact_mut(8).zip(chunk) {
            b.copy_from_slice(&w.to_be_bytes());
        }
        h.update(&buf[..chunk.len() * 8]);
    }
    h.finalize().into()
}

/// The signed statement: label, round (u64), site (u16), key fingerprint, mask digest, body
/// digest.
pub fn contribution_statement(
    round: u64,
    site: SiteId,
    key: &KeyFingerprint,
    masks_digest: &[u8; 32],
    bodies_digest: &[u8; 32],
) -> Vec<u8> {
    let mut w = Writer::with_capacity(CONTRIBUTION_LABEL.len() + 8 + 2 + 96);
    w.bytes(CONTRIBUTION_LABEL);
    w.u64(round);
    w.u16(site.0);
    w.bytes(&key.0);
    w.bytes(masks_digest);
    w.bytes(bodies_digest);
    w.into_bytes()
}

fn verify(
    identity: &VerifyingKey,
    statement: &[u8],
    signature: &Signature,
    site: SiteId,
) -> Result<(), HeError> {
    identity
        .verify_strict(statement, signature)
        .map_err(|_| HeError::BadSignature { site: site.0 })
}

/// One site's encrypted update for one round, signed by the site (site → aggregator).
#[derive(Clone, Debug, PartialEq)]
pub struct SignedContribution {
    /// Round the contribution belongs to.
    pub round: u64,
    /// Contributing site.
    pub site: SiteId,
    /// Fingerprint of the public key the vector is encrypted under.
    pub key: KeyFingerprint,
    /// The encrypted vector.
    pub ciphertext: EncryptedVector,
    /// Ed25519 signature over [`Self::statement`].
    pub signature: Signature,
}

impl SignedContribution {
    /// Signs a contribution with the site's identity key.
    pub fn sign(
        round: u64,
        site: SiteId,
        key: KeyFingerprint,
        ciphertext: EncryptedVector,
        identity: &SigningKey,
    ) -> Self {
        let mut c = Self {
            round,
            site,
            key,
            ciphertext,
            signature: Signature::from_bytes(&[0; 64]),
        };
        c.signature = identity.sign(&c.statement());
        c
    }

    /// The statement this contribution's signature must cover.
    pub fn statement(&self) -> Vec<u8> {
        contribution_statement(
            self.round,
            self.site,
            &self.key,
            &words_digest(self.ciphertext.masks()),
            &words_digest(self.ciphertext.bodies()),
        )
    }

    /// Checks the signature with `verify_strict` (no malleable or small-order encodings).
    pub fn verify(&self, identity: &VerifyingKey) -> Result<(), HeError> {
        verify(identity, &self.statement(), &self.signature, self.site)
    }

    /// What the aggregator forwards to the decryptor for this contribution: everything but the
    /// bodies, which are replaced by their digest.
    pub fn mask_attestation(&self) -> MaskAttestation {
        MaskAttestation {
            round: self.round,
            site: self.site,
            key: self.key,
            masks: self.ciphertext.masks().to_vec(),
            bodies_digest: words_digest(self.ciphertext.bodies()),
            signature: self.signature,
        }
    }
}

impl Encode for SignedContribution {
    /// Header (type 0x40), round (u64), site (u16), key (32), ciphertext, signature (64).
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_CONTRIBUTION);
        w.u64(self.round);
        w.u16(self.site.0);
        w.bytes(&self.key.0);
        self.ciphertext.encode(w);
        w.bytes(&self.signature.to_bytes());
    }
}

impl Decode for SignedContribution {
    type Context = HeParams;
    const NAME: &'static str = "HeContribution";

    /// Strict decoding against the round's parameters (the signature is checked separately,
    /// against the manifest).
    fn decode(r: &mut Reader<'_>, params: &HeParams) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_CONTRIBUTION)?;
        let round = r.u64("contribution.round")?;
        let site = SiteId(r.u16("contribution.site")?);
        let key = KeyFingerprint(r.array("contribution.key")?);
        let ciphertext = EncryptedVector::decode(r, params)?;
        let signature = Signature::from_bytes(&r.array("contribution.signature")?);
        Ok(Self {
            round,
            site,
            key,
            ciphertext,
            signature,
        })
    }
}

/// A contribution without its bodies: the masks, the digest of the bodies and the site's
/// signature (aggregator → decryptor). Lets the decryptor check who contributed and recompute
/// the mask sum without ever holding a single site's bodies.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskAttestation {
    /// Round of the contribution.
    pub round: u64,
    /// Contributing site.
    pub site: SiteId,
    /// Key the contribution is encrypted under.
    pub key: KeyFingerprint,
    /// The contribution's `L·2048` mask words.
    pub masks: Vec<u64>,
    /// SHA-256 of the contribution's body words.
    pub bodies_digest: [u8; 32],
    /// The site's signature over the contribution statement.
    pub signature: Signature,
}

impl MaskAttestation {
    /// Checks the site's signature with `verify_strict`, hashing the masks here.
    pub fn verify(&self, identity: &VerifyingKey) -> Result<(), HeError> {
        let statement = contribution_statement(
            self.round,
            self.site,
            &self.key,
            &words_digest(&self.masks),
            &self.bodies_digest,
        );
        verify(identity, &statement, &self.signature, self.site)
    }
}

impl Encode for MaskAttestation {
    /// Header (type 0x41), round, site, key, masks (u64 each), bodies digest, signature.
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_MASK_ATTESTATION);
        w.u64(self.round);
        w.u16(self.site.0);
        w.bytes(&self.key.0);
        put_words(w, &self.masks);
        w.bytes(&self.bodies_digest);
        w.bytes(&self.signature.to_bytes());
    }
}

impl Decode for MaskAttestation {
    type Context = HeParams;
    const NAME: &'static str = "HeMaskAttestation";

    /// Strict decoding; the mask count follows from the round's vector length.
    fn decode(r: &mut Reader<'_>, params: &HeParams) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_MASK_ATTESTATION)?;
        let round = r.u64("attestation.round")?;
        let site = SiteId(r.u16("attestation.site")?);
        let key = KeyFingerprint(r.array("attestation.key")?);
        let masks = read_words(r, params.list_count() * LWE_DIMENSION, "attestation.masks")?;
        let bodies_digest = r.array("attestation.bodies_digest")?;
        let signature = Signature::from_bytes(&r.array("attestation.signature")?);
        Ok(Self {
            round,
            site,
            key,
            masks,
            bodies_digest,
            signature,
        })
    }
}

/// What the aggregator hands the decryptor: the sum it computed and who it claims is in it.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateClaim {
    /// Round of the aggregate.
    pub round: u64,
    /// Key the contributions were encrypted under.
    pub key: KeyFingerprint,
    /// Contributing sites, strictly increasing.
    pub contributors: Vec<SiteId>,
    /// The wrapping sum of their ciphertexts.
    pub sum: CiphertextSum,
}

impl AggregateClaim {
    /// SHA-256 of the aggregate's canonical sum encoding, recorded in the audit log.
    pub fn sum_digest(&self) -> [u8; 32] {
        Sha256::digest(self.sum.to_bytes()).into()
    }
}

impl Encode for AggregateClaim {
    /// Header (type 0x42), round, key, contributor count (u32) and ids (u16 each, strictly
    /// increasing), ciphertext sum.
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_AGGREGATE_CLAIM);
        w.u64(self.round);
        w.bytes(&self.key.0);
        w.count(self.contributors.len());
        for s in &self.contributors {
            w.u16(s.0);
        }
        self.sum.encode(w);
    }
}

impl Decode for AggregateClaim {
    type Context = HeParams;
    const NAME: &'static str = "HeAggregateClaim";

    /// Strict decoding: the contributor list is bounded by `K_max`, strictly increasing (hence
    /// distinct) and as long as the sum's site count.
    fn decode(r: &mut Reader<'_>, params: &HeParams) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_AGGREGATE_CLAIM)?;
        let round = r.u64("claim.round")?;
        let key = KeyFingerprint(r.array("claim.key")?);
        let count = r.count("claim.contributors", 1, params.max_sites() as usize)?;
        let mut contributors: Vec<SiteId> = Vec::with_capacity(count);
        for _ in 0..count {
            let site = SiteId(r.u16("claim.contributors")?);
            if contributors.last().is_some_and(|prev| *prev >= site) {
                return Err(DecodeError::InvalidValue {
                    field: "claim.contributors",
                    reason: "not strictly increasing",
                });
            }
            contributors.push(site);
        }
        let sum = CiphertextSum::decode(r, params)?;
        if sum.sites() as usize != count {
            return Err(DecodeError::InvalidValue {
                field: "sum.sites",
                reason: "differs from the number of contributors",
            });
        }
        Ok(Self {
            round,
            key,
            contributors,
            sum,
        })
    }
}
