//! `amalgam simulate-round`: a whole consortium round in one process, through the real state
//! machines and the canonical wire encoding, with sites dropping out at a chosen phase.

use amalgam_proto::params::{
    AggregatorTrust, Colluders, Dropouts, InputBits, MinCohort, NeighbourGraph, ParamsRequest,
    RoundParams, SiteCount, SiteId, SumBits, SumMode, Threshold, VectorLen, ceil_log2,
    default_threshold,
};
use amalgam_proto::phase::Phase;
use amalgam_proto::sim::{self, SimConfig, Simulation};
use clap::ValueEnum;

/// Options of `amalgam simulate-round`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of plant sites in the consortium.
    #[arg(long, default_value_t = 10)]
    sites: u16,
    /// Colluding sites c the round must tolerate (at least 1).
    #[arg(long, default_value_t = 1)]
    colluders: u16,
    /// Shamir threshold t; must satisfy 2t > n + c. Default max(⌊2n/3⌋ + 1, ⌊(n + c)/2⌋ + 1).
    #[arg(long)]
    threshold: Option<u16>,
    /// Dropouts f the parameters must tolerate (t <= n − f); default n − t.
    #[arg(long)]
    tolerated_dropouts: Option<u16>,
    /// How many sites drop out (the last ones in the manifest).
    #[arg(long, default_value_t = 2)]
    dropouts: u16,
    /// The phase before which they drop: mid-round (after sharing keys) by default.
    #[arg(long, value_enum, default_value_t = DropPhase::MaskedInput)]
    drop_phase: DropPhase,
    /// Length d of each site's input vector.
    #[arg(long, default_value_t = 10_000)]
    len: u32,
    /// Bits b of each input element; the sum is exact in b + ⌈log2 n⌉ bits.
    #[arg(long, default_value_t = 16)]
    bits: u8,
    /// 32-byte hex seed for a reproducible run; fresh from the OS if absent.
    #[arg(long)]
    seed: Option<String>,
    /// How many leading elements of the sums to print.
    #[arg(long, default_value_t = 8)]
    show: usize,
}

/// Phases a site can drop out before.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DropPhase {
    /// Before sending its Shamir shares.
    ShareKeys,
    /// Before sending its masked input (its masks must then be recovered).
    MaskedInput,
    /// Before signing the survivor set.
    ConsistencyCheck,
    /// Before revealing its shares.
    Unmasking,
}

impl From<DropPhase> for Phase {
    fn from(p: DropPhase) -> Self {
        match p {
            DropPhase::ShareKeys => Phase::ShareKeys,
            DropPhase::MaskedInput => Phase::MaskedInput,
            DropPhase::ConsistencyCheck => Phase::ConsistencyCheck,
            DropPhase::Unmasking => Phase::Unmasking,
        }
    }
}

fn seed(arg: Option<&str>) -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    match arg {
        Some(text) => hex::decode_to_slice(text, &mut seed)
            .map_err(|e| format!("--seed must be 64 hex digits (32 bytes): {e}"))?,
        None => getrandom::fill(&mut seed)
            .map_err(|e| format!("the operating system gave no random seed: {e}"))?,
    }
    Ok(seed)
}

/// Complete graph, malicious-aggregator model, exact sums: the only masking mode a consortium
/// without a trusted aggregator may run.
fn params(
    n: u16,
    t: u16,
    c: u16,
    f: u16,
    bits: u8,
    len: u32,
) -> Result<RoundParams, amalgam_proto::ParamError> {
    RoundParams::new(ParamsRequest {
        sites: SiteCount::new(n)?,
        threshold: Threshold::new(t)?,
        min_cohort: MinCohort::new(t.max(2))?,
        input_bits: InputBits::new(bits)?,
        sum_bits: SumBits::new(bits.saturating_add(ceil_log2(n)))?,
        sum_mode: SumMode::Exact,
        vector_len: VectorLen::new(len)?,
        graph: NeighbourGraph::Complete,
        colluders: Colluders::new(c)?,
        dropouts: Dropouts::new(f),
        trust: AggregatorTrust::Malicious,
    })
}

/// Runs the simulation and prints the recovered sum next to the plaintext sum.
pub fn run(args: &Args) -> Result<(), String> {
    let n = args.sites;
    let c = args.colluders;
    let t = args.threshold.unwrap_or(default_threshold(n, c));
    if args.dropouts >= n {
        return Err(format!(
            "--dropouts {} leaves no site of {n}",
            args.dropouts
        ));
    }
    let f = args.tolerated_dropouts.unwrap_or(n.saturating_sub(t));
    let params =
        params(n, t, c, f, args.bits, args.len).map_err(|e| format!("refused parameters: {e}"))?;
    let seed = seed(args.seed.as_deref())?;
    let phase = Phase::from(args.drop_phase);

    let mut config = SimConfig::new(params, 1, seed);
    let dropped: Vec<u16> = (n - args.dropouts..n).collect();
    for &site in &dropped {
        config = config.drop_site(site, phase);
    }
    let inputs = config.inputs.clone();
    println!(
        "consortium: n={n} sites, threshold t={t}, tolerating c={c} colluders and f={f} dropouts, d={} elements of b={} bits, sums mod 2^{}",
        params.d(),
        params.input_bits().get(),
        params.sum_bits().get()
    );
    println!("seed: {}", hex::encode(seed));
    println!("dropping sites {dropped:?} before {phase:?}");

    let report = Simulation::new(config)
        .map_err(|e| format!("could not set up the consortium: {e}"))?
        .run();
    let wire: usize = report.transcript.iter().map(|e| e.bytes.len()).sum();
    println!(
        "messages exchanged: {}, {:.1} KiB on the wire",
        report.transcript.len(),
        wire as f64 / 1024.0
    );
    for (site, error) in &report.site_errors {
        println!("site {} stopped: {error}", site.0);
    }
    let output = report
        .output
        .map_err(|e| format!("the round aborted without a sum: {e}"))?;
    let ids = |v: &[SiteId]| v.iter().map(|s| s.0).collect::<Vec<_>>();
    println!(
        "sum over sites {:?}; dropped {:?}",
        ids(&output.contributors),
        ids(&output.dropped)
    );

    let expected = sim::plaintext_sum(&params, &inputs, &output.contributors);
    let k = args.show.min(expected.len());
    println!("recovered sum  (first {k}): {:?}", &output.sum[..k]);
    println!("plaintext sum  (first {k}): {:?}", &expected[..k]);
    if output.sum == expected {
        println!("all {} elements equal", expected.len());
        Ok(())
    } else {
        let wrong = output
            .sum
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        Err(format!(
            "recovered sum differs from the plaintext sum in {wrong} elements"
        ))
    }
}
