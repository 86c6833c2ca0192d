//! Rules from a real co-signed manifest: derived values are the manifest's, the initial
//! model must be the campaign's, and a 5-site round runs under them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use amalgam_consortium::testing::consortium;
use amalgam_site::retry::RetryPolicy;
use amalgam_site::testing::Hub;
use amalgam_site::{AgentError, AgentOptions, ConsortiumRules, RoundOutcome, SiteAgent};

#[test]
fn rules_come_from_the_manifest_and_a_round_runs_under_them() {
    let tc = consortium(11, 5, 0, 6);
    let rules = ConsortiumRules::from_manifest(&tc.verified).unwrap();
    let digest = [9u8; 32];
    assert_eq!(
        rules.context_digest(&digest),
        tc.verified.context_digest(&digest)
    );
    assert_eq!(rules.rotation_seed(3).0, tc.verified.hadamard_seed(3));
    assert_eq!(rules.params, tc.verified.round_params(3).unwrap());
    assert_eq!(rules.max_aborted_rounds, tc.verified.max_aborted_rounds());

    let model = vec![0.5f32; 6];
    let root = tempfile::tempdir().unwrap();
    let options = AgentOptions {
        retry: RetryPolicy {
            base: Duration::from_millis(1),
            max: Duration::from_millis(20),
            attempts: 5,
        },
        poll_wait: Duration::from_millis(200),
    };
    // The campaign's initial weights digest is not this model's: refused.
    let key0 = tc.sites[0].to_ledger_key();
    let r = SiteAgent::open(&root.path().join("x"), key0, rules.clone(), &model, options);
    assert!(matches!(r, Err(AgentError::BadState(_))), "{r:?}");

    let mut rules = rules;
    rules.initial_weights_digest = Some(amalgam_site::model::model_digest(&model));
    let hub = Hub::new(rules.clone(), model.clone());
    let handles: Vec<_> = tc
        .sites
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut agent = SiteAgent::open(
                &root.path().join(format!("s{i}")),
                key.to_ledger_key(),
                rules.clone(),
                &model,
                options,
            )
            .unwrap();
            let mut t = hub.transport(i as u16);
            std::thread::spawn(move || {
                let mut trainer = amalgam_site::SyntheticTrainer {
                    seed: [i as u8; 32],
                    norm: 0.5,
                };
                agent.run_round(&mut t, &mut trainer, 0)
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert!(matches!(r, Ok(RoundOutcome::Completed { .. })), "{r:?}");
    }
    assert_eq!(hub.result(0).unwrap().contributors, vec![0, 1, 2, 3, 4]);
}
