//! A round run in memory, once, before anything is measured: the sites' state machines
//! against `amalgam_proto::Aggregator` bound to the same context as the server. The
//! aggregator is deterministic, so the server sent these same uploads serves these same
//! downloads, and a load generator can replay the recorded uploads over HTTPS (checking every
//! download against the record) without computing while it is measured.

use amalgam_proto::codec::Encode;
use amalgam_proto::site::RoundLog;
use amalgam_proto::{Aggregator, AggregatorStep, Phase, Site, SiteId, sim};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::fixture::Deployment;
use super::live::PHASES;

/// Every site's uploads and downloads of one round, in phase order.
pub struct Recorded {
    /// `uploads[site][phase]`: the five uploads.
    pub uploads: Vec<Vec<Vec<u8>>>,
    /// `downloads[site][phase]`: the four downloads (after each phase but the last).
    pub downloads: Vec<Vec<Vec<u8>>>,
    /// The sum the aggregator published.
    pub sum: Vec<u64>,
}

/// Runs round `round` of `dep` with `inputs` (one vector per site), the sites' work spread over
/// `threads` threads. Site `i`'s randomness is `ChaCha20Rng` seeded from the deployment seed.
pub fn record(dep: &Deployment, round: u64, inputs: Vec<Vec<u64>>, threads: usize) -> Recorded {
    let n = dep.params.n();
    let context = dep.context();
    let fail = |what: &str, e: String| -> ! { panic!("recording the round, {what}: {e}") };
    let mut agg =
        Aggregator::with_context_digest(dep.params, dep.sites.manifest().clone(), context, round)
            .unwrap_or_else(|e| fail("aggregator", e.to_string()));
    let mut sites: Vec<Site> = (0..n)
        .map(|i| {
            let mut log = RoundLog::new();
            Site::with_context_digest(
                dep.params,
                dep.sites.manifest().clone(),
                context,
                round,
                dep.site_key(SiteId(i as u16)),
                sim::sim_timeout(),
                &mut log,
            )
            .unwrap_or_else(|e| fail("site", e.to_string()))
        })
        .collect();
    let mut uploads: Vec<Vec<Vec<u8>>> = vec![Vec::with_capacity(5); n];
    let mut downloads: Vec<Vec<Vec<u8>>> = vec![Vec::with_capacity(4); n];
    for (i, (site, input)) in sites.iter_mut().zip(inputs).enumerate() {
        let mut rng = ChaCha20Rng::from_seed(sim::site_seed(&dep.seed, SiteId(i as u16)));
        let up = site
            .start(input, sim::sim_time(Phase::AdvertiseKeys), &mut rng)
            .and_then(|out| sim::persist_and_release(site, out))
            .unwrap_or_else(|e| fail("start", e.to_string()))
            .0
            .to_bytes();
        agg.receive_bytes(SiteId(i as u16), &up)
            .unwrap_or_else(|e| fail("advertise", e.to_string()));
        uploads[i].push(up);
    }
    let chunk = n.div_ceil(threads.max(1));
    for phase in &PHASES[..4] {
        let list = match agg.close_phase() {
            Ok(AggregatorStep::Send(list)) => list,
            Ok(AggregatorStep::Finished(_)) => fail("close", "finished early".into()),
            Err(e) => fail("close", e.to_string()),
        };
        let mut down: Vec<Vec<u8>> = vec![Vec::new(); n];
        for (to, msg) in list {
            down[to.index()] = msg.to_bytes();
        }
        // Each site handles its download on one of the threads (masking is the heavy part).
        let ups: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = sites
                .chunks_mut(chunk)
                .zip(down.chunks(chunk))
                .map(|(ss, dd)| {
                    s.spawn(move || {
                        ss.iter_mut()
                            .zip(dd)
                            .map(|(site, d)| {
                                site.handle_bytes(d, sim::sim_time(*phase))
                                    .and_then(|out| sim::persist_and_release(site, out))
                                    .map(|(up, _)| up.to_bytes())
                                    .map_err(|e| e.to_string())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| fail("site thread", "panicked".into()))
                })
                .map(|r| r.unwrap_or_else(|e| fail("site", e)))
                .collect()
        });
        for (i, (up, d)) in ups.into_iter().zip(down).enumerate() {
            agg.receive_bytes(SiteId(i as u16), &up)
                .unwrap_or_else(|e| fail("receive", e.to_string()));
            uploads[i].push(up);
            downloads[i].push(d);
        }
    }
    let sum = match agg.close_phase() {
        Ok(AggregatorStep::Finished(out)) => out.sum,
        Ok(AggregatorStep::Send(_)) => fail("unmasking", "not finished".into()),
        Err(e) => fail("unmasking", e.to_string()),
    };
    Recorded {
        uploads,
        downloads,
        sum,
    }
}
