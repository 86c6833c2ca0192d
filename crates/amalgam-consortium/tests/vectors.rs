//! Test vectors for the canonical manifest encoding (`protocol-spec/test-vectors/consortium-v1/`,
//! spec consortium.md §3): a valid signed manifest with its body, digest, fingerprints and
//! context digest, and `*_bad_*` files that a verifier must refuse with the named error.
//!
//! * `every_vector_file_checks` reads every file (failing if there are none) and checks it
//!   using only what the file says.
//! * `vectors_are_current` regenerates them in memory and compares with the files.
//! * `generate_vectors` (ignored) rewrites the folder:
//!   `cargo test -p amalgam-consortium --test vectors -- --ignored generate_vectors`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use amalgam_consortium::testing::consortium;
use amalgam_consortium::{ManifestError, SignedManifest, canonical, fingerprint, signed};
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/test-vectors/consortium-v1")
}

fn error_name(e: &ManifestError) -> &'static str {
    match e {
        ManifestError::MissingSignature { .. } => "missing_signature",
        ManifestError::BadSignature { .. } => "bad_signature",
        ManifestError::SignatureCount { .. } => "signature_count",
        ManifestError::Malformed { .. } => "malformed",
        ManifestError::Invalid(_) => "invalid",
        _ => "other",
    }
}

fn vectors() -> BTreeMap<String, Value> {
    let c = consortium(2026, 4, 3, 1000);
    let v = &c.verified;
    let file = c.signed.to_bytes();
    let mut out = BTreeMap::new();
    let members: Vec<Value> = v
        .members()
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "key": hex::encode(m.key.as_bytes()),
                "fingerprint": fingerprint(&m.key),
            })
        })
        .collect();
    out.insert(
        "manifest_valid.json".to_string(),
        json!({
            "description": "A manifest of 4 sites, an aggregator and 3 decryptors, signed by all 8 members.",
            "signed_file": hex::encode(&file),
            "body": hex::encode(v.canonical_bytes()),
            "consortium_digest": hex::encode(v.consortium_digest()),
            "context_digest_for_model_00": hex::encode(v.context_digest(&[0; 32])),
            "hadamard_seed_round_1": hex::encode(v.hadamard_seed(1)),
            "members": members,
            "expect": "valid",
        }),
    );
    let body_len = v.canonical_bytes().len();
    let slots_at = 27 + 4 + body_len + 4;
    // The first member's slot emptied.
    let mut missing = file[..slots_at].to_vec();
    missing.push(0);
    missing.extend_from_slice(&file[slots_at + 65..]);
    out.insert(
        "manifest_bad_missing_signature.json".to_string(),
        json!({
            "description": "The first member's signature slot is empty: no quorum, refused.",
            "signed_file": hex::encode(&missing),
            "expect": "missing_signature",
        }),
    );
    // The lowest bit of σ flipped (body offset 89: magic 5, consortium 19, epoch 8, prev 1,
    // protocol 12, committee 11, unit 1, budget 17, clip 8, then σ's last byte): still a valid
    // manifest, so only the signatures can catch it.
    let mut flipped = file.clone();
    let at = 27 + 4 + 89;
    flipped[at] ^= 0x01;
    // The flip must land on σ and nothing else, or the vector would test another refusal.
    let flipped_body = canonical::decode(&flipped[27 + 4..27 + 4 + body_len]).unwrap();
    let mut expected = v.body().clone();
    expected.dp.sigma =
        amalgam_dp::params::Sigma::new(f64::from_bits(v.body().dp.sigma.get().to_bits() ^ 1))
            .unwrap();
    assert_eq!(flipped_body, expected, "the flipped byte is not sigma's");
    out.insert(
        "manifest_bad_flipped_byte.json".to_string(),
        json!({
            "description": "The lowest bit of sigma flipped: still a valid manifest, every signature fails.",
            "signed_file": hex::encode(&flipped),
            "expect": "bad_signature",
        }),
    );
    // Members swapped: decodes, re-encodes identically, refused by canonical order.
    let mut body = v.body().clone();
    body.members.swap(0, 1);
    let swapped = canonical::encode(&body);
    let mut f = b"AMALGAM SIGNED MANIFEST v1\n".to_vec();
    f.extend_from_slice(&(swapped.len() as u32).to_be_bytes());
    f.extend_from_slice(&swapped);
    f.extend_from_slice(&file[27 + 4 + body_len..]);
    out.insert(
        "manifest_bad_member_order.json".to_string(),
        json!({
            "description": "Two members swapped: not in ascending key order, refused.",
            "signed_file": hex::encode(&f),
            "expect": "invalid",
        }),
    );
    // An extra signature slot.
    let mut extra = file.clone();
    let count_at = 27 + 4 + body_len;
    let n = u32::from_be_bytes(extra[count_at..count_at + 4].try_into().unwrap()) + 1;
    extra[count_at..count_at + 4].copy_from_slice(&n.to_be_bytes());
    extra.push(1);
    extra.extend_from_slice(&[7; 64]);
    out.insert(
        "manifest_bad_extra_signature.json".to_string(),
        json!({
            "description": "A ninth signature slot (a non-member's signature): refused.",
            "signed_file": hex::encode(&extra),
            "expect": "signature_count",
        }),
    );
    out
}

fn check(name: &str, v: &Value) {
    let file = hex::decode(v["signed_file"].as_str().unwrap()).unwrap();
    let result = SignedManifest::from_bytes(&file).and_then(|s| s.verify());
    let expect = v["expect"].as_str().unwrap();
    match (expect, result) {
        ("valid", Ok(m)) => {
            assert_eq!(hex::encode(m.canonical_bytes()), v["body"], "{name}");
            assert_eq!(
                hex::encode(signed::digest_of(m.canonical_bytes())),
                v["consortium_digest"],
                "{name}"
            );
            assert_eq!(
                hex::encode(m.context_digest(&[0; 32])),
                v["context_digest_for_model_00"]
            );
            assert_eq!(hex::encode(m.hadamard_seed(1)), v["hadamard_seed_round_1"]);
            for (member, expected) in m.members().iter().zip(v["members"].as_array().unwrap()) {
                assert_eq!(fingerprint(&member.key), expected["fingerprint"], "{name}");
            }
        }
        (expect, Err(e)) => assert_eq!(error_name(&e), expect, "{name}: {e}"),
        (expect, Ok(_)) => panic!("{name}: accepted, expected {expect}"),
    }
}

#[test]
fn every_vector_file_checks() {
    let mut count = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        check(&path.display().to_string(), &v);
        count += 1;
    }
    assert!(count >= 5, "only {count} vector files");
}

#[test]
fn vectors_are_current() {
    for (name, v) in vectors() {
        check(&name, &v);
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(dir().join(&name)).unwrap()).unwrap();
        assert_eq!(
            on_disk, v,
            "{name} is stale: regenerate with generate_vectors"
        );
    }
}

#[test]
#[ignore = "rewrites protocol-spec/test-vectors/consortium-v1"]
fn generate_vectors() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, v) in vectors() {
        let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
        std::fs::write(dir().join(name), text).unwrap();
    }
}
