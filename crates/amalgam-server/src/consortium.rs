//! What the server needs from the verified consortium manifest, behind a small trait so that
//! the aggregator can run from `amalgam-consortium`'s `VerifiedManifest` (an adapter) or from
//! a fixture in tests. Round parameters always come from here, never from a request.

use amalgam_proto::{Manifest, RoundParams, SiteId};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// A member's role on the API, learned from its TLS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    /// A site, by its protocol index.
    Site(SiteId),
    /// A decryptor (no masking route is open to it).
    Decryptor,
}

/// Per-phase deadline bounds of the manifest, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineBounds {
    /// Shortest allowed phase.
    pub min_s: u64,
    /// Longest allowed phase.
    pub max_s: u64,
}

/// The verified consortium the server runs under.
pub trait ConsortiumView: Send + Sync + 'static {
    /// SHA-256 consortium digest of the verified manifest.
    fn consortium_digest(&self) -> [u8; 32];
    /// Manifest epoch.
    fn epoch(&self) -> u64;
    /// The protocol manifest (sites' identity keys in index order).
    fn proto_manifest(&self) -> Manifest;
    /// Round `round`'s parameters, from the manifest.
    fn round_params(&self, round: u64) -> Result<RoundParams, String>;
    /// The protocol context digest binding manifest and model (spec `consortium.md`).
    fn context_digest(&self, model_digest: &[u8; 32]) -> [u8; 32];
    /// The role of the member with raw Ed25519 key `key`, if it is one.
    fn role_of(&self, key: &[u8; 32]) -> Option<MemberRole>;
    /// Every member key the TLS verifier accepts (sites and decryptors).
    fn member_keys(&self) -> Vec<[u8; 32]>;
    /// Phase deadline bounds.
    fn deadline_bounds(&self) -> DeadlineBounds;
    /// The verified manifest itself, where the view is one (committee key certificates are
    /// checked against it); `None` for a consortium given by its parts.
    fn verified(&self) -> Option<&amalgam_consortium::VerifiedManifest> {
        None
    }
}

/// A consortium given directly by its parts: for tests and for deployments whose manifest
/// adapter builds one. The context digest is SHA-256("amalgam/v1/context" ‖ consortium
/// digest ‖ model digest), the construction `amalgam-consortium` specifies.
#[derive(Debug, Clone)]
pub struct StaticConsortium {
    /// Consortium digest.
    pub digest: [u8; 32],
    /// Epoch.
    pub epoch: u64,
    /// Site keys, index order.
    pub manifest: Manifest,
    /// The parameters of every round.
    pub params: RoundParams,
    /// Decryptor keys.
    pub decryptors: Vec<VerifyingKey>,
    /// Deadline bounds.
    pub bounds: DeadlineBounds,
}

impl ConsortiumView for StaticConsortium {
    fn consortium_digest(&self) -> [u8; 32] {
        self.digest
    }
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn proto_manifest(&self) -> Manifest {
        self.manifest.clone()
    }
    fn round_params(&self, _round: u64) -> Result<RoundParams, String> {
        Ok(self.params)
    }
    fn context_digest(&self, model_digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"amalgam/v1/context");
        h.update(self.digest);
        h.update(model_digest);
        h.finalize().into()
    }
    fn role_of(&self, key: &[u8; 32]) -> Option<MemberRole> {
        let vk = VerifyingKey::from_bytes(key).ok()?;
        if let Some(id) = self.manifest.index_of(&vk) {
            return Some(MemberRole::Site(id));
        }
        self.decryptors
            .iter()
            .any(|d| d.as_bytes() == key)
            .then_some(MemberRole::Decryptor)
    }
    fn member_keys(&self) -> Vec<[u8; 32]> {
        self.manifest
            .keys()
            .iter()
            .chain(&self.decryptors)
            .map(|k| k.to_bytes())
            .collect()
    }
    fn deadline_bounds(&self) -> DeadlineBounds {
        self.bounds
    }
}
