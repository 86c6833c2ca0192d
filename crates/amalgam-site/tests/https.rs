//! The same agents over real mutually authenticated HTTPS: an in-process aggregator
//! (`amalgam-server`) on 127.0.0.1:0 under a co-signed manifest, five site agents each over
//! its own [`HttpTransport`]; the published sum equals the plaintext sum of the encoded
//! updates and every site computes the same next model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amalgam_consortium::testing::consortium;
use amalgam_net::tls;
use amalgam_server::consortium::ConsortiumView;
use amalgam_server::events::MemoryStore;
use amalgam_server::http::{App, router};
use amalgam_server::listen::{ListenLimits, serve_tls};
use amalgam_server::{Service, ServiceConfig};
use amalgam_site::http::HttpTransport;
use amalgam_site::model::model_digest;
use amalgam_site::retry::RetryPolicy;
use amalgam_site::statements::DeclineReason;
use amalgam_site::{AgentOptions, ConsortiumRules, RoundOutcome, SiteAgent, SyntheticTrainer};

/// An in-process aggregator over mutual TLS for `tc`, with round 0 open on `model`.
fn start_server(
    tc: &amalgam_consortium::testing::TestConsortium,
    model: &[f32],
) -> (tokio::runtime::Runtime, Service, String) {
    let digest = tc.verified.consortium_digest();
    let view: Arc<dyn ConsortiumView> = Arc::new(tc.verified.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (service, addr) = rt.block_on(async {
        let service = Service::start(
            view.clone(),
            Arc::new(MemoryStore::new()),
            ServiceConfig {
                phase_seconds: 600,
                restart_grace_seconds: 60,
                workers: 2,
                queue: 64,
                metrics_site_labels: false,
            },
        )
        .unwrap();
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
        service.open_round(0, model_digest(model)).await.unwrap();
        (service, addr)
    });
    (rt, service, format!("https://{addr}"))
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

#[test]
fn five_site_agents_run_a_round_over_https() {
    amalgam_net::install_crypto_provider();
    let tc = consortium(21, 5, 0, 6);
    let model = vec![0.25f32; 6];
    let mut rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    rules.initial_weights_digest = Some(model_digest(&model));
    let (rt, service, base) = start_server(&tc, &model);
    let root = tempfile::tempdir().unwrap();
    let encoded = Arc::new(Mutex::new(vec![Vec::new(); 5]));
    let options = options();
    let net_policy = net_policy();
    let handles: Vec<_> = (0..5usize)
        .map(|i| {
            let mut agent = SiteAgent::open(
                &root.path().join(format!("s{i}")),
                tc.sites[i].to_ledger_key(),
                rules.clone(),
                &model,
                options,
            )
            .unwrap();
            let sink = encoded.clone();
            agent.set_encoded_observer(Box::new(move |_, v| sink.lock().unwrap()[i] = v.to_vec()));
            let mut t = HttpTransport::new(&base, &tc.sites[i], &tc.verified, net_policy).unwrap();
            std::thread::spawn(move || {
                let mut trainer = SyntheticTrainer {
                    seed: [i as u8; 32],
                    norm: 0.5,
                };
                agent.run_round(&mut t, &mut trainer, 0)
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let result = rt
        .block_on(service.result(0, Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    let mask = (1u64 << rules.dp.bits.get()) - 1;
    let mut expected = vec![0u64; rules.params.d()];
    for v in encoded.lock().unwrap().iter() {
        for (a, x) in expected.iter_mut().zip(v) {
            *a = (*a + x) & mask;
        }
    }
    assert_eq!(result.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(result.sum, expected);
    let digests: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            Ok(RoundOutcome::Completed { model_digest, .. }) => *model_digest,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    rt.block_on(service.shutdown());
}

/// A decline over the real server: the site over its ε cap signs amalgam-net's decline
/// format, the server accepts it (a 400 here was the format mismatch), the round completes
/// without it, and the declined round moves its high-water mark.
#[test]
fn an_over_budget_site_declines_over_https_and_the_round_completes_without_it() {
    amalgam_net::install_crypto_provider();
    let tc = consortium(22, 5, 0, 6);
    let model = vec![0.25f32; 6];
    let mut rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    rules.initial_weights_digest = Some(model_digest(&model));
    let (rt, service, base) = start_server(&tc, &model);
    let root = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..5usize)
        .map(|i| {
            let mut r = rules.clone();
            if i == 4 {
                r.policy = amalgam_dp::ledger::BudgetPolicy::site_level(
                    amalgam_dp::params::Epsilon::new(1e-6).unwrap(),
                    amalgam_dp::params::Delta::new(1e-9).unwrap(),
                )
                .unwrap();
            }
            let mut agent = SiteAgent::open(
                &root.path().join(format!("s{i}")),
                tc.sites[i].to_ledger_key(),
                r,
                &model,
                options(),
            )
            .unwrap();
            let mut t =
                HttpTransport::new(&base, &tc.sites[i], &tc.verified, net_policy()).unwrap();
            std::thread::spawn(move || {
                let mut trainer = SyntheticTrainer {
                    seed: [i as u8; 32],
                    norm: 0.5,
                };
                let out = agent.run_round(&mut t, &mut trainer, 0);
                (out, agent.last_round().unwrap())
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        matches!(
            outcomes[4].0,
            Ok(RoundOutcome::Declined(DeclineReason::BudgetExceeded))
        ),
        "{:?}",
        outcomes[4].0
    );
    assert_eq!(
        outcomes[4].1,
        Some(0),
        "the declined round moves the high-water mark"
    );
    for (o, _) in &outcomes[..4] {
        assert!(matches!(o, Ok(RoundOutcome::Completed { .. })), "{o:?}");
    }
    let result = rt
        .block_on(service.result(0, Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    assert_eq!(result.contributors, vec![0, 1, 2, 3]);
    rt.block_on(service.shutdown());
}
