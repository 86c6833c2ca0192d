//! What every HE participant agrees on before a round: the parameters, the pinned decryptor key
//! fingerprint, the minimum cohort and the site identity keys.

use amalgam_proto::{Manifest, MinCohort, SiteId};
use ed25519_dalek::VerifyingKey;

use crate::error::HeError;
use crate::keys::KeyFingerprint;
use crate::params::{HeParams, MAX_SITES};

/// Site identity keys by manifest index. Unlike the masking manifest (at most 255 sites,
/// a GF(256) Shamir limit) an HE round only needs 16-bit site ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteDirectory {
    keys: Vec<VerifyingKey>,
}

impl SiteDirectory {
    /// Refuses an empty or oversized list, weak (small-order) keys and repeated keys.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, HeError> {
        if keys.is_empty() || keys.len() > MAX_SITES as usize {
            return Err(HeError::ManifestSize {
                sites: keys.len(),
                max: MAX_SITES as usize,
            });
        }
        for (index, k) in keys.iter().enumerate() {
            if k.is_weak() {
                return Err(HeError::BadIdentity {
                    index,
                    reason: "weak",
                });
            }
            if keys[..index].iter().any(|p| p.as_bytes() == k.as_bytes()) {
                return Err(HeError::BadIdentity {
                    index,
                    reason: "a duplicate",
                });
            }
        }
        Ok(Self { keys })
    }

    /// Identity key of `site`, or [`HeError::UnknownSite`].
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

impl From<&Manifest> for SiteDirectory {
    /// The masking manifest is already validated (2..=255 distinct, non-weak keys).
    fn from(m: &Manifest) -> Self {
        Self {
            keys: m.keys().to_vec(),
        }
    }
}

/// The consortium configuration of the HE fallback.
#[derive(Clone, Debug, PartialEq)]
pub struct HeConsortium {
    params: HeParams,
    key: KeyFingerprint,
    min_cohort: MinCohort,
    sites: SiteDirectory,
}

impl HeConsortium {
    /// Validates that the minimum cohort fits both the parameters' maximum cohort and the
    /// manifest.
    pub fn new(
        params: HeParams,
        key: KeyFingerprint,
        min_cohort: MinCohort,
        sites: SiteDirectory,
    ) -> Result<Self, HeError> {
        let m = u32::from(min_cohort.get());
        if m > params.max_sites() {
            return Err(HeError::MinCohortTooLarge {
                min_cohort: m,
                limit: params.max_sites(),
                what: "maximum cohort",
            });
        }
        if m as usize > sites.len() {
            return Err(HeError::MinCohortTooLarge {
                min_cohort: m,
                limit: sites.len() as u32,
                what: "manifest size",
            });
        }
        Ok(Self {
            params,
            key,
            min_cohort,
            sites,
        })
    }

    /// Round parameters.
    pub fn params(&self) -> &HeParams {
        &self.params
    }

    /// Pinned fingerprint of the decryptor's public key.
    pub fn key(&self) -> &KeyFingerprint {
        &self.key
    }

    /// Fewest distinct signed contributions an aggregate may be decrypted with.
    pub fn min_cohort(&self) -> usize {
        usize::from(self.min_cohort.get())
    }

    /// Site identity keys.
    pub fn sites(&self) -> &SiteDirectory {
        &self.sites
    }

    /// Checks round, site and key of a contribution, and returns the site's identity key.
    pub(crate) fn check_origin(
        &self,
        round: u64,
        expected_round: u64,
        site: SiteId,
        key: &KeyFingerprint,
    ) -> Result<&VerifyingKey, HeError> {
        if round != expected_round {
            return Err(HeError::WrongRound {
                expected: expected_round,
                got: round,
            });
        }
        let identity = self.sites.key(site)?;
        if key != &self.key {
            return Err(HeError::KeyMismatch {
                expected: self.key.to_hex(),
                got: key.to_hex(),
            });
        }
        Ok(identity)
    }
}
