//! A fallback round's setup from the manifest and the committee's key-period certificates
//! only (spec consortium.md §4.2): sites, KAHE parameters, minimum cohort and committee numbers
//! come from the verified manifest, box keys from certificates each member signed for the
//! period of the round. Nothing is taken from the aggregator, which only relays certificates.

use amalgam_he::{Committee, KaheParams, MemberSecrets, PeriodScope, RoundSetup, SiteDirectory};
use thiserror::Error;

use crate::period_key::PeriodCertificate;
use crate::verified::VerifiedManifest;

/// Why a fallback setup or a period certificate is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackSetupError {
    /// The manifest's fallback policy forbids fallback rounds.
    #[error("the manifest's fallback policy forbids fallback rounds")]
    Forbidden,
    /// The issuing identity is not a decryptor of the manifest.
    #[error("this identity is not a decryptor of the manifest")]
    NotAMember,
    /// The manifest has no decryptor committee.
    #[error("the manifest has no decryptor committee")]
    NoCommittee,
    /// A certificate issued for another consortium.
    #[error("certificate of member {member} names another consortium digest")]
    WrongConsortium {
        /// The member index it claims.
        member: u16,
    },
    /// A certificate for a member index the committee does not have.
    #[error("certificate for member {member}, the committee has {size}")]
    UnknownMember {
        /// The member index it claims.
        member: u16,
        /// Committee size.
        size: usize,
    },
    /// A certificate whose signature does not verify under the member's manifest identity
    /// (forged, or signed by another member).
    #[error("certificate of member {member} is not signed by its identity key")]
    BadSignature {
        /// The member index it claims.
        member: u16,
    },
    /// A certificate whose valid rounds are not its period's [p·P, (p+1)·P).
    #[error("certificate of member {member} for period {period} names the wrong rounds")]
    WrongRounds {
        /// The member index.
        member: u16,
        /// Its period.
        period: u64,
    },
    /// A certificate of a period that ended before the round.
    #[error("certificate of member {member} is for period {period}, expired at round {round}")]
    Expired {
        /// The member index.
        member: u16,
        /// Its period.
        period: u64,
        /// The round asked for.
        round: u64,
    },
    /// A certificate of a period that starts after the round.
    #[error(
        "certificate of member {member} is for period {period}, not yet valid at round {round}"
    )]
    NotYetValid {
        /// The member index.
        member: u16,
        /// Its period.
        period: u64,
        /// The round asked for.
        round: u64,
    },
    /// Two certificates for one member.
    #[error("two certificates for member {member}")]
    Duplicate {
        /// The member index.
        member: u16,
    },
    /// No certificate for a member.
    #[error("no certificate for member {member}")]
    Missing {
        /// The member index.
        member: u16,
    },
    /// More certificates than members.
    #[error("{given} certificates for a committee of {size}")]
    Extra {
        /// Certificates given.
        given: usize,
        /// Committee size.
        size: usize,
    },
    /// amalgam-he refused the derived setup (parameters outside its ranges).
    #[error("fallback setup refused: {0}")]
    Setup(amalgam_he::HeError),
}

/// Rounds per key period P of `manifest` (None without a committee).
pub fn key_period_rounds(manifest: &VerifiedManifest) -> Option<u32> {
    manifest.committee().map(|c| c.key_period_rounds)
}

/// The key period of round id `round`: ⌊round / P⌋.
pub fn period_of(manifest: &VerifiedManifest, round: u64) -> Result<u64, FallbackSetupError> {
    let p = key_period_rounds(manifest).ok_or(FallbackSetupError::NoCommittee)?;
    Ok(round / u64::from(p.max(1)))
}

/// The round ids [p·P, (p+1)·P) of period `period` (saturating at the end of the id space).
pub fn period_rounds(
    manifest: &VerifiedManifest,
    period: u64,
) -> Result<(u64, u64), FallbackSetupError> {
    let p = u64::from(key_period_rounds(manifest).ok_or(FallbackSetupError::NoCommittee)?);
    let first = period.saturating_mul(p);
    Ok((first, first.saturating_add(p)))
}

/// The certificate member `secrets` issues for its box key of `period`: its committee index
/// is its identity's position among the manifest's decryptors.
pub fn issue_certificate(
    manifest: &VerifiedManifest,
    secrets: &MemberSecrets,
    period: u64,
) -> Result<PeriodCertificate, FallbackSetupError> {
    let me = secrets.identity.verifying_key();
    let decryptors = manifest.decryptors();
    let member = decryptors
        .iter()
        .position(|m| m.key == me)
        .ok_or(FallbackSetupError::NotAMember)?;
    let (first_round, end_round) = period_rounds(manifest, period)?;
    let scope = PeriodScope {
        consortium_digest: manifest.consortium_digest(),
        member: member as u16,
        first_round,
        end_round,
    };
    PeriodCertificate::from_member_keys(&secrets.certify_period(period, scope))
        .ok_or(FallbackSetupError::NotAMember)
}

/// Checks one certificate against the manifest alone: right consortium, a member of the
/// committee, the period's exact rounds, signed by that member's identity key. Says nothing
/// about which round it may serve (see [`fallback_setup`]).
pub fn check_certificate(
    manifest: &VerifiedManifest,
    cert: &PeriodCertificate,
) -> Result<(), FallbackSetupError> {
    let committee = manifest.decryptors();
    if manifest.committee().is_none() || committee.is_empty() {
        return Err(FallbackSetupError::NoCommittee);
    }
    let member = cert.member;
    if cert.consortium_digest != manifest.consortium_digest() {
        return Err(FallbackSetupError::WrongConsortium { member });
    }
    let identity = committee
        .get(usize::from(member))
        .ok_or(FallbackSetupError::UnknownMember {
            member,
            size: committee.len(),
        })?
        .key;
    if (cert.first_round, cert.end_round) != period_rounds(manifest, cert.period)? {
        return Err(FallbackSetupError::WrongRounds {
            member,
            period: cert.period,
        });
    }
    if !cert.verify(&identity) {
        return Err(FallbackSetupError::BadSignature { member });
    }
    Ok(())
}

/// The setup of fallback round `round` from the manifest and one certificate per committee
/// member for the round's key period. `model_window` is the last s published models
/// (round, digest), oldest first; its last entry is the head bound into the context through
/// `manifest.context_digest(head)`. The caller still checks that `round` is a fallback id.
pub fn fallback_setup(
    manifest: &VerifiedManifest,
    round: u64,
    model_window: &[(u64, [u8; 32])],
    certificates: &[PeriodCertificate],
) -> Result<RoundSetup, FallbackSetupError> {
    if !manifest.fallback().allowed {
        return Err(FallbackSetupError::Forbidden);
    }
    let policy = *manifest
        .committee()
        .ok_or(FallbackSetupError::NoCommittee)?;
    let identities = manifest.decryptors();
    let size = identities.len();
    if certificates.len() > size {
        return Err(FallbackSetupError::Extra {
            given: certificates.len(),
            size,
        });
    }
    let period = period_of(manifest, round)?;
    let mut slots: Vec<Option<&PeriodCertificate>> = vec![None; size];
    for cert in certificates {
        check_certificate(manifest, cert)?;
        let member = cert.member;
        if cert.period < period {
            return Err(FallbackSetupError::Expired {
                member,
                period: cert.period,
                round,
            });
        }
        if cert.period > period {
            return Err(FallbackSetupError::NotYetValid {
                member,
                period: cert.period,
                round,
            });
        }
        let slot = &mut slots[usize::from(member)];
        if slot.is_some() {
            return Err(FallbackSetupError::Duplicate { member });
        }
        *slot = Some(cert);
    }
    let mut members = Vec::with_capacity(size);
    for (j, (slot, m)) in slots.iter().zip(&identities).enumerate() {
        let cert = slot.ok_or(FallbackSetupError::Missing { member: j as u16 })?;
        members.push(cert.member_keys(m.key));
    }
    let committee = Committee::new(
        members,
        usize::from(policy.threshold),
        usize::from(policy.quorum),
        usize::from(policy.corrupt),
    )
    .map_err(FallbackSetupError::Setup)?;
    let sites = SiteDirectory::new(manifest.sites().iter().map(|m| m.key).collect())
        .map_err(FallbackSetupError::Setup)?;
    let d = manifest.encoded_len();
    let params = KaheParams::new(
        manifest.dp_policy().bits.get(),
        sites.len() as u32,
        u32::try_from(d).unwrap_or(u32::MAX),
    )
    .map_err(FallbackSetupError::Setup)?;
    let head = model_window
        .last()
        .map(|(_, digest)| *digest)
        .unwrap_or([0; 32]);
    RoundSetup::for_consortium(
        manifest.context_digest(&head),
        params,
        sites,
        committee,
        usize::from(manifest.body().protocol.min_cohort),
        round,
        model_window.to_vec(),
    )
    .map_err(FallbackSetupError::Setup)
}
