//! Conformance of the homomorphic fallback against `protocol-spec/test-vectors/v1/he_*.json`.
//!
//! Every vector is deterministic from a 32-byte seed: ChaCha20 seeded with it generates the
//! site identities, the decryptor key and each site's input and encryption randomness. Positive
//! vectors pin digests and the decrypted sum; `he_bad_*` vectors pin the error code an
//! implementation returns. `AMALGAM_WRITE_VECTORS=1` rewrites the files from the seeds.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use amalgam_he::audit::verify_chain;
use amalgam_he::params::he_params;
use amalgam_he::{
    AggregateClaim, Closing, DecryptionKey, DecryptionRequest, Decryptor, HeAggregator,
    HeConsortium, HeError, HeSite, PublicKey, SignedContribution, SiteDirectory,
};
use amalgam_proto::codec::{Decode, Encode};
use amalgam_proto::{AggregatorRole, AggregatorStep, DecryptorRole, MinCohort, SiteId, SiteRole};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SEED: [u8; 32] = *b"amalgam/v1/he/test-vector-seed!!";
const ROUND: u64 = 3;
const SITES: usize = 4;
const CONTRIBUTORS: [usize; 3] = [0, 2, 3];
const B: u8 = 16;
const K_MAX: u32 = 4;
const D: u32 = 5;
const MIN_COHORT: u16 = 2;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protocol-spec/test-vectors/v1")
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything the vectors are made of, regenerated from the seed.
struct Vectors {
    consortium: HeConsortium,
    public: PublicKey,
    key: Option<DecryptionKey>,
    inputs: Vec<Vec<u64>>,
    contributions: Vec<SignedContribution>,
    claim: AggregateClaim,
}

fn generate() -> Vectors {
    let mut rng = ChaCha20Rng::from_seed(SEED);
    let identities: Vec<SigningKey> = (0..SITES).map(|_| SigningKey::generate(&mut rng)).collect();
    let key = DecryptionKey::generate(&mut rng);
    let public = key.public_key().clone();
    let params = he_params(B, K_MAX, D).unwrap();
    let directory =
        SiteDirectory::new(identities.iter().map(|k| k.verifying_key()).collect()).unwrap();
    let consortium = HeConsortium::new(
        params,
        public.fingerprint(),
        MinCohort::new(MIN_COHORT).unwrap(),
        directory,
    )
    .unwrap();
    let mut agg = HeAggregator::new(consortium.clone(), ROUND, Closing::OnDeadline).unwrap();
    let (mut inputs, mut contributions) = (Vec::new(), Vec::new());
    for &i in &CONTRIBUTORS {
        let input: Vec<u64> = (0..D).map(|_| rng.next_u64() >> (64 - B)).collect();
        let id = SigningKey::from_bytes(&identities[i].to_bytes());
        let mut site = HeSite::new(
            consortium.clone(),
            ROUND,
            SiteId(i as u16),
            id,
            public.clone(),
        )
        .unwrap();
        let c = site.start(input.clone(), &mut rng).unwrap();
        agg.receive(c.clone()).unwrap();
        inputs.push(input);
        contributions.push(c);
    }
    let Ok(AggregatorStep::Finished(claim)) = agg.close_phase() else {
        panic!("round did not close")
    };
    Vectors {
        consortium,
        public,
        key: Some(key),
        inputs,
        contributions,
        claim,
    }
}

impl Vectors {
    fn decrypt(&mut self, claim: AggregateClaim) -> Result<Vec<u64>, HeError> {
        let key = self.key.take().unwrap();
        let mut decryptor = Decryptor::new(key, self.consortium.clone()).unwrap();
        let mut intake = decryptor.open(ROUND)?;
        for c in &self.contributions {
            decryptor.admit(&mut intake, &c.mask_attestation())?;
        }
        let out = decryptor.decrypt(DecryptionRequest { intake, claim });
        let log = decryptor.audit_log();
        assert!(verify_chain(log.entries(), &log.head()));
        out.map(|r| r.values)
    }
}

fn positive(v: &mut Vectors) -> Vec<(&'static str, Value)> {
    let sum: Vec<u64> = (0..D as usize)
        .map(|j| v.inputs.iter().map(|x| x[j]).sum())
        .collect();
    let decrypted = v.decrypt(v.claim.clone()).unwrap();
    assert_eq!(decrypted, sum);
    let params = json!({"input_bits": B, "max_sites": K_MAX, "vector_len": D, "plaintext_bits": v.consortium.params().plaintext_bits()});
    vec![
        (
            "he_keygen.json",
            json!({
                "description": "Decryptor key generation from the seed (after the 4 site identities); fingerprint = SHA-256 of the public key encoding",
                "seed": hex::encode(SEED),
                "public_key_len": v.public.to_bytes().len(),
                "public_key_prefix_hex": hex::encode(&v.public.to_bytes()[..40]),
                "fingerprint": v.public.fingerprint().to_hex(),
            }),
        ),
        (
            "he_round.json",
            json!({
                "description": "One HE round: 3 of 4 sites contribute, the aggregate decrypts to the exact sum",
                "seed": hex::encode(SEED),
                "params": params,
                "min_cohort": MIN_COHORT,
                "round": ROUND,
                "contributors": CONTRIBUTORS,
                "inputs": v.inputs,
                "contribution_sha256": v.contributions.iter().map(|c| sha(&c.to_bytes())).collect::<Vec<_>>(),
                "contribution_0_hex": hex::encode(v.contributions[0].to_bytes()),
                "claim_sha256": sha(&v.claim.to_bytes()),
                "aggregate_sha256": hex::encode(v.claim.sum_digest()),
                "sum": sum,
            }),
        ),
    ]
}

/// Negative vectors: (file, bytes or parameters, expected code).
fn negative(v: &Vectors) -> Vec<(&'static str, Value)> {
    let contribution = v.contributions[0].to_bytes();
    let mut truncated = contribution.clone();
    truncated.pop();
    let mut trailing = contribution.clone();
    trailing.push(0);
    let mut wrong_len = contribution.clone();
    wrong_len[4 + 8 + 2 + 32 + 3] += 1; // len field: d + 1
    let mut tampered_body = contribution.clone();
    let last_body = tampered_body.len() - 64 - 1;
    tampered_body[last_body] ^= 1;
    let mut unsorted = v.claim.clone();
    unsorted.contributors.swap(0, 1);
    let mut bad_masks = v.claim.clone().sum.to_bytes();
    bad_masks[8 + 7] ^= 1; // lowest byte of the first mask word
    let mut bad_mask_claim = v.claim.clone();
    bad_mask_claim.sum =
        amalgam_he::CiphertextSum::from_bytes(&bad_masks, v.consortium.params()).unwrap();
    vec![
        (
            "he_bad_params_noise_budget.json",
            json!({"description": "32-bit inputs for 1000 sites: P = 42 leaves no room for noise", "input_bits": 32, "max_sites": 1000, "vector_len": 5, "error": "he.params.noise_budget"}),
        ),
        (
            "he_bad_public_key_dimension.json",
            json!({"description": "public key declaring n = 1024 (decoding stops at the dimension)", "hex": "41470143" .to_string() + "00000400", "error": "he.decode"}),
        ),
        (
            "he_bad_contribution_truncated.json",
            json!({"description": "contribution 0 of he_round.json without its last byte", "hex": hex::encode(truncated), "error": "he.decode"}),
        ),
        (
            "he_bad_contribution_trailing.json",
            json!({"description": "contribution 0 of he_round.json with one extra byte", "hex": hex::encode(trailing), "error": "he.decode"}),
        ),
        (
            "he_bad_contribution_length.json",
            json!({"description": "contribution 0 declaring d + 1 values", "hex": hex::encode(wrong_len), "error": "he.decode"}),
        ),
        (
            "he_bad_contribution_signature.json",
            json!({"description": "contribution 0 with one body bit flipped after signing; decodes, refused by the aggregator", "hex": hex::encode(tampered_body), "error": "he.peer.bad_signature"}),
        ),
        (
            "he_bad_claim_unsorted.json",
            json!({"description": "aggregate claim of he_round.json with two contributors swapped", "hex": hex::encode(unsorted.to_bytes()), "error": "he.decode"}),
        ),
        (
            "he_bad_claim_mask_sum.json",
            json!({"description": "aggregate claim whose first mask word is off by one; refused by the decryptor before decrypting", "hex": hex::encode(bad_mask_claim.to_bytes()), "error": "he.peer.mask_sum_mismatch"}),
        ),
    ]
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v["hex"].as_str().unwrap()).unwrap()
}

/// Runs one negative vector and returns the error code obtained.
fn code_of(file: &str, vector: &Value, v: &mut Vectors) -> &'static str {
    let params = *v.consortium.params();
    let code = |e: HeError| e.code();
    match file {
        "he_bad_params_noise_budget.json" => {
            let b = vector["input_bits"].as_u64().unwrap() as u8;
            let k = vector["max_sites"].as_u64().unwrap() as u32;
            let d = vector["vector_len"].as_u64().unwrap() as u32;
            code(he_params(b, k, d).unwrap_err())
        }
        "he_bad_public_key_dimension.json" => code(
            PublicKey::from_bytes(&bytes(vector), &())
                .unwrap_err()
                .into(),
        ),
        "he_bad_claim_unsorted.json" => code(
            AggregateClaim::from_bytes(&bytes(vector), &params)
                .unwrap_err()
                .into(),
        ),
        "he_bad_claim_mask_sum.json" => {
            let claim = AggregateClaim::from_bytes(&bytes(vector), &params).unwrap();
            code(v.decrypt(claim).unwrap_err())
        }
        _ => match SignedContribution::from_bytes(&bytes(vector), &params) {
            Err(e) => code(e.into()),
            Ok(c) => {
                let mut agg =
                    HeAggregator::new(v.consortium.clone(), ROUND, Closing::OnDeadline).unwrap();
                code(agg.receive(c).unwrap_err())
            }
        },
    }
}

#[test]
fn he_vectors_match_their_seeds() {
    let mut v = generate();
    let negatives = negative(&v);
    let positives = positive(&mut v);
    let write = std::env::var_os("AMALGAM_WRITE_VECTORS").is_some();
    for (file, expected) in positives.iter().chain(&negatives) {
        let path = dir().join(file);
        if write {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(expected).unwrap() + "\n",
            )
            .unwrap();
        }
        let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            &stored, expected,
            "{file} differs from what its seed generates"
        );
    }
    for (file, _) in &negatives {
        let stored: Value =
            serde_json::from_str(&std::fs::read_to_string(dir().join(file)).unwrap()).unwrap();
        let mut fresh = generate();
        assert_eq!(
            code_of(file, &stored, &mut fresh),
            stored["error"].as_str().unwrap(),
            "{file}"
        );
    }
}
