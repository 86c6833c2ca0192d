//! Homomorphic fallback (KAHE): site encryption, aggregator add and decode per value at
//! d = 2^20, upload bytes per value, and a committee member's work per site — each printed as a
//! median with its ratio to a floor measured in the same run.
//!
//! Floors: encryption's is one tfhe `core_crypto` backward NTT per 2048 values (the transform
//! that every body needs); addition's is a plain `u64` wrapping-add loop over the same words
//! (memory bandwidth); decoding's is again one backward NTT per chunk. Targets: encryption
//! <= 0.3 µs/value, add <= 1.2x its floor, upload <= 8 B/value plus a constant per site, and a
//! member's work per site independent of d (measured at two d).

use std::hint::black_box;
use std::time::{Duration, Instant};

use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_he::kahe::{self, KeyVector};
use amalgam_he::params::N;
use amalgam_he::{
    Committee, Decryptor, KaheParams, MemberRoundRecord, RoundSetup, SignedUpload, SiteDirectory,
    SiteRound, SiteRoundLog,
};
use amalgam_proto::SiteId;
use amalgam_proto::codec::Encode;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use tfhe::core_crypto::commons::math::ntt::ntt64::Ntt64;
use tfhe::core_crypto::prelude::{CiphertextModulus, Polynomial, PolynomialSize};

const D: u32 = 1 << 20;
const SAMPLES: usize = 10;
const MODEL: (u64, [u8; 32]) = (1, [1; 32]);

/// Benchmark inputs only: fixed test keys, never production keys.
fn setup(d: u32) -> (RoundSetup, SigningKey) {
    let site = SigningKey::from_bytes(&[9; 32]);
    let other = SigningKey::from_bytes(&[8; 32]);
    let sites = SiteDirectory::new(vec![site.verifying_key(), other.verifying_key()])
        .unwrap_or_else(|e| panic!("{e}"));
    let members = (0..5u8)
        .map(|j| member_secrets_from_bytes([j + 20; 32], [j + 30; 32]).certify(1))
        .collect();
    let committee = Committee::new(members, 3, 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let params = KaheParams::new(16, 1024, d).unwrap_or_else(|e| panic!("{e}"));
    let s = RoundSetup::new(params, sites, committee, 2, 1, vec![MODEL])
        .unwrap_or_else(|e| panic!("{e}"));
    (s, site)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median seconds of `SAMPLES` runs of `f` (after one warm-up run).
fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    median(
        (0..SAMPLES)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn upload_for(setup: &RoundSetup, site: &SigningKey, rng: &mut ChaCha20Rng) -> SignedUpload {
    let values: Vec<u64> = (0..setup.params().vector_len())
        .map(|_| rng.next_u64() >> 48)
        .collect();
    SiteRound::draw(setup, &mut SiteRoundLog::new(), MODEL, values, rng)
        .and_then(|r| r.upload(setup, SiteId(0), site))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A member's work for one site: admit its view, then expand its pieces for the release.
fn member_per_site(setup: &RoundSetup, upload: &SignedUpload) -> f64 {
    let view = upload.view_for(0).unwrap_or_else(|| panic!("member 0"));
    time(|| {
        let secrets = member_secrets_from_bytes([20; 32], [30; 32]);
        let mut dec = Decryptor::new(setup.clone(), 0, secrets, &mut MemberRoundRecord::new())
            .unwrap_or_else(|e| panic!("{e}"));
        dec.admit(&view).unwrap_or_else(|e| panic!("{e}"));
        for p in 0..setup.committee().held_by(0).len() {
            black_box(KeyVector::expand(&[p as u8; 32]));
        }
        black_box(&dec);
    })
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0x4845);
    let (setup, site) = setup(D);
    let p = *setup.params();
    let values: Vec<u64> = (0..D).map(|_| rng.next_u64() >> 48).collect();
    let key = KeyVector::expand(&[7; 32]);
    let ctx = *setup.context();
    let bodies = kahe::encrypt(&p, &ctx, &key, &values, &[3; 32]).unwrap_or_else(|e| panic!("{e}"));

    let ntt = Ntt64::new(
        CiphertextModulus::<u64>::try_new(u128::from(amalgam_he::field::Q))
            .unwrap_or_else(|e| panic!("{e:?}")),
        PolynomialSize(N),
    );
    let mut out = vec![0u64; N];
    let mut scratch = vec![5u64; N];
    let chunks = p.chunks();
    let ntt_floor = || {
        let o = &mut out;
        for _ in 0..chunks {
            scratch.fill(5);
            ntt.as_view().add_backward(
                Polynomial::from_container(&mut o[..]).as_mut_view(),
                Polynomial::from_container(&mut scratch[..]).as_mut_view(),
            );
        }
        black_box(&o);
    };

    let mut g = c.benchmark_group("he_fallback");
    g.sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("encrypt_d1M", |b| {
        b.iter(|| black_box(kahe::encrypt(&p, &ctx, &key, &values, &[3; 32]).ok()))
    });
    g.finish();

    let mut ntt_floor = ntt_floor;
    let enc = time(|| {
        black_box(kahe::encrypt(&p, &ctx, &key, &values, &[3; 32]).ok());
    });
    let enc_floor = time(&mut ntt_floor);
    let mut sum = vec![0u64; bodies.len()];
    let add = time(|| {
        kahe::add_bodies(&mut sum, black_box(&bodies));
        black_box(&sum);
    });
    let mut acc = vec![0u64; bodies.len()];
    let add_floor = time(|| {
        for (a, x) in acc.iter_mut().zip(black_box(&bodies)) {
            *a = a.wrapping_add(*x);
        }
        black_box(&acc);
    });
    let dec = time(|| {
        black_box(kahe::decode_sum(&p, &ctx, 1, &bodies, &key).ok());
    });
    let d = f64::from(D);
    println!(
        "he_fallback encrypt: median {:.2} ms per d=2^20 = {:.4} µs/value (target <= 0.3); floor (1 backward NTT per chunk) {:.2} ms, ratio {:.2}x",
        enc * 1e3,
        enc / d * 1e6,
        enc_floor * 1e3,
        enc / enc_floor
    );
    println!(
        "he_fallback add per site: median {:.3} ms = {:.3} ns/value; floor (u64 wrapping add) {:.3} ms, ratio {:.2}x (target <= 1.2x)",
        add * 1e3,
        add / d * 1e9,
        add_floor * 1e3,
        add / add_floor
    );
    println!(
        "he_fallback decode: median {:.2} ms = {:.4} µs/value; floor (1 backward NTT per chunk) {:.2} ms, ratio {:.2}x",
        dec * 1e3,
        dec / d * 1e6,
        enc_floor * 1e3,
        dec / enc_floor
    );

    let upload = upload_for(&setup, &site, &mut rng);
    let bytes = upload.to_bytes().len();
    let const_bytes = bytes - 8 * p.body_len();
    println!(
        "he_fallback upload: {bytes} bytes for d=2^20 = {:.4} B/value (target <= 8 B/value + const); constant part {const_bytes} B (header, 5 seed boxes, 10 commitments, signature)",
        bytes as f64 / d
    );
    let (small, small_site) = setup_small();
    let small_upload = upload_for(&small, &small_site, &mut rng);
    let w_big = member_per_site(&setup, &upload);
    let w_small = member_per_site(&small, &small_upload);
    println!(
        "he_fallback member work per site: {:.1} µs at d=2^20, {:.1} µs at d=16, ratio {:.2} (target: independent of d)",
        w_big * 1e6,
        w_small * 1e6,
        w_big / w_small
    );
}

fn setup_small() -> (RoundSetup, SigningKey) {
    setup(16)
}

criterion_group!(benches, bench);
criterion_main!(benches);
