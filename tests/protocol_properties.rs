//! Property tests (spec §11): for random n <= 30, t, b, B, graph, vector length and dropout
//! schedule, the round either outputs exactly Σ x_u mod 2^B over the survivors U3, or fails with
//! `NotEnoughSites { needed, got }` exactly when a reference model of the thresholds says it
//! must — never a wrong sum.

use std::collections::BTreeSet;

use amalgam_proto::Error;
use amalgam_proto::params::{
    AggregatorTrust, Colluders, Dropouts, InputBits, MinCohort, NeighbourGraph, ParamsRequest,
    RoundParams, SiteCount, SiteId, SumBits, SumMode, Threshold, VectorLen, ceil_log2,
    min_safe_threshold,
};
use amalgam_proto::phase::Phase;
use amalgam_proto::sim::{self, Dropout, SimConfig, plaintext_sum};
use proptest::prelude::*;

const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmasking,
];

#[derive(Debug, Clone)]
struct Case {
    params: RoundParams,
    seed: [u8; 32],
    dropouts: Vec<Dropout>,
}

fn params_strategy() -> impl Strategy<Value = RoundParams> {
    (
        3u16..=30,
        any::<bool>(),
        0u16..1000,
        0u16..1000,
        1u8..=40,
        0u8..3,
        1u32..=40,
        0u16..1000,
        0u16..1000,
        any::<bool>(),
    )
        .prop_map(|(n, harary, kr, tr, b, mode, d, mr, cr, curious)| {
            let graph = if harary && n >= 4 {
                let kmax = (n - 2) / 2; // k/2 in 1..=kmax
                NeighbourGraph::Harary {
                    k: 2 * (1 + kr % kmax),
                }
            } else {
                NeighbourGraph::Complete
            };
            let holders = match graph {
                NeighbourGraph::Complete => n,
                NeighbourGraph::Harary { k } => k + 1,
            };
            // Safety with at least one colluder: 2t > H + 1.
            let tmin = min_safe_threshold(holders, 1);
            // Mostly thresholds near the minimum (so dropouts are survivable), sometimes anywhere.
            let t = tmin
                + if tr % 4 == 0 {
                    tr % (holders - tmin + 1)
                } else {
                    (tr % 3).min(holders - tmin)
                };
            // The most colluders t tolerates (2t > H + c), below k in Harary mode; the most
            // dropouts it tolerates (t <= H - f).
            let mut cmax = 2 * t - holders - 1;
            if let NeighbourGraph::Harary { k } = graph {
                cmax = cmax.min(k - 1);
            }
            // Every cohort keeps two honest sites: m >= c + 2.
            cmax = cmax.min(t.max(2) - 2);
            let colluders = 1 + cr % cmax;
            let trust = if curious || graph != NeighbourGraph::Complete {
                AggregatorTrust::Curious
            } else {
                AggregatorTrust::Malicious
            };
            let mmin = t.max(2);
            let m = mmin + if mr % 4 == 0 { mr % (n - mmin + 1) } else { 0 };
            let (sum_bits, sum_mode) = match mode {
                0 => (b, SumMode::Modular),
                1 => ((b + ceil_log2(n)).min(64), SumMode::Exact),
                _ => (64, SumMode::Exact),
            };
            let b = if sum_mode == SumMode::Exact {
                b.min(64 - ceil_log2(n))
            } else {
                b
            };
            RoundParams::new(ParamsRequest {
                sites: SiteCount::new(n).unwrap(),
                threshold: Threshold::new(t).unwrap(),
                min_cohort: MinCohort::new(m).unwrap(),
                input_bits: InputBits::new(b).unwrap(),
                sum_bits: SumBits::new(sum_bits).unwrap(),
                sum_mode,
                vector_len: VectorLen::new(d).unwrap(),
                graph,
                colluders: Colluders::new(colluders).unwrap(),
                dropouts: Dropouts::new(holders - t),
                trust,
            })
            .unwrap()
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    params_strategy().prop_flat_map(|params| {
        let n = params.n();
        (
            Just(params),
            any::<[u8; 32]>(),
            // Per site: no dropout (weight 6) or dropout before one of the five phases.
            proptest::collection::vec(
                prop_oneof![6 => Just(None), 1 => (0usize..5).prop_map(Some)],
                n,
            ),
        )
            .prop_map(|(params, seed, drops)| Case {
                params,
                seed,
                dropouts: drops
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| {
                        d.map(|ph| Dropout {
                            site: SiteId(i as u16),
                            before: PHASES[ph],
                        })
                    })
                    .collect(),
            })
    })
}

/// Reference model of the thresholds (spec §5.2, §6.1): Ok(U3) or Err(phase).
fn model(c: &Case) -> Result<Vec<SiteId>, Phase> {
    let p = &c.params;
    let t = p.t();
    let m = usize::from(p.min_cohort().get());
    let alive = |ph: Phase| -> BTreeSet<SiteId> {
        (0..p.n() as u16)
            .map(SiteId)
            .filter(|s| !c.dropouts.iter().any(|d| d.site == *s && d.before <= ph))
            .collect()
    };
    let closed = |u: SiteId, set: &BTreeSet<SiteId>| {
        set.iter()
            .filter(|&&v| v == u || p.are_neighbours(u, v))
            .count()
    };
    let ok = |set: &BTreeSet<SiteId>, cohort: bool| {
        (!cohort || set.len() >= m) && set.iter().all(|&u| closed(u, set) >= t) && !set.is_empty()
    };
    let u1 = alive(Phase::AdvertiseKeys);
    if !ok(&u1, true) {
        return Err(Phase::AdvertiseKeys);
    }
    let u2 = alive(Phase::ShareKeys);
    if !ok(&u2, true) {
        return Err(Phase::ShareKeys);
    }
    let u3 = alive(Phase::MaskedInput);
    if !ok(&u3, true) || !connected(p, &u3) {
        return Err(Phase::MaskedInput);
    }
    let u4 = alive(Phase::ConsistencyCheck);
    if !ok(&u4, false) || u4.len() < p.quorum(u1.len()) {
        return Err(Phase::ConsistencyCheck);
    }
    let u5 = alive(Phase::Unmasking);
    for u in &u3 {
        if closed(*u, &u5) < t {
            return Err(Phase::Unmasking);
        }
    }
    for v in u2.difference(&u3) {
        let has_survivor_peer = u3.iter().any(|&u| p.are_neighbours(u, *v));
        let holders = u5.iter().filter(|&&w| p.are_neighbours(w, *v)).count();
        if has_survivor_peer && holders < t {
            return Err(Phase::Unmasking);
        }
    }
    Ok(u3.into_iter().collect())
}

/// Whether the survivors' graph has vertex connectivity >= c + 1, by brute force over every
/// set of at most c removed vertices (independent of the crate's max-flow code).
fn connected(p: &RoundParams, set: &BTreeSet<SiteId>) -> bool {
    let v: Vec<SiteId> = set.iter().copied().collect();
    if v.len() < p.c() + 2 {
        return false;
    }
    if p.graph() == NeighbourGraph::Complete {
        return true;
    }
    let components_after = |removed: &[usize]| {
        let kept: Vec<usize> = (0..v.len()).filter(|i| !removed.contains(i)).collect();
        let mut seen = vec![false; v.len()];
        let mut stack = vec![kept[0]];
        seen[kept[0]] = true;
        while let Some(a) = stack.pop() {
            for &b in &kept {
                if !seen[b] && p.are_neighbours(v[a], v[b]) {
                    seen[b] = true;
                    stack.push(b);
                }
            }
        }
        kept.iter().all(|&i| seen[i])
    };
    // Every subset of size <= c, enumerated by recursion.
    fn subsets(
        n: usize,
        size: usize,
        start: usize,
        cur: &mut Vec<usize>,
        f: &mut dyn FnMut(&[usize]) -> bool,
    ) -> bool {
        if !f(cur) {
            return false;
        }
        if cur.len() == size {
            return true;
        }
        for i in start..n {
            cur.push(i);
            let ok = subsets(n, size, i + 1, cur, f);
            cur.pop();
            if !ok {
                return false;
            }
        }
        true
    }
    subsets(v.len(), p.c(), 0, &mut Vec::new(), &mut |r| {
        components_after(r)
    })
}

fn run_case(c: &Case, snapshots: bool) -> Result<(), TestCaseError> {
    let mut cfg = SimConfig::new(c.params, 42, c.seed);
    cfg.dropouts = c.dropouts.clone();
    cfg.snapshot_between_phases = snapshots;
    let inputs = cfg.inputs.clone();
    let report = sim::run(cfg).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert!(
        report.site_errors.is_empty(),
        "honest sites failed: {:?}",
        report.site_errors
    );
    prop_assert!(
        report.aggregator_errors.is_empty(),
        "honest uploads rejected: {:?}",
        report.aggregator_errors
    );
    if std::env::var("PROP_STATS").is_ok() {
        eprintln!("STAT n={} ok={}", c.params.n(), model(c).is_ok());
    }
    match (model(c), report.output) {
        (Ok(u3), Ok(out)) => {
            prop_assert_eq!(&out.contributors, &u3);
            prop_assert_eq!(out.sum, plaintext_sum(&c.params, &inputs, &u3));
        }
        (Err(Phase::MaskedInput), Err(Error::CohortDisconnected { .. })) => {}
        (
            Err(phase),
            Err(Error::NotEnoughSites {
                phase: got_phase,
                needed,
                got,
            }),
        ) => {
            prop_assert_eq!(phase, got_phase);
            prop_assert!(got < needed, "needed {} got {}", needed, got);
        }
        (want, got) => prop_assert!(false, "model {:?} but round gave {:?}", want, got),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sum_is_exact_or_refused_with_needed_got(c in case_strategy()) {
        run_case(&c, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_between_phases_change_nothing(c in case_strategy()) {
        run_case(&c, true)?;
    }
}

#[test]
fn too_few_survivors_in_each_phase_gives_needed_got() {
    // n = 7, t = 5 (c = 2, f = 2; t = 4 would tolerate no colluder at odd n): two dropouts
    // before a phase leave 5 (fine), three leave 4 (refused).
    let p = RoundParams::exact(7, 5, 8, 5).unwrap();
    for (i, phase) in PHASES.iter().enumerate() {
        for drops in [2u16, 3] {
            let mut c = Case {
                params: p,
                seed: [i as u8; 32],
                dropouts: Vec::new(),
            };
            c.dropouts = (0..drops)
                .map(|s| Dropout {
                    site: SiteId(s),
                    before: *phase,
                })
                .collect();
            run_case(&c, false).unwrap();
            assert_eq!(
                model(&c).is_ok(),
                drops == 2,
                "{phase} with {drops} dropouts"
            );
        }
    }
}

/// Unmasking's packed-domain sum (spec §3.4 layout, carries settled per word) against the
/// plain per-element sum, across chunk boundaries and every u32 width.
fn packed_sum_case() -> impl Strategy<Value = (u8, usize, Vec<u64>)> {
    (1u8..=32, 0usize..3000, 1usize..12).prop_flat_map(|(bits, len, count)| {
        let max = (1u64 << bits) - 1;
        let element = prop_oneof![Just(0u64), Just(max), 0..=max];
        (
            Just(bits),
            Just(len),
            proptest::collection::vec(element, len * count),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn packed_sums_equal_element_sums((bits, len, flat) in packed_sum_case()) {
        use amalgam_proto::packed_sum::PackedSum;
        use amalgam_proto::packing::pack;
        let mask = (1u64 << bits) - 1;
        let mut sum = PackedSum::new(bits, len);
        sum.clear(len);
        let mut want = vec![0u64; len];
        for v in flat.chunks_exact(len.max(1)) {
            sum.add(&pack(v, bits));
            for (w, x) in want.iter_mut().zip(v) {
                *w = w.wrapping_add(*x) & mask;
            }
        }
        let mut got = vec![0u32; len];
        sum.unpack_into(&mut got);
        let got: Vec<u64> = got.into_iter().map(u64::from).collect();
        prop_assert_eq!(got, want);
    }
}
