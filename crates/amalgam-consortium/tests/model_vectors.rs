//! Golden vectors of the global model chain (`protocol-spec/test-vectors/model-v1/`, spec
//! service.md §"The campaign runs itself", site-agent.md §5): `model_bytes`, `model_digest`,
//! `fedavg_step`, `next_model` and `model_from_bytes`, with the values where float code most
//! often diverges — negative zero, subnormals, the largest finite magnitudes, rounding ties,
//! overflow to infinity — so that another implementation (or a later version of this one) can
//! be checked bit for bit. Every float is written as its IEEE-754 bit pattern in hex (f32: 8
//! digits, f64: 16), with a readable `*_debug` copy that nothing reads back.
//!
//! * `model_vectors_match_the_implementation` regenerates the vectors and compares them with
//!   the files; `AMALGAM_WRITE_VECTORS=1` rewrites the files instead.
//! * `every_model_vector_file_checks` reads each file and recomputes every expected output
//!   from the inputs the file states, nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use amalgam_consortium::global_model::{
    ModelError, fedavg_step, model_bytes, model_digest, model_from_bytes, next_model,
};
use amalgam_dp::encoding::EncodingParams;
use amalgam_dp::params::{BitWidth, ClipNorm, Dimension, Gamma, RoundingBias};
use amalgam_dp::rotation::RotationSeed;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/test-vectors/model-v1")
}

#[path = "model_vectors/weighted.rs"]
mod weighted;

const FILES: [&str; 5] = [
    "model_bytes_digest",
    "fedavg_step",
    "next_model",
    "model_from_bytes_bad",
    "weighted_step",
];

fn f32s(v: &[f32]) -> Value {
    json!(
        v.iter()
            .map(|x| format!("{:08x}", x.to_bits()))
            .collect::<Vec<_>>()
    )
}

fn f32s_debug(v: &[f32]) -> Value {
    json!(v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>())
}

fn f64s(v: &[f64]) -> Value {
    json!(
        v.iter()
            .map(|x| format!("{:016x}", x.to_bits()))
            .collect::<Vec<_>>()
    )
}

fn read_f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| f32::from_bits(u32::from_str_radix(s.as_str().unwrap(), 16).unwrap()))
        .collect()
}

fn read_f64(v: &Value) -> f64 {
    f64::from_bits(u64::from_str_radix(v.as_str().unwrap(), 16).unwrap())
}

fn read_f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(read_f64).collect()
}

fn error_json(e: &ModelError) -> Value {
    match e {
        ModelError::Length { expected, got } => {
            json!({ "error": "length", "expected": expected, "got": got })
        }
        ModelError::NoContributors => json!({ "error": "no_contributors" }),
        ModelError::UnknownSite(s) => json!({ "error": "unknown_site", "site": s }),
        ModelError::NotFinite(i) => json!({ "error": "not_finite", "index": i }),
        ModelError::Decode(_) => json!({ "error": "decode" }),
        ModelError::NoisedDivisor => json!({ "error": "noised_divisor" }),
        ModelError::ExampleCount(_) => json!({ "error": "example_count" }),
        ModelError::Bytes {
            params,
            expected,
            got,
        } => json!({ "error": "bytes", "params": params, "expected": expected, "got": got }),
    }
}

/// The outcome of a model computation: its bits, bytes and digest, or the refusal.
fn outcome(r: &Result<Vec<f32>, ModelError>) -> Value {
    match r {
        Ok(m) => json!({
            "model_f32_bits": f32s(m),
            "model_debug": f32s_debug(m),
            "model_bytes_hex": hex::encode(model_bytes(m)),
            "model_digest": hex::encode(model_digest(m)),
        }),
        Err(e) => json!({ "refused": error_json(e) }),
    }
}

/// The outcome as the checker compares it (the readable copy is not compared).
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("model_debug");
    }
    v
}

fn smallest_subnormal() -> f32 {
    f32::from_bits(1)
}

fn largest_subnormal() -> f32 {
    f32::from_bits(0x007f_ffff)
}

fn models() -> Vec<(&'static str, Vec<f32>)> {
    vec![
        ("empty model", vec![]),
        ("one parameter, 1.0", vec![1.0]),
        (
            "positive and negative zero differ in bytes",
            vec![0.0, -0.0],
        ),
        (
            "subnormals and the smallest normal",
            vec![
                smallest_subnormal(),
                -smallest_subnormal(),
                largest_subnormal(),
                f32::MIN_POSITIVE,
            ],
        ),
        (
            "largest magnitudes and ordinary values",
            vec![f32::MAX, f32::MIN, -1.5, 0.1, core::f32::consts::PI, 1e-38],
        ),
    ]
}

fn bytes_digest_vectors() -> Value {
    let cases: Vec<Value> = models()
        .into_iter()
        .map(|(what, m)| {
            json!({
                "description": what,
                "model_f32_bits": f32s(&m),
                "model_debug": f32s_debug(&m),
                "model_bytes_hex": hex::encode(model_bytes(&m)),
                "model_digest": hex::encode(model_digest(&m)),
            })
        })
        .collect();
    json!({
        "description": "model_bytes: each value's f32 little-endian bytes in order; model_digest: SHA-256(\"amalgam/v1/model/f32le\\0\" || count u64 LE || model_bytes).",
        "cases": cases,
    })
}

struct Step {
    what: &'static str,
    model: Vec<f32>,
    sum: Vec<f64>,
    contributors: usize,
    lr: f64,
}

fn steps() -> Vec<Step> {
    let step = |what, model: Vec<f32>, sum: Vec<f64>, contributors, lr| Step {
        what,
        model,
        sum,
        contributors,
        lr,
    };
    let tie = 2f64.powi(-24);
    vec![
        step(
            "ordinary step; the sum's padding beyond the model is ignored",
            vec![1.0, 2.0],
            vec![2.0, -4.0, 99.0],
            2,
            0.5,
        ),
        step(
            "signed zeros: -0 + +0 = +0, -0 + -0 = -0, a tiny negative step rounds to -0",
            vec![-0.0, -0.0, 0.0, 0.0],
            vec![0.0, -0.0, -1e-300, 1e-300],
            3,
            1.0,
        ),
        step(
            "subnormal results, and a normal value stepped into the subnormal range",
            vec![
                smallest_subnormal(),
                largest_subnormal(),
                f32::MIN_POSITIVE,
                0.0,
            ],
            vec![
                f64::from(smallest_subnormal()),
                -f64::from(smallest_subnormal()),
                -f64::from(smallest_subnormal()),
                0.7 * f64::from(smallest_subnormal()),
            ],
            1,
            1.0,
        ),
        step(
            "largest magnitudes: steps that stay finite, and one rounded back down to f32::MAX",
            vec![f32::MAX, f32::MIN, 1e38, f32::MAX],
            vec![-1e38, 1e38, 2e38, 1e25],
            1,
            1.0,
        ),
        step(
            "round to nearest, ties to even, at 1.0 (f32 spacing 2^-23)",
            vec![1.0, 1.0, 1.0, 1.0],
            vec![tie, 3.0 * tie, tie * 1.000_001, -tie / 2.0],
            1,
            1.0,
        ),
        step(
            "many contributors and a large server learning rate",
            vec![0.25, -0.125, 3.0e-5],
            vec![1234.5, -987.25, 0.001],
            255,
            7.5,
        ),
        step(
            "overflow to infinity is refused with the index",
            vec![0.0, f32::MAX],
            vec![0.0, f64::from(f32::MAX)],
            1,
            1.0,
        ),
        step(
            "a NaN in the decoded sum is refused",
            vec![1.0, 2.0],
            vec![1.0, f64::NAN],
            1,
            1.0,
        ),
        step("no contributors", vec![1.0], vec![1.0], 0, 1.0),
        step(
            "a decoded sum shorter than the model",
            vec![1.0, 2.0],
            vec![1.0],
            1,
            1.0,
        ),
    ]
}

fn fedavg_vectors() -> Value {
    let cases: Vec<Value> = steps()
        .into_iter()
        .map(|s| {
            json!({
                "description": s.what,
                "model_f32_bits": f32s(&s.model),
                "decoded_sum_f64_bits": f64s(&s.sum),
                "contributors": s.contributors,
                "server_lr_f64_bits": format!("{:016x}", s.lr.to_bits()),
                "server_lr_debug": format!("{:?}", s.lr),
                "expect": outcome(&fedavg_step(&s.model, &s.sum, s.contributors as f64, s.lr)),
            })
        })
        .collect();
    json!({
        "description": "fedavg_step: for each i in order, w'_i = f32(f64(w_i) + lr * (s_i / n)) (round to nearest even), refused if any w'_i is not finite.",
        "cases": cases,
    })
}

struct Encoded {
    what: &'static str,
    clip: f64,
    gamma: f64,
    bits: u32,
    dim: u64,
    seed: [u8; 32],
    model: Vec<f32>,
    sum: Vec<u64>,
    contributors: usize,
    lr: f64,
}

/// A case's encoding, model, sum and server rate as the file states them (β must be 0).
fn read_encoded(c: &Value, contributors: usize) -> Encoded {
    let e = &c["encoding"];
    assert_eq!(read_f64(&e["beta_f64_bits"]), 0.0);
    Encoded {
        what: "",
        clip: read_f64(&e["clip_f64_bits"]),
        gamma: read_f64(&e["gamma_f64_bits"]),
        bits: e["bits"].as_u64().unwrap() as u32,
        dim: e["dim"].as_u64().unwrap(),
        seed: hex::decode(e["rotation_seed"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
        model: read_f32s(&c["model_f32_bits"]),
        sum: c["sum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect(),
        contributors,
        lr: read_f64(&c["server_lr_f64_bits"]),
    }
}

fn encoding(e: &Encoded) -> EncodingParams {
    EncodingParams {
        clip: ClipNorm::new(e.clip).unwrap(),
        gamma: Gamma::new(e.gamma).unwrap(),
        bits: BitWidth::new(e.bits).unwrap(),
        dim: Dimension::new(e.dim).unwrap(),
        beta: RoundingBias::NONE,
        rotation_seed: RotationSeed(e.seed),
    }
}

fn encoded() -> Vec<Encoded> {
    // A fixed, spread-out modular sum: the low `bits` bits of a Weyl sequence.
    let weyl = |len: u64, bits: u32, k: u64| -> Vec<u64> {
        (0..len)
            .map(|i| (i + k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits))
            .collect()
    };
    let mut sum_edges = weyl(8, 16, 3);
    // The centring edges: 2^(b-1) - 1 is the largest positive, 2^(b-1) the most negative.
    sum_edges[0] = (1 << 15) - 1;
    sum_edges[1] = 1 << 15;
    sum_edges[2] = 0;
    sum_edges[3] = (1 << 16) - 1;
    vec![
        Encoded {
            what: "d = 6 padded to 8, b = 16, gamma = 256, 5 contributors",
            clip: 1.0,
            gamma: 256.0,
            bits: 16,
            dim: 6,
            seed: *b"amalgam/v1/model-vectors/rot-01!",
            model: vec![0.5, -0.25, 0.0, -0.0, 1e-40, 3.0e38],
            sum: weyl(8, 16, 1),
            contributors: 5,
            lr: 1.0,
        },
        Encoded {
            what: "the centring edges of the modular sum (2^15 - 1, 2^15, 0, 2^16 - 1), lr 0.1",
            clip: 2.0,
            gamma: 1024.0,
            bits: 16,
            dim: 8,
            seed: *b"amalgam/v1/model-vectors/rot-02!",
            model: vec![0.0; 8],
            sum: sum_edges,
            contributors: 3,
            lr: 0.1,
        },
        Encoded {
            what: "b = 32, d = 16, gamma = 2^20, 100 contributors",
            clip: 0.5,
            gamma: 1_048_576.0,
            bits: 32,
            dim: 16,
            seed: *b"amalgam/v1/model-vectors/rot-03!",
            model: (0..16).map(|i| i as f32 * 0.03125 - 0.25).collect(),
            sum: weyl(16, 32, 7),
            contributors: 100,
            lr: 2.0,
        },
        Encoded {
            what: "a sum of the wrong length (7 values, the padded dimension is 8) does not decode",
            clip: 1.0,
            gamma: 256.0,
            bits: 16,
            dim: 8,
            seed: *b"amalgam/v1/model-vectors/rot-04!",
            model: vec![0.0; 8],
            sum: weyl(7, 16, 1),
            contributors: 2,
            lr: 1.0,
        },
    ]
}

fn next_model_vectors() -> Value {
    let cases: Vec<Value> = encoded()
        .into_iter()
        .map(|e| {
            let got = next_model(encoding(&e), &e.model, &e.sum, e.contributors as f64, e.lr);
            json!({
                "description": e.what,
                "encoding": {
                    "clip_f64_bits": format!("{:016x}", e.clip.to_bits()),
                    "gamma_f64_bits": format!("{:016x}", e.gamma.to_bits()),
                    "bits": e.bits,
                    "dim": e.dim,
                    "beta_f64_bits": format!("{:016x}", 0f64.to_bits()),
                    "rotation_seed": hex::encode(e.seed),
                },
                "model_f32_bits": f32s(&e.model),
                "sum": e.sum,
                "contributors": e.contributors,
                "server_lr_f64_bits": format!("{:016x}", e.lr.to_bits()),
                "expect": outcome(&got),
            })
        })
        .collect();
    json!({
        "description": "next_model: the modular sum decoded with the round's DDG encoding (DdgCodec::decode_sum: centred, divided by gamma, inverse randomised Hadamard rotation from the seed, padding ignored), then fedavg_step.",
        "cases": cases,
    })
}

fn bad_bytes() -> Vec<(&'static str, Vec<u8>, usize)> {
    let with = |i: usize, bits: u32| {
        let mut m = model_bytes(&[1.0, -0.0, smallest_subnormal()]);
        m[4 * i..4 * i + 4].copy_from_slice(&bits.to_le_bytes());
        m
    };
    vec![
        (
            "the canonical bytes of three finite edge values (accepted)",
            with(0, 1f32.to_bits()),
            3,
        ),
        ("a quiet NaN", with(1, 0x7fc0_0000), 3),
        ("a negative quiet NaN", with(0, 0xffc0_0000), 3),
        ("a signalling NaN with payload", with(2, 0x7f80_0001), 3),
        ("+infinity", with(2, 0x7f80_0000), 3),
        ("-infinity", with(0, 0xff80_0000), 3),
        ("one byte short", with(0, 1f32.to_bits())[..11].to_vec(), 3),
        ("one parameter too many", with(0, 1f32.to_bits()), 2),
    ]
}

fn from_bytes_vectors() -> Value {
    let cases: Vec<Value> = bad_bytes()
        .into_iter()
        .map(|(what, b, params)| {
            json!({
                "description": what,
                "bytes_hex": hex::encode(&b),
                "params": params,
                "expect": outcome(&model_from_bytes(&b, params)),
            })
        })
        .collect();
    json!({
        "description": "model_from_bytes: exactly 4 bytes per parameter, every value finite (a NaN or an infinity is refused with its index).",
        "cases": cases,
    })
}

fn vectors() -> Vec<(&'static str, Value)> {
    FILES
        .into_iter()
        .zip([
            bytes_digest_vectors(),
            fedavg_vectors(),
            next_model_vectors(),
            from_bytes_vectors(),
            weighted::vectors(),
        ])
        .collect()
}

fn read(name: &str) -> Value {
    let path = dir().join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn cases(v: &Value) -> &Vec<Value> {
    let c = v["cases"].as_array().unwrap();
    assert!(!c.is_empty(), "a vector file without cases");
    c
}

#[test]
fn model_vectors_match_the_implementation() {
    let write = std::env::var_os("AMALGAM_WRITE_VECTORS").is_some();
    if write {
        std::fs::create_dir_all(dir()).unwrap();
    }
    for (name, want) in vectors() {
        let path = dir().join(format!("{name}.json"));
        if write {
            std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        }
        assert_eq!(
            read(name),
            want,
            "{name}: the implementation no longer produces this vector"
        );
    }
}

#[test]
fn every_model_vector_file_checks() {
    for c in cases(&read("model_bytes_digest")) {
        let m = read_f32s(&c["model_f32_bits"]);
        assert_eq!(hex::encode(model_bytes(&m)), c["model_bytes_hex"], "{c}");
        assert_eq!(hex::encode(model_digest(&m)), c["model_digest"], "{c}");
        let back = model_from_bytes(
            &hex::decode(c["model_bytes_hex"].as_str().unwrap()).unwrap(),
            m.len(),
        );
        assert_eq!(model_bytes(&back.unwrap()), model_bytes(&m), "{c}");
    }
    let mut refused = 0;
    for c in cases(&read("fedavg_step")) {
        let got = fedavg_step(
            &read_f32s(&c["model_f32_bits"]),
            &read_f64s(&c["decoded_sum_f64_bits"]),
            c["contributors"].as_u64().unwrap() as f64,
            read_f64(&c["server_lr_f64_bits"]),
        );
        refused += usize::from(got.is_err());
        assert_eq!(
            comparable(outcome(&got)),
            comparable(c["expect"].clone()),
            "{c}"
        );
    }
    assert!(refused >= 4, "the refusals are in the vectors");
    for c in cases(&read("next_model")) {
        let enc = read_encoded(c, c["contributors"].as_u64().unwrap() as usize);
        let got = next_model(
            encoding(&enc),
            &enc.model,
            &enc.sum,
            enc.contributors as f64,
            enc.lr,
        );
        assert_eq!(
            comparable(outcome(&got)),
            comparable(c["expect"].clone()),
            "{c}"
        );
    }
    weighted::check_file(&read("weighted_step"));
    for c in cases(&read("model_from_bytes_bad")) {
        let b = hex::decode(c["bytes_hex"].as_str().unwrap()).unwrap();
        let got = model_from_bytes(&b, c["params"].as_u64().unwrap() as usize);
        assert_eq!(
            comparable(outcome(&got)),
            comparable(c["expect"].clone()),
            "{c}"
        );
    }
}

/// The vectors pin the properties they are named for (so a regenerated file that lost them
/// would fail here even if it matched the implementation).
#[test]
fn vectors_hold_their_edge_values() {
    let f = fedavg_vectors();
    let c = cases(&f);
    let bits = |i: usize| read_f32s(&c[i]["expect"]["model_f32_bits"]);
    // Signed zeros.
    let z = bits(1);
    assert_eq!(
        z.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        [0, 0x8000_0000, 0x8000_0000, 0]
    );
    // Subnormal results stay subnormal.
    assert!(bits(2)[..3].iter().all(|v| v.is_subnormal() || *v == 0.0));
    assert!(bits(2)[1].is_subnormal() && bits(2)[2].is_subnormal());
    // Ties to even at 1.0: 1 + 2^-24 → 1.0, 1 + 3·2^-24 → 1 + 2^-22.
    let t = bits(4);
    assert_eq!(t[0], 1.0);
    assert_eq!(t[1], 1.0 + 2f32.powi(-22));
    assert_eq!(t[2], 1.0 + 2f32.powi(-23));
    // Overflow is refused with its index.
    assert_eq!(
        c[6]["expect"]["refused"],
        json!({"error": "not_finite", "index": 1})
    );
    assert_eq!(
        c[7]["expect"]["refused"],
        json!({"error": "not_finite", "index": 1})
    );
    // Both zeros have different digests.
    let d = bytes_digest_vectors();
    assert_ne!(
        model_digest(&[0.0]),
        model_digest(&[-0.0]),
        "the digest is over bytes"
    );
    assert_eq!(cases(&d).len(), models().len());
    // The next_model vectors decode to different models per case, and the bad one refuses.
    let n = next_model_vectors();
    let nc = cases(&n);
    assert_ne!(
        nc[0]["expect"]["model_digest"],
        nc[1]["expect"]["model_digest"]
    );
    assert_eq!(nc[3]["expect"]["refused"]["error"], "decode");
}

/// The weighted-step vectors pin their properties (norms within C, both divisor branches).
#[test]
fn weighted_vectors_hold_their_properties() {
    weighted::check_properties();
}

/// `model_from_bytes` refuses every non-finite pattern at every position with
/// `ModelError::NotFinite(index)`, and accepts every finite edge value bit for bit.
#[test]
fn model_from_bytes_refuses_nan_and_infinities() {
    let finite = [
        0.0f32,
        -0.0,
        smallest_subnormal(),
        -largest_subnormal(),
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
    ];
    let b = model_bytes(&finite);
    let back = model_from_bytes(&b, finite.len()).unwrap();
    assert_eq!(
        model_bytes(&back),
        b,
        "finite values round-trip bit for bit"
    );
    let non_finite = [
        0x7fc0_0000u32, // quiet NaN
        0xffc0_0000,    // negative quiet NaN
        0x7f80_0001,    // signalling NaN
        0x7fff_ffff,    // NaN, all payload bits
        0x7f80_0000,    // +inf
        0xff80_0000,    // -inf
    ];
    for bits in non_finite {
        for i in 0..finite.len() {
            let mut bad = b.clone();
            bad[4 * i..4 * i + 4].copy_from_slice(&bits.to_le_bytes());
            assert_eq!(
                model_from_bytes(&bad, finite.len()),
                Err(ModelError::NotFinite(i)),
                "{bits:08x} at {i}"
            );
        }
    }
    // The length is checked first: a short non-finite string is a length refusal.
    assert!(matches!(
        model_from_bytes(&0x7f80_0000u32.to_le_bytes()[..3], 1),
        Err(ModelError::Bytes { got: 3, .. })
    ));
}
