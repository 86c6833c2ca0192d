//! Declared aggregation weights: one public weight per site in the signed manifest, bound
//! into the canonical bytes, and every malformed map refused before anyone signs; the noised
//! mode's numbers signed and range-checked; server momentum (not implemented) refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use amalgam_consortium::global_model::AggregationWeights;
use amalgam_consortium::testing::{self, seeded_key, sign_all};
use amalgam_consortium::validate::MAX_DECLARED_WEIGHT;
use amalgam_consortium::{
    ManifestBody, ManifestError, SignedManifest, WeightMode, canonical, draft,
};

/// A four-site draft under the declared mode, site-i weighing 100·(i + 1).
fn declared() -> (ManifestBody, Vec<amalgam_consortium::IdentityKey>) {
    let mut keys: Vec<_> = (1..=4).map(|i| seeded_key(31, i)).collect();
    let aggregator = seeded_key(31, 0);
    let mut body = testing::body(&keys, &aggregator, &[], 16);
    body.campaign.weight_mode = WeightMode::Declared;
    body.campaign.declared_weights = (0..4u32)
        .map(|i| (format!("site-{i}"), 100 * (i + 1)))
        .collect();
    body.normalise();
    keys.push(aggregator);
    (body, keys)
}

fn refused(body: ManifestBody, needle: &str) {
    match SignedManifest::from_body(body) {
        Err(ManifestError::Invalid(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
    }
}

#[test]
fn declared_weights_are_signed_and_give_weights_by_site_id() {
    let (body, keys) = declared();
    let all: Vec<_> = keys.iter().collect();
    let (signed, verified) = sign_all(body.clone(), &all);
    // By site id (key order), each site's weight is the one declared under its name.
    let want: Vec<u32> = verified
        .sites()
        .iter()
        .map(|m| body.campaign.declared_weights[&m.name])
        .collect();
    assert_eq!(
        verified.aggregation_weights().unwrap(),
        AggregationWeights::Declared(want)
    );
    // The weights are in the signed bytes: the file and the TOML draft keep them.
    let back = SignedManifest::from_bytes(&signed.to_bytes()).unwrap();
    assert_eq!(back.verify().unwrap().body(), verified.body());
    let text = draft::draft_text(verified.body()).unwrap();
    assert!(text.contains("declared_weights"), "{text}");
    assert_eq!(&draft::parse_draft(&text).unwrap(), verified.body());
    // Changing one weight changes the digest, so no signature carries over.
    let mut other = body.clone();
    other.campaign.declared_weights.insert("site-2".into(), 301);
    assert_ne!(canonical::encode(&other), canonical::encode(&body));
}

/// Uniform manifests keep the bytes they had before weights existed: the declared encoding
/// is the uniform one with mode byte 1 for 0 and the weight list inserted right after it.
#[test]
fn a_uniform_campaign_encodes_no_weight_list() {
    let (mut body, _) = declared();
    let declared = canonical::encode(&body);
    body.campaign.weight_mode = WeightMode::Uniform;
    body.campaign.declared_weights = BTreeMap::new();
    let uniform = canonical::encode(&body);
    let list: usize = 4
        + (0..4)
            .map(|i| 4 + format!("site-{i}").len() + 4)
            .sum::<usize>();
    assert_eq!(declared.len(), uniform.len() + list);
    let p = (0..uniform.len())
        .find(|&i| uniform[i] != declared[i])
        .unwrap();
    assert_eq!(
        (uniform[p], declared[p]),
        (0, 1),
        "the mode byte differs first"
    );
    assert_eq!(uniform[..p], declared[..p]);
    assert_eq!(uniform[p + 1..], declared[p + 1 + list..]);
    assert_eq!(declared[p + 1..p + 5], 4u32.to_be_bytes());
}

/// Byte-level edits of a declared manifest's weight list: names out of order, a name twice,
/// a cut-off list, or a map under another mode (tag 0xff) never decode.
#[test]
fn malformed_weight_lists_do_not_decode() {
    let (body, _) = declared();
    let bytes = canonical::encode(&body);
    assert_eq!(canonical::decode(&bytes).unwrap(), body);
    let at = |needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let (s0, s1) = (at(b"site-0") + 5, at(b"site-1") + 5);
    let mut descending = bytes.clone();
    descending.swap(s0, s1);
    let e = canonical::decode(&descending).unwrap_err().to_string();
    assert!(e.contains("strictly ascending"), "{e}");
    let mut twice = bytes.clone();
    twice[s1] = b'0';
    let e = canonical::decode(&twice).unwrap_err().to_string();
    assert!(e.contains("strictly ascending"), "{e}");
    assert!(canonical::decode(&bytes[..s1]).is_err());
    let mut stray = body;
    stray.campaign.weight_mode = WeightMode::Uniform;
    let stray_bytes = canonical::encode(&stray);
    let e = canonical::decode(&stray_bytes).unwrap_err().to_string();
    assert!(e.contains("weight_mode"), "{e}");
}

#[test]
fn malformed_weight_maps_are_refused() {
    let (body, _) = declared();
    let mut missing = body.clone();
    missing.campaign.declared_weights.remove("site-3");
    refused(missing, "site-3 has no declared weight");
    let mut stranger = body.clone();
    stranger
        .campaign
        .declared_weights
        .insert("site-9".into(), 5);
    refused(stranger, "site-9, which is not a member");
    let mut aggregator = body.clone();
    aggregator
        .campaign
        .declared_weights
        .insert("aggregator".into(), 5);
    refused(aggregator, "aggregator, which is not a site");
    for bad in [0, MAX_DECLARED_WEIGHT + 1] {
        let mut b = body.clone();
        b.campaign.declared_weights.insert("site-1".into(), bad);
        refused(b, "declared weight of site-1");
    }
    let mut uniform = body.clone();
    uniform.campaign.weight_mode = WeightMode::Uniform;
    refused(uniform, "the weight mode is not declared");
    // The heaviest at most 100 times the lightest: 100 passes, 101 does not.
    let mut wide = body.clone();
    wide.campaign.declared_weights = (0..4u32)
        .map(|i| (format!("site-{i}"), if i == 0 { 10 } else { 1000 }))
        .collect();
    SignedManifest::from_body(wide.clone()).unwrap();
    wide.campaign.declared_weights.insert("site-3".into(), 1010);
    refused(wide, "at most 100 times the lightest");
    // A name that is not printable ASCII is refused before it is printed anywhere.
    let mut escape = body;
    escape
        .campaign
        .declared_weights
        .insert("site-\u{1b}[2J".into(), 5);
    refused(escape, "must be printable ASCII");
}

/// The noised mode (DP-FedAvg) carries n_cap, κ and a floor in the signed bytes: they
/// round-trip, give `AggregationWeights::Noised` and add the weight coordinate to the DP
/// dimension; missing, stray or out-of-range numbers are refused (the floor within [m/2, m],
/// m = 3 here), as is, under DP, a σ/κ that would make the divisor noise, and a stray policy
/// under another mode never decodes.
#[test]
fn the_noised_mode_signs_its_numbers_and_adds_the_weight_coordinate() {
    use amalgam_consortium::global_model::AggregationWeights;
    use amalgam_consortium::{DpBudget, NoisedWeightPolicy};
    let (mut body, keys) = declared();
    body.campaign.declared_weights.clear();
    body.campaign.weight_mode = WeightMode::Noised;
    assert_eq!(body.protocol.min_cohort, 3);
    let policy = NoisedWeightPolicy {
        n_cap: 1000,
        kappa: body.dp.clip.get() / 2.0,
        floor: 2.0,
    };
    refused(body.clone(), "needs noised_weights");
    body.campaign.noised_weights = Some(policy);
    // σ = 5.7 against κ = 0.5: the estimate's noise, 5.7·√(4/2)/0.5 ≈ 16 sites, is far
    // above the floor of 2.
    refused(body.clone(), "the divisor would be noise");
    let mut quiet = body.clone();
    quiet.dp.sigma = amalgam_dp::params::Sigma::new(0.7).unwrap();
    assert!(SignedManifest::from_body(quiet).is_ok());
    body.dp.budget = DpBudget::None;
    let bytes = canonical::encode(&body);
    assert_eq!(canonical::decode(&bytes).unwrap(), body);
    let all: Vec<_> = keys.iter().collect();
    let (_, verified) = sign_all(body.clone(), &all);
    assert_eq!(
        verified.aggregation_weights().unwrap(),
        AggregationWeights::Noised(policy)
    );
    assert_eq!(
        verified.dp_round_params().dim.get(),
        body.campaign.parameter_count.get() + 1
    );
    let with = |edit: NoisedWeightPolicy| {
        let mut b = body.clone();
        b.campaign.noised_weights = Some(edit);
        b
    };
    refused(
        with(NoisedWeightPolicy {
            kappa: 1.5,
            ..policy
        }),
        "kappa",
    );
    refused(
        with(NoisedWeightPolicy {
            kappa: 0.0,
            ..policy
        }),
        "kappa",
    );
    refused(
        with(NoisedWeightPolicy {
            floor: 3.5,
            ..policy
        }),
        "floor",
    );
    refused(
        with(NoisedWeightPolicy {
            floor: 1.0,
            ..policy
        }),
        "floor",
    );
    refused(
        with(NoisedWeightPolicy {
            floor: f64::NAN,
            ..policy
        }),
        "floor",
    );
    refused(with(NoisedWeightPolicy { n_cap: 0, ..policy }), "n_cap");
    for edge in [1.5, 3.0] {
        assert!(
            SignedManifest::from_body(with(NoisedWeightPolicy {
                floor: edge,
                ..policy
            }))
            .is_ok()
        );
    }
    let mut stray = body;
    stray.campaign.weight_mode = WeightMode::Uniform;
    refused(stray.clone(), "weight mode is not noised");
    assert!(canonical::decode(&canonical::encode(&stray)).is_err());
}

/// A non-zero server momentum would be ignored by the model step (plain FedAvg): refused
/// wherever the step rule is asked for, never trained without it while the manifest says
/// otherwise.
#[test]
fn a_server_momentum_the_step_does_not_apply_is_refused() {
    let (mut body, keys) = declared();
    body.campaign.training.server_momentum = 0.9;
    let all: Vec<_> = keys.iter().collect();
    let (_, verified) = sign_all(body, &all);
    assert!(matches!(
        verified.aggregation_weights(),
        Err(ManifestError::Invalid(m)) if m.contains("server momentum 0.9 is not implemented")
    ));
}
