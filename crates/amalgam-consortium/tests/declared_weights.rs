//! Declared aggregation weights: one public weight per site in the signed manifest, bound
//! into the canonical bytes, and every malformed map refused before anyone signs; step
//! rules the model step does not implement (noised weights, server momentum) refused.
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

/// Uniform manifests keep the bytes they had before weights existed: nothing is written
/// after the weight mode byte.
#[test]
fn a_uniform_campaign_encodes_no_weight_list() {
    let (mut body, _) = declared();
    let declared_len = canonical::encode(&body).len();
    body.campaign.weight_mode = WeightMode::Uniform;
    body.campaign.declared_weights = BTreeMap::new();
    let uniform_len = canonical::encode(&body).len();
    let names: usize = (0..4).map(|i| 4 + format!("site-{i}").len() + 4).sum();
    assert_eq!(declared_len, uniform_len + 4 + names);
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
    // Written anyway, a map under another mode does not decode: members never sign a
    // manifest whose weights the decoder would drop.
    let mut uniform = body;
    uniform.campaign.weight_mode = WeightMode::Uniform;
    assert!(canonical::decode(&canonical::encode(&uniform)).is_err());
}

/// The noised mode has no implementation: asking for its weights is an error, never a
/// silent uniform mean.
#[test]
fn the_noised_mode_is_refused_when_its_weights_are_asked_for() {
    let (mut body, keys) = declared();
    body.campaign.weight_mode = WeightMode::Noised;
    body.campaign.declared_weights.clear();
    let all: Vec<_> = keys.iter().collect();
    let (_, verified) = sign_all(body, &all);
    assert!(matches!(
        verified.aggregation_weights(),
        Err(ManifestError::Invalid(m)) if m.contains("not implemented")
    ));
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
