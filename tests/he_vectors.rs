//! Conformance of the homomorphic fallback (KAHE with a decryptor committee) against
//! `protocol-spec/test-vectors/v2/he_*.json`.
//!
//! The round is the fuzz fixture's (`harness::fuzz::he_setup`: 4 sites, committee
//! (c, t_c, Q, c_d) = (5, 3, 4, 2), b = 16, d = 5, round 7, fixed test keys); each site's
//! per-round seed comes from ChaCha20 seeded with [`SEED`]. The positive vector pins the digest
//! of every upload, the cohort statement and signatures in full, the digest of every release and
//! the published sum; `he_bad_*` vectors pin the error code (`HeError::code`) an implementation
//! returns. `AMALGAM_WRITE_VECTORS=1` rewrites the files.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_he::{
    Closing, CohortStatement, Decryptor, HeAggregator, HeError, KaheParams, PieceSumRelease,
    SignedUpload, SiteRound, StatementSignature, UploadView,
};
use amalgam_proto::SiteId;
use amalgam_proto::codec::{Decode, Encode};
use amalgam_tests::harness::fuzz::{HE_MODEL, he_member_bytes, he_setup, he_site_key};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SEED: [u8; 32] = *b"amalgam/v1/he/kahe-vector-seed!!";
const COHORT: [usize; 3] = [0, 2, 3];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protocol-spec/test-vectors/v2")
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn input(site: usize) -> Vec<u64> {
    (0..5u64)
        .map(|i| (i * 12_345 + site as u64 * 999) % 65_536)
        .collect()
}

struct Round {
    uploads: Vec<SignedUpload>,
    statement: CohortStatement,
    signatures: Vec<StatementSignature>,
    releases: Vec<PieceSumRelease>,
    sum: Vec<u64>,
}

fn decryptors() -> Vec<Decryptor> {
    let setup = he_setup().unwrap();
    (0..5u8)
        .map(|j| {
            let (a, b) = he_member_bytes(j);
            Decryptor::new(
                setup.clone(),
                j.into(),
                member_secrets_from_bytes(a, b),
                &mut amalgam_he::MemberRoundRecord::new(),
            )
            .unwrap()
        })
        .collect()
}

fn generate() -> Round {
    let setup = he_setup().unwrap();
    let mut rng = ChaCha20Rng::from_seed(SEED);
    let uploads: Vec<SignedUpload> = (0..4)
        .map(|s| {
            SiteRound::draw(
                setup,
                &mut amalgam_he::SiteRoundLog::new(),
                HE_MODEL,
                input(s),
                &mut rng,
            )
            .unwrap()
            .upload(setup, SiteId(s as u16), &he_site_key(s as u8))
            .unwrap()
        })
        .collect();
    let mut agg = HeAggregator::new(setup.clone(), Closing::OnDeadline);
    for &s in &COHORT {
        agg.receive(&uploads[s]).unwrap();
    }
    let statement = agg.close().unwrap();
    let mut decs = decryptors();
    for d in &mut decs {
        for v in agg.views_for(d.member()) {
            d.admit(&v).unwrap();
        }
    }
    let signatures: Vec<StatementSignature> = decs
        .iter_mut()
        .map(|d| d.sign(&statement).unwrap().persisted())
        .collect();
    let releases: Vec<PieceSumRelease> = decs
        .iter()
        .map(|d| d.release(&statement, &signatures).unwrap())
        .collect();
    for r in &releases {
        agg.accept_release(r).unwrap();
    }
    let sum = agg.finish().unwrap();
    Round {
        uploads,
        statement,
        signatures,
        releases,
        sum,
    }
}

/// Every vector file: (name, content).
fn vectors() -> Vec<(&'static str, Value)> {
    let setup = he_setup().unwrap();
    let r = generate();
    let upload0 = r.uploads[0].to_bytes();
    let mut bad_sig = upload0.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    let mut trailing = upload0.clone();
    trailing.push(0);
    let mut statement_unsorted = r.statement.clone();
    statement_unsorted.members.swap(0, 1);
    let mut copied = r.uploads[2].view_for(0).unwrap();
    copied.own_box = r.uploads[0].boxes[0].clone();
    let mut tampered = r.releases[0].clone();
    tampered.signature[0] ^= 1;
    let bad_params = {
        let mut w = amalgam_proto::codec::Writer::new();
        w.u32(32);
        w.u32(65_535);
        w.u32(10);
        w.into_bytes()
    };
    let code = |e: HeError| json!(e.code());
    vec![
        (
            "he_round",
            json!({
                "description": "KAHE round: 4 sites, cohort {0, 2, 3}, committee (5, 3, 4, 2), b = 16, d = 5, round 7",
                "params_hex": hex::encode(setup.params().to_bytes()),
                "round_context_hex": hex::encode(setup.context()),
                "inputs": (0..4).map(input).collect::<Vec<_>>(),
                "upload_sha256": r.uploads.iter().map(|u| sha(&u.to_bytes())).collect::<Vec<_>>(),
                "statement_hex": hex::encode(r.statement.to_bytes()),
                "signature_hex": r.signatures.iter().map(|s| hex::encode(s.to_bytes())).collect::<Vec<_>>(),
                "release_sha256": r.releases.iter().map(|x| sha(&x.to_bytes())).collect::<Vec<_>>(),
                "sum": r.sum,
            }),
        ),
        (
            "he_bad_params_noise_budget",
            json!({ "params_hex": hex::encode(bad_params), "error_code": code(HeError::Decode(amalgam_proto::DecodeError::InvalidValue { field: "", reason: "" })) }),
        ),
        (
            "he_bad_upload_signature",
            json!({ "description": "site 0's upload with the last signature byte flipped", "upload_sha256": sha(&bad_sig),
                    "error_code": code(HeError::BadSignature { what: "upload", signer: 0 }) }),
        ),
        (
            "he_bad_upload_trailing",
            json!({ "description": "site 0's upload with one trailing byte", "upload_sha256": sha(&trailing), "error_code": 7 }),
        ),
        (
            "he_bad_statement_unsorted",
            json!({ "statement_hex": hex::encode(statement_unsorted.to_bytes()), "error_code": 7 }),
        ),
        (
            "he_bad_view_copied_box",
            json!({ "description": "site 2's view for member 0 carrying site 0's box", "view_hex": hex::encode(copied.to_bytes()),
                    "error_code": code(HeError::BoxDoesNotOpen { site: 2 }) }),
        ),
        (
            "he_bad_release_tampered",
            json!({ "description": "member 0's release with a flipped signature bit", "release_sha256": sha(&tampered.to_bytes()),
                    "error_code": code(HeError::BadSignature { what: "piece sums", signer: 0 }) }),
        ),
    ]
}

#[test]
fn he_vectors_match_the_implementation() {
    let write = std::env::var_os("AMALGAM_WRITE_VECTORS").is_some();
    for (name, want) in vectors() {
        let path = dir().join(format!("{name}.json"));
        if write {
            std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        }
        let got: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            got, want,
            "{name}: the implementation no longer produces this vector"
        );
    }
}

#[test]
fn he_round_vector_sums_the_cohort() {
    let r = generate();
    let want: Vec<u64> = (0..5)
        .map(|i| COHORT.iter().map(|&s| input(s)[i]).sum())
        .collect();
    assert_eq!(r.sum, want);
}

#[test]
fn he_bad_vectors_are_refused_with_their_codes() {
    let setup = he_setup().unwrap();
    let r = generate();
    let upload0 = r.uploads[0].to_bytes();

    let bad = hex::decode(vectors()[1].1["params_hex"].as_str().unwrap()).unwrap();
    assert!(KaheParams::from_bytes(&bad, &()).is_err());

    let mut bad_sig = upload0.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    let decoded = SignedUpload::from_bytes(&bad_sig, setup).unwrap();
    let mut agg = HeAggregator::new(setup.clone(), Closing::OnDeadline);
    assert_eq!(agg.receive(&decoded).unwrap_err().code(), 12);
    assert!(agg.responded().is_empty(), "no state change on rejection");

    let mut trailing = upload0.clone();
    trailing.push(0);
    assert!(SignedUpload::from_bytes(&trailing, setup).is_err());

    let st = hex::decode(vectors()[4].1["statement_hex"].as_str().unwrap()).unwrap();
    assert!(CohortStatement::from_bytes(&st, &()).is_err());

    let view = hex::decode(vectors()[5].1["view_hex"].as_str().unwrap()).unwrap();
    let view = UploadView::from_bytes(&view, setup, 0).unwrap();
    let mut dec = decryptors().remove(0);
    let e = dec.admit(&view).unwrap_err();
    assert_eq!(e.code(), 13, "{e}");
    assert!(dec.admitted().is_empty());

    let mut tampered = r.releases[0].clone();
    tampered.signature[0] ^= 1;
    let mut agg = HeAggregator::new(setup.clone(), Closing::OnDeadline);
    for &s in &COHORT {
        agg.receive(&r.uploads[s]).unwrap();
    }
    agg.close().unwrap();
    assert_eq!(agg.accept_release(&tampered).unwrap_err().code(), 12);
}
