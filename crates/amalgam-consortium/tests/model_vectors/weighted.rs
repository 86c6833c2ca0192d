//! Golden vectors of the aggregation weights (`weighted_step.json`): what each site encodes
//! (`AggregationWeights::site_vector`) and the step every party takes
//! (`AggregationWeights::step`) under the uniform, declared and noised modes, with the
//! noised divisor's both branches (the decoded weight sum over κ, and the public floor) and
//! every refusal.

use amalgam_consortium::NoisedWeightPolicy;
use amalgam_consortium::global_model::{AggregationWeights, ModelError};
use amalgam_dp::encoding::DdgCodec;
use amalgam_dp::params::ClipNorm;
use serde_json::{Value, json};

use super::{
    Encoded, comparable, encoding, error_json, f32s, f64s, outcome, read_encoded, read_f64,
    read_f64s,
};

fn hex64(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

fn weights_json(w: &AggregationWeights) -> Value {
    match w {
        AggregationWeights::Uniform => json!({ "mode": "uniform" }),
        AggregationWeights::Declared(v) => json!({ "mode": "declared", "weights": v }),
        AggregationWeights::Noised(n) => json!({
            "mode": "noised",
            "n_cap": n.n_cap,
            "kappa_f64_bits": hex64(n.kappa),
            "floor_f64_bits": hex64(n.floor),
        }),
    }
}

fn read_weights(v: &Value) -> AggregationWeights {
    match v["mode"].as_str().unwrap() {
        "uniform" => AggregationWeights::Uniform,
        "declared" => AggregationWeights::Declared(
            v["weights"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().unwrap() as u32)
                .collect(),
        ),
        "noised" => AggregationWeights::Noised(NoisedWeightPolicy {
            n_cap: v["n_cap"].as_u64().unwrap() as u32,
            kappa: read_f64(&v["kappa_f64_bits"]),
            floor: read_f64(&v["floor_f64_bits"]),
        }),
        m => panic!("unknown mode {m}"),
    }
}

fn vector_outcome(r: &Result<Vec<f64>, ModelError>) -> Value {
    match r {
        Ok(v) => json!({ "vector_f64_bits": f64s(v), "vector_debug": v }),
        Err(e) => json!({ "refused": error_json(e) }),
    }
}

fn noised(n_cap: u32, kappa: f64, floor: f64) -> AggregationWeights {
    AggregationWeights::Noised(NoisedWeightPolicy {
        n_cap,
        kappa,
        floor,
    })
}

struct SiteCase {
    what: &'static str,
    weights: AggregationWeights,
    site: u16,
    update: Vec<f64>,
    examples: f64,
}

fn site_cases() -> Vec<SiteCase> {
    let case = |what, weights, site, update: &[f64], examples| SiteCase {
        what,
        weights,
        site,
        update: update.to_vec(),
        examples,
    };
    let n = || noised(100, 0.25, 1.0);
    vec![
        case(
            "uniform: the update as is (the encoder clips)",
            AggregationWeights::Uniform,
            0,
            &[3.0, -4.0],
            7.0,
        ),
        case(
            "declared 4, 2: site 1 clips to C = 1, then scales by 1/2",
            AggregationWeights::Declared(vec![4, 2]),
            1,
            &[3.0, -4.0],
            1.0,
        ),
        case(
            "declared: a site without a weight",
            AggregationWeights::Declared(vec![4, 2]),
            3,
            &[0.1],
            1.0,
        ),
        case(
            "noised: 50 of n_cap 100 (w = 1/2), update within C, the joint norm within C",
            n(),
            0,
            &[0.3, -0.4],
            50.0,
        ),
        case(
            "noised: 1000 examples (w = 1), update clipped, then the joint clip",
            n(),
            0,
            &[3.0, -4.0],
            1000.0,
        ),
        case(
            "noised: no example (w = 0): all zeros, weight coordinate 0",
            n(),
            0,
            &[3.0, -4.0],
            0.0,
        ),
        case(
            "noised, kappa = C: the weight coordinate alone could fill the clip norm",
            noised(10, 1.0, 1.0),
            0,
            &[0.6, 0.8],
            10.0,
        ),
        case("noised: a NaN example count", n(), 0, &[0.1], f64::NAN),
        case("noised: a negative example count", n(), 0, &[0.1], -1.0),
        case(
            "noised: an infinite example count",
            n(),
            0,
            &[0.1],
            f64::INFINITY,
        ),
    ]
}

struct StepCase {
    what: &'static str,
    weights: AggregationWeights,
    step: Encoded,
    contributors: Vec<u16>,
}

/// The decoded weight coordinate of `e`'s sum (index = model length).
fn decoded_weight(e: &Encoded) -> f64 {
    let decoded = DdgCodec::new(encoding(e))
        .unwrap()
        .decode_sum(&e.sum)
        .unwrap();
    decoded[e.model.len()]
}

fn step_cases() -> Vec<StepCase> {
    // A model of 5 parameters and the weight coordinate: d = 6 padded to 8, b = 16, γ = 256.
    let weyl = |k: u64| -> Vec<u64> {
        (0..8u64)
            .map(|i| (i + k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48)
            .collect()
    };
    let enc = |k: u64| Encoded {
        what: "",
        clip: 1.0,
        gamma: 256.0,
        bits: 16,
        dim: 6,
        seed: *b"amalgam/v1/model-vectors/weight!",
        model: vec![0.5, -0.25, 0.0, 1.0, -2.0],
        sum: weyl(k),
        contributors: 0,
        lr: 1.0,
    };
    // Sums whose weight coordinate decodes positive and negative.
    let positive = (1..).find(|&k| decoded_weight(&enc(k)) > 0.0).unwrap();
    let negative = (1..).find(|&k| decoded_weight(&enc(k)) < 0.0).unwrap();
    // κ chosen so that the positive sum's estimate is 1.5 full-weight sites.
    let kappa = decoded_weight(&enc(positive)) / 1.5;
    let case = |what, weights, k, contributors: &[u16]| StepCase {
        what,
        weights,
        step: enc(k),
        contributors: contributors.to_vec(),
    };
    vec![
        case(
            "uniform: divides by the 3 contributors",
            AggregationWeights::Uniform,
            positive,
            &[0, 1, 2],
        ),
        case(
            "declared 3, 1, 2 with sites 0 and 2: divides by (3 + 2) / 3",
            AggregationWeights::Declared(vec![3, 1, 2]),
            positive,
            &[0, 2],
        ),
        case(
            "declared: a contributor without a weight",
            AggregationWeights::Declared(vec![3, 1, 2]),
            positive,
            &[0, 5],
        ),
        case(
            "noised: the decoded weight sum over kappa (1.5) is between the floor and the 2 contributors: the divisor",
            noised(100, kappa, 1.0),
            positive,
            &[0, 1],
        ),
        case(
            "noised: the same sum under a floor of 1.8, above the estimate: divides by the floor",
            noised(100, kappa, 1.8),
            positive,
            &[0, 1],
        ),
        case(
            "noised: an estimate of 15 (a forged or noisy weight coordinate) over 3 contributors: divides by 3",
            noised(100, kappa / 10.0, 1.0),
            positive,
            &[0, 1, 2],
        ),
        case(
            "noised: a negative decoded weight sum divides by the floor",
            noised(100, kappa, 1.0),
            negative,
            &[0, 1, 2],
        ),
        case(
            "noised: no contributor",
            noised(100, kappa, 1.0),
            positive,
            &[],
        ),
    ]
}

/// The `weighted_step` file.
pub fn vectors() -> Value {
    let site: Vec<Value> = site_cases()
        .into_iter()
        .map(|c| {
            let clip = ClipNorm::new(1.0).unwrap();
            let got = c.weights.site_vector(c.site, &c.update, c.examples, clip);
            json!({
                "description": c.what,
                "weights": weights_json(&c.weights),
                "site": c.site,
                "update_f64_bits": f64s(&c.update),
                "examples_f64_bits": hex64(c.examples),
                "clip_f64_bits": hex64(1.0),
                "expect": vector_outcome(&got),
            })
        })
        .collect();
    let step: Vec<Value> = step_cases()
        .into_iter()
        .map(|c| {
            let e = &c.step;
            let got = c
                .weights
                .step(encoding(e), &e.model, &e.sum, &c.contributors, e.lr);
            json!({
                "description": c.what,
                "weights": weights_json(&c.weights),
                "encoding": {
                    "clip_f64_bits": hex64(e.clip),
                    "gamma_f64_bits": hex64(e.gamma),
                    "bits": e.bits,
                    "dim": e.dim,
                    "beta_f64_bits": hex64(0.0),
                    "rotation_seed": hex::encode(e.seed),
                },
                "model_f32_bits": f32s(&e.model),
                "sum": e.sum,
                "contributors": c.contributors,
                "server_lr_f64_bits": hex64(e.lr),
                "expect": outcome(&got),
            })
        })
        .collect();
    json!({
        "description": "Aggregation weights. site_vector: what a site encodes — uniform: the update; declared: clip_l2(update, C) times w_site / max w; noised: clip_l2(update, C) times w = min(examples / n_cap, 1), then kappa * w appended, the whole clip_l2'd to C. step: the sum decoded as in next_model, divided by the contributor count (uniform), by sum(w_contributors) / max w (declared), or by max(decoded[model length] / kappa, floor) (noised; a NaN estimate takes the floor), then fedavg_step.",
        "site_vector": site,
        "step": step,
    })
}

/// Recomputes every case of the file from the inputs it states.
pub fn check_file(v: &Value) {
    let site = v["site_vector"].as_array().unwrap();
    let step = v["step"].as_array().unwrap();
    assert!(!site.is_empty() && !step.is_empty());
    for c in site {
        let clip = ClipNorm::new(read_f64(&c["clip_f64_bits"])).unwrap();
        let got = read_weights(&c["weights"]).site_vector(
            c["site"].as_u64().unwrap() as u16,
            &read_f64s(&c["update_f64_bits"]),
            read_f64(&c["examples_f64_bits"]),
            clip,
        );
        let mut want = c["expect"].clone();
        let mut have = vector_outcome(&got);
        for o in [&mut want, &mut have] {
            if let Some(o) = o.as_object_mut() {
                o.remove("vector_debug");
            }
        }
        assert_eq!(have, want, "{c}");
    }
    for c in step {
        let enc = read_encoded(c, 0);
        let contributors: Vec<u16> = c["contributors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u16)
            .collect();
        let got = read_weights(&c["weights"]).step(
            encoding(&enc),
            &enc.model,
            &enc.sum,
            &contributors,
            enc.lr,
        );
        assert_eq!(
            comparable(outcome(&got)),
            comparable(c["expect"].clone()),
            "{c}"
        );
    }
}

/// The cases pin what they are named for, independently of the implementation's step.
pub fn check_properties() {
    let clip = ClipNorm::new(1.0).unwrap();
    for c in site_cases() {
        if let Ok(v) = c.weights.site_vector(c.site, &c.update, c.examples, clip)
            && !matches!(c.weights, AggregationWeights::Uniform)
        {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(norm <= 1.0 + 1e-12, "{}: norm {norm}", c.what);
        }
    }
    let site = site_cases();
    let v = |i: usize| {
        let c = &site[i];
        c.weights.site_vector(c.site, &c.update, c.examples, clip)
    };
    let close = |got: Vec<f64>, want: &[f64]| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?} vs {want:?}");
        }
    };
    // Declared: (3, −4) clipped to (0.6, −0.8), times 1/2.
    close(v(1).unwrap(), &[0.3, -0.4]);
    // Noised w = 1/2 within C: (0.15, −0.2, 0.125), no joint clip.
    close(v(3).unwrap(), &[0.15, -0.2, 0.125]);
    // Noised w = 1: (0.6, −0.8, 0.25) over its norm √1.0625.
    let n = 1.0625f64.sqrt();
    close(v(4).unwrap(), &[0.6 / n, -0.8 / n, 0.25 / n]);
    // w = 0: all zeros.
    assert!(v(5).unwrap().iter().all(|x| *x == 0.0));
    for i in 7..10 {
        assert!(matches!(v(i), Err(ModelError::ExampleCount(_))), "{i}");
    }
    // The floor branch and the estimate branch give different models from the same sum.
    let steps = step_cases();
    let model = |i: usize| {
        let c = &steps[i];
        let e = &c.step;
        c.weights
            .step(encoding(e), &e.model, &e.sum, &c.contributors, e.lr)
    };
    assert_ne!(model(3).unwrap(), model(4).unwrap());
    assert_eq!(model(2), Err(ModelError::UnknownSite(5)));
    assert_eq!(model(7), Err(ModelError::NoContributors));
    // Each noised branch equals fedavg with its divisor, computed here from the decoded sum
    // directly: the estimate 1.5, the floor 1.8, the ceiling 3, the floor 1 (negative sum).
    for (i, divisor) in [(3, 1.5), (4, 1.8), (5, 3.0), (6, 1.0)] {
        let c = &steps[i];
        let decoded = DdgCodec::new(encoding(&c.step))
            .unwrap()
            .decode_sum(&c.step.sum)
            .unwrap();
        let want =
            amalgam_consortium::global_model::fedavg_step(&c.step.model, &decoded, divisor, 1.0);
        let got = model(i).unwrap();
        let want = want.unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "case {i}: {got:?} vs {want:?}"
            );
        }
    }
}
