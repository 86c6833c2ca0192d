//! A manifest with one signature slot per member, and the verified manifest that only exists
//! once every member listed has signed its exact canonical bytes (spec consortium.md §4).
//!
//! File format (`consortium.signed`): the magic line `AMALGAM SIGNED MANIFEST v1\n`, a u32
//! big-endian length and that many canonical bytes, a u32 slot count equal to the member
//! count, then per member in manifest order a byte 0 (not signed yet) or 1 followed by a
//! 64-byte Ed25519 signature over `"amalgam/consortium/manifest/v1" ‖ canonical bytes`.

use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::canonical::{self, MAX_BODY_LEN, MAX_MEMBERS};
use crate::error::ManifestError;
use crate::fsutil;
use crate::highwater::EpochHighWater;
use crate::key::IdentityKey;
use crate::labels;
use crate::model::{ManifestBody, Member};
use crate::validate::{self, Derived};
use crate::verified::VerifiedManifest;

const MAGIC: &[u8] = b"AMALGAM SIGNED MANIFEST v1\n";
/// Largest signed-manifest file.
pub const MAX_FILE_LEN: usize = MAGIC.len() + 8 + MAX_BODY_LEN + MAX_MEMBERS * 65;

/// A manifest and its (possibly incomplete) signatures.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedManifest {
    bytes: Vec<u8>,
    body: ManifestBody,
    signatures: Vec<Option<[u8; 64]>>,
}

/// `consortium_digest` of canonical bytes: SHA-256("amalgam/consortium/digest/v1" ‖ bytes).
pub fn digest_of(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::DIGEST);
    h.update(bytes);
    h.finalize().into()
}

/// The message every member signs.
pub fn signing_message(bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(labels::MANIFEST_SIG.len() + bytes.len());
    m.extend_from_slice(labels::MANIFEST_SIG);
    m.extend_from_slice(bytes);
    m
}

impl SignedManifest {
    /// An unsigned manifest from a draft body: normalised to canonical order and validated
    /// (so nobody is asked to sign an unusable manifest).
    pub fn from_body(mut body: ManifestBody) -> Result<Self, ManifestError> {
        body.normalise();
        validate::validate(&body)?;
        let bytes = canonical::encode(&body);
        let signatures = vec![None; body.members.len()];
        Ok(Self {
            bytes,
            body,
            signatures,
        })
    }

    /// The exact bytes members sign.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The decoded manifest (not yet verified).
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// `consortium_digest` of these bytes (the same whether or not every member has signed).
    pub fn digest(&self) -> [u8; 32] {
        digest_of(&self.bytes)
    }

    /// Members whose signature is still missing.
    pub fn unsigned_members(&self) -> Vec<&Member> {
        self.body
            .members
            .iter()
            .zip(&self.signatures)
            .filter(|(_, s)| s.is_none())
            .map(|(m, _)| m)
            .collect()
    }

    /// Adds `key`'s signature, which must be a member's and must verify.
    pub fn add_signature(
        &mut self,
        key: &VerifyingKey,
        signature: &Signature,
    ) -> Result<(), ManifestError> {
        let index = self
            .body
            .members
            .iter()
            .position(|m| &m.key == key)
            .ok_or_else(|| ManifestError::NotAMember {
                fingerprint: crate::key::fingerprint(key),
            })?;
        let member = &self.body.members[index];
        key.verify_strict(&signing_message(&self.bytes), signature)
            .map_err(|_| ManifestError::BadSignature {
                name: member.name.clone(),
                organisation: member.organisation.clone(),
            })?;
        if let Some(slot) = self.signatures.get_mut(index) {
            *slot = Some(signature.to_bytes());
        }
        Ok(())
    }

    /// Signs as `key` (a member). Callers check the fingerprints first (the CLI's `sign`).
    pub fn sign_as(&mut self, key: &IdentityKey) -> Result<(), ManifestError> {
        let sig = key.sign(&signing_message(&self.bytes));
        self.add_signature(&key.verifying_key(), &sig)
    }

    /// Merges the signatures of `other`, which must carry the identical canonical bytes.
    pub fn merge(&mut self, other: &SignedManifest) -> Result<(), ManifestError> {
        if other.bytes != self.bytes {
            return Err(ManifestError::invalid(
                "cannot merge signatures of a different manifest",
            ));
        }
        for (mine, theirs) in self.signatures.iter_mut().zip(&other.signatures) {
            if mine.is_none() {
                *mine = *theirs;
            }
        }
        Ok(())
    }

    /// Verifies the manifest on its own: strict decoding, every rule, and every member's
    /// signature over the exact bytes (no quorum: one missing or bad signature refuses it).
    /// This says nothing about whether a given party should use it: a party calls
    /// [`SignedManifest::verify_for`] with its own key and its high-water mark.
    pub fn verify(&self) -> Result<VerifiedManifest, ManifestError> {
        self.verify_inner(None)
    }

    /// Verifies as the party whose own key is `me`: everything [`SignedManifest::verify`]
    /// checks, that the manifest lists `me` (so this party signed it), and — given the highest
    /// epoch this party accepted — the epoch chain and key rotations.
    pub fn verify_for(
        &self,
        me: &VerifyingKey,
        high_water: Option<&EpochHighWater>,
    ) -> Result<VerifiedManifest, ManifestError> {
        self.verify_inner(Some((me, high_water)))
    }

    fn verify_inner(
        &self,
        party: Option<(&VerifyingKey, Option<&EpochHighWater>)>,
    ) -> Result<VerifiedManifest, ManifestError> {
        let body = canonical::decode(&self.bytes)?;
        let derived: Derived = validate::validate(&body)?;
        if self.signatures.len() != body.members.len() {
            return Err(ManifestError::SignatureCount {
                signatures: self.signatures.len(),
                members: body.members.len(),
            });
        }
        let message = signing_message(&self.bytes);
        for (m, slot) in body.members.iter().zip(&self.signatures) {
            let sig = slot.ok_or_else(|| ManifestError::MissingSignature {
                name: m.name.clone(),
                organisation: m.organisation.clone(),
            })?;
            m.key
                .verify_strict(&message, &Signature::from_bytes(&sig))
                .map_err(|_| ManifestError::BadSignature {
                    name: m.name.clone(),
                    organisation: m.organisation.clone(),
                })?;
        }
        let digest = digest_of(&self.bytes);
        if let Some((me, high_water)) = party {
            crate::highwater::require_listed(&body, me)?;
            if let Some(hw) = high_water {
                hw.check_successor(&body, &digest, me)?;
            }
        }
        VerifiedManifest::new(body, self.bytes.clone(), digest, derived)
    }

    /// The file encoding (see the module doc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(MAGIC.len() + 8 + self.bytes.len() + 65 * self.signatures.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(&(self.signatures.len() as u32).to_be_bytes());
        for s in &self.signatures {
            match s {
                Some(sig) => {
                    out.push(1);
                    out.extend_from_slice(sig);
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Strict decoding of the file encoding. Signatures are checked by [`SignedManifest::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let malformed = |reason: &str| ManifestError::Malformed {
            what: "signed manifest file",
            reason: reason.to_string(),
        };
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| malformed("missing the AMALGAM SIGNED MANIFEST v1 line"))?;
        let (len, rest) = split_u32(rest).ok_or_else(|| malformed("truncated length"))?;
        if len > MAX_BODY_LEN || rest.len() < len {
            return Err(malformed("manifest length out of bounds"));
        }
        let (body_bytes, rest) = rest.split_at(len);
        let body = canonical::decode(body_bytes)?;
        let (count, mut rest) = split_u32(rest).ok_or_else(|| malformed("truncated slot count"))?;
        if count != body.members.len() {
            return Err(ManifestError::SignatureCount {
                signatures: count,
                members: body.members.len(),
            });
        }
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            match rest.split_first() {
                Some((0, r)) => {
                    signatures.push(None);
                    rest = r;
                }
                Some((1, r)) if r.len() >= 64 => {
                    let (sig, r) = r.split_at(64);
                    let mut s = [0u8; 64];
                    s.copy_from_slice(sig);
                    signatures.push(Some(s));
                    rest = r;
                }
                _ => return Err(malformed("bad or truncated signature slot")),
            }
        }
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the signatures"));
        }
        Ok(Self {
            bytes: body_bytes.to_vec(),
            body,
            signatures,
        })
    }

    /// Reads a signed-manifest file (bounded size, strict).
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        Self::from_bytes(&fsutil::read_bounded(path, MAX_FILE_LEN)?)
    }

    /// Writes the file atomically (temp file, fsync, rename, fsync directory).
    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        fsutil::write_atomic(path, &self.to_bytes())
    }
}

fn split_u32(b: &[u8]) -> Option<(usize, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head) as usize, rest))
}
