//! Round-id reuse: a second fresh instance of a member or a site for one round id, written as
//! the attack it stops (the persisted round records, spec §5.7).

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use amalgam_he::*;
use common::*;

/// The aggregator starts two fresh instances of every honest member for one round id and
/// shows one set S, the other S ∖ {v}: each set forms a quorum, both release, and the
/// difference of the two sums is k_v. With the members' persisted records the second
/// instances are refused at construction (code 9) and the records are unchanged.
#[test]
fn a_second_member_instance_for_a_round_id_is_refused() {
    let mut w = world(&SMALL, 5);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..3 {
        let u = w.upload(s);
        agg.receive(&u).unwrap();
    }
    let s = agg.close().unwrap();
    let mut records: Vec<MemberRoundRecord> = (0..5).map(|_| MemberRoundRecord::new()).collect();
    let mut a = w.decryptors_with(&mut records).unwrap();
    forward(&agg, &mut a);
    let sa = sign_all(&mut a, &[0, 1, 2, 3, 4], &s);
    assert!(a[0].release(&s, &sa).is_ok());
    // The driver persisted the records; a restart reads them back.
    let persisted: Vec<Vec<u8>> = records.iter().map(MemberRoundRecord::to_bytes).collect();
    let mut reloaded: Vec<MemberRoundRecord> = persisted
        .iter()
        .map(|b| MemberRoundRecord::from_bytes(b).unwrap())
        .collect();
    for m in 0..5 {
        let err = Decryptor::new(w.setup.clone(), m, w.secrets(m), &mut reloaded[m]).unwrap_err();
        assert_eq!(err, HeError::RoundReused { round: ROUND });
        assert_eq!(err.code(), 9);
        assert_eq!(reloaded[m].to_bytes(), persisted[m], "nothing changed");
    }
    assert!(w.decryptors_with(&mut reloaded).is_err());
    // The next round id is accepted by the same records.
    assert!(!reloaded[0].is_used(ROUND + 1));
}

/// Overlapping asynchronous rounds: a member serves round 8 after 9 (a set, not a mark), and
/// pruning marks every older round used.
#[test]
fn member_records_serve_overlapping_rounds_and_prune() {
    let w = world(&SMALL, 6);
    let setup_for = |round: u64| {
        let s = &w.setup;
        RoundSetup::new(
            *s.params(),
            s.sites().clone(),
            s.committee().clone(),
            s.min_cohort(),
            round,
            vec![(0, MODEL.1)],
        )
        .unwrap()
    };
    let mut rec = MemberRoundRecord::new();
    Decryptor::new(setup_for(9), 0, w.secrets(0), &mut rec).unwrap();
    Decryptor::new(setup_for(8), 0, w.secrets(0), &mut rec).unwrap();
    assert!(Decryptor::new(setup_for(8), 0, w.secrets(0), &mut rec).is_err());
    rec.prune_below(9);
    assert_eq!(
        Decryptor::new(setup_for(3), 0, w.secrets(0), &mut rec).unwrap_err(),
        HeError::RoundReused { round: 3 }
    );
    assert!(Decryptor::new(setup_for(9), 0, w.secrets(0), &mut rec).is_err());
    assert!(Decryptor::new(setup_for(10), 0, w.secrets(0), &mut rec).is_ok());
}

/// A site drawn twice for one round id would encrypt its update under two keys (or hand out
/// two seeds for one round): the log refuses the second draw, with no change to the log.
#[test]
fn a_second_site_draw_for_a_round_id_is_refused() {
    let mut w = world(&SMALL, 7);
    let mut log = SiteRoundLog::new();
    let input = w.input(0);
    SiteRound::draw(&w.setup, &mut log, MODEL, input.clone(), &mut w.rng).unwrap();
    let persisted = log.to_bytes();
    let mut reloaded = SiteRoundLog::from_bytes(&persisted).unwrap();
    let err = SiteRound::draw(&w.setup, &mut reloaded, MODEL, input, &mut w.rng).unwrap_err();
    assert_eq!(err, HeError::RoundReused { round: ROUND });
    assert_eq!(reloaded.to_bytes(), persisted);
    // A refused update (wrong length) claims nothing.
    let mut fresh = SiteRoundLog::new();
    assert!(SiteRound::draw(&w.setup, &mut fresh, MODEL, vec![0; 3], &mut w.rng).is_err());
    assert_eq!(fresh.high_water(), None);
}

/// The review's attack as it was written: the aggregator starts the committee twice for one
/// round (the fixture's members keep their records) and shows S, then S ∖ {v}. The second
/// start is refused, so no second quorum exists.
#[test]
fn starting_the_committee_twice_for_one_round_is_refused() {
    let mut w = world(&SMALL, 5);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..3 {
        let u = w.upload(s);
        agg.receive(&u).unwrap();
    }
    let s = agg.close().unwrap();
    let mut a = w.decryptors();
    forward(&agg, &mut a);
    let sa = sign_all(&mut a, &[0, 1, 2, 3, 4], &s);
    assert!(a[0].release(&s, &sa).is_ok());
    assert!(matches!(
        w.decryptors_with(&mut w.records.borrow_mut()),
        Err(HeError::RoundReused { round: ROUND })
    ));
}
