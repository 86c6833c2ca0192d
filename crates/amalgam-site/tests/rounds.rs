//! Whole rounds of real site agents against the in-memory aggregator: sums, dropouts, the
//! budget rules (decline, abort charges, abort cap) and the model chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amalgam_proto::Phase;
use amalgam_site::statements::DeclineReason;
use amalgam_site::{AgentError, RoundOutcome};
use common::Fixture;

fn completed(r: &Result<RoundOutcome, AgentError>) -> Option<(Vec<u16>, [u8; 32])> {
    match r {
        Ok(RoundOutcome::Completed {
            contributors,
            model_digest,
        }) => Some((contributors.clone(), *model_digest)),
        _ => None,
    }
}

#[test]
fn five_sites_sum_equals_the_plaintext_sum_of_encoded_updates() {
    let mut f = Fixture::new(5, 4);
    let out = f.run_plain(1);
    let result = f.hub.result(1).unwrap();
    assert_eq!(result.contributors, vec![0, 1, 2, 3, 4]);
    assert_eq!(result.sum, f.plaintext_sum(1, &[0, 1, 2, 3, 4]));
    // Every site computed model_2 itself and it matches what the aggregator serves.
    for r in &out {
        let (contributors, digest) = completed(r).unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(contributors, result.contributors);
        assert_eq!(Some(digest), result.model_digest);
    }
    assert_eq!(
        Some(amalgam_site::model::model_digest(&f.hub.model())),
        result.model_digest
    );
    // A second round runs on the new model.
    let out = f.run_plain(2);
    assert!(out.iter().all(|r| completed(r).is_some()), "{out:?}");
    assert_eq!(
        f.hub.result(2).unwrap().sum,
        f.plaintext_sum(2, &[0, 1, 2, 3, 4])
    );
}

#[test]
fn five_sites_one_dropout_and_seven_sites_two_dropouts() {
    // 5 sites, t = 4 tolerate one dropout (c + 2f < n with c >= 1): site 2 before MaskedInput.
    let mut f = Fixture::new(5, 4);
    let out = f.run(1, |f, i| {
        let t = f.hub.transport(i);
        if i == 2 {
            t.drop_before(Phase::MaskedInput)
        } else {
            t
        }
    });
    assert!(
        matches!(out[2], Err(AgentError::Transport(_))),
        "{:?}",
        out[2]
    );
    let result = f.hub.result(1).unwrap();
    assert_eq!(result.contributors, vec![0, 1, 3, 4]);
    assert_eq!(result.sum, f.plaintext_sum(1, &[0, 1, 3, 4]));

    // 7 sites, t = 5: two dropouts, one before MaskedInput (not in the sum), one before
    // Unmasking (in the sum, its mask recovered from shares).
    let mut f = Fixture::new(7, 5);
    let out = f.run(1, |f, i| {
        let t = f.hub.transport(i);
        match i {
            5 => t.drop_before(Phase::MaskedInput),
            6 => t.drop_before(Phase::Unmasking),
            _ => t,
        }
    });
    let result = f.hub.result(1).unwrap();
    assert_eq!(result.contributors, vec![0, 1, 2, 3, 4, 6]);
    assert_eq!(result.sum, f.plaintext_sum(1, &[0, 1, 2, 3, 4, 6]));
    for r in &out[..5] {
        assert_eq!(Some(completed(r).unwrap().1), result.model_digest);
    }
}

#[test]
fn over_budget_site_declines_before_advertise_keys_and_the_round_completes() {
    // Site 4 keeps a cap below one round's epsilon.
    let mut f = Fixture::with(5, 4, |i, mut r| {
        if i == 4 {
            r.policy = common::policy(1e-3);
        }
        r
    });
    let out = f.run_plain(1);
    assert!(matches!(
        out[4],
        Ok(RoundOutcome::Declined(DeclineReason::BudgetExceeded))
    ));
    assert_eq!(f.hub.declines(1), [4].into());
    // It never advertised keys (so it is no dropout) and drew no noise.
    assert!(f.encoded(4, 1).is_none());
    let mut t = f.hub.transport(4);
    assert_eq!(
        amalgam_site::Transport::mine_latest(&mut t, 1).unwrap(),
        None
    );
    let result = f.hub.result(1).unwrap();
    assert_eq!(result.contributors, vec![0, 1, 2, 3]);
    assert_eq!(result.sum, f.plaintext_sum(1, &[0, 1, 2, 3]));
    // The refusal is in its ledger, with no accepted charge.
    let report = f.audit(4);
    assert_eq!((report.accepted, report.refused), (0, 1));
}

#[test]
fn forced_abort_charges_once_per_attempt_and_the_rerun_draws_fresh_noise() {
    let mut f = Fixture::new(5, 4);
    f.hub.abort_at(1, Phase::MaskedInput);
    let out = f.run_plain(1);
    assert!(
        out.iter().all(|r| matches!(r, Ok(RoundOutcome::Aborted))),
        "{out:?}"
    );
    assert!(f.hub.result(1).is_none());
    // The re-run is a new round id under a new permit.
    let out = f.run_plain(2);
    assert!(out.iter().all(|r| completed(r).is_some()), "{out:?}");
    for i in 0..5u16 {
        let (a, b) = (f.encoded(i, 1).unwrap(), f.encoded(i, 2).unwrap());
        assert_ne!(a, b, "site {i} re-sent an encoded update");
        assert_eq!(
            f.agents[usize::from(i)].as_ref().unwrap().aborted_rounds(),
            1
        );
        let report = f.audit(i);
        assert_eq!(report.accepted, 2, "site {i}: one charge per attempt");
    }
    // Re-running the aborted round id itself is refused: its noise was drawn once.
    let mut t = f.hub.transport(0);
    let agent = f.agents[0].as_mut().unwrap();
    let mut trainer = amalgam_site::FixedUpdateTrainer {
        update: vec![0.0; common::MODEL_LEN],
    };
    assert!(matches!(
        agent.run_round(&mut t, &mut trainer, 1),
        Err(AgentError::RolledBack { round: 1 } | AgentError::RoundReused { round: 1, .. })
    ));
}

#[test]
fn the_abort_cap_makes_sites_decline_without_a_charge() {
    let mut f = Fixture::with(5, 4, |_, mut r| {
        r.max_aborted_rounds = 1;
        r
    });
    f.rules.max_aborted_rounds = 1;
    f.hub.abort_at(1, Phase::ShareKeys);
    let out = f.run_plain(1);
    assert!(
        out.iter().all(|r| matches!(r, Ok(RoundOutcome::Aborted))),
        "{out:?}"
    );
    let out = f.run_plain(2);
    assert!(
        out.iter().all(|r| matches!(
            r,
            Ok(RoundOutcome::Declined(DeclineReason::AbortCapReached))
        )),
        "{out:?}"
    );
    assert_eq!(f.hub.declines(2), (0..5).collect());
    for i in 0..5 {
        assert!(f.encoded(i, 2).is_none());
        assert_eq!(f.audit(i).accepted, 1);
    }
}

#[test]
fn a_wrong_model_from_the_aggregator_is_refused_next_round() {
    let mut f = Fixture::new(5, 4);
    f.hub.serve_wrong_model();
    let out = f.run_plain(1);
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::ModelMismatch))),
        "{out:?}"
    );
    let out = f.run_plain(2);
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(RoundOutcome::Declined(DeclineReason::ModelMismatch)))),
        "{out:?}"
    );
}
