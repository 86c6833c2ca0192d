//! Adversarial search over the masking protocol's cohort rules (spec §6.1), malicious-aggregator
//! model on the complete graph (Harary mode is refused there at parameter time).
//!
//! The adversary is the aggregator with a corrupt set C (|C| <= c) of sites. It chooses U1, the
//! sites U2 that get to send shares, what each honest site is routed (its mask set M_u), up to
//! two survivor statements S_X and S_Y, which honest site is shown which, and the unmask
//! requests. Honest sites decide with the crate's own check functions
//! (`amalgam_proto::cohort`): mask at S2, sign at S3, reveal at S4 — b-shares of owners in
//! their statement, s_sk-shares of the others, for every owner they hold a share of.
//!
//! Masks are formal symbols: b_u for each honest u, s_uv for each honest pair. A secret is
//! recovered when its honest revealers plus the corrupt holders reach t; a recovered b_u removes
//! the symbol b_u, a recovered s_sk_v every s_vw. The aggregator learns every integer
//! combination Σ λ_u y_u in which all remaining symbols cancel; restricted to honest inputs that
//! is λ itself. Each remaining symbol forces λ_u = 0 (b_u, or s_uv present in y_u only) or
//! λ_u = λ_v (s_uv in both), so the mask-free combinations are spanned by the indicator vectors
//! of the classes of a union-find with zero-forced classes removed. The property: at most one
//! class survives, and it is exactly the honest part of one signed statement of at least m
//! sites — the multiples of the all-ones vector over the honest survivors.
//!
//! Exhaustive for n <= 8 (every U2 and pair of statements; U1 and C up to the symmetry of the
//! complete graph; routing reduced by the S3 rule to "exactly the statement" or "the statement
//! plus every other sender"), then at least 10^5 random strategies with a fixed seed for
//! 9 <= n <= 12, where each site's extra routing, statement and U1 are drawn independently.

use amalgam_proto::cohort;
use amalgam_proto::params::{RoundParams, SiteId};
use amalgam_proto::phase::Phase;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

type Set = u16;

fn ids(s: Set) -> Vec<SiteId> {
    (0..16).filter(|i| s & (1 << i) != 0).map(SiteId).collect()
}

fn has(s: Set, i: usize) -> bool {
    s & (1 << i) != 0
}

/// One strategy of the adversary.
struct Strategy {
    u1: Set,
    corrupt: Set,
    u2: Set,
    statements: Vec<Set>,
    /// Per site: index of the statement it is shown (only meaningful if it contains the site).
    shown: Vec<usize>,
    /// Per site: extra routed senders beyond its statement (subset of U2 \ statement).
    extra: Vec<Set>,
}

/// Plays one strategy; panics if the aggregator learns anything beyond one honest cohort sum.
// Site indices are bit positions in several sets at once, so index loops read clearer here.
#[allow(clippy::needless_range_loop)]
fn play(p: &RoundParams, s: &Strategy) -> bool {
    let n = p.n();
    let t = p.t();
    let honest = s.u1 & !s.corrupt;
    // Routing and S2: who masks with whom, who sends a masked input.
    let mut mask_set = vec![0 as Set; n];
    let mut sent_masked: Set = 0;
    for u in 0..n {
        if !has(honest & s.u2, u) {
            continue;
        }
        let st = s.statements.get(s.shown[u]).copied().unwrap_or(0);
        let routed = ((if has(st, u) { st } else { 0 }) | s.extra[u]) & s.u2 & neighbours(p, u);
        mask_set[u] = routed;
        if cohort::check_mask_set(p, routed.count_ones() as usize).is_ok() {
            sent_masked |= 1 << u;
        }
    }
    // S3: honest sites sign the statement shown, if their check passes.
    let mut signed: Vec<Set> = vec![0; s.statements.len()];
    for u in 0..n {
        if !has(sent_masked, u) {
            continue;
        }
        let Some(&st) = s.statements.get(s.shown[u]) else {
            continue;
        };
        let ok = cohort::check_survivor_set(
            p,
            SiteId(u as u16),
            |v| has(s.u1, v.index()),
            |v| v.index() == u || has(mask_set[u], v.index()),
            &ids(st),
        )
        .is_ok();
        if ok {
            signed[s.shown[u]] |= 1 << u;
        }
    }
    // S4: each signer is shown every signature on its statement (corrupt ones included: the
    // counts only grow with more signers), and reveals if the quorum and cohort checks pass.
    let u1_len = s.u1.count_ones() as usize;
    let mut b_reveals = vec![0usize; n];
    let mut s_reveals = vec![0usize; n];
    let mut revealed_statements: Vec<Set> = Vec::new();
    for (x, &st) in s.statements.iter().enumerate() {
        let signers = signed[x] | (s.corrupt & st);
        let mut any = false;
        for u in 0..n {
            if !has(signed[x], u) {
                continue;
            }
            let me = SiteId(u as u16);
            if cohort::check_quorum(p, me, u1_len, &ids(signers)).is_err()
                || cohort::check_cohort(p, me, &ids(st), Phase::ConsistencyCheck).is_err()
            {
                continue;
            }
            any = true;
            for v in ids(mask_set[u] | (1 << u)) {
                if has(st, v.index()) {
                    b_reveals[v.index()] += 1;
                } else {
                    s_reveals[v.index()] += 1;
                }
            }
        }
        if any {
            revealed_statements.push(st);
        }
    }
    // Corrupt sites hold a share of every neighbour's secrets (they take whatever is routed).
    let corrupt_holders = |u: usize| (s.corrupt & s.u2 & neighbours(p, u)).count_ones() as usize;
    let b_known = |u: usize| b_reveals[u] + corrupt_holders(u) >= t;
    let s_known = |u: usize| s_reveals[u] + corrupt_holders(u) >= t;
    // Union-find over honest senders of masked inputs.
    let mut parent: Vec<usize> = (0..n).collect();
    let mut zero = vec![false; n];
    fn find(parent: &mut [usize], a: usize) -> usize {
        let mut a = a;
        while parent[a] != a {
            parent[a] = parent[parent[a]];
            a = parent[a];
        }
        a
    }
    for u in 0..n {
        if !has(sent_masked, u) {
            continue;
        }
        if !b_known(u) {
            zero[u] = true;
        }
        for v in 0..n {
            if v == u || !has(mask_set[u], v) || !has(honest, v) || s_known(u) || s_known(v) {
                continue;
            }
            // s_uv remains in y_u; it cancels only against y_v if v masked with u too.
            if has(sent_masked, v) && has(mask_set[v], u) {
                let (a, b) = (find(&mut parent, u), find(&mut parent, v));
                parent[a] = b;
            } else {
                zero[u] = true;
            }
        }
    }
    for u in 0..n {
        if zero[u] {
            let r = find(&mut parent, u);
            zero[r] = true;
        }
    }
    let mut roots: Vec<(usize, Set)> = Vec::new();
    for u in 0..n {
        if !has(sent_masked, u) {
            continue;
        }
        let r = find(&mut parent, u);
        if zero[r] {
            continue;
        }
        match roots.iter_mut().find(|(root, _)| *root == r) {
            Some((_, k)) => *k |= 1 << u,
            None => roots.push((r, 1 << u)),
        }
    }
    let classes: Vec<Set> = roots.into_iter().map(|(_, k)| k).collect();
    assert!(
        classes.len() <= 1,
        "two separately unmaskable groups {:?} for {:?}",
        classes.iter().map(|k| ids(*k)).collect::<Vec<_>>(),
        describe(s)
    );
    if let Some(&k) = classes.first() {
        let m = usize::from(p.min_cohort().get());
        assert!(
            revealed_statements
                .iter()
                .any(|&st| st & honest == k && st.count_ones() as usize >= m),
            "unmaskable group {:?} is not the honest part of a signed cohort of >= {m}: {:?}",
            ids(k),
            describe(s)
        );
        return true;
    }
    false
}

/// N(u) as a set.
fn neighbours(p: &RoundParams, u: usize) -> Set {
    (0..p.n())
        .filter(|&v| p.are_neighbours(SiteId(u as u16), SiteId(v as u16)))
        .fold(0, |a, v| a | (1 << v))
}

fn describe(s: &Strategy) -> String {
    format!(
        "U1 {:?} C {:?} U2 {:?} statements {:?} shown {:?} extra {:?}",
        ids(s.u1),
        ids(s.corrupt),
        ids(s.u2),
        s.statements.iter().map(|x| ids(*x)).collect::<Vec<_>>(),
        s.shown,
        s.extra.iter().map(|x| ids(*x)).collect::<Vec<_>>()
    )
}

/// Every safe complete-graph parameter set for n (t from the safety bound to n).
fn param_sets(n: u16) -> Vec<RoundParams> {
    (1..=n)
        .filter_map(|t| RoundParams::exact(n, t, 4, 1).ok())
        .collect()
}

/// Subsets of `s`.
fn subsets(s: Set) -> impl Iterator<Item = Set> {
    let mut next = Some(s);
    std::iter::from_fn(move || {
        let cur = next?;
        next = if cur == 0 { None } else { Some((cur - 1) & s) };
        Some(cur)
    })
}

#[test]
fn exhaustive_small_consortia_leak_only_the_cohort_sum() {
    let mut strategies = 0u64;
    let mut unmasked = 0u64;
    for n in 4..=8u16 {
        for p in param_sets(n) {
            let nn = p.n();
            let m = usize::from(p.min_cohort().get());
            for u1_len in m..=nn {
                let u1: Set = (1 << u1_len) - 1;
                for c in 0..=p.c().min(u1_len) {
                    // Up to symmetry, the corrupt sites are the last ones of U1.
                    let corrupt: Set = ((1 << c) - 1) << (u1_len - c);
                    for honest_u2 in subsets(u1 & !corrupt) {
                        let u2 = honest_u2 | corrupt;
                        for sx in subsets(u2) {
                            for sy in subsets(u2).filter(|&y| y <= sx) {
                                let statements = if sy == sx { vec![sx] } else { vec![sx, sy] };
                                for prefer_y in [false, true] {
                                    for routing_extra in [false, true] {
                                        let shown = (0..nn)
                                            .map(|u| {
                                                let in_x = has(sx, u);
                                                let in_y = statements.len() > 1 && has(sy, u);
                                                usize::from(in_y && (prefer_y || !in_x))
                                            })
                                            .collect::<Vec<_>>();
                                        let extra = (0..nn)
                                            .map(|u| {
                                                let st =
                                                    statements[shown[u].min(statements.len() - 1)];
                                                if routing_extra { u2 & !st } else { 0 }
                                            })
                                            .collect();
                                        let s = Strategy {
                                            u1,
                                            corrupt,
                                            u2,
                                            statements: statements.clone(),
                                            shown,
                                            extra,
                                        };
                                        strategies += 1;
                                        unmasked += u64::from(play(&p, &s));
                                        if statements.len() == 1 {
                                            break;
                                        }
                                    }
                                    if statements.len() == 1 {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("exhaustive: {strategies} strategies, {unmasked} ended with one cohort sum");
    // The search reaches rounds that do finish (it is not vacuous).
    assert!(
        unmasked > 1000 && strategies > 1_000_000,
        "{strategies} {unmasked}"
    );
}

#[test]
fn randomised_larger_consortia_leak_only_the_cohort_sum() {
    let mut rng = ChaCha20Rng::from_seed(*b"amalgam/cohort-search/seed/v2!!!");
    let mut strategies = 0u64;
    let mut unmasked = 0u64;
    for n in 9..=12u16 {
        let sets = param_sets(n);
        for _ in 0..30_000 {
            let p = sets[rng.next_u32() as usize % sets.len()];
            let nn = p.n();
            let m = usize::from(p.min_cohort().get());
            let bits = |rng: &mut ChaCha20Rng, within: Set, keep_percent: u32| -> Set {
                (0..nn)
                    .filter(|&i| has(within, i) && rng.next_u32() % 100 < keep_percent)
                    .fold(0, |a, i| a | (1 << i))
            };
            let all: Set = ((1u32 << nn) - 1) as Set;
            let mut u1 = bits(&mut rng, all, 95);
            while (u1.count_ones() as usize) < m {
                u1 |= 1 << (rng.next_u32() as usize % nn);
            }
            let mut corrupt = 0;
            for _ in 0..rng.next_u32() as usize % (p.c() + 1) {
                corrupt |= 1 << (rng.next_u32() as usize % nn);
            }
            corrupt &= u1;
            let u2 = bits(&mut rng, u1, 90) | corrupt;
            let sx = bits(&mut rng, u2, 85);
            let statements = if rng.next_u32().is_multiple_of(2) {
                vec![sx]
            } else {
                vec![sx, bits(&mut rng, u2, 80)]
            };
            let shown: Vec<usize> = (0..nn)
                .map(|u| {
                    let in_y = statements.len() > 1 && has(statements[1], u);
                    let in_x = has(sx, u);
                    usize::from(in_y && (!in_x || rng.next_u32().is_multiple_of(2)))
                })
                .collect();
            let extra = (0..nn)
                .map(|u| {
                    let st = statements[shown[u]];
                    let keep = [0, 30, 100][rng.next_u32() as usize % 3];
                    bits(&mut rng, u2 & !st, keep)
                })
                .collect();
            let s = Strategy {
                u1,
                corrupt,
                u2,
                statements,
                shown,
                extra,
            };
            strategies += 1;
            unmasked += u64::from(play(&p, &s));
        }
    }
    eprintln!("randomised: {strategies} strategies, {unmasked} ended with one cohort sum");
    assert!(
        strategies >= 100_000 && unmasked > 1000,
        "{strategies} {unmasked}"
    );
}

/// Curious-aggregator Harary parameter sets for n: every even k, every c < k, the smallest
/// safe t and the largest, m = max(t, c + 2), f = k + 1 − t.
fn harary_sets(n: u16) -> Vec<RoundParams> {
    let mut out = Vec::new();
    for k in (2..=n.saturating_sub(2)).step_by(2) {
        for c in 1..k {
            for t in 1..=k + 1 {
                let m = t.max(c + 2);
                if let Ok(p) = RoundParams::harary(n, k, t, m, c, k + 1 - t, 4, 1) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Honest-but-curious aggregator in Harary mode with c passive colluders: the aggregator
/// follows the protocol (routing N(u) ∩ U2, one statement U3), dropouts are natural (any
/// U3 ⊆ U2 ⊆ U1 = all), and it reads everything. The ring cut by dropouts (the second break)
/// is among these; the sites' connectivity check must leave only the cohort sum.
#[test]
fn curious_harary_rounds_with_any_dropouts_leak_only_the_cohort_sum() {
    let mut strategies = 0u64;
    let mut unmasked = 0u64;
    let mut rng = ChaCha20Rng::from_seed(*b"amalgam/cohort-search/curious/v2");
    for n in 5..=12u16 {
        let nn = usize::from(n);
        let all: Set = ((1u32 << nn) - 1) as Set;
        for p in harary_sets(n) {
            let exhaustive = n <= 8;
            let samples = if exhaustive { usize::MAX } else { 600 };
            let mut tried = 0;
            'outer: for u2 in subsets(all) {
                for u3 in subsets(u2) {
                    let (u2, u3) = if exhaustive {
                        (u2, u3)
                    } else {
                        if tried >= samples {
                            break 'outer;
                        }
                        let u2r = all
                            & !(1 << (rng.next_u32() as usize % nn))
                            & !(1 << (rng.next_u32() as usize % nn));
                        let u3r = u2r
                            & !(1 << (rng.next_u32() as usize % nn))
                            & !(1 << (rng.next_u32() as usize % nn));
                        (u2r, u3r)
                    };
                    tried += 1;
                    // Colluders: none, or c of them at random places.
                    for with_corrupt in [false, true] {
                        let mut corrupt: Set = 0;
                        while with_corrupt && (corrupt.count_ones() as usize) < p.c() {
                            corrupt |= 1 << (rng.next_u32() as usize % nn);
                        }
                        let s = Strategy {
                            u1: all,
                            corrupt,
                            u2: u2 | corrupt,
                            statements: vec![u3 | (corrupt & u2)],
                            shown: vec![0; nn],
                            extra: vec![all; nn],
                        };
                        strategies += 1;
                        unmasked += u64::from(play(&p, &s));
                    }
                    if !exhaustive {
                        continue 'outer;
                    }
                }
            }
        }
    }
    eprintln!("curious Harary: {strategies} strategies, {unmasked} ended with one cohort sum");
    assert!(
        strategies >= 100_000 && unmasked > 1000,
        "{strategies} {unmasked}"
    );
}
