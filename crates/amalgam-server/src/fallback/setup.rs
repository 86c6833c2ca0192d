//! Where a fallback round's configuration comes from: the verified manifest (sites, KAHE
//! parameters, minimum cohort, fallback policy), the committee's certified box keys of the key
//! period, and the round id. Never from a request.

use amalgam_he::RoundSetup;
use amalgam_net::fallback_api::is_fallback_round;

/// The fallback configuration the aggregator (and every decryptor) derives for a round.
pub trait FallbackSetups: Send + Sync + 'static {
    /// The manifest's fallback policy.
    fn allowed(&self) -> bool;
    /// The setup of fallback round `round` (every party derives the same one).
    fn setup(&self, round: u64) -> Result<RoundSetup, String>;
    /// How many uploads close the cohort early (asynchronous rounds); `None`: at the deadline.
    fn target(&self, _round: u64) -> Option<usize> {
        None
    }
}

/// The setup of `round` if the policy allows a fallback round with that id.
pub fn setup_for(s: &dyn FallbackSetups, round: u64) -> Result<RoundSetup, String> {
    if !s.allowed() {
        return Err("the manifest's fallback policy forbids fallback rounds".into());
    }
    if !is_fallback_round(round) {
        return Err(format!("round {round} is a masking round id"));
    }
    s.setup(round)
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
