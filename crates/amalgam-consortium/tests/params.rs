//! Round parameters come from the manifest alone and pass amalgam-proto's own validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_consortium::flags::{Flag, flags, parse_verified, require_verified};
use amalgam_consortium::testing::{self, consortium, seeded_key};
use amalgam_consortium::{Graph, ManifestError, Role, SignedManifest, Trust, fingerprint};
use amalgam_proto::{ParamError, RoundParams};

fn base() -> amalgam_consortium::ManifestBody {
    let agg = seeded_key(21, 0);
    let sites: Vec<_> = (1..=10).map(|i| seeded_key(21, i)).collect();
    testing::body(&sites, &agg, &[], 100)
}

#[test]
fn round_params_equal_amalgam_proto_validation() {
    let c = consortium(20, 10, 0, 1000);
    let v = &c.verified;
    let p = v.round_params(3).unwrap();
    // The same set amalgam-proto builds from the same numbers.
    let mut req = RoundParams::modular(10, 7, 20, 1024).unwrap().request();
    req.colluders = amalgam_proto::Colluders::new(1).unwrap();
    req.dropouts = amalgam_proto::Dropouts::new(3);
    assert_eq!(p, RoundParams::new(req).unwrap());
    assert_eq!((p.t(), p.c(), p.dropouts().get()), (7, 1, 3));
    // DP numbers: n_min = m - c = 6, σ_local = σ/√6.
    let dp = v.dp_round_params();
    assert_eq!(dp.local_sigma.get(), 5.7 / 6f64.sqrt());
    assert_eq!(dp.n_cohort.get(), 10);
    // Round ids beyond the campaign are refused.
    assert!(v.round_params(v.max_round()).is_ok());
    assert!(matches!(
        v.round_params(v.max_round() + 1),
        Err(ManifestError::Round { .. })
    ));
    // Context and rotation seed are bound to the manifest and the model.
    let other = consortium(19, 10, 0, 1000);
    assert_ne!(v.context_digest(&[0; 32]), v.context_digest(&[1; 32]));
    assert_ne!(
        v.context_digest(&[0; 32]),
        other.verified.context_digest(&[0; 32])
    );
    assert_ne!(v.hadamard_seed(1), v.hadamard_seed(2));
    let req = v
        .dp_round_request(3, &[5; 32], amalgam_dp::sampler::SamplerKind::Fast)
        .unwrap();
    assert_eq!(req.manifest_digest, v.consortium_digest());
    assert_eq!(v.dp_round_params().mismatch(&req), None);
}

#[test]
fn unsafe_sets_are_refused_with_amalgam_protos_reason() {
    let mut b = base();
    b.protocol.threshold = 5; // 2t > n + c fails for n = 10, c = 1
    b.protocol.min_cohort = 5;
    assert!(matches!(
        SignedManifest::from_body(b),
        Err(ManifestError::Params(ParamError::ThresholdTooLow { .. }))
    ));
    let mut b = base();
    b.protocol.colluders = 0;
    assert!(matches!(
        SignedManifest::from_body(b),
        Err(ManifestError::Params(ParamError::NoColluderTolerated))
    ));
    let mut b = base();
    b.protocol.graph = Graph::Harary { k: 4 };
    b.protocol.threshold = 4;
    b.protocol.min_cohort = 4;
    b.protocol.dropouts = 0;
    b.protocol.trust = Trust::Malicious;
    assert!(matches!(
        SignedManifest::from_body(b),
        Err(ManifestError::Params(
            ParamError::HararyNeedsCuriousAggregator { .. }
        ))
    ));
    let mut b = base();
    b.protocol.dropouts = 5;
    assert!(matches!(
        SignedManifest::from_body(b),
        Err(ManifestError::Params(ParamError::ThresholdNotLive { .. }))
    ));
    // More colluders with a threshold raised to match is accepted (n_min = 8 - 3).
    let mut b = base();
    b.protocol.colluders = 3;
    b.protocol.threshold = 8;
    b.protocol.min_cohort = 8;
    b.protocol.dropouts = 2;
    assert!(SignedManifest::from_body(b).is_ok());
    // Two aggregators, or an aggregator that is also a site.
    let mut b = base();
    b.members[0].roles.push(Role::Aggregator);
    assert!(SignedManifest::from_body(b).is_err());
    let mut b = base();
    b.members[1].roles = vec![Role::Aggregator];
    assert!(
        SignedManifest::from_body(b)
            .unwrap_err()
            .to_string()
            .contains("exactly one aggregator")
    );
    // Fallback allowed without a committee.
    let mut b = base();
    b.fallback.allowed = true;
    assert!(SignedManifest::from_body(b).is_err());
    // Deadline bounds inverted.
    let mut b = base();
    b.deadlines.min_secs = 700;
    assert!(SignedManifest::from_body(b).is_err());
    // Non-finite training numbers.
    let mut b = base();
    b.campaign.training.learning_rate = f64::NAN;
    assert!(SignedManifest::from_body(b).is_err());
}

#[test]
fn committee_rules_are_amalgam_hes() {
    let agg = seeded_key(22, 0);
    let sites: Vec<_> = (1..=5).map(|i| seeded_key(22, i)).collect();
    let dec: Vec<_> = (10..14).map(|i| seeded_key(22, i)).collect();
    let ok = testing::body(&sites, &agg, &dec, 16);
    assert!(SignedManifest::from_body(ok.clone()).is_ok());
    // 2Q − size > c_d: with 4 members, c_d = 1, Q = 2 two quorums could sign two cohorts.
    let mut b = ok.clone();
    b.committee.as_mut().unwrap().quorum = 2;
    let e = SignedManifest::from_body(b).unwrap_err().to_string();
    assert!(e.contains("two quorums"), "{e}");
    // c_d >= t_c.
    let mut b = ok.clone();
    b.committee.as_mut().unwrap().corrupt = 3;
    assert!(SignedManifest::from_body(b).is_err());
    // Decryptors without committee numbers.
    let mut b = ok;
    b.committee = None;
    assert!(SignedManifest::from_body(b).is_err());
}

#[test]
fn key_period_is_bounded_and_bound_into_the_digest() {
    let agg = seeded_key(23, 0);
    let sites: Vec<_> = (1..=5).map(|i| seeded_key(23, i)).collect();
    let dec: Vec<_> = (10..14).map(|i| seeded_key(23, i)).collect();
    let ok = testing::body(&sites, &agg, &dec, 16);
    assert_eq!(
        ok.committee.unwrap().key_period_rounds,
        amalgam_consortium::model::DEFAULT_KEY_PERIOD_ROUNDS
    );
    let with_period = |p: u32| {
        let mut b = ok.clone();
        b.committee.as_mut().unwrap().key_period_rounds = p;
        SignedManifest::from_body(b)
    };
    for bad in [0, (1 << 20) + 1, u32::MAX] {
        let e = with_period(bad).unwrap_err().to_string();
        assert!(e.contains("key_period_rounds"), "{bad}: {e}");
    }
    let one = with_period(1).unwrap();
    let max = with_period(1 << 20).unwrap();
    // The period is signed: the canonical bytes, so the digest members sign, differ.
    assert_ne!(one.canonical_bytes(), max.canonical_bytes());
    assert_ne!(
        amalgam_consortium::signed::digest_of(one.canonical_bytes()),
        amalgam_consortium::signed::digest_of(max.canonical_bytes())
    );
    // A draft written before the field existed reads as the default period.
    let text = amalgam_consortium::draft::draft_text(&ok).unwrap();
    let legacy = text.replace("key_period_rounds = 16\n", "");
    assert_ne!(legacy, text, "the draft names the period");
    assert_eq!(
        amalgam_consortium::draft::parse_draft(&legacy).unwrap(),
        amalgam_consortium::draft::parse_draft(&text).unwrap()
    );
}

#[test]
fn flags_name_organisations_that_could_collude() {
    let mut b = base();
    // The aggregator's organisation also runs a decryptor and a site; two decryptors share one.
    let agg_org = b
        .members
        .iter()
        .find(|m| m.has(Role::Aggregator))
        .unwrap()
        .organisation
        .clone();
    let d1 = seeded_key(21, 100).verifying_key();
    let d2 = seeded_key(21, 101).verifying_key();
    for (key, name, org) in [
        (d1, "dec-a", agg_org.clone()),
        (d2, "dec-b", agg_org.clone()),
    ] {
        b.members.push(amalgam_consortium::Member {
            name: name.into(),
            organisation: org,
            roles: vec![Role::Decryptor],
            key,
        });
    }
    b.members[0].organisation = agg_org.clone();
    let f = flags(&b, None);
    assert!(f.contains(&Flag::AggregatorOrganisationRunsDecryptor {
        organisation: agg_org.clone()
    }));
    assert!(f.contains(&Flag::DecryptorsShareOrganisation {
        organisation: agg_org.clone(),
        decryptors: 2
    }));
    assert!(f.contains(&Flag::AggregatorOrganisationRunsSites {
        organisation: agg_org,
        sites: 1
    }));
    // The base consortium (distinct organisations) has none.
    assert!(flags(&base(), None).is_empty());
}

#[test]
fn signing_requires_every_other_fingerprint_verified() {
    let mut b = base();
    b.normalise();
    let me = b.members[0].key;
    let all: Vec<String> = b.members.iter().map(|m| fingerprint(&m.key)).collect();
    // Everyone else verified (own key not needed).
    let others: Vec<String> = all[1..].to_vec();
    let parsed = parse_verified(&others.join("\n")).unwrap();
    assert!(require_verified(&b, &me, &parsed).is_ok());
    // One missing: refused, naming it.
    let missing = b.members[3].name.clone();
    let partial: Vec<String> = others.iter().filter(|f| **f != all[3]).cloned().collect();
    let parsed = parse_verified(&partial.join("\n")).unwrap();
    let e = require_verified(&b, &me, &parsed).unwrap_err();
    assert!(e.to_string().contains(&missing), "{e}");
    // Nothing verified: refused. Garbage lines: refused.
    assert!(require_verified(&b, &me, &[]).is_err());
    assert!(parse_verified("not a fingerprint").is_err());
    // Unverified identities are flagged.
    let f = flags(&b, Some(&parse_verified(&partial.join("\n")).unwrap()));
    assert_eq!(
        f.iter()
            .filter(|x| matches!(x, Flag::Unverified { .. }))
            .count(),
        2,
        "the member left out and this member itself"
    );
}

#[test]
fn amalgam_proto_state_machines_accept_the_manifest_and_only_its_sites() {
    use amalgam_proto::site::{PhaseTimeout, RoundLog};
    use amalgam_proto::{Aggregator, Site};
    let c = consortium(23, 5, 0, 64);
    let v = &c.verified;
    let params = v.round_params(1).unwrap();
    let ctx = v.context_digest(&[3; 32]);
    let timeout = PhaseTimeout::from_millis(10_000).unwrap();
    for key in &c.sites {
        let mut log = RoundLog::new();
        Site::with_context_digest(
            params,
            v.proto_manifest(),
            ctx,
            1,
            key.to_ledger_key(),
            timeout,
            &mut log,
        )
        .unwrap();
    }
    // The aggregator's identity is no site: amalgam-proto refuses it.
    let mut log = RoundLog::new();
    assert!(
        Site::with_context_digest(
            params,
            v.proto_manifest(),
            ctx,
            1,
            c.aggregator.to_ledger_key(),
            timeout,
            &mut log,
        )
        .is_err()
    );
    Aggregator::with_context_digest(params, v.proto_manifest(), ctx, 1).unwrap();
}
