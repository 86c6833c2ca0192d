//! Warnings `consortium show` prints about who could collude by construction (spec
//! consortium.md §7). They do not make a manifest invalid: they say what counts against the
//! tolerated colluders c (sites) and c_d (decryptors).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::key::{fingerprint, normalise_fingerprint};
use crate::model::{ManifestBody, Role};

/// One warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum Flag {
    /// The organisation running the aggregator also runs a decryptor: it could see
    /// ciphertexts and seed pieces. Counts against c_d.
    AggregatorOrganisationRunsDecryptor {
        /// The organisation.
        organisation: String,
    },
    /// Several decryptors belong to one organisation: all but one count against c_d.
    DecryptorsShareOrganisation {
        /// The organisation.
        organisation: String,
        /// How many decryptors it runs.
        decryptors: usize,
    },
    /// The organisation running the aggregator also runs sites: they count against c.
    AggregatorOrganisationRunsSites {
        /// The organisation.
        organisation: String,
        /// How many sites it runs.
        sites: usize,
    },
    /// An identity this member has not verified out of band: count it against c (or c_d).
    Unverified {
        /// Member name.
        name: String,
        /// Organisation.
        organisation: String,
        /// Its fingerprint.
        fingerprint: String,
    },
}

/// The flags of `body`. `verified` is the list of fingerprints this member checked (None:
/// no list given, so no unverified-identity flags).
pub fn flags(body: &ManifestBody, verified: Option<&[String]>) -> Vec<Flag> {
    let mut out = Vec::new();
    let aggregator_orgs: Vec<&str> = body
        .members
        .iter()
        .filter(|m| m.has(Role::Aggregator))
        .map(|m| m.organisation.as_str())
        .collect();
    let mut decryptors: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sites: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &body.members {
        if m.has(Role::Decryptor) {
            *decryptors.entry(m.organisation.as_str()).or_default() += 1;
        }
        if m.has(Role::Site) {
            *sites.entry(m.organisation.as_str()).or_default() += 1;
        }
    }
    for org in &aggregator_orgs {
        if decryptors.contains_key(org) {
            out.push(Flag::AggregatorOrganisationRunsDecryptor {
                organisation: org.to_string(),
            });
        }
        if let Some(&n) = sites.get(org) {
            out.push(Flag::AggregatorOrganisationRunsSites {
                organisation: org.to_string(),
                sites: n,
            });
        }
    }
    for (org, n) in decryptors {
        if n > 1 {
            out.push(Flag::DecryptorsShareOrganisation {
                organisation: org.to_string(),
                decryptors: n,
            });
        }
    }
    if let Some(list) = verified {
        let list: Vec<String> = list
            .iter()
            .filter_map(|f| normalise_fingerprint(f))
            .collect();
        for m in &body.members {
            let fp = fingerprint(&m.key);
            let normal = normalise_fingerprint(&fp).unwrap_or_default();
            if !list.contains(&normal) {
                out.push(Flag::Unverified {
                    name: m.name.clone(),
                    organisation: m.organisation.clone(),
                    fingerprint: fp,
                });
            }
        }
    }
    out
}

/// Parses a `--verified` file: one fingerprint per line (spaces, colons and dashes ignored),
/// `#` starts a comment. Lines that are not a fingerprint are refused with their number.
pub fn parse_verified(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match normalise_fingerprint(line) {
            Some(f) => out.push(f),
            None => return Err(format!("line {}: not a fingerprint: {line:?}", i + 1)),
        }
    }
    Ok(out)
}

/// The check `consortium sign` makes before signing: every other member's fingerprint must
/// be in `verified` (the signer's own key needs no check). Refuses with the unverified
/// members' names, organisations and fingerprints.
pub fn require_verified(
    body: &ManifestBody,
    signer: &ed25519_dalek::VerifyingKey,
    verified: &[String],
) -> Result<(), crate::ManifestError> {
    let missing: Vec<String> = flags(body, Some(verified))
        .into_iter()
        .filter_map(|f| match f {
            Flag::Unverified {
                name,
                organisation,
                fingerprint,
            } if body
                .members
                .iter()
                .any(|m| m.name == name && &m.key != signer) =>
            {
                Some(format!("{name} ({organisation}) [{fingerprint}]"))
            }
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(crate::ManifestError::Unverified(missing.join(", ")))
    }
}
