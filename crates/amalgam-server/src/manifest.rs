//! The server under a verified co-signed manifest (`amalgam-consortium`): round parameters,
//! context digest, member keys and deadline bounds all come from it.

use amalgam_consortium::VerifiedManifest;
use amalgam_consortium::model::Role;
use amalgam_proto::{Manifest, RoundParams, SiteId};
use ed25519_dalek::VerifyingKey;

use crate::consortium::{ConsortiumView, DeadlineBounds, MemberRole};

impl ConsortiumView for VerifiedManifest {
    fn verified(&self) -> Option<&VerifiedManifest> {
        Some(self)
    }
    fn consortium_digest(&self) -> [u8; 32] {
        VerifiedManifest::consortium_digest(self)
    }
    fn epoch(&self) -> u64 {
        VerifiedManifest::epoch(self)
    }
    fn proto_manifest(&self) -> Manifest {
        VerifiedManifest::proto_manifest(self)
    }
    fn round_params(&self, round: u64) -> Result<RoundParams, String> {
        VerifiedManifest::round_params(self, round).map_err(|e| e.to_string())
    }
    fn context_digest(&self, model_digest: &[u8; 32]) -> [u8; 32] {
        VerifiedManifest::context_digest(self, model_digest)
    }
    fn role_of(&self, key: &[u8; 32]) -> Option<MemberRole> {
        let vk = VerifyingKey::from_bytes(key).ok()?;
        if let Some(i) = self.site_index(&vk) {
            return Some(MemberRole::Site(SiteId(i)));
        }
        self.member(&vk)
            .filter(|m| m.has(Role::Decryptor))
            .map(|_| MemberRole::Decryptor)
    }
    fn member_keys(&self) -> Vec<[u8; 32]> {
        self.members()
            .iter()
            .filter(|m| m.has(Role::Site) || m.has(Role::Decryptor))
            .map(|m| m.key.to_bytes())
            .collect()
    }
    fn deadline_bounds(&self) -> DeadlineBounds {
        let b = VerifiedManifest::deadline_bounds(self);
        DeadlineBounds {
            min_s: u64::from(b.min_secs),
            max_s: u64::from(b.max_secs),
        }
    }
}

impl crate::campaign::CampaignRules for VerifiedManifest {
    fn initial_digest(&self) -> [u8; 32] {
        self.campaign().initial_weights_digest
    }
    fn model_len(&self) -> usize {
        usize::try_from(self.campaign().parameter_count.get()).unwrap_or(usize::MAX)
    }
    fn rounds(&self) -> u64 {
        u64::from(self.campaign().training.rounds)
    }
    fn max_round(&self) -> u64 {
        VerifiedManifest::max_round(self)
    }
    fn next_model(
        &self,
        round: u64,
        model: &[f32],
        result: &amalgam_proto::AggregateOutput,
    ) -> Result<Vec<f32>, String> {
        use amalgam_consortium::global_model::encoding_params;
        let contributors: Vec<u16> = result.contributors.iter().map(|s| s.0).collect();
        self.aggregation_weights()
            .map_err(|e| e.to_string())?
            .step(
                encoding_params(self, round),
                model,
                &result.sum,
                &contributors,
                self.campaign().training.server_lr,
            )
            .map_err(|e| e.to_string())
    }
}
