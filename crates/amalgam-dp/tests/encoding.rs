//! Encoding and decoding: round trips, sums of several plants, the norm bound, the overflow
//! edge, and refusal without a matching permit.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_dp::encoding::{DdgCodec, EncodingParams, clip_l2};
use amalgam_dp::error::EncodeError;
use amalgam_dp::ledger::{BudgetPolicy, Ledger, RoundPermit, RoundRequest};
use amalgam_dp::params::{
    Adjacency, BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, OverflowMargin, RoundingBias,
    Sigma, SiteCount,
};
use amalgam_dp::rotation::RotationSeed;
use amalgam_dp::sampler::{ExactSampler, FastSampler, NoiseSampler};
use amalgam_dp::scaling::choose_gamma;
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

fn params(dim: u64, gamma: f64, bits: u32) -> EncodingParams {
    EncodingParams {
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(gamma).unwrap(),
        bits: BitWidth::new(bits).unwrap(),
        dim: Dimension::new(dim).unwrap(),
        beta: RoundingBias::recommended(),
        rotation_seed: RotationSeed([9; 32]),
    }
}

/// Gaussian-ish random vector (sum of uniforms) with a random norm up to 3·C.
fn random_update(rng: &mut ChaCha20Rng, dim: usize) -> Vec<f64> {
    let mut x: Vec<f64> = (0..dim)
        .map(|_| {
            (0..4)
                .map(|_| (rng.next_u32() as f64 / u32::MAX as f64) - 0.5)
                .sum::<f64>()
        })
        .collect();
    let target = 3.0 * (rng.next_u32() as f64 / u32::MAX as f64);
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    x.iter_mut().for_each(|v| *v *= target / norm);
    x
}

fn l2_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// A permit for one round with these parameters, accounted for the given sampler.
fn permit_for(
    p: &EncodingParams,
    local_sigma: f64,
    n: u32,
    sampler: &dyn NoiseSampler,
    dir: &tempfile::TempDir,
) -> RoundPermit {
    let policy = BudgetPolicy {
        epsilon_cap: Epsilon::new(1e6).unwrap(),
        delta: Delta::new(1e-6).unwrap(),
    };
    let key = SigningKey::from_bytes(&[4; 32]);
    let (mut ledger, _) = Ledger::open(&dir.path().join("ledger"), key, policy).unwrap();
    ledger
        .authorize(RoundRequest {
            round_id: 1,
            adjacency: Adjacency::ZeroOut,
            n_min: SiteCount::new(n).unwrap(),
            n_cohort: SiteCount::new(n).unwrap(),
            clip: p.clip,
            gamma: p.gamma,
            bits: p.bits,
            local_sigma: Sigma::new(local_sigma).unwrap(),
            dim: p.dim,
            beta: p.beta,
            sampler: sampler.kind(),
            sampler_distance: sampler.distance_per_sample(),
        })
        .unwrap()
}

#[test]
fn noiseless_round_trip_is_within_the_rounding_error() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    for dim in [1usize, 7, 64, 1000] {
        let p = params(dim as u64, 1000.0, 30);
        let codec = DdgCodec::new(p).unwrap();
        for _ in 0..5 {
            let x = random_update(&mut rng, dim);
            let q = codec.quantize(&x, &mut rng).unwrap();
            let zeros = vec![0; q.len()];
            let decoded = codec.decode_sum(&codec.wrap(&q, &zeros).unwrap()).unwrap();
            // Each rounded coordinate moves by < 1 in the scaled domain: L2 error < √D/γ.
            let bound = (codec.padded_len() as f64).sqrt() / 1000.0;
            assert!(l2_dist(&decoded, &clip_l2(&x, p.clip)) < bound, "dim {dim}");
            let norm_sq: f64 = q.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!(norm_sq.sqrt() <= codec.sensitivity().get());
        }
    }
}

#[test]
fn sum_of_plants_decodes_to_the_sum_of_clipped_updates_plus_the_noise() {
    let dir = tempfile::tempdir().unwrap();
    let (n, dim, local_sigma) = (5u32, 300usize, 1.0);
    let gamma = choose_gamma(
        BitWidth::new(20).unwrap(),
        SiteCount::new(n).unwrap(),
        ClipNorm::new(1.0).unwrap(),
        Sigma::new(local_sigma).unwrap(),
        512,
        OverflowMargin::from_probability(1e-6).unwrap(),
    )
    .unwrap();
    let p = params(dim as u64, gamma.get(), 20);
    let codec = DdgCodec::new(p).unwrap();
    let scaled = Sigma::new(gamma.get() * local_sigma).unwrap();
    let sampler_for = |site: u32| {
        FastSampler::new(scaled, ChaCha20Rng::from_seed([100 + site as u8; 32])).unwrap()
    };
    let permit = permit_for(&p, local_sigma, n, &sampler_for(0), &dir);
    assert_eq!(permit.scaled_local_sigma().unwrap(), scaled);
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let modulus = p.bits.modulus();
    let mut aggregate = vec![0u64; codec.padded_len()];
    let mut clipped_sum = vec![0.0; dim];
    let mut noise_sum = vec![0i64; codec.padded_len()];
    for site in 0..n {
        let x = random_update(&mut rng, dim);
        clip_l2(&x, p.clip)
            .iter()
            .zip(clipped_sum.iter_mut())
            .for_each(|(v, e)| *e += v);
        let y = codec
            .encode(&permit, &x, &mut rng, &mut sampler_for(site))
            .unwrap();
        assert!(y.iter().all(|&v| v < modulus));
        aggregate
            .iter_mut()
            .zip(&y)
            .for_each(|(a, &v)| *a = (*a + v) % modulus);
        // The same seed replays the site's noise exactly.
        let mut noise = vec![0i64; codec.padded_len()];
        sampler_for(site).fill(&mut noise).unwrap();
        noise_sum.iter_mut().zip(&noise).for_each(|(a, &z)| *a += z);
    }
    let sum = codec.decode_sum(&aggregate).unwrap();
    // Expected: Σ clip(x_i) + R⁻¹(Σ z_i)/γ, up to rounding (< n·√D/γ in L2).
    let rotation = amalgam_dp::rotation::Rotation::new(p.rotation_seed, p.dim);
    let noise_update: Vec<f64> = rotation.inverse(
        &noise_sum
            .iter()
            .map(|&z| z as f64 / gamma.get())
            .collect::<Vec<_>>(),
    );
    let expected: Vec<f64> = clipped_sum
        .iter()
        .zip(&noise_update)
        .map(|(a, b)| a + b)
        .collect();
    let d = codec.padded_len() as f64;
    let rounding = f64::from(n) * d.sqrt() / gamma.get();
    let err = l2_dist(&sum, &expected);
    assert!(err < rounding, "error {err}, rounding bound {rounding}");
    // The noise really is there, at the accounted scale: ‖noise‖ ≈ √(n·d)·σ_local.
    let noise_norm = l2_dist(&noise_update, &vec![0.0; dim]);
    let predicted = (f64::from(n) * dim as f64).sqrt() * local_sigma;
    assert!(
        (noise_norm / predicted - 1.0).abs() < 0.1,
        "{noise_norm} vs {predicted}"
    );
    let mean = codec
        .decode_mean(&aggregate, SiteCount::new(n).unwrap())
        .unwrap();
    assert!((mean[3] * f64::from(n) - sum[3]).abs() < 1e-9);
}

#[test]
fn centring_is_exact_at_the_overflow_edge() {
    let codec = DdgCodec::new(params(4, 1.0, 8)).unwrap();
    assert_eq!(
        codec.centre(&[0, 127, 128, 255]).unwrap(),
        vec![0, 127, -128, -1]
    );
    assert_eq!(
        codec.centre(&[0, 256, 1, 2]),
        Err(EncodeError::NotInRing {
            index: 1,
            value: 256,
            modulus: 256
        })
    );
    // Wrapping then centring is the identity exactly on [−2^(b−1), 2^(b−1)).
    let q = vec![-128, 127, -1, 0];
    let wrapped = codec.wrap(&q, &[0; 4]).unwrap();
    assert_eq!(codec.centre(&wrapped).unwrap(), q);
    // One past the edge wraps to the other end.
    let over = codec.wrap(&[128, -129, 0, 0], &[0; 4]).unwrap();
    assert_eq!(codec.centre(&over).unwrap(), vec![-128, 127, 0, 0]);
}

#[test]
fn chosen_gamma_avoids_wrapping_where_a_larger_one_wraps() {
    // Worst case for wrapping: n identical updates at full norm, so their sum has norm n·C.
    let (n, dim, bits) = (8u32, 256usize, 12u32);
    let margin = OverflowMargin::from_probability(1e-6).unwrap();
    let sigma = Sigma::new(1e-3).unwrap();
    let gamma = choose_gamma(
        BitWidth::new(bits).unwrap(),
        SiteCount::new(n).unwrap(),
        ClipNorm::new(1.0).unwrap(),
        sigma,
        dim as u64,
        margin,
    )
    .unwrap();
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let x = clip_l2(&random_update(&mut rng, dim), ClipNorm::new(1.0).unwrap());
    let x: Vec<f64> = x.iter().map(|v| v / l2_dist(&x, &vec![0.0; dim])).collect();
    for (factor, expect_wrap) in [(1.0, false), (8.0, true)] {
        let codec = DdgCodec::new(params(dim as u64, gamma.get() * factor, bits)).unwrap();
        let modulus = 1u64 << bits;
        let mut aggregate = vec![0u64; dim];
        for _ in 0..n {
            let q = codec.quantize(&x, &mut rng).unwrap();
            let y = codec.wrap(&q, &vec![0; dim]).unwrap();
            aggregate
                .iter_mut()
                .zip(&y)
                .for_each(|(a, &v)| *a = (*a + v) % modulus);
        }
        let sum = codec.decode_sum(&aggregate).unwrap();
        let expected: Vec<f64> = x.iter().map(|v| v * f64::from(n)).collect();
        let err = l2_dist(&sum, &expected);
        assert_eq!(err > 1.0, expect_wrap, "factor {factor}: error {err}");
    }
}

#[test]
fn malformed_updates_are_rejected() {
    let codec = DdgCodec::new(params(10, 100.0, 20)).unwrap();
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    assert_eq!(
        codec.quantize(&[0.0; 9], &mut rng),
        Err(EncodeError::DimensionMismatch {
            expected: 10,
            got: 9
        })
    );
    let mut x = vec![0.1; 10];
    x[4] = f64::NAN;
    assert_eq!(
        codec.quantize(&x, &mut rng),
        Err(EncodeError::NonFinite { index: 4 })
    );
    assert!(DdgCodec::new(params(10, 1e17, 20)).is_err());
}

#[test]
fn noise_is_refused_without_a_matching_permit() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(16, 100.0, 20);
    let probe = ExactSampler::new(Sigma::new(5.0).unwrap()).unwrap();
    let permit = permit_for(&p, 0.05, 3, &probe, &dir);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    // Codec built with another γ.
    let other = DdgCodec::new(params(16, 50.0, 20)).unwrap();
    let sigma = permit.scaled_local_sigma().unwrap();
    let mut sampler = ExactSampler::new(sigma).unwrap();
    assert_eq!(
        other.encode(&permit, &[0.1; 16], &mut rng, &mut sampler),
        Err(EncodeError::PermitMismatch {
            what: "scale factor"
        })
    );
    // Sampler of another σ, or of another kind than the ledger accounted for.
    let codec = DdgCodec::new(p).unwrap();
    let mut wrong = ExactSampler::new(Sigma::new(sigma.get() * 2.0).unwrap()).unwrap();
    assert_eq!(
        codec.encode(&permit, &[0.1; 16], &mut rng, &mut wrong),
        Err(EncodeError::PermitMismatch {
            what: "noise sigma"
        })
    );
    let mut fast = FastSampler::new(sigma, ChaCha20Rng::from_seed([6; 32])).unwrap();
    assert_eq!(
        codec.encode(&permit, &[0.1; 16], &mut rng, &mut fast),
        Err(EncodeError::PermitMismatch {
            what: "sampler kind"
        })
    );
    let y = codec
        .encode(&permit, &[0.1; 16], &mut rng, &mut sampler)
        .unwrap();
    assert_eq!(y.len(), 16);
    assert_eq!(sampler.sigma(), sigma);
}

#[test]
fn noise_drawn_ahead_is_bound_to_its_round() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(16, 100.0, 20);
    let codec = DdgCodec::new(p).unwrap();
    let sigma = Sigma::new(100.0 * 0.5).unwrap();
    let policy = BudgetPolicy {
        epsilon_cap: Epsilon::new(1e3).unwrap(),
        delta: Delta::new(1e-6).unwrap(),
    };
    let (mut ledger, _) = Ledger::open(
        &dir.path().join("l"),
        SigningKey::from_bytes(&[5; 32]),
        policy,
    )
    .unwrap();
    let mut sampler =
        amalgam_dp::sampler::build(Default::default(), sigma, ChaCha20Rng::from_seed([8; 32]))
            .unwrap();
    let request = |round_id| RoundRequest {
        round_id,
        adjacency: Adjacency::ZeroOut,
        n_min: SiteCount::new(3).unwrap(),
        n_cohort: SiteCount::new(3).unwrap(),
        clip: p.clip,
        gamma: p.gamma,
        bits: p.bits,
        local_sigma: Sigma::new(0.5).unwrap(),
        dim: p.dim,
        beta: p.beta,
        sampler: sampler.kind(),
        sampler_distance: sampler.distance_per_sample(),
    };
    let first = ledger.authorize(request(1)).unwrap();
    let second = ledger.authorize(request(2)).unwrap();
    // Drawn while "training", then used for its own round: same as the quantized update + noise.
    let noise = codec.draw_noise(&first, sampler.as_mut()).unwrap();
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let x = vec![0.2; 16];
    let y = codec
        .encode_with_noise(&first, &x, &mut rng, noise)
        .unwrap();
    let q = codec
        .quantize(&x, &mut ChaCha20Rng::from_seed([9; 32]))
        .unwrap();
    let centred = codec.centre(&y).unwrap();
    let implied_noise: Vec<i64> = centred.iter().zip(&q).map(|(a, b)| a - b).collect();
    assert!(implied_noise.iter().any(|&z| z != 0));
    assert!(implied_noise.iter().all(|z| z.unsigned_abs() < 15 * 50));
    // Noise drawn for round 1 is refused for round 2.
    let stale = codec.draw_noise(&first, sampler.as_mut()).unwrap();
    assert_eq!(
        codec.encode_with_noise(&second, &x, &mut rng, stale).err(),
        Some(EncodeError::PermitMismatch {
            what: "round of the noise"
        })
    );
}
