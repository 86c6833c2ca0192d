//! Client masking and server unmasking for pairwise-masking secure aggregation, d = 1M,
//! n = 10 and 30, 0 / 10 / 20 % of sites dropping after ShareKeys (the case that needs recovery).
//!
//! Floors, measured in the same run:
//! - client: the OpenSSL ChaCha20 keystream, generated into a cache-resident buffer (pure
//!   cipher cost, no memory traffic), for the same number of 32-bit words the client expands
//!   (one per element per mask: n − 1 pairwise masks + its self mask);
//! - server: the keystream for the words it expands (each survivor's self mask, and each
//!   dropped site's pairwise mask with each survivor) plus the wrapping additions of the
//!   survivors' vectors.
//!
//! Targets: client ≤ 1.3x its floor, server ≤ 1.5x its floor.

use amalgam_benches::{heavy_criterion, keystream_floor, report_ratio, wrapping_add_u32};
use amalgam_proto::masking::{MaskSign, MaskTerm, mask_and_pack, unmask_sum};
use amalgam_proto::params::{RoundParams, SumBits};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use std::hint::black_box;
use zeroize::Zeroizing;

const D: usize = 1 << 20;
const INPUT_BITS: u8 = 16;
const SITES: [u16; 2] = [10, 30];
const DROPOUT_PERCENT: [u16; 3] = [0, 10, 20];
/// Keystream scratch for the floors: cache-resident, like the masking code's chunks.
const SCRATCH: usize = 16 * 1024;

fn random_key(rng: &mut ChaCha20Rng) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    key
}

fn terms(rng: &mut ChaCha20Rng, count: usize) -> Vec<MaskTerm> {
    (0..count)
        .map(|i| MaskTerm {
            key: random_key(rng),
            sign: if i % 2 == 0 {
                MaskSign::Add
            } else {
                MaskSign::Subtract
            },
        })
        .collect()
}

/// Sum bits for an exact sum of n b-bit inputs, as the protocol's parameter rules derive them.
fn sum_bits(n: u16) -> SumBits {
    match RoundParams::exact(n, n / 2 + 2, INPUT_BITS, D as u32) {
        Ok(params) => params.sum_bits(),
        Err(e) => panic!("benchmark parameters refused: {e}"),
    }
}

fn bench_client(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([1u8; 32]);
    let mut group = c.benchmark_group("client");
    for n in SITES {
        let bits = sum_bits(n);
        let input: Vec<u64> = (0..D).map(|_| u64::from(rng.next_u32() >> 16)).collect();
        let masks = terms(&mut rng, usize::from(n)); // n − 1 pairwise + 1 self mask
        let id = format!("n{n}");
        group.bench_function(BenchmarkId::new("mask", &id), |b| {
            b.iter(|| black_box(mask_and_pack(black_box(&input), &masks, bits)))
        });
        let key = [9u8; 32];
        let mut scratch = vec![0u8; SCRATCH];
        let words = D * usize::from(n);
        group.bench_function(BenchmarkId::new("floor", &id), |b| {
            b.iter(|| keystream_floor(&key, 4 * words, black_box(&mut scratch)))
        });
    }
    group.finish();
    for n in SITES {
        let id = format!("n{n}");
        report_ratio(
            &format!("client masking n={n} d=2^20 (any dropout after ShareKeys)"),
            ("client", &format!("mask/{id}")),
            ("client", &format!("floor/{id}")),
            1.3,
        );
    }
}

fn bench_server(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([2u8; 32]);
    let mut group = c.benchmark_group("server");
    for n in SITES {
        let bits = sum_bits(n);
        let packed: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let x: Vec<u64> = (0..D)
                    .map(|_| u64::from(rng.next_u32()) & bits.mask())
                    .collect();
                mask_and_pack(&x, &[], bits)
            })
            .collect();
        for pct in DROPOUT_PERCENT {
            let dropped = usize::from(n * pct / 100);
            let survivors = usize::from(n) - dropped;
            // Each survivor's self mask, and each dropped site's mask with each survivor.
            let masks = terms(&mut rng, survivors + dropped * survivors);
            let uploads: Vec<&[u8]> = packed[..survivors].iter().map(Vec::as_slice).collect();
            let id = format!("n{n}_drop{pct}");
            group.bench_function(BenchmarkId::new("unmask", &id), |b| {
                b.iter(|| black_box(unmask_sum(black_box(&uploads), &masks, bits, D)))
            });
            let key = [7u8; 32];
            let mut scratch = vec![0u8; SCRATCH];
            let words = D * masks.len();
            let vectors: Vec<Vec<u32>> = (0..survivors).map(|i| vec![i as u32; D]).collect();
            let mut acc = vec![0u32; D];
            group.bench_function(BenchmarkId::new("floor", &id), |b| {
                b.iter(|| {
                    keystream_floor(&key, 4 * words, black_box(&mut scratch));
                    for v in &vectors {
                        wrapping_add_u32(&mut acc, v);
                    }
                    black_box(&acc);
                })
            });
        }
    }
    group.finish();
    for n in SITES {
        for pct in DROPOUT_PERCENT {
            let id = format!("n{n}_drop{pct}");
            report_ratio(
                &format!("server unmasking n={n} d=2^20 dropout={pct}%"),
                ("server", &format!("unmask/{id}")),
                ("server", &format!("floor/{id}")),
                1.5,
            );
        }
    }
}

criterion_group! {
    name = masking;
    config = heavy_criterion();
    targets = bench_client, bench_server
}
criterion_main!(masking);
