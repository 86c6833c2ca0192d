//! Manifest validity: every member signs the exact canonical bytes, nothing else verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_consortium::testing::{self, consortium, seeded_key, sign_all};
use amalgam_consortium::{ManifestError, Role, SignedManifest, canonical, draft};

#[test]
fn helper_consortium_verifies_and_derives_proto_params() {
    let c = consortium(7, 5, 3, 1000);
    let v = &c.verified;
    assert_eq!(v.sites().len(), 5);
    assert_eq!(v.decryptors().len(), 3);
    assert_eq!(v.aggregator().key, c.aggregator.verifying_key());
    for (i, k) in c.sites.iter().enumerate() {
        assert_eq!(v.site_index(&k.verifying_key()), Some(i as u16));
    }
    assert_eq!(v.site_index(&c.aggregator.verifying_key()), None);
    let p = v.round_params(0).unwrap();
    assert_eq!(p.n(), 5);
    assert_eq!(
        p.d(),
        1024,
        "d padded to a power of two as the DDG encoding emits it"
    );
    // Same bytes back from the file encoding.
    let back = SignedManifest::from_bytes(&c.signed.to_bytes()).unwrap();
    assert_eq!(back, c.signed);
    assert_eq!(
        back.verify().unwrap().consortium_digest(),
        v.consortium_digest()
    );
}

#[test]
fn draft_toml_round_trip_keeps_the_digest() {
    let c = consortium(8, 4, 0, 64);
    let text = draft::draft_text(c.verified.body()).unwrap();
    let parsed = draft::parse_draft(&text).unwrap();
    assert_eq!(&parsed, c.verified.body());
    // Whitespace and comments do not change the canonical bytes.
    let noisy = text
        .replace(" = ", "   =   ")
        .replace('\n', "\n# comment\n");
    let parsed = draft::parse_draft(&noisy).unwrap();
    assert_eq!(canonical::encode(&parsed), c.verified.canonical_bytes());
}

#[test]
fn missing_signature_refused() {
    let aggregator = seeded_key(1, 0);
    let sites: Vec<_> = (1..=4).map(|i| seeded_key(1, i)).collect();
    let body = testing::body(&sites, &aggregator, &[], 16);
    let mut signed = SignedManifest::from_body(body).unwrap();
    for k in &sites {
        signed.sign_as(k).unwrap();
    }
    match signed.verify() {
        Err(ManifestError::MissingSignature { name, .. }) => assert_eq!(name, "aggregator"),
        other => panic!("{other:?}"),
    }
    signed.sign_as(&aggregator).unwrap();
    assert!(signed.verify().is_ok());
    let _ = (sign_all, Role::Site);
}
