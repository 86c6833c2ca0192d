//! The cohort checks a site makes before it masks, before it signs a survivor set and before it
//! reveals (spec §5.1 S2-S4, §6.1), as pure functions over sets of sites, so that the state
//! machine and the adversarial search test run exactly the same code.
//!
//! Why each rule exists (spec §6.1 gives the argument):
//! * the survivor set U3 must lie inside the site's mask set: otherwise the aggregator could
//!   route a group only each other's shares and unmask the group's sum;
//! * Q = ⌊(|U1| + c)/2⌋ + 1 signatures from distinct survivors on the identical statement: two
//!   such quorums share more than c signers, hence an honest one, who signs once — so at most
//!   one survivor set is ever revealed against;
//! * |U3| ≥ m, |N\[u\] ∩ U3| ≥ t and vertex connectivity of the survivors' graph ≥ c + 1:
//!   in Harary mode natural dropouts (or c colluders, invisible vertices) can cut the ring,
//!   and each side's sum would then be unmasked on its own.

use std::collections::VecDeque;

use crate::error::Error;
use crate::params::{RoundParams, SiteId};
use crate::phase::Phase;

/// Spec §5.1 S2: the senders of the routed shares, M_u, are neighbours of `me` in U1 (the
/// caller checks each one while decrypting) and, with `me`, at least t.
pub fn check_mask_set(params: &RoundParams, mask_set_len: usize) -> Result<(), Error> {
    let got = mask_set_len + 1;
    if got < params.t() {
        return Err(Error::NotEnoughSites {
            phase: Phase::ShareKeys,
            needed: params.t(),
            got,
        });
    }
    Ok(())
}

/// Spec §5.1 S3 and §6.1 R3: may `me` sign the survivor set `survivors` (strictly ascending)?
/// `in_u1` says who advertised keys; `holds` whose shares `me` holds (M_u and `me`).
pub fn check_survivor_set(
    params: &RoundParams,
    me: SiteId,
    in_u1: impl Fn(SiteId) -> bool,
    holds: impl Fn(SiteId) -> bool,
    survivors: &[SiteId],
) -> Result<(), Error> {
    let invalid = |why| Error::peer(crate::Sender::Aggregator, crate::Misbehaviour::Invalid(why));
    for &v in survivors {
        if !in_u1(v) {
            return Err(invalid("survivor set names a site outside U1"));
        }
        if params.are_neighbours(me, v) && !holds(v) {
            return Err(invalid(
                "survivor set names a neighbour whose shares this site never received",
            ));
        }
    }
    if survivors.binary_search(&me).is_err() {
        return Err(invalid("survivor set omits this site"));
    }
    check_cohort(params, me, survivors, Phase::MaskedInput)
}

/// Spec §6.1 R3, the cohort rule checked before signing and again before revealing:
/// |U3| ≥ m, |N\[me\] ∩ U3| ≥ t, and the survivors' graph has vertex connectivity ≥ c + 1.
pub fn check_cohort(
    params: &RoundParams,
    me: SiteId,
    survivors: &[SiteId],
    phase: Phase,
) -> Result<(), Error> {
    let needed = usize::from(params.min_cohort().get());
    if survivors.len() < needed {
        return Err(Error::NotEnoughSites {
            phase,
            needed,
            got: survivors.len(),
        });
    }
    let got = closed_count(params, me, survivors.iter().copied());
    if got < params.t() {
        return Err(Error::NotEnoughSites {
            phase,
            needed: params.t(),
            got,
        });
    }
    check_connectivity(params, survivors)
}

/// Spec §6.1 R3, connectivity part: the neighbour graph induced on `survivors` has vertex
/// connectivity at least c + 1, so no c colluders (nor dropouts) split the honest survivors
/// into groups whose sums could be unmasked apart. The aggregator checks it too when it closes
/// the masked-input phase, so an honest aggregator never sends a set the sites would refuse.
pub fn check_connectivity(params: &RoundParams, survivors: &[SiteId]) -> Result<(), Error> {
    let needed = params.c() + 1;
    let connectivity = survivor_connectivity(params, survivors, needed);
    if connectivity < needed {
        return Err(Error::CohortDisconnected {
            connectivity,
            needed,
            needed_minus_one: params.c(),
        });
    }
    Ok(())
}

/// Spec §5.1 S4 (R1): `signers` (distinct, each already checked to be in U3 and to have signed
/// exactly the statement `me` signed) must number at least Q = ⌊(|U1| + c)/2⌋ + 1, and at
/// least t of them must lie in N\[me\] (so that `me`'s neighbourhood can unmask).
pub fn check_quorum(
    params: &RoundParams,
    me: SiteId,
    u1_len: usize,
    signers: &[SiteId],
) -> Result<(), Error> {
    let quorum = params.quorum(u1_len);
    if signers.len() < quorum {
        return Err(Error::NotEnoughSites {
            phase: Phase::ConsistencyCheck,
            needed: quorum,
            got: signers.len(),
        });
    }
    let got = closed_count(params, me, signers.iter().copied());
    if got < params.t() {
        return Err(Error::NotEnoughSites {
            phase: Phase::ConsistencyCheck,
            needed: params.t(),
            got,
        });
    }
    Ok(())
}

/// |N\[me\] ∩ set|.
fn closed_count(params: &RoundParams, me: SiteId, set: impl Iterator<Item = SiteId>) -> usize {
    set.filter(|&v| v == me || params.are_neighbours(me, v))
        .count()
}

/// Vertex connectivity of the neighbour graph induced on `survivors`, computed exactly up to
/// `cap` (returns min(κ, cap)). The complete graph needs no search: κ = |U3| − 1.
fn survivor_connectivity(params: &RoundParams, survivors: &[SiteId], cap: usize) -> usize {
    if matches!(params.graph(), crate::NeighbourGraph::Complete) {
        return survivors.len().saturating_sub(1).min(cap);
    }
    let n = survivors.len();
    let adj: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| params.are_neighbours(survivors[i], survivors[j]))
                .collect()
        })
        .collect();
    vertex_connectivity(&adj, cap)
}

/// Vertex connectivity κ (capped at `cap`) of the undirected graph given by adjacency lists
/// over vertices `0..adj.len()`: the fewest vertices whose removal disconnects it, with κ of a
/// complete graph on n vertices = n − 1 (and 0 for n ≤ 1).
///
/// Menger: for non-adjacent s, t, the fewest vertices separating them equals the most
/// internally vertex-disjoint s–t paths, a unit-capacity max flow after splitting each vertex
/// into in → out. Even's reduction: some minimum separator S misses one of v_0..v_κ; taking the
/// smallest such v_i as source, every v_j with j < i is in S, so a vertex on the far side of S
/// is some v_j with j > i. Hence sources v_0..v_κ against all non-adjacent targets suffice.
pub fn vertex_connectivity(adj: &[Vec<usize>], cap: usize) -> usize {
    let n = adj.len();
    let mut best = n.saturating_sub(1).min(cap);
    let mut i = 0;
    while i <= best && i < n {
        for j in 0..n {
            if j != i && !adj[i].contains(&j) {
                best = best.min(local_connectivity(adj, i, j, best));
            }
        }
        i += 1;
    }
    best
}

/// Internally vertex-disjoint s–t paths (s, t non-adjacent), counted up to `cap`.
fn local_connectivity(adj: &[Vec<usize>], s: usize, t: usize, cap: usize) -> usize {
    let n = adj.len();
    // Node 2v is v's "in", 2v+1 its "out". Edge list with residual capacities.
    let mut net = FlowNet::new(2 * n);
    for (v, neighbours) in adj.iter().enumerate() {
        let through = if v == s || v == t { cap + 1 } else { 1 };
        net.add(2 * v, 2 * v + 1, through);
        for &w in neighbours {
            net.add(2 * v + 1, 2 * w, cap + 1);
        }
    }
    let (source, sink) = (2 * s + 1, 2 * t);
    let mut flow = 0;
    while flow < cap && net.augment(source, sink) {
        flow += 1;
    }
    flow
}

/// A residual network for unit augmenting paths (BFS).
struct FlowNet {
    head: Vec<Vec<usize>>,
    to: Vec<usize>,
    residual: Vec<usize>,
}

impl FlowNet {
    fn new(nodes: usize) -> Self {
        Self {
            head: vec![Vec::new(); nodes],
            to: Vec::new(),
            residual: Vec::new(),
        }
    }

    /// Adds a → b with `cap` and its reverse edge (index ^ 1) with 0.
    fn add(&mut self, a: usize, b: usize, cap: usize) {
        self.head[a].push(self.to.len());
        self.to.push(b);
        self.residual.push(cap);
        self.head[b].push(self.to.len());
        self.to.push(a);
        self.residual.push(0);
    }

    /// Pushes one unit along a shortest residual path; false when none exists.
    fn augment(&mut self, source: usize, sink: usize) -> bool {
        let mut via = vec![usize::MAX; self.head.len()];
        let mut queue = VecDeque::from([source]);
        let mut seen = vec![false; self.head.len()];
        seen[source] = true;
        while let Some(a) = queue.pop_front() {
            if a == sink {
                break;
            }
            for &e in &self.head[a] {
                let b = self.to[e];
                if self.residual[e] > 0 && !seen[b] {
                    seen[b] = true;
                    via[b] = e;
                    queue.push_back(b);
                }
            }
        }
        if !seen[sink] {
            return false;
        }
        let mut b = sink;
        while b != source {
            let e = via[b];
            self.residual[e] -= 1;
            self.residual[e ^ 1] += 1;
            b = self.to[e ^ 1];
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    /// κ by definition: the smallest vertex set whose removal leaves ≥ 2 vertices disconnected
    /// (n − 1 if no such set exists).
    fn brute_force(adj: &[Vec<usize>]) -> usize {
        let n = adj.len();
        let mut best = n.saturating_sub(1);
        for removed in 0u32..(1 << n) {
            let size = removed.count_ones() as usize;
            if size >= best || n - size < 2 {
                continue;
            }
            let kept: Vec<usize> = (0..n).filter(|v| removed & (1 << v) == 0).collect();
            let mut seen = vec![false; n];
            let mut stack = vec![kept[0]];
            seen[kept[0]] = true;
            while let Some(a) = stack.pop() {
                for &b in &adj[a] {
                    if removed & (1 << b) == 0 && !seen[b] {
                        seen[b] = true;
                        stack.push(b);
                    }
                }
            }
            if kept.iter().any(|&v| !seen[v]) {
                best = size;
            }
        }
        best
    }

    fn random_graph(rng: &mut ChaCha20Rng, n: usize, density: u32) -> Vec<Vec<usize>> {
        let mut adj = vec![Vec::new(); n];
        for a in 0..n {
            for b in a + 1..n {
                if rng.next_u32() % 100 < density {
                    adj[a].push(b);
                    adj[b].push(a);
                }
            }
        }
        adj
    }

    #[test]
    fn vertex_connectivity_matches_brute_force_on_small_graphs() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let mut seen = [0usize; 8];
        for round in 0..3000 {
            let n = 1 + round % 9;
            let density = [20, 50, 70, 90][round % 4];
            let adj = random_graph(&mut rng, n, density);
            let want = brute_force(&adj);
            assert_eq!(vertex_connectivity(&adj, usize::MAX), want, "{adj:?}");
            for cap in 0..4 {
                assert_eq!(vertex_connectivity(&adj, cap), want.min(cap), "{adj:?}");
            }
            seen[want.min(7)] += 1;
        }
        // The sample exercises every connectivity from 0 to 5 at least.
        assert!(seen[..6].iter().all(|&c| c > 0), "{seen:?}");
    }

    #[test]
    fn harary_ring_connectivity_is_k_and_a_cut_ring_is_zero() {
        let p = RoundParams::harary(20, 4, 4, 10, 1, 1, 8, 4).unwrap();
        let all: Vec<SiteId> = (0..20).map(SiteId).collect();
        assert_eq!(survivor_connectivity(&p, &all, usize::MAX), 4);
        // Sites 5, 6 and 10, 11 dropped: the ring falls apart into {7, 8, 9} and the rest.
        let cut: Vec<SiteId> = all
            .iter()
            .copied()
            .filter(|v| ![5, 6, 10, 11].contains(&v.0))
            .collect();
        assert_eq!(survivor_connectivity(&p, &cut, usize::MAX), 0);
    }
}
