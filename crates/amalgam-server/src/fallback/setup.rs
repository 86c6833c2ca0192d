//! Where a fallback round's configuration comes from: the verified manifest (sites, KAHE
//! parameters, minimum cohort, fallback policy), the committee's certified box keys of the key
//! period, and the round id. Never from a request.

use amalgam_consortium::VerifiedManifest;
use amalgam_consortium::fallback::{fallback_setup, period_of};
use amalgam_he::RoundSetup;
use amalgam_net::fallback_api::{is_fallback_round, rerun_of};

use super::keys::CommitteeKeys;

/// The fallback configuration the aggregator (and every decryptor) derives for a round.
pub trait FallbackSetups: Send + Sync + 'static {
    /// The manifest's fallback policy.
    fn allowed(&self) -> bool;
    /// The setup of fallback round `round` (every party derives the same one).
    fn setup(&self, round: u64) -> Result<RoundSetup, String>;
    /// The setup of `round` given the committee certificates the service stores; by default
    /// [`Self::setup`] (a setup given by its parts ignores them).
    fn setup_from(&self, round: u64, _keys: &CommitteeKeys) -> Result<RoundSetup, String> {
        self.setup(round)
    }
    /// How many uploads close the cohort early (asynchronous rounds); `None`: at the deadline.
    fn target(&self, _round: u64) -> Option<usize> {
        None
    }
}

/// The setup of `round` if the policy allows a fallback round with that id.
pub fn setup_for(
    s: &dyn FallbackSetups,
    keys: &CommitteeKeys,
    round: u64,
) -> Result<RoundSetup, String> {
    if !s.allowed() {
        return Err("the manifest's fallback policy forbids fallback rounds".into());
    }
    if !is_fallback_round(round) {
        return Err(format!("round {round} is a masking round id"));
    }
    s.setup_from(round, keys)
}

/// The setup every party derives: `fallback_setup` from the verified manifest, the stored
/// certificates of the round's key period (all of the committee's, each verified again) and
/// the model the re-run masking round was bound to. What `amalgam serve` runs: the same
/// derivation as the sites' (`site-agent.md` §7) and the members'.
pub struct CertifiedFallback {
    /// The verified manifest (policy, sites, parameters, committee).
    pub manifest: VerifiedManifest,
    /// The model digest masking round `r` was bound to (`None`: not known, no setup).
    pub bound_model: Box<dyn Fn(u64) -> Option<[u8; 32]> + Send + Sync>,
    /// Early-close target.
    pub target: Option<usize>,
}

impl core::fmt::Debug for CertifiedFallback {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CertifiedFallback").finish_non_exhaustive()
    }
}

impl FallbackSetups for CertifiedFallback {
    fn allowed(&self) -> bool {
        self.manifest.fallback().allowed
    }
    fn setup(&self, round: u64) -> Result<RoundSetup, String> {
        self.setup_from(round, &CommitteeKeys::default())
    }
    fn setup_from(&self, round: u64, keys: &CommitteeKeys) -> Result<RoundSetup, String> {
        let rerun =
            rerun_of(round).ok_or_else(|| format!("round {round} is a masking round id"))?;
        let model = (self.bound_model)(rerun)
            .ok_or_else(|| format!("the model masking round {rerun} was bound to is not known"))?;
        let period = period_of(&self.manifest, round).map_err(|e| e.to_string())?;
        fallback_setup(
            &self.manifest,
            round,
            &[(rerun, model)],
            &keys.certificates(period),
        )
        .map_err(|e| format!("committee keys of period {period}: {e}"))
    }
    fn target(&self, _round: u64) -> Option<usize> {
        self.target
    }
}

/// A fallback configuration given by its parts (tests, and deployments whose manifest adapter
/// builds it): one setup maker for every round id.
pub struct StaticFallback {
    /// The manifest's policy.
    pub allowed: bool,
    /// Builds round `r`'s setup.
    pub make: Box<dyn Fn(u64) -> Result<RoundSetup, String> + Send + Sync>,
    /// Early-close target.
    pub target: Option<usize>,
}

impl core::fmt::Debug for StaticFallback {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "StaticFallback(allowed {})", self.allowed)
    }
}

impl FallbackSetups for StaticFallback {
    fn allowed(&self) -> bool {
        self.allowed
    }
    fn setup(&self, round: u64) -> Result<RoundSetup, String> {
        (self.make)(round)
    }
    fn target(&self, _round: u64) -> Option<usize> {
        self.target
    }
}
