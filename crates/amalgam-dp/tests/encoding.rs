//! Encoding and decoding: round trips, sums of several plants, the norm bound, the overflow
//! edge, and refusal without a matching permit. Every encoding goes through a ledger permit
//! (policy `none` gives the noiseless ones).

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use amalgam_dp::encoding::{DdgCodec, EncodedUpdate, EncodingParams, clip_l2};
use amalgam_dp::entropy::TestSeeds;
use amalgam_dp::error::EncodeError;
use amalgam_dp::ledger::{
    BudgetPolicy, Ledger, LedgerError, PolicyKind, RoundPermit, RoundRequest,
};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, OverflowMargin, RoundingBias, Sigma,
    SiteCount,
};
use amalgam_dp::rotation::RotationSeed;
use amalgam_dp::sampler::{FastSampler, NoiseSampler, SamplerKind};
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

fn private_policy() -> BudgetPolicy {
    BudgetPolicy::site_level(Epsilon::new(1e6).unwrap(), Delta::new(1e-6).unwrap()).unwrap()
}

fn ledger(path: &Path, policy: BudgetPolicy) -> Ledger {
    Ledger::open(path, SigningKey::from_bytes(&[4; 32]), policy)
        .unwrap()
        .0
}

fn request(
    p: &EncodingParams,
    round_id: u64,
    local_sigma: f64,
    n: u32,
    kind: SamplerKind,
) -> RoundRequest {
    RoundRequest {
        round_id,
        manifest_digest: [0; 32],
        round_context: [round_id as u8; 32],
        min_cohort: SiteCount::new(n).unwrap(),
        colluders: 0,
        n_cohort: SiteCount::new(n).unwrap(),
        clip: p.clip,
        gamma: p.gamma,
        bits: p.bits,
        local_sigma: Sigma::new(local_sigma).unwrap(),
        dim: p.dim,
        beta: p.beta,
        sampler: kind,
    }
}

/// A permit under policy `none` (no noise) for round `round_id`.
fn noiseless_permit(ledger: &mut Ledger, p: &EncodingParams, round_id: u64) -> RoundPermit {
    common::authorize_in_epoch(ledger, request(p, round_id, 1.0, 1, SamplerKind::Fast)).unwrap()
}

/// The noiseless encoding of `x` through a fresh policy-`none` permit.
fn encode_noiseless(
    codec: &DdgCodec,
    ledger: &mut Ledger,
    round_id: u64,
    x: &[f64],
    rounding_seed: u8,
) -> Result<EncodedUpdate, EncodeError> {
    let permit = noiseless_permit(ledger, codec.params(), round_id);
    let seeds = TestSeeds {
        noise: [0; 32],
        rounding: [rounding_seed; 32],
    };
    let noise = codec.draw_noise_seeded(permit, PolicyKind::NoPrivacy, seeds)?;
    codec.encode(noise, x)
}

#[test]
fn noiseless_round_trip_is_within_the_rounding_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir.path().join("l"), BudgetPolicy::no_privacy());
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let mut round = 0;
    for dim in [1usize, 7, 64, 1000] {
        let p = params(dim as u64, 1000.0, 30);
        let codec = DdgCodec::new(p).unwrap();
        for _ in 0..5 {
            let x = random_update(&mut rng, dim);
            round += 1;
            let y = encode_noiseless(&codec, &mut l, round, &x, round as u8).unwrap();
            let decoded = codec.decode_sum(y.values()).unwrap();
            // Each rounded coordinate moves by < 1 in the scaled domain: L2 error < √D/γ.
            let bound = (codec.padded_len() as f64).sqrt() / 1000.0;
            assert!(l2_dist(&decoded, &clip_l2(&x, p.clip)) < bound, "dim {dim}");
            let q = codec.centre(y.values()).unwrap();
            let norm_sq: f64 = q.iter().map(|&v| (v as f64).powi(2)).sum();
            assert!(norm_sq.sqrt() <= codec.sensitivity().get());
        }
    }
    // Policy `none` reports no differential privacy.
    assert!(l.spent().unwrap().get().is_infinite());
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
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let modulus = p.bits.modulus();
    let mut aggregate = vec![0u64; codec.padded_len()];
    let mut clipped_sum = vec![0.0; dim];
    let mut noise_sum = vec![0i64; codec.padded_len()];
    for site in 0..n {
        // Each plant has its own ledger and its own permit.
        let mut l = ledger(&dir.path().join(format!("site-{site}")), private_policy());
        let permit =
            common::authorize_in_epoch(&mut l, request(&p, 1, local_sigma, n, SamplerKind::Fast))
                .unwrap();
        assert_eq!(permit.scaled_local_sigma(), Some(scaled));
        let x = random_update(&mut rng, dim);
        clip_l2(&x, p.clip)
            .iter()
            .zip(clipped_sum.iter_mut())
            .for_each(|(v, e)| *e += v);
        let seeds = TestSeeds {
            noise: [100 + site as u8; 32],
            rounding: [200 + site as u8; 32],
        };
        let y = codec
            .encode(
                codec
                    .draw_noise_seeded(permit, PolicyKind::Private, seeds)
                    .unwrap(),
                &x,
            )
            .unwrap();
        assert!(y.values().iter().all(|&v| v < modulus));
        aggregate
            .iter_mut()
            .zip(y.values())
            .for_each(|(a, &v)| *a = (*a + v) % modulus);
        // The same seed replays the site's noise exactly.
        let mut noise = vec![0i64; codec.padded_len()];
        FastSampler::from_seed(scaled, seeds.noise)
            .unwrap()
            .fill(&mut noise)
            .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir.path().join("l"), BudgetPolicy::no_privacy());
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let x = clip_l2(&random_update(&mut rng, dim), ClipNorm::new(1.0).unwrap());
    let x: Vec<f64> = x.iter().map(|v| v / l2_dist(&x, &vec![0.0; dim])).collect();
    let mut round = 0;
    for (factor, expect_wrap) in [(1.0, false), (8.0, true)] {
        let codec = DdgCodec::new(params(dim as u64, gamma.get() * factor, bits)).unwrap();
        let modulus = 1u64 << bits;
        let mut aggregate = vec![0u64; dim];
        for _ in 0..n {
            round += 1;
            let y = encode_noiseless(&codec, &mut l, round, &x, round as u8).unwrap();
            aggregate
                .iter_mut()
                .zip(y.values())
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
    assert_eq!(
        codec.check_update(&[0.0; 9]),
        Err(EncodeError::DimensionMismatch {
            expected: 10,
            got: 9
        })
    );
    let mut x = vec![0.1; 10];
    x[4] = f64::NAN;
    assert_eq!(
        codec.check_update(&x),
        Err(EncodeError::NonFinite { index: 4 })
    );
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir.path().join("l"), BudgetPolicy::no_privacy());
    assert_eq!(
        encode_noiseless(&codec, &mut l, 1, &x, 1).err(),
        Some(EncodeError::NonFinite { index: 4 })
    );
    assert!(DdgCodec::new(params(10, 1e17, 20)).is_err());
}

#[test]
fn noise_is_refused_without_a_matching_permit() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(16, 100.0, 20);
    let mut l = ledger(&dir.path().join("l"), private_policy());
    // Codec built with another γ than the charged round.
    let other = DdgCodec::new(params(16, 50.0, 20)).unwrap();
    let permit =
        common::authorize_in_epoch(&mut l, request(&p, 1, 0.05, 3, SamplerKind::Exact)).unwrap();
    assert_eq!(
        other.draw_noise(permit, PolicyKind::Private).err(),
        Some(EncodeError::PermitMismatch {
            what: "scale factor"
        })
    );
    // The charged round is spent even though the draw was refused: a second permit for the
    // same round is not issued.
    assert!(
        common::authorize_in_epoch(&mut l, request(&p, 1, 0.05, 3, SamplerKind::Exact)).is_err()
    );
    let codec = DdgCodec::new(p).unwrap();
    let permit =
        common::authorize_in_epoch(&mut l, request(&p, 2, 0.05, 3, SamplerKind::Exact)).unwrap();
    let y = codec
        .encode(
            codec.draw_noise(permit, PolicyKind::Private).unwrap(),
            &[0.1; 16],
        )
        .unwrap();
    assert_eq!(y.values().len(), 16);
    assert_eq!(y.round_id(), 2);
}

#[test]
fn the_encoded_update_persists_and_restores_exactly_and_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(16, 100.0, 20);
    let codec = DdgCodec::new(p).unwrap();
    let mut l = ledger(&dir.path().join("l"), private_policy());
    let permit =
        common::authorize_in_epoch(&mut l, request(&p, 7, 0.5, 3, SamplerKind::Fast)).unwrap();
    // Drawn while "training", encoded once the update is ready.
    let noise = codec.draw_noise(permit, PolicyKind::Private).unwrap();
    let y = codec.encode(noise, &[0.2; 16]).unwrap();
    let bytes = l.seal_update(&y).unwrap();
    let back = l.reload_update(&bytes).unwrap();
    assert_eq!(back.values(), y.values());
    assert_eq!((back.round_id(), back.round_context()), (7, &[7u8; 32]));
    assert_eq!(back.ledger_id(), &l.ledger_id());
    for cut in 0..bytes.len() {
        assert!(l.reload_update(&bytes[..cut]).is_err(), "cut {cut}");
    }
    // A value ≥ 2^b, or any other flipped bit, breaks the seal.
    for i in [0, 8, 40, 41, 49, 81, 89, bytes.len() - 65, bytes.len() - 1] {
        let mut flipped = bytes.to_vec();
        flipped[i] ^= 0x80;
        assert!(
            matches!(l.reload_update(&flipped), Err(LedgerError::BadUpdateSeal)),
            "byte {i}"
        );
    }
}
