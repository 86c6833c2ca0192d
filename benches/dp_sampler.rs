//! Discrete Gaussian noise: the fast table sampler (its own OS-seeded ChaCha20 stream) against
//! opendp's exact sampler.
//!
//! Prints samples/s of both and their ratio for σ = 10 (one table) and σ = 10⁵ (two convolved
//! tables), whether the fast sampler meets its 20 M samples/s requirement, and its ratio to the
//! floor: the OpenSSL ChaCha20 keystream for the randomness it consumes (8 bytes per table
//! lookup: one lookup per sample for σ ≤ 256, two above).

use std::hint::black_box;

use amalgam_benches::{criterion_median_ns, heavy_criterion, keystream_floor, report_ratio};
use amalgam_dp::params::Sigma;
use amalgam_dp::sampler::{ExactSampler, FastSampler, NoiseSampler};
use criterion::Criterion;

const GROUP: &str = "dp_sampler";
const FAST_N: usize = 1 << 20;
const EXACT_N: usize = 2_000;
/// σ, its label, and the keystream bytes one sample consumes.
const SIGMAS: [(f64, &str, usize); 2] = [(10.0, "1e1", 8), (1e5, "1e5", 16)];
/// Required throughput of the fast sampler on one core.
const REQUIRED_PER_SECOND: f64 = 20e6;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for bytes in [8, 16] {
        let mut scratch = vec![0u8; 16 * 1024];
        group.bench_function(format!("floor_chacha20_{bytes}B_per_sample"), |b| {
            b.iter(|| keystream_floor(black_box(&[1; 32]), bytes * FAST_N, &mut scratch))
        });
    }
    for (sigma, label, _) in SIGMAS {
        let sigma = Sigma::new(sigma).unwrap_or_else(|e| panic!("{e}"));
        let mut fast = FastSampler::new(sigma).unwrap_or_else(|e| panic!("{e}"));
        let mut out = vec![0i64; FAST_N];
        group.bench_function(format!("fast_sigma_{label}"), |b| {
            b.iter(|| {
                fast.fill(black_box(&mut out))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
        let mut exact = ExactSampler::new(sigma).unwrap_or_else(|e| panic!("{e}"));
        let mut out = vec![0i64; EXACT_N];
        group.bench_function(format!("exact_sigma_{label}"), |b| {
            b.iter(|| {
                exact
                    .fill(black_box(&mut out))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    group.finish();
}

fn report() {
    for (_, label, bytes) in SIGMAS {
        let fast = criterion_median_ns(GROUP, &format!("fast_sigma_{label}"));
        let exact = criterion_median_ns(GROUP, &format!("exact_sigma_{label}"));
        if let (Some(f), Some(e)) = (fast, exact) {
            let fast_rate = FAST_N as f64 / (f * 1e-9);
            let exact_rate = EXACT_N as f64 / (e * 1e-9);
            let verdict = if fast_rate >= REQUIRED_PER_SECOND {
                "meets"
            } else {
                "BELOW"
            };
            println!(
                "dp_sampler sigma={label}: fast {:.1} M samples/s ({:.2} ns/sample, {verdict} the 20 M/s requirement), exact {:.0} samples/s ({:.2} us/sample), fast/exact {:.0}x",
                fast_rate / 1e6,
                1e9 / fast_rate,
                exact_rate,
                1e6 / exact_rate,
                fast_rate / exact_rate
            );
        }
        report_ratio(
            &format!("dp_sampler fast sigma={label} vs ChaCha20 floor ({bytes} B/sample)"),
            (GROUP, &format!("fast_sigma_{label}")),
            (GROUP, &format!("floor_chacha20_{bytes}B_per_sample")),
            10.0,
        );
    }
}

fn main() {
    let mut c = heavy_criterion().configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
