//! Key-period certificates and the fallback setup derived from the manifest and them alone:
//! every way a certificate can be wrong is refused with its own error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_consortium::fallback::{
    FallbackSetupError, check_certificate, fallback_setup, issue_certificate, period_of,
};
use amalgam_consortium::testing::{TestConsortium, consortium, sign_all};
use amalgam_consortium::{IdentityKey, PeriodCertificate, period_key};
use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_he::{MemberSecrets, PeriodScope};

/// The fallback re-run of masking round 1 (amalgam-net's `FALLBACK_ROUND_BASE + 1`).
const ROUND: u64 = (1 << 32) + 1;
const WINDOW: &[(u64, [u8; 32])] = &[(ROUND, [0x4d; 32])];

fn secrets(key: &IdentityKey, box_byte: u8) -> MemberSecrets {
    member_secrets_from_bytes(key.to_ledger_key().to_bytes(), [box_byte; 32])
}

fn fixture() -> TestConsortium {
    consortium(41, 5, 4, 1000)
}

fn certs(c: &TestConsortium, period: u64) -> Vec<PeriodCertificate> {
    c.decryptors
        .iter()
        .enumerate()
        .map(|(j, k)| issue_certificate(&c.verified, &secrets(k, 90 + j as u8), period).unwrap())
        .collect()
}

#[test]
fn honest_certificates_give_the_setup_bound_to_the_consortium() {
    let c = fixture();
    let p = period_of(&c.verified, ROUND).unwrap();
    assert_eq!(p, ROUND / 16, "default key period of 16 rounds");
    let all = certs(&c, p);
    for (j, cert) in all.iter().enumerate() {
        assert_eq!(usize::from(cert.member), j);
        assert_eq!((cert.first_round, cert.end_round), (p * 16, p * 16 + 16));
        assert!(cert.first_round <= ROUND && ROUND < cert.end_round);
        check_certificate(&c.verified, cert).unwrap();
    }
    let setup = fallback_setup(&c.verified, ROUND, WINDOW, &all).unwrap();
    assert_eq!(setup.committee().size(), 4);
    assert_eq!(setup.sites().len(), 5);
    assert_eq!(setup.round(), ROUND);
    // Certificate order does not matter; the head model does (it is in the context).
    let mut reversed = all.clone();
    reversed.reverse();
    let again = fallback_setup(&c.verified, ROUND, WINDOW, &reversed).unwrap();
    assert_eq!(again.context(), setup.context());
    let other_model = fallback_setup(&c.verified, ROUND, &[(ROUND, [0x4e; 32])], &all).unwrap();
    assert_ne!(other_model.context(), setup.context());
    // Another round of the same period reuses the keys, with its own context.
    let next = fallback_setup(&c.verified, ROUND + 1, WINDOW, &all).unwrap();
    assert_ne!(next.context(), setup.context());
}

#[test]
fn expired_and_not_yet_valid_periods_are_refused() {
    let c = fixture();
    let p = period_of(&c.verified, ROUND).unwrap();
    let mut stale = certs(&c, p);
    stale[2] = certs(&c, p - 1)[2];
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &stale).unwrap_err(),
        FallbackSetupError::Expired {
            member: 2,
            period: p - 1,
            round: ROUND
        }
    );
    let mut early = certs(&c, p);
    early[1] = certs(&c, p + 1)[1];
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &early).unwrap_err(),
        FallbackSetupError::NotYetValid {
            member: 1,
            period: p + 1,
            round: ROUND
        }
    );
    // The first round of the next period: every current certificate has expired.
    let end = p * 16 + 16;
    assert!(matches!(
        fallback_setup(&c.verified, end, WINDOW, &certs(&c, p)),
        Err(FallbackSetupError::Expired { member: 0, .. })
    ));
}

#[test]
fn forged_and_misattributed_certificates_are_refused() {
    let c = fixture();
    let p = period_of(&c.verified, ROUND).unwrap();
    let mut forged = certs(&c, p);
    forged[3].box_key[0] ^= 1;
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &forged).unwrap_err(),
        FallbackSetupError::BadSignature { member: 3 }
    );
    // Member 0 signs a box key in member 1's name: the identity is the manifest's, so no.
    let mut stolen = certs(&c, p);
    let k0 = secrets(&c.decryptors[0], 77);
    let scope = PeriodScope {
        consortium_digest: c.verified.consortium_digest(),
        member: 1,
        first_round: stolen[0].first_round,
        end_round: stolen[0].end_round,
    };
    stolen[1] = PeriodCertificate::from_member_keys(&k0.certify_period(p, scope)).unwrap();
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &stolen).unwrap_err(),
        FallbackSetupError::BadSignature { member: 1 }
    );
    // A member index beyond the committee.
    let mut beyond = certs(&c, p);
    beyond[0].member = 4;
    assert_eq!(
        check_certificate(&c.verified, &beyond[0]).unwrap_err(),
        FallbackSetupError::UnknownMember { member: 4, size: 4 }
    );
    // A correctly signed certificate naming rounds that are not its period's.
    let k2 = secrets(&c.decryptors[2], 92);
    let wide = PeriodScope {
        consortium_digest: c.verified.consortium_digest(),
        member: 2,
        first_round: 0,
        end_round: u64::MAX,
    };
    let mut widened = certs(&c, p);
    widened[2] = PeriodCertificate::from_member_keys(&k2.certify_period(p, wide)).unwrap();
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &widened).unwrap_err(),
        FallbackSetupError::WrongRounds {
            member: 2,
            period: p
        }
    );
}

#[test]
fn a_certificate_for_another_consortium_is_refused() {
    let c = fixture();
    let p = period_of(&c.verified, ROUND).unwrap();
    // Same members and keys, another consortium id: another digest.
    let mut body = c.verified.body().clone();
    body.consortium = "another-consortium".into();
    let mut keys: Vec<&IdentityKey> = c.sites.iter().collect();
    keys.push(&c.aggregator);
    keys.extend(c.decryptors.iter());
    let (_, other) = sign_all(body, &keys);
    assert_ne!(other.consortium_digest(), c.verified.consortium_digest());
    let mut mixed = certs(&c, p);
    mixed[0] = issue_certificate(&other, &secrets(&c.decryptors[0], 90), p).unwrap();
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &mixed).unwrap_err(),
        FallbackSetupError::WrongConsortium { member: 0 }
    );
    // Re-labelled with this consortium's digest, the signature no longer matches.
    mixed[0].consortium_digest = c.verified.consortium_digest();
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &mixed).unwrap_err(),
        FallbackSetupError::BadSignature { member: 0 }
    );
}

#[test]
fn missing_extra_and_duplicate_certificates_are_refused() {
    let c = fixture();
    let p = period_of(&c.verified, ROUND).unwrap();
    let all = certs(&c, p);
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &all[..3]).unwrap_err(),
        FallbackSetupError::Missing { member: 3 }
    );
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &[]).unwrap_err(),
        FallbackSetupError::Missing { member: 0 }
    );
    let mut five = all.clone();
    five.push(all[2]);
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &five).unwrap_err(),
        FallbackSetupError::Extra { given: 5, size: 4 }
    );
    // Member 1 twice (two different keys of one period), member 3 absent.
    let mut twice = all.clone();
    twice[3] = issue_certificate(&c.verified, &secrets(&c.decryptors[1], 55), p).unwrap();
    assert_eq!(
        fallback_setup(&c.verified, ROUND, WINDOW, &twice).unwrap_err(),
        FallbackSetupError::Duplicate { member: 1 }
    );
}

#[test]
fn a_manifest_that_forbids_the_fallback_gives_no_setup() {
    let c = fixture();
    let p = period_of(&c.verified, ROUND).unwrap();
    let mut body = c.verified.body().clone();
    body.fallback.allowed = false;
    let mut keys: Vec<&IdentityKey> = c.sites.iter().collect();
    keys.push(&c.aggregator);
    keys.extend(c.decryptors.iter());
    let (_, forbidding) = sign_all(body, &keys);
    let all: Vec<PeriodCertificate> = c
        .decryptors
        .iter()
        .enumerate()
        .map(|(j, k)| issue_certificate(&forbidding, &secrets(k, 90 + j as u8), p).unwrap())
        .collect();
    assert_eq!(
        fallback_setup(&forbidding, ROUND, WINDOW, &all).unwrap_err(),
        FallbackSetupError::Forbidden
    );
    // A non-member cannot issue one at all.
    let outsider = member_secrets_from_bytes([3; 32], [4; 32]);
    assert_eq!(
        issue_certificate(&c.verified, &outsider, p).unwrap_err(),
        FallbackSetupError::NotAMember
    );
}

#[test]
fn the_wire_form_is_strict() {
    let c = fixture();
    let cert = certs(&c, 7)[1];
    let bytes = cert.to_bytes();
    assert_eq!(bytes.len(), period_key::ENCODED_LEN);
    assert_eq!(PeriodCertificate::from_bytes(&bytes).unwrap(), cert);
    let mut long = bytes.clone();
    long.push(0);
    assert!(PeriodCertificate::from_bytes(&long).is_err());
    assert!(PeriodCertificate::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut magic = bytes.clone();
    magic[4] = 2;
    assert!(PeriodCertificate::from_bytes(&magic).is_err());
    // A bare (unscoped) box-key certificate carries no period certificate.
    let bare = secrets(&c.decryptors[0], 5).certify(7);
    assert!(bare.verify());
    assert!(PeriodCertificate::from_member_keys(&bare).is_none());
}
