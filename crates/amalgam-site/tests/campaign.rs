//! A whole campaign over real mutually authenticated HTTPS: the in-process aggregator runs
//! the manifest's campaign by itself (round 0 on the initial weights, then each round bound to
//! the model the previous round's sum produced) and five site agents run three consecutive
//! rounds with no operator action between them. Each round's published sum equals the
//! plaintext sum of the contributors' encoded updates, and every site ends on the model the
//! aggregator computed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amalgam_consortium::testing::{TestConsortium, body, seeded_key, sign_all};
use amalgam_net::tls;
use amalgam_server::campaign::{self, CampaignRules, Position};
use amalgam_server::consortium::ConsortiumView;
use amalgam_server::events::MemoryStore;
use amalgam_server::http::{App, router};
use amalgam_server::listen::{ListenLimits, serve_tls};
use amalgam_server::{Service, ServiceConfig};
use amalgam_site::http::HttpTransport;
use amalgam_site::model::model_digest;
use amalgam_site::retry::RetryPolicy;
use amalgam_site::{
    AgentOptions, ConsortiumRules, RoundOutcome, SiteAgent, SyntheticTrainer, Transport,
};

const D: u64 = 6;

fn initial() -> Vec<f32> {
    (0..D).map(|i| 0.1 * i as f32 - 0.2).collect()
}

/// Five sites (t = 4 against one colluder: one dropout tolerated) whose campaign wants
/// `rounds` completed rounds from [`initial`], at most 2 aborted.
fn campaign_consortium(seed: u64, rounds: u32) -> TestConsortium {
    campaign_consortium_with(seed, rounds, |_| {})
}

/// [`campaign_consortium`] with `edit` applied to the draft before everyone signs it.
fn campaign_consortium_with(
    seed: u64,
    rounds: u32,
    edit: impl FnOnce(&mut amalgam_consortium::ManifestBody),
) -> TestConsortium {
    let aggregator = seeded_key(seed, 0);
    let mut sites: Vec<_> = (0..5).map(|i| seeded_key(seed, 1 + i)).collect();
    let mut b = body(&sites, &aggregator, &[], D);
    b.campaign.initial_weights_digest = model_digest(&initial());
    b.campaign.training.rounds = rounds;
    b.max_aborted_rounds = 2;
    edit(&mut b);
    let mut all: Vec<_> = sites.iter().collect();
    all.push(&aggregator);
    let (signed, verified) = sign_all(b, &all);
    sites.sort_by(|a, b| {
        a.verifying_key()
            .as_bytes()
            .cmp(b.verifying_key().as_bytes())
    });
    TestConsortium {
        signed,
        verified,
        sites,
        aggregator,
        decryptors: Vec::new(),
    }
}

struct Server {
    rt: tokio::runtime::Runtime,
    service: Service,
    base: String,
    campaign: tokio::task::JoinHandle<Result<Position, campaign::CampaignError>>,
    store: MemoryStore,
    view: Arc<dyn ConsortiumView>,
    rules: Arc<dyn CampaignRules>,
}

fn config() -> ServiceConfig {
    ServiceConfig {
        phase_seconds: 5,
        restart_grace_seconds: 60,
        workers: 2,
        queue: 64,
        metrics_site_labels: false,
    }
}

/// The aggregator over mutual TLS, running the campaign (phases of 5 s, the manifest's
/// shortest, so that a round with dropouts closes its first phase quickly).
fn start(tc: &TestConsortium) -> Server {
    let digest = tc.verified.consortium_digest();
    let manifest = Arc::new(tc.verified.clone());
    let view: Arc<dyn ConsortiumView> = manifest.clone();
    let rules: Arc<dyn CampaignRules> = manifest;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let (service, base, campaign) = rt.block_on(async {
        let service = Service::start(view.clone(), Arc::new(store.clone()), config()).unwrap();
        let identity =
            tls::aggregator_identity(&digest, 4_000_000_000, |m| tc.aggregator.sign(m).to_bytes())
                .unwrap();
        let config = tls::server_config(&identity, view.member_keys()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App {
            service: service.clone(),
            insecure: false,
        };
        tokio::spawn(serve_tls(
            listener,
            config,
            router(app),
            ListenLimits::default(),
        ));
        let campaign = campaign::start(service.clone(), rules.clone(), initial())
            .await
            .unwrap();
        (service, format!("https://{addr}"), campaign)
    });
    Server {
        rt,
        service,
        base,
        campaign,
        store,
        view,
        rules,
    }
}

fn options() -> AgentOptions {
    AgentOptions {
        retry: RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(200),
            attempts: 20,
        },
        poll_wait: Duration::from_secs(2),
    }
}

fn net_policy() -> amalgam_net::client::RetryPolicy {
    amalgam_net::client::RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(5),
        max: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
        max_body: 1 << 24,
    }
}

/// Waits until the aggregator has opened `round` (it does so by itself).
fn wait_open(t: &mut HttpTransport, round: u64) {
    for _ in 0..600 {
        if t.round_model(round).unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("round {round} never opened");
}

type Encoded = Arc<Mutex<BTreeMap<(u64, u16), Vec<u64>>>>;

/// Site `i`'s agent (state under `root/s<i>`, on [`initial`]) and its HTTPS transport to
/// `server`.
fn site(
    tc: &TestConsortium,
    rules: &ConsortiumRules,
    server: &Server,
    root: &std::path::Path,
    i: u16,
) -> (SiteAgent, HttpTransport) {
    let key = &tc.sites[usize::from(i)];
    let agent = SiteAgent::open(
        &root.join(format!("s{i}")),
        key.to_ledger_key(),
        rules.clone(),
        &initial(),
        options(),
    )
    .unwrap();
    let t = HttpTransport::new(&server.base, key, &tc.verified, net_policy()).unwrap();
    (agent, t)
}

/// Runs a 3-round campaign; `absent[r]` are the sites that drop out of round id r (they never
/// answer it) and come back for the next one. Returns nothing: asserts each finished round's
/// sum against the plaintext sum and every site's final model against the aggregator's.
fn campaign(seed: u64, absent: &[&[u16]], ids: u64) {
    amalgam_net::install_crypto_provider();
    let tc = campaign_consortium(seed, 3);
    let rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    let server = start(&tc);
    let root = tempfile::tempdir().unwrap();
    let encoded: Encoded = Arc::new(Mutex::new(BTreeMap::new()));
    let handles: Vec<_> = (0..5u16)
        .map(|i| {
            let (mut agent, mut t) = site(&tc, &rules, &server, root.path(), i);
            let sink = encoded.clone();
            agent.set_encoded_observer(Box::new(move |r, v| {
                sink.lock().unwrap().insert((r, i), v.to_vec());
            }));
            let skip: Vec<bool> = (0..ids as usize)
                .map(|r| absent.get(r).is_some_and(|a| a.contains(&i)))
                .collect();
            std::thread::spawn(move || {
                let mut trainer = SyntheticTrainer {
                    seed: [i as u8 + 1; 32],
                    norm: 0.5,
                };
                let mut outcomes = Vec::new();
                for round in 0..ids {
                    wait_open(&mut t, round);
                    if skip[round as usize] {
                        continue;
                    }
                    let o = agent.run_round(&mut t, &mut trainer, round);
                    outcomes.push(o.unwrap());
                }
                (outcomes, agent.model().1)
            })
        })
        .collect();
    let ended: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let end = server.rt.block_on(server.campaign);
    let end = end.unwrap().unwrap();
    assert_eq!(end.completed, 3);
    assert_eq!(end.round, ids, "the campaign used {ids} round ids");

    let mask = (1u64 << rules.dp.bits.get()) - 1;
    let encoded = encoded.lock().unwrap();
    let mut aborted = Vec::new();
    for round in 0..ids {
        let result = server
            .rt
            .block_on(server.service.result(round, Duration::from_secs(1)))
            .unwrap();
        let gone = absent.get(round as usize).copied().unwrap_or_default();
        let want: Vec<u16> = (0..5).filter(|i| !gone.contains(i)).collect();
        let Some(result) = result else {
            // More dropouts than t allows: the round aborted, the next id kept its model.
            assert!(gone.len() > 1, "round {round} aborted");
            aborted.push(round);
            continue;
        };
        assert_eq!(result.contributors, want, "round {round}");
        let mut expected = vec![0u64; rules.params.d()];
        for &s in &want {
            for (a, x) in expected.iter_mut().zip(&encoded[&(round, s)]) {
                *a = (*a + x) & mask;
            }
        }
        assert_eq!(result.sum, expected, "round {round}'s sum");
    }
    // Every site ends on the model the aggregator computed, and it moved each round.
    let server_final = model_digest(&end.model);
    assert_ne!(server_final, model_digest(&initial()));
    for (i, (outcomes, digest)) in ended.iter().enumerate() {
        assert_eq!(*digest, server_final, "site {i}");
        let aborted_here = outcomes
            .iter()
            .filter(|o| matches!(o, RoundOutcome::Aborted))
            .count();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, RoundOutcome::Completed { .. } | RoundOutcome::Aborted)),
            "site {i}: {outcomes:?}"
        );
        let joined_aborted = aborted
            .iter()
            .filter(|&&r| !absent[r as usize].contains(&(i as u16)))
            .count();
        assert_eq!(aborted_here, joined_aborted, "site {i}");
    }
    // Every ended round was crypto-shredded once its result was in the log: no secret body
    // is left, a re-delivery says so, the result stays.
    let events = server.store.events();
    for e in events.iter().filter(|e| e.kind.is_secret()) {
        assert!(
            e.shredded && e.body.is_empty(),
            "event {} kept its body",
            e.seq
        );
    }
    let first = server.rt.block_on(server.service.download(
        0,
        amalgam_proto::SiteId(0),
        amalgam_proto::Phase::AdvertiseKeys,
        Duration::ZERO,
    ));
    assert_eq!(
        first.unwrap().0,
        amalgam_server::round::DownloadView::Shredded
    );
    // A restart replays the shredded log: the same results, and the campaign recomputes the
    // same chain from the initial weights and the logged results.
    server.rt.block_on(server.service.shutdown());
    let results: Vec<_> = (0..ids)
        .map(|r| {
            server
                .rt
                .block_on(server.service.result(r, Duration::ZERO))
                .unwrap()
        })
        .collect();
    drop(server.service);
    let again = server.rt.block_on(async {
        let svc = Service::start(
            server.view.clone(),
            Arc::new(server.store.clone()),
            config(),
        )
        .unwrap();
        for (r, want) in results.iter().enumerate() {
            assert_eq!(&svc.result(r as u64, Duration::ZERO).await.unwrap(), want);
        }
        let pos = campaign::resume(&svc, server.rules.as_ref(), initial())
            .await
            .unwrap();
        svc.shutdown().await;
        pos
    });
    assert_eq!((again.round, again.completed), (ids, 3));
    assert_eq!(model_digest(&again.model), server_final);
}

#[test]
fn five_sites_run_a_three_round_campaign_over_https() {
    campaign(61, &[], 3);
}

/// Two dropouts in round 1 (t = 4 of 5): it aborts and round 2 is bound to the same model;
/// one dropout in round 2: it completes with 4 sites, and the site that missed its result
/// rejoins round 3 on the model the aggregator serves (verified against the bound digest).
#[test]
fn two_dropouts_abort_a_round_and_a_missed_result_is_caught_up() {
    campaign(62, &[&[], &[3, 4], &[4]], 4);
}

/// The model route serves exactly model_r, whose bytes hash to the round's bound digest; a
/// site adopts nothing else (checked in `hostile.rs` with a lying aggregator).
#[test]
fn the_model_route_serves_the_bound_model() {
    amalgam_net::install_crypto_provider();
    let tc = campaign_consortium(63, 3);
    let server = start(&tc);
    let mut t = HttpTransport::new(&server.base, &tc.sites[0], &tc.verified, net_policy()).unwrap();
    wait_open(&mut t, 0);
    let bytes = t.model(0).unwrap().unwrap();
    assert_eq!(
        amalgam_site::model::model_from_bytes(&bytes, D as usize).unwrap(),
        initial()
    );
    assert_eq!(t.round_model(0).unwrap(), Some(model_digest(&initial())));
    // A round the aggregator does not know has no model.
    assert!(t.model(7).unwrap().is_none());
    server.campaign.abort();
    server.rt.block_on(server.service.shutdown());
}

/// The server verifies each ledger summary before storing it: a forged one (another site's
/// key), one for another round or consortium, or one whose entry count is below the site's
/// previous summary is refused with a specific status and nothing is stored; the anchors
/// route serves only verified summaries.
#[test]
fn forged_or_regressing_summaries_are_refused() {
    use amalgam_site::statements::LedgerSummary;
    amalgam_net::install_crypto_provider();
    let tc = campaign_consortium(64, 3);
    let server = start(&tc);
    let mut t = HttpTransport::new(&server.base, &tc.sites[0], &tc.verified, net_policy()).unwrap();
    wait_open(&mut t, 0);
    server.campaign.abort();
    server
        .rt
        .block_on(server.service.open_round(4, [9; 32]))
        .unwrap();
    let digest = tc.verified.consortium_digest();
    let summary = |round, site, entries, consortium| LedgerSummary {
        consortium_digest: consortium,
        round,
        site,
        entries,
        head: [7; 32],
        epsilon: 0.5,
        record: None,
    };
    let me = tc.sites[0].to_ledger_key();
    let other = tc.sites[1].to_ledger_key();
    let refused = |r: Result<(), amalgam_site::TransportError>| match r {
        Err(amalgam_site::TransportError::Refused { code, .. }) => code,
        other => {
            eprintln!("not refused: {other:?}");
            panic!("not refused: {other:?}")
        }
    };
    // Signed by another site's key, for another round, consortium or site.
    let forged = summary(0, 0, 3, digest).sign(&other);
    assert_eq!(refused(t.upload_summary(0, &forged)), "summary.invalid");
    let wrong_round = summary(4, 0, 3, digest).sign(&me);
    assert_eq!(
        refused(t.upload_summary(0, &wrong_round)),
        "summary.invalid"
    );
    let wrong_consortium = summary(0, 0, 3, [1; 32]).sign(&me);
    assert_eq!(
        refused(t.upload_summary(0, &wrong_consortium)),
        "summary.invalid"
    );
    let wrong_site = summary(0, 1, 3, digest).sign(&me);
    assert_eq!(refused(t.upload_summary(0, &wrong_site)), "summary.invalid");
    assert_eq!(
        refused(t.upload_summary(0, b"not a summary")),
        "summary.invalid"
    );
    assert!(t.latest_summary().unwrap().is_none(), "nothing stored");
    // A genuine one is stored and served; a later one may not have fewer entries.
    let good = summary(0, 0, 3, digest).sign(&me);
    t.upload_summary(0, &good).unwrap();
    assert_eq!(t.latest_summary().unwrap(), Some(good.clone()));
    let regressed = summary(4, 0, 2, digest).sign(&me);
    assert_eq!(
        refused(t.upload_summary(4, &regressed)),
        "summary.regressed"
    );
    assert_eq!(t.latest_summary().unwrap(), Some(good));
    let next = summary(4, 0, 3, digest).sign(&me);
    t.upload_summary(4, &next).unwrap();
    assert_eq!(t.latest_summary().unwrap(), Some(next));
    server.rt.block_on(server.service.shutdown());
}

/// How a two-round campaign ended: the aggregator's position, every site's final model
/// digest, and the site that skipped round 1.
struct TwoRounds {
    end: Position,
    ended: Vec<[u8; 32]>,
    dropped: u16,
}

impl TwoRounds {
    /// Every value of the final model moved by `want` (within `tol`) from [`initial`], and
    /// every site but the dropped one (which has no later round to catch up in) ends on the
    /// aggregator's model.
    fn assert_moved(&self, want: f64, tol: f64) {
        for (v, start) in self.end.model.iter().zip(initial()) {
            let moved = f64::from(*v) - f64::from(start);
            assert!((moved - want).abs() < tol, "moved {moved}, want {want}");
        }
        let final_digest = model_digest(&self.end.model);
        for (i, digest) in self.ended.iter().enumerate() {
            if i != usize::from(self.dropped) {
                assert_eq!(*digest, final_digest, "site {i}");
            }
        }
    }
}

/// Runs `tc`'s two-round campaign over HTTPS at its five sites, each with `trainer(i)`,
/// `dropped` skipping round 1; both rounds must complete.
fn two_rounds<R: amalgam_site::Trainer + Send + 'static>(
    tc: &TestConsortium,
    rules: &ConsortiumRules,
    dropped: u16,
    trainer: impl Fn(u16) -> R,
) -> TwoRounds {
    let server = start(tc);
    let root = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..5u16)
        .map(|i| {
            let (mut agent, mut t) = site(tc, rules, &server, root.path(), i);
            let mut trainer = trainer(i);
            std::thread::spawn(move || {
                for round in 0..2 {
                    wait_open(&mut t, round);
                    if round == 1 && i == dropped {
                        continue;
                    }
                    let o = agent.run_round(&mut t, &mut trainer, round).unwrap();
                    assert!(matches!(o, RoundOutcome::Completed { .. }), "{o:?}");
                }
                agent.model().1
            })
        })
        .collect();
    let ended: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let end = server.rt.block_on(server.campaign).unwrap().unwrap();
    assert_eq!(end.completed, 2);
    TwoRounds {
        end,
        ended,
        dropped,
    }
}

/// Declared weights over HTTPS, end to end: the manifest gives `site-0` weight 6 and the
/// other four weight 1, every site sends a fixed update of norm 4.9 > C (+2 per value from
/// `site-0`, −2 from the others), and one light site drops out of round 1. Without noise
/// (privacy `none`) the step is visible: each round moves the model by the declared-weight
/// mean of the clipped updates (±1/√6 per value) over that round's contributors (0.082, then
/// 0.136), which the uniform mean (−0.245, then −0.204) and scaling before the clip (the
/// light sites' scaled updates fit within C: −0.56) miss by far more than the quantization
/// error; every site and the aggregator end
/// on the same model (but the dropped one, which has no later round to catch up in).
#[test]
fn declared_weights_give_the_weighted_mean_of_each_rounds_contributors() {
    use amalgam_consortium::{DpBudget, WeightMode};
    use amalgam_site::FixedUpdateTrainer;
    use amalgam_site::model::AggregationWeights;
    amalgam_net::install_crypto_provider();
    let tc = campaign_consortium_with(71, 2, |b| {
        b.dp.budget = DpBudget::None;
        b.campaign.weight_mode = WeightMode::Declared;
        b.campaign.declared_weights = (0..5)
            .map(|i| (format!("site-{i}"), if i == 0 { 6 } else { 1 }))
            .collect();
    });
    // Weights by site id come from the names, whatever order the keys sort the sites in.
    let names: Vec<String> = tc.verified.sites().iter().map(|m| m.name.clone()).collect();
    let weight = |id: u16| {
        if names[usize::from(id)] == "site-0" {
            6.0
        } else {
            1.0
        }
    };
    // Norm 2·√6 ≈ 4.9, above C = 1: each site clips to C, then scales (values ±1/√6).
    let update = |id: u16| if weight(id) > 1.0 { 2.0f32 } else { -2.0 };
    let clipped = |id: u16| f64::from(update(id)) / (2.0 * 6f64.sqrt());
    let rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    let by_id: Vec<u32> = (0..5).map(|i| weight(i) as u32).collect();
    assert_eq!(rules.weights, AggregationWeights::Declared(by_id));
    let dropped = (0..5u16).find(|&i| weight(i) == 1.0).unwrap();
    let end = two_rounds(&tc, &rules, dropped, |i| FixedUpdateTrainer {
        update: vec![update(i); D as usize],
    });
    let mean = |contributors: &[u16], weighted: bool| -> f64 {
        let w = |i: u16| if weighted { weight(i) } else { 1.0 };
        let total: f64 = contributors.iter().map(|&i| w(i)).sum();
        contributors.iter().map(|&i| w(i) * clipped(i)).sum::<f64>() / total
    };
    let all: Vec<u16> = (0..5).collect();
    let rest: Vec<u16> = all.iter().copied().filter(|&i| i != dropped).collect();
    let weighted = mean(&all, true) + mean(&rest, true);
    let uniform = mean(&all, false) + mean(&rest, false);
    assert!((weighted - uniform).abs() > 0.4, "{weighted} vs {uniform}");
    end.assert_moved(weighted, 0.05);
}

/// A test trainer reporting a fixed update and a fixed private example count.
struct Counted {
    update: Vec<f32>,
    examples: f64,
}

impl amalgam_site::Trainer for Counted {
    fn train(
        &mut self,
        _global: amalgam_site::GlobalModel<'_>,
        _round: &amalgam_site::RoundInfo,
        _permits: &amalgam_site::Permits,
    ) -> Result<amalgam_site::TrainOutput, amalgam_site::TrainError> {
        Ok(amalgam_site::TrainOutput {
            update: self.update.clone(),
            weight: self.examples,
            record_charge: None,
        })
    }
}

/// Noised weights (DP-FedAvg) over HTTPS, end to end, without noise (privacy `none`) so the
/// step is visible. n_cap = 200, κ = C = 1 (a small κ would magnify the rounding error of
/// the weight coordinate by 1/κ in the divisor), floor 2 (the minimum cohort is 4):
/// `site-0`, `site-1` and `site-2` have 2000 examples (w = 1) and send +2 per value, the
/// other two none (w = 0) and send −2 per value; each site clips its update to C, multiplies
/// it by w, appends κ·w and clips the whole to C (the heavy sites' vectors by 1/√2), so the
/// light sites send zeros. Round 0 divides by the decoded weight sum over κ (2.121, between
/// the floor and the 5 contributors); in round 1 `site-0` drops out and the estimate (1.414)
/// falls under the floor, so the step divides by 2. The model moves by the sum of those two
/// means (+0.697), which the uniform mean (+0.082) and the unfloored estimate (+0.816) miss
/// by more than the quantization error.
#[test]
fn noised_weights_divide_by_the_decoded_weight_sum_with_its_floor() {
    use amalgam_consortium::{DpBudget, NoisedWeightPolicy, WeightMode};
    use amalgam_site::model::AggregationWeights;
    amalgam_net::install_crypto_provider();
    let policy = NoisedWeightPolicy {
        n_cap: 200,
        kappa: 1.0,
        floor: 2.0,
    };
    let tc = campaign_consortium_with(73, 2, |b| {
        b.dp.budget = DpBudget::None;
        b.campaign.weight_mode = WeightMode::Noised;
        b.campaign.noised_weights = Some(policy);
    });
    let names: Vec<String> = tc.verified.sites().iter().map(|m| m.name.clone()).collect();
    let is_heavy =
        |id: u16| ["site-0", "site-1", "site-2"].contains(&names[usize::from(id)].as_str());
    let dropped = (0..5u16)
        .find(|&i| names[usize::from(i)] == "site-0")
        .unwrap();
    let examples = |id: u16| if is_heavy(id) { 2000.0 } else { 0.0 };
    let update = |id: u16| if is_heavy(id) { 2.0f32 } else { -2.0 };
    let rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    assert_eq!(rules.weights, AggregationWeights::Noised(policy));
    // What each site's vector carries, computed here from the definition: per value
    // s·w·f/√D with s the update's sign, and κ·w·f in the weight coordinate.
    let carried = |id: u16| {
        let w = (examples(id) / f64::from(policy.n_cap)).min(1.0);
        let f = (1.0 / (w * (1.0 + policy.kappa * policy.kappa).sqrt())).min(1.0);
        let sign = f64::from(update(id).signum());
        (sign * w * f / (D as f64).sqrt(), policy.kappa * w * f)
    };
    let mean = |contributors: &[u16], floor: bool| -> f64 {
        let sum: f64 = contributors.iter().map(|&i| carried(i).0).sum();
        let weight: f64 = contributors.iter().map(|&i| carried(i).1).sum::<f64>() / policy.kappa;
        let count = contributors.len() as f64;
        sum / if floor {
            weight.max(policy.floor).min(count)
        } else {
            weight
        }
    };
    let all: Vec<u16> = (0..5).collect();
    let rest: Vec<u16> = all.iter().copied().filter(|&i| i != dropped).collect();
    let want = mean(&all, true) + mean(&rest, true);
    let unfloored = mean(&all, false) + mean(&rest, false);
    let uniform = |c: &[u16]| {
        c.iter()
            .map(|&i| f64::from(update(i).signum()))
            .sum::<f64>()
            / (c.len() as f64 * (D as f64).sqrt())
    };
    let uniform = uniform(&all) + uniform(&rest);
    assert!((want - unfloored).abs() > 0.08, "{want} vs {unfloored}");
    assert!((want - uniform).abs() > 0.6, "{want} vs {uniform}");
    let end = two_rounds(&tc, &rules, dropped, |i| Counted {
        update: vec![update(i); D as usize],
        examples: examples(i),
    });
    end.assert_moved(want, 0.03);
}
