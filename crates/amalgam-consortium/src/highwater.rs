//! The highest epoch a party accepted, persisted so that an older or forked manifest is
//! refused after a restart (spec consortium.md §5).
//!
//! File: JSON `{"format":1,"consortium":…,"epoch":N,"digest":HEX,"members":[{"name":…,"key":HEX}]}`
//! written atomically (temp file, fsync, rename, fsync directory). The member keys let the
//! next epoch's key rotations be checked against the keys this party knew.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::fsutil;
use crate::model::ManifestBody;
use crate::verified::VerifiedManifest;

const MAX_FILE: usize = 64 * 1024;

/// One member as the high-water file remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownMember {
    /// Name.
    pub name: String,
    /// Key.
    #[serde(with = "crate::model::hex_key")]
    pub key: VerifyingKey,
}

/// The highest accepted epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochHighWater {
    format: u32,
    /// Consortium identifier.
    pub consortium: String,
    /// Epoch number.
    pub epoch: u64,
    /// Its consortium digest.
    #[serde(with = "crate::model::hex32")]
    pub digest: [u8; 32],
    /// Its members.
    pub members: Vec<KnownMember>,
}

impl EpochHighWater {
    /// The record of `m`.
    pub fn of(m: &VerifiedManifest) -> Self {
        Self {
            format: 1,
            consortium: m.consortium().to_string(),
            epoch: m.epoch(),
            digest: m.consortium_digest(),
            members: m
                .members()
                .iter()
                .map(|x| KnownMember {
                    name: x.name.clone(),
                    key: x.key,
                })
                .collect(),
        }
    }

    /// Reads the file; `Ok(None)` when it does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Self>, ManifestError> {
        if !path.exists() {
            return Ok(None);
        }
        let bytes = fsutil::read_bounded(path, MAX_FILE)?;
        let hw: Self = serde_json::from_slice(&bytes).map_err(|e| ManifestError::Parse {
            what: "epoch high-water file",
            reason: e.to_string(),
        })?;
        if hw.format != 1 {
            return Err(ManifestError::Parse {
                what: "epoch high-water file",
                reason: format!("unknown format {}", hw.format),
            });
        }
        Ok(Some(hw))
    }

    /// Records `m` as the highest accepted epoch, after checking again that it is this one or
    /// its direct successor. Never lowers the mark.
    pub fn accept(path: &Path, m: &VerifiedManifest) -> Result<(), ManifestError> {
        if let Some(current) = Self::load(path)? {
            current.check_successor(m.body(), &m.consortium_digest())?;
            if current.epoch == m.epoch() {
                return Ok(());
            }
        }
        let json = serde_json::to_vec_pretty(&Self::of(m)).map_err(|e| ManifestError::Parse {
            what: "epoch high-water file",
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(path, &json)
    }

    /// Whether `body` (with `digest`) may be accepted after this mark: the same epoch with the
    /// same digest, or the next epoch chaining to this digest whose key changes all carry a
    /// rotation statement by the old key.
    pub fn check_successor(
        &self,
        body: &ManifestBody,
        digest: &[u8; 32],
    ) -> Result<(), ManifestError> {
        if body.consortium != self.consortium {
            return Err(ManifestError::WrongConsortium {
                expected: self.consortium.clone(),
                got: body.consortium.clone(),
            });
        }
        if body.epoch < self.epoch {
            return Err(ManifestError::EpochRegressed {
                accepted: self.epoch,
                got: body.epoch,
            });
        }
        if body.epoch == self.epoch {
            return if digest == &self.digest {
                Ok(())
            } else {
                Err(ManifestError::EpochForked { epoch: body.epoch })
            };
        }
        if body.epoch > self.epoch.saturating_add(1) {
            return Err(ManifestError::EpochGap {
                accepted: self.epoch,
                got: body.epoch,
            });
        }
        if body.prev_digest != Some(self.digest) {
            return Err(ManifestError::ChainBroken { epoch: body.epoch });
        }
        for m in &body.members {
            let Some(old) = self.members.iter().find(|k| k.name == m.name) else {
                continue;
            };
            if old.key == m.key {
                continue;
            }
            let rotated = body
                .rotations
                .iter()
                .any(|r| r.name == m.name && r.old_key == old.key && r.new_key == m.key);
            if !rotated {
                return Err(ManifestError::Rotation {
                    name: m.name.clone(),
                    reason: "the key changed without a statement signed by the old key",
                });
            }
        }
        Ok(())
    }
}
