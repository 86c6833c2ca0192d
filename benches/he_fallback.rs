//! Homomorphic fallback: encrypt, add and decrypt per value at d = 1M, and upload bytes per
//! value, each printed as a median with its ratio to a floor measured in the same run.
//!
//! Floors: encryption does two negacyclic products per 2048 values (mask `a ⊛ r` and body
//! `b ⊛ r`), decryption one (`mask ⊛ s`), so their floor is that many of tfhe's exact binary-NTT
//! products alone; addition's floor is a plain `u64` wrapping-add loop over the same words.
//! Targets: encrypt <= 1 µs, add <= 2 ns per value per site, decrypt <= 0.5 µs, upload <= 16.1 B.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amalgam_he::params::{LWE_DIMENSION, he_params};
use amalgam_he::{CiphertextSum, DecryptionKey, SignedContribution, decrypt_sum, encrypt_vector};
use amalgam_proto::SiteId;
use amalgam_proto::codec::Encode;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_binary_semi_reverse_negacyclic_convolution;

const D: u32 = 1_000_000;
const SAMPLES: usize = 10;

/// Per-iteration times of the measured samples, to print medians next to criterion's report.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<Vec<f64>>>);

impl Samples {
    fn median(&self) -> f64 {
        let mut v = self.0.lock().map(|g| g.clone()).unwrap_or_default();
        // Warm-up runs come first; the last SAMPLES entries are the measurement.
        // `cargo test --benches` runs each benchmark once: too few samples for a median.
        if v.len() < SAMPLES {
            return f64::NAN;
        }
        let mut v = v.split_off(v.len() - SAMPLES);
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    }

    fn time<F: FnMut()>(&self, iters: u64, mut f: F) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let elapsed = start.elapsed();
        if let Ok(mut g) = self.0.lock() {
            g.push(elapsed.as_secs_f64() / iters as f64);
        }
        elapsed
    }
}

fn bench(c: &mut Criterion) {
    // Benchmark inputs only: a seeded CSPRNG, never a production key.
    let mut rng = ChaCha20Rng::seed_from_u64(0x4845);
    let params = he_params(16, 1024, D).unwrap_or_else(|e| panic!("{e}"));
    let key = DecryptionKey::generate(&mut rng);
    let values: Vec<u64> = (0..D).map(|_| rng.next_u64() >> 48).collect();
    let ct = encrypt_vector(key.public_key(), &params, &values, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let lists = params.list_count();
    let ntt_inputs: Vec<u64> = (0..LWE_DIMENSION).map(|_| rng.next_u64()).collect();
    let binary: Vec<u64> = (0..LWE_DIMENSION).map(|_| rng.next_u64() & 1).collect();
    let mut ntt_out = vec![0u64; LWE_DIMENSION];
    let mut ntt_products = |n: usize| {
        for _ in 0..n {
            slice_binary_semi_reverse_negacyclic_convolution(
                &mut ntt_out,
                black_box(&ntt_inputs),
                &binary,
            );
        }
        black_box(&ntt_out);
    };

    let mut g = c.benchmark_group("he_fallback");
    g.sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    let (encrypt, encrypt_floor) = (Samples::default(), Samples::default());
    g.bench_function("encrypt_d1M", |b| {
        b.iter_custom(|iters| {
            encrypt.time(iters, || {
                black_box(encrypt_vector(key.public_key(), &params, &values, &mut rng).ok());
            })
        })
    });
    g.bench_function("floor_2_ntt_products_per_2048", |b| {
        b.iter_custom(|iters| encrypt_floor.time(iters, || ntt_products(2 * lists)))
    });

    let mut sum = CiphertextSum::zero(&params);
    let (add, add_floor) = (Samples::default(), Samples::default());
    g.bench_function("add_one_site_d1M", |b| {
        b.iter_custom(|iters| add.time(iters, || add_words_checked(&mut sum, &ct, &params)))
    });
    let mut acc = vec![0u64; ct.words().len()];
    let words = ct.words().to_vec();
    g.bench_function("floor_u64_wrapping_add_same_words", |b| {
        b.iter_custom(|iters| {
            add_floor.time(iters, || {
                for (a, x) in acc.iter_mut().zip(black_box(&words)) {
                    *a = a.wrapping_add(*x);
                }
                black_box(&acc);
            })
        })
    });

    let mut two = CiphertextSum::zero(&params);
    for _ in 0..2 {
        let _ = two.add(&ct, &params);
    }
    let (decrypt, decrypt_floor) = (Samples::default(), Samples::default());
    g.bench_function("decrypt_d1M", |b| {
        b.iter_custom(|iters| {
            decrypt.time(iters, || {
                black_box(decrypt_sum(&key, &params, &two).ok());
            })
        })
    });
    g.bench_function("floor_1_ntt_product_per_2048", |b| {
        b.iter_custom(|iters| decrypt_floor.time(iters, || ntt_products(lists)))
    });
    g.finish();

    let identity = SigningKey::generate(&mut rng);
    let upload = SignedContribution::sign(
        1,
        SiteId(0),
        key.public_key().fingerprint(),
        ct.clone(),
        &identity,
    )
    .to_bytes();
    let d = f64::from(D);
    let report = |name: &str,
                  s: &Samples,
                  floor: &Samples,
                  unit: f64,
                  unit_name: &str,
                  target: &str| {
        let (m, f) = (s.median(), floor.median());
        if m.is_nan() || f.is_nan() {
            return;
        }
        println!(
            "he_fallback {name}: median {:.3} ms per d=1M, {:.3} {unit_name}/value (target {target}); floor {:.3} ms, ratio {:.2}x",
            m * 1e3,
            m / d * unit,
            f * 1e3,
            m / f
        );
    };
    report("encrypt", &encrypt, &encrypt_floor, 1e6, "µs", "<= 1 µs");
    report("add per site", &add, &add_floor, 1e9, "ns", "<= 2 ns");
    report("decrypt", &decrypt, &decrypt_floor, 1e6, "µs", "<= 0.5 µs");
    println!(
        "he_fallback upload: {} bytes for d=1M = {:.3} B/value (target <= 16.1 B); floor 16 B/value \
         (one 8-byte body + 1/2048 of a 2048-word mask), ratio {:.4}x; 2.0x of a u64 plaintext",
        upload.len(),
        upload.len() as f64 / d,
        upload.len() as f64 / d / 16.0
    );
}

/// One site's addition as the aggregator does it (length and cohort checks included); the sum
/// is reset when the cohort limit is reached so that every iteration does the same work.
fn add_words_checked(
    sum: &mut CiphertextSum,
    ct: &amalgam_he::EncryptedVector,
    params: &amalgam_he::HeParams,
) {
    if sum.add(ct, params).is_err() {
        *sum = CiphertextSum::zero(params);
    }
    black_box(&*sum);
}

criterion_group!(benches, bench);
criterion_main!(benches);
