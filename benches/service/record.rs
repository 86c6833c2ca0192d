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

use std::time::Instant;

use amalgam_net::api::{self, RoundResult};

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

/// Drives the recorded round through the aggregator at `base`, every site on its own client
/// and task: upload, long-poll the download (refused unless it is the recorded one byte for
/// byte), upload the next; then one result download. Returns the wall time (seconds, first
/// upload to result) and the result.
pub async fn replay(dep: &Deployment, base: &str, rec: Recorded) -> (f64, RoundResult) {
    let n = dep.params.n();
    let clients: Vec<_> = (0..n).map(|i| dep.client(base, SiteId(i as u16))).collect();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (client, (ups, downs))) in clients
        .iter()
        .cloned()
        .zip(rec.uploads.into_iter().zip(rec.downloads))
        .enumerate()
    {
        tasks.spawn(async move {
            for (k, (phase, up)) in PHASES.iter().zip(ups).enumerate() {
                let path = api::masking_path(1, *phase).ok_or("phase without a route")?;
                let r = client.post(&path, up).await.map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("site {i} {phase} upload: {}", r.status));
                }
                let Some(want) = downs.get(k) else {
                    break;
                };
                let r = client
                    .get(&format!("{path}?wait=60"))
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status != 200 || &r.body != want {
                    return Err(format!(
                        "site {i} {phase}: download differs from the record ({})",
                        r.status
                    ));
                }
            }
            Ok::<(), String>(())
        });
    }
    // Fail at the first site that fails (the others would wait out their long-polls).
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("site task: {e}"),
        }
    }
    let (result, _) = super::live::fetch_result(&clients[0], 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (start.elapsed().as_secs_f64(), result)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use amalgam_proto::RoundParams;
    use amalgam_server::events::MemoryStore;

    use super::*;
    use crate::service::{fixture, os_seed};

    fn recorded() -> (Deployment, Recorded, Vec<u64>) {
        let params = RoundParams::exact(5, 4, 16, 300).unwrap();
        let dep = Deployment::new(params, os_seed());
        let inputs = sim::random_inputs(&params, &os_seed());
        let all: Vec<SiteId> = (0..5).map(SiteId).collect();
        let want = sim::plaintext_sum(&params, &inputs, &all);
        let rec = record(&dep, 1, inputs, 2);
        (dep, rec, want)
    }

    /// The load generator's premise: the server, sent the recorded uploads, serves exactly
    /// the recorded downloads and publishes the plaintext sum.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_serves_the_recorded_round() {
        let (dep, rec, want) = recorded();
        assert_eq!(rec.sum, want);
        let run = fixture::start(&dep, Arc::new(MemoryStore::new()), None, 0).await;
        run.service.open_round(1, fixture::MODEL).await.unwrap();
        let (_, result) = replay(&dep, &run.base(), rec).await;
        assert_eq!(result.sum, want);
        assert_eq!(result.contributors, vec![0, 1, 2, 3, 4]);
        run.stop().await;
    }

    /// A record the server does not reproduce is a failed run, not a measurement.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "download differs from the record")]
    async fn a_download_unlike_the_record_fails_the_run() {
        let (dep, mut rec, _) = recorded();
        let last = rec.downloads[2][1].len() - 1;
        rec.downloads[2][1][last] ^= 1;
        let run = fixture::start(&dep, Arc::new(MemoryStore::new()), None, 0).await;
        run.service.open_round(1, fixture::MODEL).await.unwrap();
        let _ = replay(&dep, &run.base(), rec).await;
    }
}
