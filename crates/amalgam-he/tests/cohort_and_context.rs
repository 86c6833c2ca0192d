//! The cohort, committee and round-context rules, each written as the attack it stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use amalgam_he::*;
use amalgam_proto::SiteId;
use common::*;

/// m = 1: the aggregator names a cohort of one honest site and an honest committee would
/// release that site's key. The setup is refused outright.
#[test]
fn a_cohort_of_one_is_refused_at_setup() {
    let w = world(&SMALL, 1);
    let s = &w.setup;
    let err = RoundSetup::new(
        *s.params(),
        s.sites().clone(),
        s.committee().clone(),
        1,
        s.round(),
        vec![MODEL],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        HeError::ParamOutOfRange {
            name: "min_cohort",
            value: 1,
            min: 2,
            ..
        }
    ));
    assert_eq!(err.code(), 1);
    // m = 2 is the smallest accepted; a smaller statement is still refused by the members.
    assert!(
        RoundSetup::new(
            *s.params(),
            s.sites().clone(),
            s.committee().clone(),
            2,
            s.round(),
            vec![MODEL]
        )
        .is_ok()
    );
}

/// The bound that remains: with m = 2 one colluding site isolates an honest input (the spec
/// states c_s ≤ m − 2); with m = 3 and one colluder the aggregator only gets a sum of two
/// honest inputs. This pins what the spec claims, not a break.
#[test]
fn m_minus_c_s_honest_inputs_is_the_stated_bound() {
    let mut w = world(&SMALL, 2);
    let out = honest_round(&mut w, &[0, 3], &[0, 1, 2, 3, 4]).unwrap();
    let rest: Vec<u64> = out.iter().zip(w.input(3)).map(|(a, b)| a - b).collect();
    assert_eq!(
        rest,
        w.input(0),
        "c_s = m − 1 = 1 isolates: outside the bound"
    );
    let mut w = world(
        &Shape {
            min_cohort: 3,
            ..SMALL
        },
        2,
    );
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    agg.receive(&w.upload(0)).unwrap();
    agg.receive(&w.upload(3)).unwrap();
    assert!(matches!(agg.close(), Err(HeError::CohortSize { .. })));
}

/// t_c = 1 with c > 1: one piece, held by every member, so any one member opens every key.
#[test]
fn threshold_one_with_several_members_is_refused() {
    let w = world(&SMALL, 4);
    for c in 2..=5 {
        let members: Vec<MemberKeys> = (0..c).map(|m| w.secrets(m).certify(1)).collect();
        for q in 1..=c {
            let err = Committee::new(members.clone(), 1, q, 0).unwrap_err();
            assert!(
                matches!(err, HeError::CommitteeRule { rule, .. } if rule.starts_with("t_c ≥ 2")),
                "c={c} q={q}: {err:?}"
            );
        }
    }
    // c = 1 keeps t_c = Q = 1 (the stated single-key-holder model).
    assert!(Committee::new(vec![w.secrets(0).certify(1)], 1, 1, 0).is_ok());
}

fn second_setup(w: &World) -> RoundSetup {
    let s = &w.setup;
    RoundSetup::new(
        *s.params(),
        s.sites().clone(),
        s.committee().clone(),
        3,
        s.round(),
        vec![MODEL],
    )
    .unwrap()
}

/// One site state used under a second setup with the same round id: the same update under a
/// second key with fresh noise. Both `upload` and the restore refuse it, and nothing changes.
#[test]
fn a_site_round_is_bound_to_its_round_context_not_only_its_round_id() {
    let mut w = world(&SMALL, 3);
    let r = w.site_round(0);
    let u1 = r.upload(&w.setup, SiteId(0), &w.identities[0]).unwrap();
    let setup2 = second_setup(&w);
    assert_eq!(setup2.round(), w.setup.round());
    assert_ne!(setup2.context(), w.setup.context());
    assert_eq!(
        r.upload(&setup2, SiteId(0), &w.identities[0]).unwrap_err(),
        HeError::WrongRound
    );
    let bytes = r.to_bytes();
    assert_eq!(
        SiteRound::from_bytes(&bytes, &setup2).unwrap_err(),
        HeError::WrongRound
    );
    // The state is unchanged: the original setup still gets the identical bytes.
    assert_eq!(r.upload(&w.setup, SiteId(0), &w.identities[0]).unwrap(), u1);
    let back = SiteRound::from_bytes(&bytes, &w.setup).unwrap();
    assert_eq!(
        back.upload(&w.setup, SiteId(0), &w.identities[0]).unwrap(),
        u1
    );
}

/// The staleness weight is a public function of the round id and the model round; an upload
/// that did not sign its model round could be shown with another one (re-weighted in the
/// audit, or counted as fresh when stale). The model round is signed: any change breaks the
/// signature at the aggregator and at every member, and a (round, digest) pair outside the
/// window is refused.
#[test]
fn the_model_round_that_fixes_the_staleness_weight_is_signed() {
    let mut w = world(&SMALL, 8);
    let upload = w.upload(0);
    assert_eq!(upload.header.model_round, MODEL.0);
    assert_eq!(
        w.setup.staleness_weight(MODEL.0),
        staleness_weight(ROUND, ROUND - 1)
    );
    let mut claimed = upload.clone();
    claimed.header.model_round = ROUND;
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    assert!(matches!(
        agg.receive(&claimed),
        Err(HeError::BadSignature { .. })
    ));
    let mut view = upload.view_for(0).unwrap();
    view.header.model_round = ROUND;
    let mut decs = w.decryptors();
    assert!(matches!(
        decs[0].admit(&view),
        Err(HeError::BadSignature { .. })
    ));
    agg.receive(&upload).unwrap();
    // The site cannot name a model round the window does not pair with the digest.
    let input = w.input(1);
    assert_eq!(
        SiteRound::draw(
            &w.setup,
            &mut SiteRoundLog::new(),
            (ROUND, MODEL.1),
            input,
            &mut w.rng
        )
        .unwrap_err(),
        HeError::StaleModel
    );
    // A window entry published after the round is refused at setup.
    let s = &w.setup;
    assert!(matches!(
        RoundSetup::new(
            *s.params(),
            s.sites().clone(),
            s.committee().clone(),
            2,
            ROUND,
            vec![(ROUND + 1, [1; 32])]
        ),
        Err(HeError::ParamOutOfRange { .. })
    ));
}

/// A consortium round binds the manifest's context digest and accepts only member keys whose
/// key period covers the round.
#[test]
fn a_consortium_round_binds_its_context_and_refuses_keys_outside_their_period() {
    let w = world(&SMALL, 31);
    let s = &w.setup;
    let scoped = |first: u64, end: u64| {
        let members = (0..SMALL.c)
            .map(|j| {
                let scope = amalgam_he::PeriodScope {
                    consortium_digest: [9; 32],
                    member: j as u16,
                    first_round: first,
                    end_round: end,
                };
                w.secrets(j).certify_period(first / 16, scope)
            })
            .collect();
        Committee::new(members, SMALL.t, SMALL.q, SMALL.corrupt).unwrap()
    };
    let bound = |ctx: [u8; 32], committee: Committee| {
        RoundSetup::for_consortium(
            ctx,
            *s.params(),
            s.sites().clone(),
            committee,
            SMALL.min_cohort,
            ROUND,
            vec![MODEL],
        )
    };
    let a = bound([1; 32], scoped(0, 16)).unwrap();
    let b = bound([2; 32], scoped(0, 16)).unwrap();
    assert_ne!(a.context(), b.context(), "the consortium context is bound");
    assert_ne!(a.context(), s.context());
    // ROUND = 7: a period [16, 32) is not yet valid, [0, 7) has expired.
    for committee in [scoped(16, 32), scoped(0, 7)] {
        assert!(matches!(
            bound([1; 32], committee),
            Err(HeError::BadKey {
                index: 0,
                reason: "key period does not cover the round",
                ..
            })
        ));
    }
    // A bare committee has no period: refused for a consortium round.
    assert!(matches!(
        bound([1; 32], s.committee().clone()),
        Err(HeError::BadKey {
            reason: "no key-period certificate",
            ..
        })
    ));
}
