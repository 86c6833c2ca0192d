//! What every party of a round agrees on, and the round context that binds it.
//!
//! The round context is `H("amalgam/v2/round-context" ‖ context_digest ‖ params_enc ‖ round)`
//! (the v2 formula); `context_digest` covers the site directory, the minimum cohort, the
//! committee with its pinned keys and, for a consortium round, the manifest's context digest,
//! so every signature, box and mask of a round is bound to all of them. [`round_context`] is the one place that computes it.

use amalgam_proto::SiteId;
use amalgam_proto::codec::{Encode, Writer};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::committee::Committee;
use crate::error::HeError;
use crate::params::{KaheParams, MAX_SITES};

/// The v2 round context formula, shared with the masking protocol (`amalgam-proto` spec §4.1):
/// the fallback passes its own parameter encoding as `params_enc`.
pub fn round_context(context_digest: &[u8; 32], params_enc: &[u8], round: u64) -> [u8; 32] {
    amalgam_proto::crypto::kdf::round_context(context_digest, params_enc, round)
}

/// The sites' Ed25519 identities, indexed by site id (up to 65,535: a fallback-only consortium
/// may exceed the masking protocol's 255).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteDirectory {
    keys: Vec<VerifyingKey>,
}

impl SiteDirectory {
    /// Validates: 1..=65,535 identities, none weak, pairwise distinct.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, HeError> {
        if keys.is_empty() || keys.len() > MAX_SITES as usize {
            return Err(HeError::ParamOutOfRange {
                name: "sites",
                value: keys.len() as u64,
                min: 1,
                max: MAX_SITES.into(),
            });
        }
        let mut sorted: Vec<&[u8; 32]> = keys.iter().map(|k| k.as_bytes()).collect();
        sorted.sort_unstable();
        if let Some(index) = keys.iter().position(|k| k.is_weak()) {
            return Err(HeError::BadKey {
                what: "site directory",
                index,
                reason: "weak",
            });
        }
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            let index = keys.iter().rposition(|k| k.as_bytes() == w[0]).unwrap_or(0);
            return Err(HeError::BadKey {
                what: "site directory",
                index,
                reason: "a duplicate",
            });
        }
        Ok(Self { keys })
    }

    /// The identity of `site`.
    pub fn key(&self, site: SiteId) -> Result<&VerifyingKey, HeError> {
        self.keys
            .get(site.index())
            .ok_or(HeError::UnknownSite { site: site.0 })
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a validated directory.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Smallest minimum cohort m: a cohort of one would release one site's key to the aggregator.
pub const MIN_COHORT: usize = 2;

/// The configuration of a fallback round: parameters, sites, committee, minimum cohort m, the
/// round id, and the last s published models an upload may be trained on, each as (round it
/// was published in, digest): the model round fixes the staleness weight, so it is part of
/// what an upload names and signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundSetup {
    params: KaheParams,
    sites: SiteDirectory,
    committee: Committee,
    min_cohort: usize,
    round: u64,
    model_window: Vec<(u64, [u8; 32])>,
    context: [u8; 32],
}

impl RoundSetup {
    /// Validates `2 ≤ m ≤ min(K_max, sites)` and a model window of 1..=64 models, each published
    /// no later than `round`, with distinct digests; computes the context.
    ///
    /// m = 1 is refused: an aggregator could name a cohort of one honest site and an honest
    /// committee would release that site's key. Even m ≥ 2 bounds privacy only through the
    /// cohort: the aggregator with c_s colluding sites learns sums over ≥ m − c_s honest inputs.
    pub fn new(
        params: KaheParams,
        sites: SiteDirectory,
        committee: Committee,
        min_cohort: usize,
        round: u64,
        model_window: Vec<(u64, [u8; 32])>,
    ) -> Result<Self, HeError> {
        Self::build(
            None,
            params,
            sites,
            committee,
            min_cohort,
            round,
            model_window,
        )
    }

    /// As [`RoundSetup::new`], for a consortium: `consortium_context` (the manifest's
    /// `context_digest(model digest)`, which covers the consortium digest) is hashed into the
    /// context under its own label, and the committee must carry key-period certificates that
    /// cover `round` (a key outside its period is refused, expired or not yet valid).
    pub fn for_consortium(
        consortium_context: [u8; 32],
        params: KaheParams,
        sites: SiteDirectory,
        committee: Committee,
        min_cohort: usize,
        round: u64,
        model_window: Vec<(u64, [u8; 32])>,
    ) -> Result<Self, HeError> {
        Self::build(
            Some(consortium_context),
            params,
            sites,
            committee,
            min_cohort,
            round,
            model_window,
        )
    }

    fn build(
        consortium_context: Option<[u8; 32]>,
        params: KaheParams,
        sites: SiteDirectory,
        committee: Committee,
        min_cohort: usize,
        round: u64,
        model_window: Vec<(u64, [u8; 32])>,
    ) -> Result<Self, HeError> {
        for index in 0..committee.size() {
            let scope = committee.member(index)?.scope;
            let reason = match scope {
                None if consortium_context.is_some() => Some("no key-period certificate"),
                Some(s) if !s.covers(round) => Some("key period does not cover the round"),
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(HeError::BadKey {
                    what: "committee",
                    index,
                    reason,
                });
            }
        }
        let max = sites.len().min(params.max_sites() as usize);
        if !(MIN_COHORT..=max).contains(&min_cohort) {
            return Err(HeError::ParamOutOfRange {
                name: "min_cohort",
                value: min_cohort as u64,
                min: MIN_COHORT as u64,
                max: max as u64,
            });
        }
        if model_window.is_empty() || model_window.len() > 64 {
            return Err(HeError::ParamOutOfRange {
                name: "model_window",
                value: model_window.len() as u64,
                min: 1,
                max: 64,
            });
        }
        if let Some(&(published, _)) = model_window.iter().find(|(r, _)| *r > round) {
            return Err(HeError::ParamOutOfRange {
                name: "model_window.round",
                value: published,
                min: 0,
                max: round,
            });
        }
        if let Some(index) = (1..model_window.len()).find(|&i| {
            model_window[..i]
                .iter()
                .any(|(_, d)| *d == model_window[i].1)
        }) {
            return Err(HeError::BadKey {
                what: "model window",
                index,
                reason: "a duplicate digest",
            });
        }
        let mut w = Writer::new();
        match &consortium_context {
            None => w.bytes(b"amalgam/v2/he-context"),
            Some(c) => {
                w.bytes(b"amalgam/v2/he-context/consortium");
                w.bytes(c);
            }
        }
        w.u32(sites.len() as u32);
        for k in &sites.keys {
            w.bytes(k.as_bytes());
        }
        w.u32(min_cohort as u32);
        committee.encode(&mut w);
        let digest: [u8; 32] = Sha256::digest(w.as_slice()).into();
        let context = round_context(&digest, &params.to_bytes(), round);
        Ok(Self {
            params,
            sites,
            committee,
            min_cohort,
            round,
            model_window,
            context,
        })
    }

    /// The KAHE parameters.
    pub fn params(&self) -> &KaheParams {
        &self.params
    }

    /// The site directory.
    pub fn sites(&self) -> &SiteDirectory {
        &self.sites
    }

    /// The committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// Minimum cohort m.
    pub fn min_cohort(&self) -> usize {
        self.min_cohort
    }

    /// The round id.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The round context.
    pub fn context(&self) -> &[u8; 32] {
        &self.context
    }

    /// Whether (`model_round`, `digest`) is one of the last s published models.
    pub fn accepts_model(&self, model_round: u64, digest: &[u8; 32]) -> bool {
        self.model_window.contains(&(model_round, *digest))
    }

    /// The staleness weight of an update trained on the model of `model_round`.
    pub fn staleness_weight(&self, model_round: u64) -> f64 {
        staleness_weight(self.round, model_round)
    }
}

/// The public staleness weight of an update trained on the model of round `model_round` and
/// aggregated in round `round`: `1 / sqrt(1 + staleness)` (FedBuff's polynomial weight),
/// never above one. The site multiplies its update by it before the site-level clip, so the sensitivity the
/// accountant uses is unchanged.
pub fn staleness_weight(round: u64, model_round: u64) -> f64 {
    let staleness = round.saturating_sub(model_round) as f64;
    1.0 / (1.0 + staleness).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_weight_is_at_most_one_and_decreasing() {
        assert_eq!(staleness_weight(5, 5), 1.0);
        assert_eq!(
            staleness_weight(5, 9),
            1.0,
            "a model from the future is not up-weighted"
        );
        let mut last = 1.0;
        for m in (0..5).rev() {
            let w = staleness_weight(5, m);
            assert!(w < last && w > 0.0);
            last = w;
        }
    }

    #[test]
    fn round_context_binds_every_input() {
        let base = round_context(&[1; 32], b"p", 3);
        assert_ne!(base, round_context(&[2; 32], b"p", 3));
        assert_ne!(base, round_context(&[1; 32], b"q", 3));
        assert_ne!(base, round_context(&[1; 32], b"p", 4));
    }
}
