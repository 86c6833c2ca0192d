//! Honest rounds: exact sums for 2, 100 and 1,000 sites; decryptor dropouts within the
//! committee's tolerance; byte-identical retries; asynchronous closing.

mod common;

use amalgam_he::{Closing, HeAggregator, HeError, SiteRound};
use amalgam_proto::SiteId;
use common::*;

#[test]
fn two_sites_sum_exactly() {
    let mut w = world(&Shape { sites: 2, ..SMALL }, 1);
    let got = honest_round(&mut w, &[0, 1], &[0, 1, 2, 3, 4]).unwrap();
    assert_eq!(got, w.expected_sum(&[0, 1]));
}

#[test]
fn hundred_sites_sum_exactly_across_chunks() {
    let shape = Shape {
        sites: 100,
        min_cohort: 50,
        d: 5000,
        ..SMALL
    };
    let mut w = world(&shape, 2);
    let all: Vec<usize> = (0..100).collect();
    assert_eq!(
        honest_round(&mut w, &all, &[0, 1, 2, 3]).unwrap(),
        w.expected_sum(&all)
    );
}

#[test]
fn thousand_sites_sum_exactly() {
    let shape = Shape {
        sites: 1000,
        min_cohort: 500,
        c: 3,
        t: 2,
        q: 3,
        corrupt: 1,
        d: 64,
    };
    let mut w = world(&shape, 3);
    let all: Vec<usize> = (0..1000).collect();
    assert_eq!(
        honest_round(&mut w, &all, &[0, 1, 2]).unwrap(),
        w.expected_sum(&all)
    );
}

#[test]
fn one_decryptor_may_drop_at_five_three_four_but_not_two() {
    let mut w = world(&SMALL, 4);
    let sites = [0, 1, 2, 3];
    assert_eq!(
        honest_round(&mut w, &sites, &[0, 2, 3, 4]).unwrap(),
        w.expected_sum(&sites)
    );
    // A second trial of the round (its members' records are their own).
    assert_eq!(
        honest_round(&mut world(&SMALL, 4), &sites, &[0, 2, 4]),
        Err(HeError::NoQuorum { got: 3, quorum: 4 })
    );
}

#[test]
fn a_signer_that_drops_after_signing_does_not_kill_the_round() {
    // Members 0..4 sign; member 4 vanishes before releasing: the other four hold every piece.
    let mut w = world(&SMALL, 5);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..4 {
        agg.receive(&w.upload(s)).unwrap();
    }
    let st = agg.close().unwrap();
    let mut decs = w.decryptors();
    forward(&agg, &mut decs);
    let sigs = sign_all(&mut decs, &[0, 1, 2, 4], &st);
    for m in [0, 1, 2] {
        // Released twice (re-sendable): the same bytes.
        let r = decs[m].release(&st, &sigs).unwrap();
        assert_eq!(r, decs[m].release(&st, &sigs).unwrap());
        agg.accept_release(&r).unwrap();
    }
    assert_eq!(agg.finish().unwrap(), w.expected_sum(&[0, 1, 2, 3]));
}

#[test]
fn retries_resend_identical_bytes_and_restores_do_too() {
    let mut w = world(&SMALL, 6);
    let r = w.site_round(1);
    let a = r.upload(&w.setup, SiteId(1), &w.identities[1]).unwrap();
    let restored = SiteRound::from_bytes(&r.to_bytes(), &w.setup).unwrap();
    let b = restored
        .upload(&w.setup, SiteId(1), &w.identities[1])
        .unwrap();
    assert_eq!(a, b);
    // A fresh draw for the same round is a different seed: that is why the seed is persisted.
    let c = w.upload(1);
    assert_ne!(a.bodies, c.bodies);
}

#[test]
fn asynchronous_round_closes_at_its_target() {
    let mut w = world(&SMALL, 7);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnTargetOrDeadline(3));
    for s in 0..3 {
        assert!(!agg.target_reached());
        agg.receive(&w.upload(s)).unwrap();
    }
    assert!(agg.target_reached());
    let st = agg.close().unwrap();
    assert_eq!(st.members.len(), 3);
    assert!(matches!(
        agg.receive(&w.upload(3)),
        Err(HeError::WrongState(_))
    ));
}

#[test]
fn the_committee_runs_through_the_decryptor_role_trait() {
    use amalgam_proto::DecryptorRole;
    fn sign_as_role<D: DecryptorRole>(
        d: &mut D,
        st: &D::Statement,
    ) -> Result<D::Pending, D::Error> {
        d.sign(st)
    }
    let mut w = world(&SMALL, 8);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..2 {
        agg.receive(&w.upload(s)).unwrap();
    }
    let st = agg.close().unwrap();
    let mut decs = w.decryptors();
    for d in decs.iter_mut() {
        for v in agg.views_for(d.member()) {
            DecryptorRole::admit(d, &v).unwrap();
        }
    }
    let sigs: Vec<_> = decs
        .iter_mut()
        .map(|d| sign_as_role(d, &st).unwrap().persisted())
        .collect();
    for d in &decs {
        agg.accept_release(&DecryptorRole::release(d, &st, &sigs).unwrap())
            .unwrap();
    }
    assert_eq!(agg.finish().unwrap(), w.expected_sum(&[0, 1]));
}

#[test]
fn seeds_are_deleted_at_the_deadline_released_or_not() {
    let mut w = world(&SMALL, 9);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..2 {
        agg.receive(&w.upload(s)).unwrap();
    }
    let st = agg.close().unwrap();
    let mut decs = w.decryptors();
    forward(&agg, &mut decs);
    let sigs = sign_all(&mut decs, &[0, 1, 2, 3], &st);
    let with_seeds = decs[0].snapshot().len();
    decs[0].expire();
    assert!(decs[0].admitted().is_empty());
    assert!(decs[0].snapshot().len() < with_seeds - 2 * 32 * 6);
    assert_eq!(decs[0].release(&st, &sigs), Err(HeError::Expired));
    let views = agg.views_for(0);
    assert_eq!(decs[0].admit(&views[0]), Err(HeError::Expired));
}

#[test]
fn site_and_aggregator_run_through_the_role_traits() {
    use amalgam_he::{HeSite, SiteRoundLog};
    use amalgam_proto::{AggregatorRole, AggregatorStep, SiteRole};
    let mut w = world(&SMALL, 10);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..3 {
        let mut log = SiteRoundLog::new();
        let mut site = HeSite::new(
            w.setup.clone(),
            SiteId(s),
            w.identities[s as usize].clone(),
            &mut log,
        )
        .unwrap();
        let pending = site
            .start((MODEL, w.input(s as usize)), &mut w.rng)
            .unwrap();
        let state = pending.state().to_vec();
        let upload = pending.persisted();
        assert!(site.is_done());
        assert!(matches!(
            site.start((MODEL, w.input(s as usize)), &mut w.rng),
            Err(HeError::WrongState(_))
        ));
        // A second instance over the same log cannot start the round again.
        let mut twin = HeSite::new(
            w.setup.clone(),
            SiteId(s),
            w.identities[s as usize].clone(),
            &mut log,
        )
        .unwrap();
        assert!(matches!(
            twin.start((MODEL, w.input(s as usize)), &mut w.rng),
            Err(HeError::RoundReused { round: ROUND })
        ));
        // A restarted site re-sends identical bytes from the persisted state.
        let mut again = HeSite::new(
            w.setup.clone(),
            SiteId(s),
            w.identities[s as usize].clone(),
            &mut log,
        )
        .unwrap();
        let restored = SiteRound::from_bytes(&state, &w.setup).unwrap();
        assert_eq!(again.resume(restored).unwrap(), upload);
        AggregatorRole::receive(&mut agg, upload).unwrap();
    }
    let AggregatorStep::Finished(st) = agg.close_phase().unwrap() else {
        panic!("one phase")
    };
    assert!(AggregatorRole::is_done(&agg));
    assert_eq!(st.members.len(), 3);
}

#[test]
fn the_aggregator_resumes_from_its_snapshot_and_rechecks_it() {
    let mut w = world(&SMALL, 11);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnTargetOrDeadline(3));
    agg.receive(&w.upload(0)).unwrap();
    agg.receive(&w.upload(1)).unwrap();
    // Restart with the cohort open, then finish the round on the restored aggregator.
    let mut agg = HeAggregator::restore(&agg.snapshot(), w.setup.clone()).unwrap();
    agg.receive(&w.upload(2)).unwrap();
    assert!(agg.target_reached());
    let st = agg.close().unwrap();
    let mut decs = w.decryptors();
    forward(&agg, &mut decs);
    let sigs = sign_all(&mut decs, &[0, 1, 2, 3], &st);
    agg.accept_release(&decs[0].release(&st, &sigs).unwrap())
        .unwrap();
    // Restart after one release: the statement is recomputed, the release replayed.
    let snap = agg.snapshot();
    let mut agg = HeAggregator::restore(&snap, w.setup.clone()).unwrap();
    assert_eq!(agg.close().unwrap(), st);
    for d in &decs[1..4] {
        agg.accept_release(&d.release(&st, &sigs).unwrap()).unwrap();
    }
    assert_eq!(agg.finish().unwrap(), w.expected_sum(&[0, 1, 2]));
    // A tampered kept upload (its model digest byte) fails the signature re-check.
    let at = 4 + 8 + 32 + 1 + 4 + 4 + 2;
    let mut bad = snap.clone();
    bad[at] ^= 1;
    assert!(HeAggregator::restore(&bad, w.setup.clone()).is_err());
    let mut trailing = snap;
    trailing.push(0);
    assert!(HeAggregator::restore(&trailing, w.setup.clone()).is_err());
}
