//! The declarative TOML draft (`consortium.toml`) and join requests (spec consortium.md §6).
//!
//! A draft is only a proposal: editing it, or approving a join request into it, confers no
//! authority. Authority comes from every listed member signing the canonical bytes.

use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::fsutil;
use crate::key::IdentityKey;
use crate::labels;
use crate::model::{ManifestBody, Member, Role};
use crate::verified::VerifiedManifest;

/// Largest draft or join request file.
pub const MAX_DRAFT_LEN: usize = 1024 * 1024;

const HEADER: &str = "# Amalgam consortium manifest draft. Editing it confers no authority: the manifest is\n\
# valid only when every member listed signs its canonical bytes (`amalgam consortium sign`).\n\n";

/// Parses a draft (TOML) and puts it in canonical order.
pub fn parse_draft(text: &str) -> Result<ManifestBody, ManifestError> {
    let mut body: ManifestBody = toml::from_str(text).map_err(|e| ManifestError::Parse {
        what: "consortium draft",
        reason: e.to_string(),
    })?;
    body.normalise();
    Ok(body)
}

/// The TOML text of a draft.
pub fn draft_text(body: &ManifestBody) -> Result<String, ManifestError> {
    let text = toml::to_string(body).map_err(|e| ManifestError::Parse {
        what: "consortium draft",
        reason: e.to_string(),
    })?;
    Ok(format!("{HEADER}{text}"))
}

/// Reads a draft file.
pub fn read_draft(path: &Path) -> Result<ManifestBody, ManifestError> {
    let bytes = fsutil::read_bounded(path, MAX_DRAFT_LEN)?;
    let text = String::from_utf8(bytes).map_err(|_| ManifestError::Parse {
        what: "consortium draft",
        reason: "not UTF-8".into(),
    })?;
    parse_draft(&text)
}

/// Writes a draft file atomically.
pub fn write_draft(path: &Path, body: &ManifestBody) -> Result<(), ManifestError> {
    fsutil::write_atomic(path, draft_text(body)?.as_bytes())
}

/// The draft of the epoch after `current`: same content, epoch + 1, chained to its digest,
/// no rotation statements (add them for keys that change).
pub fn next_epoch(current: &VerifiedManifest) -> ManifestBody {
    let mut body = current.body().clone();
    body.epoch = current.epoch().saturating_add(1);
    body.prev_digest = Some(current.consortium_digest());
    body.rotations.clear();
    body
}

/// "Add me": a new member's details signed by its own key, proving it holds the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The consortium joined.
    pub consortium: String,
    /// Member name.
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Requested roles.
    pub roles: Vec<Role>,
    /// The new key.
    #[serde(with = "crate::model::hex_key")]
    pub key: VerifyingKey,
    /// Signature by `key` over [`JoinRequest::message`].
    #[serde(with = "crate::model::hex64")]
    pub signature: [u8; 64],
}

impl JoinRequest {
    /// label ‖ (u32 length ‖ UTF-8) of consortium, name, organisation ‖ u8 role count ‖ role
    /// codes ‖ key.
    pub fn message(
        consortium: &str,
        name: &str,
        organisation: &str,
        roles: &[Role],
        key: &VerifyingKey,
    ) -> Vec<u8> {
        let mut m = labels::JOIN.to_vec();
        for s in [consortium, name, organisation] {
            m.extend_from_slice(&(s.len() as u32).to_be_bytes());
            m.extend_from_slice(s.as_bytes());
        }
        m.push(roles.len().min(255) as u8);
        m.extend(roles.iter().map(|r| r.code()));
        m.extend_from_slice(key.as_bytes());
        m
    }

    /// A request signed by `key`.
    pub fn new(
        key: &IdentityKey,
        consortium: &str,
        name: &str,
        organisation: &str,
        mut roles: Vec<Role>,
    ) -> Self {
        roles.sort();
        roles.dedup();
        let vk = key.verifying_key();
        let signature = key
            .sign(&Self::message(consortium, name, organisation, &roles, &vk))
            .to_bytes();
        Self {
            consortium: consortium.to_string(),
            name: name.to_string(),
            organisation: organisation.to_string(),
            roles,
            key: vk,
            signature,
        }
    }

    /// Whether the key in the request signed it.
    pub fn verify(&self) -> Result<(), ManifestError> {
        let msg = Self::message(
            &self.consortium,
            &self.name,
            &self.organisation,
            &self.roles,
            &self.key,
        );
        if self.key.is_weak()
            || self
                .key
                .verify_strict(&msg, &Signature::from_bytes(&self.signature))
                .is_err()
        {
            return Err(ManifestError::BadJoinRequest {
                name: self.name.clone(),
            });
        }
        Ok(())
    }

    /// TOML text.
    pub fn to_text(&self) -> Result<String, ManifestError> {
        toml::to_string(self).map_err(|e| ManifestError::Parse {
            what: "join request",
            reason: e.to_string(),
        })
    }

    /// Parses TOML text (bounded by the caller's read).
    pub fn from_text(text: &str) -> Result<Self, ManifestError> {
        toml::from_str(text).map_err(|e| ManifestError::Parse {
            what: "join request",
            reason: e.to_string(),
        })
    }

    /// Reads a request file.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let bytes = fsutil::read_bounded(path, 16 * 1024)?;
        let text = String::from_utf8(bytes).map_err(|_| ManifestError::Parse {
            what: "join request",
            reason: "not UTF-8".into(),
        })?;
        Self::from_text(&text)
    }
}

/// Adds a verified join request to a draft. Refuses another consortium's request, a name or
/// key already listed, and a request not signed by its key. Confers no authority: the new
/// member, like every other, must still sign.
pub fn approve(draft: &mut ManifestBody, request: &JoinRequest) -> Result<(), ManifestError> {
    request.verify()?;
    if request.consortium != draft.consortium {
        return Err(ManifestError::WrongConsortium {
            expected: draft.consortium.clone(),
            got: request.consortium.clone(),
        });
    }
    if request.roles.is_empty() {
        return Err(ManifestError::invalid(
            "a join request needs at least one role",
        ));
    }
    if draft.members.iter().any(|m| m.name == request.name) {
        return Err(ManifestError::invalid(format!(
            "member name {} is already in the draft",
            request.name
        )));
    }
    if draft.members.iter().any(|m| m.key == request.key) {
        return Err(ManifestError::invalid(format!(
            "key {} is already in the draft",
            crate::key::fingerprint(&request.key)
        )));
    }
    draft.members.push(Member {
        name: request.name.clone(),
        organisation: request.organisation.clone(),
        roles: request.roles.clone(),
        key: request.key,
    });
    draft.normalise();
    Ok(())
}
