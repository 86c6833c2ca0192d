//! A manifest every member signed: the only source of round parameters, identities and the
//! context digest that binds rounds, fallback statements and ledger charges to it.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::error::ManifestError;
use crate::labels;
use crate::model::*;
use crate::validate::Derived;

/// A verified manifest (built only by [`crate::SignedManifest::verify`]).
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    body: ManifestBody,
    bytes: Vec<u8>,
    digest: [u8; 32],
    derived: Derived,
    proto_manifest: amalgam_proto::Manifest,
    aggregator: usize,
}

impl VerifiedManifest {
    pub(crate) fn new(
        body: ManifestBody,
        bytes: Vec<u8>,
        digest: [u8; 32],
        derived: Derived,
    ) -> Result<Self, ManifestError> {
        let site_keys = body
            .members
            .iter()
            .filter(|m| m.has(Role::Site))
            .map(|m| m.key)
            .collect();
        let proto_manifest = amalgam_proto::Manifest::new(site_keys)?;
        proto_manifest.check(&derived.proto)?;
        let aggregator = body
            .members
            .iter()
            .position(|m| m.has(Role::Aggregator))
            .ok_or_else(|| ManifestError::invalid("no aggregator"))?;
        Ok(Self {
            body,
            bytes,
            digest,
            derived,
            proto_manifest,
            aggregator,
        })
    }

    /// SHA-256("amalgam/consortium/digest/v1" ‖ canonical bytes).
    pub fn consortium_digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The exact canonical bytes every member signed.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole manifest content.
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// The consortium identifier.
    pub fn consortium(&self) -> &str {
        &self.body.consortium
    }

    /// The epoch number.
    pub fn epoch(&self) -> u64 {
        self.body.epoch
    }

    /// The previous epoch's digest (None in epoch 1).
    pub fn prev_digest(&self) -> Option<[u8; 32]> {
        self.body.prev_digest
    }

    /// Every member, in canonical order.
    pub fn members(&self) -> &[Member] {
        &self.body.members
    }

    /// The member whose key is `key`.
    pub fn member(&self, key: &VerifyingKey) -> Option<&Member> {
        self.body.members.iter().find(|m| &m.key == key)
    }

    /// The aggregator (exactly one; its key is pinned here).
    pub fn aggregator(&self) -> &Member {
        &self.body.members[self.aggregator]
    }

    /// The sites in order: index i is amalgam-proto's `SiteId(i)`.
    pub fn sites(&self) -> Vec<&Member> {
        self.with_role(Role::Site)
    }

    /// The `SiteId` index of a site key.
    pub fn site_index(&self, key: &VerifyingKey) -> Option<u16> {
        self.proto_manifest.index_of(key).map(|id| id.0)
    }

    /// The decryptor committee, in order (its index is the committee member index).
    pub fn decryptors(&self) -> Vec<&Member> {
        self.with_role(Role::Decryptor)
    }

    fn with_role(&self, role: Role) -> Vec<&Member> {
        self.body.members.iter().filter(|m| m.has(role)).collect()
    }

    /// amalgam-proto's manifest of site identities (the only ones that count toward t and m).
    pub fn proto_manifest(&self) -> amalgam_proto::Manifest {
        self.proto_manifest.clone()
    }

    /// Largest round id of the campaign: a campaign makes at most `rounds + max_aborted_rounds`
    /// attempts, numbered from 0.
    pub fn max_round(&self) -> u64 {
        u64::from(self.body.campaign.training.rounds) + u64::from(self.body.max_aborted_rounds) - 1
    }

    fn check_round(&self, round: u64) -> Result<(), ManifestError> {
        if round > self.max_round() {
            return Err(ManifestError::Round {
                round,
                reason: "beyond the campaign's rounds plus its allowed aborted rounds",
            });
        }
        Ok(())
    }

    /// The masking parameters of `round` (validated by amalgam-proto when the manifest was
    /// verified: complete/Harary graph, t, c, f, m, modular sums over b = B bits, and the
    /// vector length d padded to a power of two, as the DDG encoding emits it).
    pub fn round_params(&self, round: u64) -> Result<amalgam_proto::RoundParams, ManifestError> {
        self.check_round(round)?;
        Ok(self.derived.proto)
    }

    /// The encoded update length d (the parameter count padded to a power of two, as the DDG
    /// encoding emits it): the masking vector length and the fallback's KAHE d.
    pub fn encoded_len(&self) -> usize {
        self.derived.proto.d()
    }

    /// The DP parameters every charge of this epoch names (amalgam-dp's `Ledger::record_epoch`).
    pub fn dp_round_params(&self) -> amalgam_dp::ledger::RoundParams {
        self.derived.dp
    }

    /// The budget policy each site's ledger is created with.
    pub fn budget_policy(&self) -> Result<amalgam_dp::ledger::BudgetPolicy, ManifestError> {
        match self.body.dp.budget {
            DpBudget::Capped { epsilon_cap, delta } => {
                amalgam_dp::ledger::BudgetPolicy::site_level(epsilon_cap, delta)
                    .map_err(|e| ManifestError::invalid(e.to_string()))
            }
            DpBudget::None => Ok(amalgam_dp::ledger::BudgetPolicy::no_privacy()),
        }
    }

    /// The ledger request of `round` for the model whose digest is `model_digest`.
    pub fn dp_round_request(
        &self,
        round: u64,
        model_digest: &[u8; 32],
        sampler: amalgam_dp::sampler::SamplerKind,
    ) -> Result<amalgam_dp::ledger::RoundRequest, ManifestError> {
        let params = self.round_params(round)?;
        let context = amalgam_proto::crypto::kdf::masking_round_context(
            &self.context_digest(model_digest),
            &params,
            round,
        );
        Ok(amalgam_dp::ledger::RoundRequest::under(
            self.derived.dp,
            round,
            self.digest,
            context,
            sampler,
        ))
    }

    /// SHA-256("amalgam/consortium/context/v1" ‖ consortium_digest ‖ model_digest): the
    /// protocol's `context_digest` input (amalgam-proto `Site::with_context_digest`, the
    /// fallback's round context, cohort statements, ledger charges).
    pub fn context_digest(&self, model_digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(labels::CONTEXT);
        h.update(self.digest);
        h.update(model_digest);
        h.finalize().into()
    }

    /// Public seed of round `round`'s randomized Hadamard rotation:
    /// SHA-256("amalgam/consortium/hadamard-seed/v1" ‖ consortium_digest ‖ round).
    pub fn hadamard_seed(&self, round: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(labels::ROTATION_SEED);
        h.update(self.digest);
        h.update(round.to_be_bytes());
        h.finalize().into()
    }

    /// Per-phase deadline bounds.
    pub fn deadline_bounds(&self) -> DeadlineBounds {
        self.body.deadlines
    }

    /// The campaign.
    pub fn campaign(&self) -> &Campaign {
        &self.body.campaign
    }

    /// The DP policy.
    pub fn dp_policy(&self) -> &DpPolicy {
        &self.body.dp
    }

    /// The fallback policy.
    pub fn fallback(&self) -> &FallbackPolicy {
        &self.body.fallback
    }

    /// The committee numbers (Some whenever there are decryptors).
    pub fn committee(&self) -> Option<&CommitteePolicy> {
        self.body.committee.as_ref()
    }

    /// Rounds a campaign may abort.
    pub fn max_aborted_rounds(&self) -> u32 {
        self.body.max_aborted_rounds
    }

    /// The campaign's aggregation weights by site index, which the aggregator, every site and
    /// the harness step the model with (each asks for them before its first step, so this is
    /// the one place a step rule the shared [`crate::global_model::next_model`] does not
    /// implement is refused). A non-zero server momentum is not implemented and refused,
    /// never silently stepped as plain FedAvg while the manifest says otherwise.
    pub fn aggregation_weights(
        &self,
    ) -> Result<crate::global_model::AggregationWeights, ManifestError> {
        use crate::global_model::AggregationWeights;
        let c = &self.body.campaign;
        if c.training.server_momentum != 0.0 {
            return Err(ManifestError::invalid(format!(
                "server momentum {} is not implemented by the model step (plain FedAvg with a \
                 server learning rate); use 0",
                c.training.server_momentum
            )));
        }
        match c.weight_mode {
            WeightMode::Uniform => Ok(AggregationWeights::Uniform),
            WeightMode::Declared => self
                .sites()
                .iter()
                .map(|m| {
                    c.declared_weights.get(&m.name).copied().ok_or_else(|| {
                        ManifestError::invalid(format!("site {} has no declared weight", m.name))
                    })
                })
                .collect::<Result<Vec<u32>, _>>()
                .map(AggregationWeights::Declared),
            WeightMode::Noised => c
                .noised_weights
                .map(AggregationWeights::Noised)
                .ok_or_else(|| ManifestError::invalid("the noised weight mode has no n_cap")),
        }
    }
}
