//! The highest epoch a party accepted, persisted so that an older or forked manifest is
//! refused after a restart (spec consortium.md §5).
//!
//! File: JSON `{"format":1,"consortium":…,"epoch":N,"digest":HEX,"members":[{"name":…,"key":HEX}]}`
//! written atomically (temp file, fsync, rename, fsync directory). The member keys let the
//! next epoch's key rotations be checked against the keys this party knew.
//!
//! Only epochs that list the accepting party's own key are accepted: a valid epoch is signed
//! by every member it lists, so a party only ever moves its mark to an epoch it signed itself.
//! Without that rule the aggregator alone could build epoch H+1 = itself plus Sybils (all of
//! whom sign), move an honest party's mark there, and make the real H+1 a "fork" forever.
//!
//! Updates are serialised by an exclusive lock on `.NAME.lock` beside the file; the mark is
//! re-read and re-checked under the lock, so two concurrent `accept`s cannot both succeed
//! from the same old mark.

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

    /// Reads the file; `Ok(None)` only when nothing is at `path` ("not found"). Any other
    /// failure — permission denied, a path through a non-directory, a dangling symbolic link —
    /// is an error: treating it as "no mark" would accept a rollback as first contact.
    pub fn load(path: &Path) -> Result<Option<Self>, ManifestError> {
        let Some(bytes) = fsutil::read_bounded_if_present(path, MAX_FILE)? else {
            return Ok(None);
        };
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

    /// Records `m` as the highest accepted epoch of the party whose own key is `me`, after
    /// checking, under an exclusive lock and against the mark re-read under it, that `m` lists
    /// `me` and is this epoch or its direct successor. Never lowers the mark. Without a mark
    /// (first contact) any valid epoch listing `me` is accepted: trust on first use.
    pub fn accept(
        path: &Path,
        m: &VerifiedManifest,
        me: &VerifyingKey,
    ) -> Result<(), ManifestError> {
        require_listed(m.body(), me)?;
        let _lock = fsutil::lock_sibling(path)?;
        if let Some(current) = Self::load(path)? {
            current.check_successor(m.body(), &m.consortium_digest(), me)?;
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

    /// Whether `body` (with `digest`) may be accepted after this mark by the party whose own
    /// key is `me`: it lists `me`, and it is the same epoch with the same digest, or the next
    /// epoch chaining to this digest whose key changes all carry a rotation statement by the
    /// old key.
    pub fn check_successor(
        &self,
        body: &ManifestBody,
        digest: &[u8; 32],
        me: &VerifyingKey,
    ) -> Result<(), ManifestError> {
        require_listed(body, me)?;
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

/// Refuses a manifest that does not list `me`: this party did not sign it.
pub(crate) fn require_listed(body: &ManifestBody, me: &VerifyingKey) -> Result<(), ManifestError> {
    if body.members.iter().any(|m| &m.key == me) {
        Ok(())
    } else {
        Err(ManifestError::NotListed {
            fingerprint: crate::key::fingerprint(me),
        })
    }
}
