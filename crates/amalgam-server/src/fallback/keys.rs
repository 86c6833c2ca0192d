//! The committee's key-period certificates as the aggregator relays them (spec `service.md`
//! §9, `decryptor.md`): each decryptor posts its own certificate for a period; it is checked
//! against the manifest (the poster is the decryptor it names, the manifest's committee, the
//! consortium digest, the period's exact rounds, the signature by that member's identity key)
//! and recorded in the fallback log before the answer. Every party re-checks what it fetches
//! (`amalgam_consortium::fallback::fallback_setup`): the aggregator only relays.
//!
//! One certificate per (member, period): an identical re-post gets the stored answer, another
//! one is refused (409 `committee.key-conflict`), so a member that drew a second box key for a
//! period (a lost key file) shows it instead of splitting the round's parties over two keys.

use std::collections::BTreeMap;

use amalgam_consortium::VerifiedManifest;
use amalgam_consortium::fallback::{check_certificate, period_of};
use amalgam_consortium::period_key::PeriodCertificate;
use amalgam_net::fallback_api::{encode_frames, fallback_round_of};
use amalgam_net::{Problem, ProblemCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::state::{Accepted, DECRYPTOR_SENDER};
use crate::events::{Event, EventKind, NewEvent};
use crate::replay::ReplayError;

/// The reserved round id under which committee key events are logged: above every round id
/// (masking ids are below 2^32, fallback ids 2^32 + r with r below 2^32).
pub const KEYS_ROUND: u64 = i64::MAX as u64;
/// Event phase of a stored certificate (a public `Summary` event).
pub const PH_COMMITTEE_KEY: u8 = 0x45;

/// Whether `e` is a committee key event.
pub fn is_key_event(e: &Event) -> bool {
    e.round == KEYS_ROUND
}

/// The answer to an accepted certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeKeyReceipt {
    /// Its key period.
    pub period: u64,
    /// The committee member.
    pub member: u16,
    /// SHA-256 of the certificate bytes, hex.
    pub sha256: String,
}

/// Every stored certificate, by (period, member).
#[derive(Debug, Default, Clone)]
pub struct CommitteeKeys {
    certs: BTreeMap<(u64, u16), Vec<u8>>,
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemCode::CommitteeKeyInvalid, detail)
}

fn receipt(cert: &PeriodCertificate, bytes: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&CommitteeKeyReceipt {
        period: cert.period,
        member: cert.member,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
    .unwrap_or_default()
}

/// The last key period any fallback round of `manifest`'s campaign falls in: the period of
/// the re-run of its last masking round (`None` without a committee). A certificate for a
/// later period can serve no round.
pub fn last_period(manifest: &VerifiedManifest) -> Option<u64> {
    let last = fallback_round_of(manifest.max_round())?;
    period_of(manifest, last).ok()
}

impl CommitteeKeys {
    /// A certificate posted by the decryptor with identity key `poster`. On `Err`, nothing
    /// changed.
    pub fn post(
        &mut self,
        manifest: Option<&VerifiedManifest>,
        poster: &[u8; 32],
        bytes: &[u8],
    ) -> Result<Accepted, Problem> {
        let manifest = manifest.ok_or_else(|| {
            invalid("this aggregator has no verified manifest to check certificates against")
        })?;
        let cert = PeriodCertificate::from_bytes(bytes)
            .map_err(|e| invalid(format!("the certificate does not decode: {e}")))?;
        check_certificate(manifest, &cert).map_err(|e| invalid(e.to_string()))?;
        // Bounded by the campaign: otherwise one corrupt decryptor could fill the log and the
        // aggregator's memory with certificates for unboundedly many future periods.
        if let Some(last) = last_period(manifest)
            && cert.period > last
        {
            return Err(invalid(format!(
                "period {} is after the campaign's last key period {last}",
                cert.period
            )));
        }
        let named = manifest
            .decryptors()
            .get(usize::from(cert.member))
            .map(|m| m.key.to_bytes());
        if named.as_ref() != Some(poster) {
            return Err(invalid(format!(
                "the certificate is member {}'s; a decryptor posts only its own",
                cert.member
            )));
        }
        let response = receipt(&cert, bytes);
        if let Some(prev) = self.certs.get(&(cert.period, cert.member)) {
            return if prev.as_slice() == bytes {
                Ok(Accepted {
                    response,
                    events: Vec::new(),
                })
            } else {
                Err(Problem::new(
                    ProblemCode::CommitteeKeyConflict,
                    format!(
                        "member {} already has another certificate for period {}",
                        cert.member, cert.period
                    ),
                ))
            };
        }
        self.certs
            .insert((cert.period, cert.member), bytes.to_vec());
        Ok(Accepted {
            events: vec![NewEvent {
                round: KEYS_ROUND,
                kind: EventKind::Summary,
                phase: PH_COMMITTEE_KEY,
                sender: Some(DECRYPTOR_SENDER + u32::from(cert.member)),
                body: bytes.to_vec(),
                response: Some(response.clone()),
            }],
            response,
        })
    }

    /// Every stored certificate of `period`, in member order, framed.
    pub fn period(&self, period: u64) -> Vec<u8> {
        let certs: Vec<Vec<u8>> = self
            .certs
            .range((period, 0)..=(period, u16::MAX))
            .map(|(_, b)| b.clone())
            .collect();
        encode_frames(&certs)
    }

    /// The stored certificates of `period`, decoded, in member order.
    pub fn certificates(&self, period: u64) -> Vec<PeriodCertificate> {
        self.certs
            .range((period, 0)..=(period, u16::MAX))
            .filter_map(|(_, b)| PeriodCertificate::from_bytes(b).ok())
            .collect()
    }

    /// Rebuilds the store from the log's committee key events, each checked again as it was
    /// when posted (by the member it names).
    pub fn replay(
        manifest: Option<&VerifiedManifest>,
        events: &[Event],
    ) -> Result<Self, ReplayError> {
        let mut keys = Self::default();
        for e in events.iter().filter(|e| is_key_event(e)) {
            let err = |reason: String| ReplayError { seq: e.seq, reason };
            if e.kind != EventKind::Summary || e.phase != PH_COMMITTEE_KEY {
                return Err(err("committee key event of another kind".into()));
            }
            let member = e
                .sender
                .and_then(|s| s.checked_sub(DECRYPTOR_SENDER))
                .and_then(|m| usize::try_from(m).ok())
                .ok_or_else(|| err("missing or out-of-range decryptor".into()))?;
            let poster = manifest
                .and_then(|m| m.decryptors().get(member).map(|d| d.key.to_bytes()))
                .ok_or_else(|| err("stored certificate of an unknown decryptor".into()))?;
            let a = keys.post(manifest, &poster, &e.body).map_err(|p| {
                err(format!(
                    "stored certificate refused on replay: {}",
                    p.detail
                ))
            })?;
            if a.events.len() != 1 || a.events[0] != crate::events::as_new(e) {
                return Err(err(
                    "logged certificate differs from the replayed decision".into()
                ));
            }
        }
        Ok(keys)
    }
}
