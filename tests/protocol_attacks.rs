//! Attack tests (spec §11, threat-model.md): a malicious aggregator, tampering in transit,
//! replay, forgery, Sybil identities, duplicates. Every rejection names the sender and leaves
//! the state machine unchanged; no attack yields a wrong sum or both shares of one site.

use amalgam_proto::codec::{Decode, Encode};
use amalgam_proto::crypto::{kdf, sign};
use amalgam_proto::messages::*;
use amalgam_proto::params::{MinCohort, RoundParams, SiteId};
use amalgam_proto::phase::Phase;
use amalgam_proto::roles::{AggregatorStep, Snapshot};
use amalgam_proto::sim::{Direction, SimConfig};
use amalgam_proto::site::RoundLog;
use amalgam_proto::{Aggregator, Error, Misbehaviour, Sender};
use amalgam_tests::harness::{Answer, NOW, RecordedRound};
use ed25519_dalek::SigningKey;

fn params5() -> RoundParams {
    RoundParams::exact(5, 4, 12, 24).unwrap()
}

/// Complete graph, malicious aggregator, n sites, threshold t, c colluders tolerated, m = t,
/// f = n − t, 12-bit inputs, exact sums, d = 24.
fn params_c(n: u16, t: u16, c: u16) -> RoundParams {
    use amalgam_proto::params::*;
    RoundParams::new(ParamsRequest {
        sites: SiteCount::new(n).unwrap(),
        threshold: Threshold::new(t).unwrap(),
        min_cohort: MinCohort::new(t).unwrap(),
        input_bits: InputBits::new(12).unwrap(),
        sum_bits: SumBits::new(12 + 3).unwrap(),
        sum_mode: SumMode::Exact,
        vector_len: VectorLen::new(24).unwrap(),
        graph: NeighbourGraph::Complete,
        colluders: Colluders::new(c).unwrap(),
        dropouts: Dropouts::new(n - t),
        trust: AggregatorTrust::Malicious,
    })
    .unwrap()
}

fn record(params: RoundParams, round: u64) -> RecordedRound {
    RecordedRound::record(SimConfig::new(params, round, [0x11; 32]))
}

fn upload(r: &RecordedRound, phase: Phase, site: u16) -> &[u8] {
    &r.uploads(phase)
        .find(|e| e.site == SiteId(site))
        .unwrap()
        .bytes
}

fn download(r: &RecordedRound, phase: Phase, site: u16) -> &[u8] {
    &r.downloads(phase)
        .find(|e| e.site == SiteId(site))
        .unwrap()
        .bytes
}

fn peer_err(e: &Error) -> (Sender, Misbehaviour) {
    match e {
        Error::PeerMisbehaved { sender, kind } => (*sender, kind.clone()),
        Error::Aborted(inner) => peer_err(inner),
        other => panic!("expected a peer error, got {other:?}"),
    }
}

/// Survivor-set signature of `id` over `set`, as a compromised or deceived site would give.
fn sign_set(r: &RecordedRound, id: u16, session: &[u8; 32], set: &[SiteId]) -> [u8; 64] {
    sign::sign_survivors(r.consortium.identity(SiteId(id)), session, set)
}

#[test]
fn aggregator_cannot_obtain_both_shares_of_one_site() {
    // n = 5, t = 4 (c = 2), quorum Q = ⌊(5 + 2)/2⌋ + 1 = 4. The aggregator wants site 4's input: b_4 from sites told "4 survived" and
    // s_sk_4 from sites told "4 dropped". The consistency check stops it.
    let r = record(params5(), 1);
    let session = r
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    let all: Vec<SiteId> = (0..5).map(SiteId).collect();
    let without4: Vec<SiteId> = (0..4).map(SiteId).collect();
    let round = r.config.round;

    let mut b_shares_of_4 = 0;
    let mut s_shares_of_4 = 0;
    // Group A = {0, 1, 2} sees U3 = all and gets Q = 4 genuine signatures over it (A and 4).
    let req_a = UnmaskRequest {
        round,
        signatures: [0, 1, 2, 4]
            .map(|i| (SiteId(i), sign_set(&r, i, &session, &all)))
            .to_vec(),
    };
    for i in 0..3u16 {
        let mut site = r.site_at(SiteId(i), Phase::Unmasking).unwrap();
        let out = site.answer(ToSite::UnmaskRequest(req_a.clone())).unwrap();
        let ToAggregator::UnmaskShares(m) = out else {
            panic!()
        };
        b_shares_of_4 += m.b_shares.iter().filter(|(o, _)| *o == SiteId(4)).count();
        s_shares_of_4 += m.s_shares.iter().filter(|(o, _)| *o == SiteId(4)).count();
        // Asked again with "4 dropped": the site has answered and refuses anything more.
        let again = ToSite::SurvivorSet(SurvivorSet {
            round,
            survivors: without4.clone(),
        });
        let e = site.answer(again).unwrap_err();
        assert!(matches!(
            peer_err(&e),
            (Sender::Aggregator, Misbehaviour::WrongPhase { .. })
        ));
        // The same request again (a lost upload) gets the identical bytes, nothing new.
        let again = site.answer(ToSite::UnmaskRequest(req_a.clone())).unwrap();
        assert_eq!(again.to_bytes(), ToAggregator::UnmaskShares(m).to_bytes());
    } // Site 3 is shown U3' = {0,1,2,3}: it signs that set ...
    let mut site3 = r.site_at(SiteId(3), Phase::ConsistencyCheck).unwrap();
    let sig = site3
        .answer(ToSite::SurvivorSet(SurvivorSet {
            round,
            survivors: without4.clone(),
        }))
        .unwrap();
    assert!(matches!(sig, ToAggregator::ConsistencySignature(_)));
    // ... a second, different set is refused: a site signs one set per round.
    let e = site3
        .answer(ToSite::SurvivorSet(SurvivorSet {
            round,
            survivors: all.clone(),
        }))
        .unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (
            Sender::Aggregator,
            Misbehaviour::ConflictingRedelivery { .. }
        )
    ));
    // With only its own signature over U3' it lacks Q signatures: refused, nothing revealed.
    let own = UnmaskRequest {
        round,
        signatures: vec![(SiteId(3), sign_set(&r, 3, &session, &without4))],
    };
    let snap = site3.snapshot();
    let e = site3.answer(ToSite::UnmaskRequest(own)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotEnoughSites {
                phase: Phase::ConsistencyCheck,
                needed: 4,
                got: 1
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        site3.snapshot(),
        snap,
        "rejection leaves the site unchanged"
    );
    // Padding with group A's signatures (over the other set) is equivocation: site 3 aborts.
    let mut sigs = req_a.signatures.clone();
    sigs.push((SiteId(3), sign_set(&r, 3, &session, &without4)));
    let e = site3
        .answer(ToSite::UnmaskRequest(UnmaskRequest {
            round,
            signatures: sigs,
        }))
        .unwrap_err();
    assert!(
        matches!(
            peer_err(&e),
            (
                Sender::Aggregator,
                Misbehaviour::InconsistentSurvivors(SiteId(0))
            )
        ),
        "{e:?}"
    );
    assert_eq!(site3.phase(), Phase::Aborted);
    let e = site3
        .answer(ToSite::UnmaskRequest(req_a.clone()))
        .unwrap_err();
    assert!(matches!(e, Error::Aborted(_)));
    assert_eq!(b_shares_of_4, 3);
    assert_eq!(
        s_shares_of_4, 0,
        "no s_sk share of a site whose b was revealed"
    );
}

#[test]
fn equivocating_survivor_set_aborts_the_site() {
    let r = record(params5(), 1);
    let session = r
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    let all: Vec<SiteId> = (0..5).map(SiteId).collect();
    let other: Vec<SiteId> = vec![SiteId(0), SiteId(1), SiteId(2), SiteId(3)];
    let mut site = r.site_at(SiteId(0), Phase::Unmasking).unwrap();
    // Signatures 1 and 2 over the set site 0 signed, signature 3 over another set.
    let mut sigs: Vec<_> = (0..3)
        .map(|i| (SiteId(i), sign_set(&r, i, &session, &all)))
        .collect();
    sigs.push((SiteId(3), sign_set(&r, 3, &session, &other)));
    let e = site
        .answer(ToSite::UnmaskRequest(UnmaskRequest {
            round: 1,
            signatures: sigs,
        }))
        .unwrap_err();
    assert_eq!(
        peer_err(&e),
        (
            Sender::Aggregator,
            Misbehaviour::InconsistentSurvivors(SiteId(3))
        )
    );
    assert_eq!(site.phase(), Phase::Aborted);
    // The genuine request is refused too: the site aborted.
    let genuine = download(&r, Phase::Unmasking, 0).to_vec();
    assert!(matches!(
        site.answer_bytes(&genuine),
        Err(Error::Aborted(_))
    ));
}

#[test]
fn replay_from_another_round_is_rejected() {
    let r1 = record(params5(), 1);
    let r2 = record(params5(), 2);
    // Round-1 upload into the round-2 aggregator.
    let mut agg = r2.aggregator_at(Phase::AdvertiseKeys).unwrap();
    let e = agg
        .receive_bytes(SiteId(1), upload(&r1, Phase::AdvertiseKeys, 1))
        .unwrap_err();
    assert_eq!(
        peer_err(&e),
        (
            Sender::Site(SiteId(1)),
            Misbehaviour::WrongRound {
                expected: 2,
                got: 1
            }
        )
    );
    // Same, with the round field rewritten: the signature covers the round context.
    let mut m =
        AdvertiseKeys::from_bytes(upload(&r1, Phase::AdvertiseKeys, 1), &r1.config.params).unwrap();
    m.round = 2;
    let e = agg.receive(ToAggregator::AdvertiseKeys(m)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(1)), Misbehaviour::BadSignature)
    );
    // Later-phase replays too.
    let mut agg = r2.aggregator_at(Phase::MaskedInput).unwrap();
    let e = agg
        .receive_bytes(SiteId(3), upload(&r1, Phase::MaskedInput, 3))
        .unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (Sender::Site(SiteId(3)), Misbehaviour::WrongRound { .. })
    ));
    // A round-1 download into a round-2 site.
    let mut site = r2.site_at(SiteId(0), Phase::ShareKeys).unwrap();
    let e = site
        .answer_bytes(download(&r1, Phase::ShareKeys, 0))
        .unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (
            Sender::Aggregator,
            Misbehaviour::WrongRound {
                expected: 2,
                got: 1
            }
        )
    ));
    // And a round-1 advertisement smuggled into a round-2 broadcast.
    let mut bc =
        KeysBroadcast::from_bytes(download(&r2, Phase::ShareKeys, 0), &r2.config.params).unwrap();
    bc.adverts[1] =
        AdvertiseKeys::from_bytes(upload(&r1, Phase::AdvertiseKeys, 1), &r1.config.params).unwrap();
    bc.adverts[1].round = 2;
    let e = site.answer(ToSite::KeysBroadcast(bc)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(1)), Misbehaviour::BadSignature)
    );
}

#[test]
fn forged_signatures_are_rejected_and_name_the_sender() {
    let r = record(params5(), 1);
    let p = r.config.params;
    let mut agg = r.aggregator_at(Phase::AdvertiseKeys).unwrap();
    let before = agg.snapshot();
    // Site 1's advertisement signed by site 2.
    let mut m = AdvertiseKeys::from_bytes(upload(&r, Phase::AdvertiseKeys, 1), &p).unwrap();
    let ctx = kdf::masking_round_context(&r.consortium.manifest().digest(), &p, 1);
    m.signature = sign::sign_message(r.consortium.identity(SiteId(2)), &ctx, &m.body());
    let e = agg
        .receive(ToAggregator::AdvertiseKeys(m.clone()))
        .unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(1)), Misbehaviour::BadSignature)
    );
    // Unsigned (all-zero signature).
    m.signature = [0; 64];
    let e = agg.receive(ToAggregator::AdvertiseKeys(m)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(1)), Misbehaviour::BadSignature)
    );
    assert_eq!(
        agg.snapshot(),
        before,
        "rejections leave the aggregator unchanged"
    );
    // Tampered masked input (one bit of the payload).
    let mut agg = r.aggregator_at(Phase::MaskedInput).unwrap();
    let mut m = MaskedInput::from_bytes(upload(&r, Phase::MaskedInput, 2), &p).unwrap();
    m.packed[0] ^= 1;
    let e = agg.receive(ToAggregator::MaskedInput(m)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(2)), Misbehaviour::BadSignature)
    );
    // Tampered consistency signature.
    let mut agg = r.aggregator_at(Phase::ConsistencyCheck).unwrap();
    let mut b = upload(&r, Phase::ConsistencyCheck, 4).to_vec();
    let last = b.len() - 1;
    b[last] ^= 0x40;
    let e = agg.receive_bytes(SiteId(4), &b).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(4)), Misbehaviour::BadSignature)
    );
}

#[test]
fn unknown_identities_do_not_count() {
    let r = record(params5(), 1);
    let p = r.config.params;
    let mut agg = r.aggregator_at(Phase::AdvertiseKeys).unwrap();
    let ctx = kdf::masking_round_context(&r.consortium.manifest().digest(), &p, 1);
    let sybil = SigningKey::from_bytes(&[0x77; 32]);
    let mut m = AdvertiseKeys::from_bytes(upload(&r, Phase::AdvertiseKeys, 0), &p).unwrap();
    // An index outside the manifest.
    m.sender = SiteId(9);
    m.signature = sign::sign_message(&sybil, &ctx, &m.body());
    let e = agg
        .receive(ToAggregator::AdvertiseKeys(m.clone()))
        .unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::UnknownSite(9), Misbehaviour::UnknownIdentity)
    );
    // A manifest index, but a key outside the manifest.
    m.sender = SiteId(0);
    m.signature = sign::sign_message(&sybil, &ctx, &m.body());
    let e = agg.receive(ToAggregator::AdvertiseKeys(m)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(0)), Misbehaviour::BadSignature)
    );
    assert!(agg.responded().is_empty());
    // A site shown a broadcast with a Sybil advertisement refuses it.
    let mut site = r.site_at(SiteId(1), Phase::ShareKeys).unwrap();
    let mut bc = KeysBroadcast::from_bytes(download(&r, Phase::ShareKeys, 1), &p).unwrap();
    let mut fake = bc.adverts[4].clone();
    fake.sender = SiteId(7);
    bc.adverts.push(fake);
    let e = site.answer(ToSite::KeysBroadcast(bc)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::UnknownSite(7), Misbehaviour::UnknownIdentity)
    );
}

#[test]
fn duplicates_are_rejected_without_change() {
    let r = record(params5(), 1);
    for phase in [
        Phase::AdvertiseKeys,
        Phase::ShareKeys,
        Phase::MaskedInput,
        Phase::ConsistencyCheck,
        Phase::Unmasking,
    ] {
        let mut agg = r.aggregator_at(phase).unwrap();
        agg.receive_bytes(SiteId(2), upload(&r, phase, 2)).unwrap();
        let snap = agg.snapshot();
        let e = agg
            .receive_bytes(SiteId(2), upload(&r, phase, 2))
            .unwrap_err();
        assert_eq!(
            peer_err(&e),
            (Sender::Site(SiteId(2)), Misbehaviour::Duplicate),
            "{phase}"
        );
        assert_eq!(agg.snapshot(), snap);
    }
}

#[test]
fn wrong_phase_messages_are_rejected() {
    let r = record(params5(), 1);
    let mut agg = r.aggregator_at(Phase::ShareKeys).unwrap();
    let e = agg
        .receive_bytes(SiteId(0), upload(&r, Phase::MaskedInput, 0))
        .unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (
            Sender::Site(SiteId(0)),
            Misbehaviour::WrongPhase {
                phase: Phase::ShareKeys,
                ..
            }
        )
    ));
    let mut site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    let e = site
        .answer_bytes(download(&r, Phase::Unmasking, 0))
        .unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (Sender::Aggregator, Misbehaviour::WrongPhase { .. })
    ));
}

#[test]
fn flipped_bit_in_encrypted_share() {
    let r = record(params5(), 1);
    let p = r.config.params;
    let mut site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    let genuine = RoutedShares::from_bytes(download(&r, Phase::MaskedInput, 0), &p).unwrap();
    for (idx, bit) in [(0usize, 0usize), (1, 100), (3, 8 * 84 - 1)] {
        let mut bad = genuine.clone();
        bad.shares[idx].1[bit / 8] ^= 1 << (bit % 8);
        let snap = site.snapshot();
        let e = site.answer(ToSite::RoutedShares(bad)).unwrap_err();
        let sender = genuine.shares[idx].0;
        assert_eq!(
            peer_err(&e),
            (Sender::Site(sender), Misbehaviour::ShareAuthentication)
        );
        assert_eq!(site.snapshot(), snap, "state unchanged");
    }
    // A ciphertext meant for another site, relabelled: AAD binds the recipient.
    let other = RoutedShares::from_bytes(download(&r, Phase::MaskedInput, 1), &p).unwrap();
    let mut bad = genuine.clone();
    let from2 = other
        .shares
        .iter()
        .find(|(s, _)| *s == SiteId(2))
        .unwrap()
        .1;
    bad.shares
        .iter_mut()
        .find(|(s, _)| *s == SiteId(2))
        .unwrap()
        .1 = from2;
    let e = site.answer(ToSite::RoutedShares(bad)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Site(SiteId(2)), Misbehaviour::ShareAuthentication)
    );
    // The genuine message still works afterwards.
    assert!(site.answer(ToSite::RoutedShares(genuine)).is_ok());
}

fn harary_params() -> RoundParams {
    // Harary mode runs only under a curious aggregator; c = 1 needs t = 4 of k + 1 = 5.
    RoundParams::harary(10, 4, 4, 5, 1, 1, 10, 16).unwrap()
}

#[test]
fn share_addressed_to_a_non_neighbour() {
    let p = harary_params();
    let r = record(p, 1);
    assert!(r.output.is_ok());
    let session = r
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    // Site 0's neighbours are 1, 2, 8, 9. It (maliciously) adds a share for 5, properly signed.
    let mut agg = r.aggregator_at(Phase::ShareKeys).unwrap();
    let mut m = ShareKeys::from_bytes(upload(&r, Phase::ShareKeys, 0), &p).unwrap();
    let ct = m.shares[0].1;
    m.shares.insert(2, (SiteId(5), ct));
    m.signature = sign::sign_message(r.consortium.identity(SiteId(0)), &session, &m.body());
    let e = agg.receive(ToAggregator::ShareKeys(m)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (
            Sender::Site(SiteId(0)),
            Misbehaviour::NotNeighbour(SiteId(5))
        )
    );
    // A share for itself is not a neighbour either.
    let mut m = ShareKeys::from_bytes(upload(&r, Phase::ShareKeys, 3), &p).unwrap();
    m.shares.insert(1, (SiteId(3), ct));
    m.signature = sign::sign_message(r.consortium.identity(SiteId(3)), &session, &m.body());
    let e = agg.receive(ToAggregator::ShareKeys(m)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (
            Sender::Site(SiteId(3)),
            Misbehaviour::NotNeighbour(SiteId(3))
        )
    );
    // Site side: a routed share from a non-neighbour.
    let mut site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    let mut routed = RoutedShares::from_bytes(download(&r, Phase::MaskedInput, 0), &p).unwrap();
    routed.shares.insert(2, (SiteId(5), ct));
    let e = site.answer(ToSite::RoutedShares(routed)).unwrap_err();
    assert_eq!(
        peer_err(&e),
        (Sender::Aggregator, Misbehaviour::NotNeighbour(SiteId(5)))
    );
}

/// A bad share among t + 1 (robust unmasking): the round still finishes with the exact sum.
/// Nobody is named: at n = 5, t = 4, c = 2 the four agreeing shares are fewer than t + c, so
/// another polynomial with the same secret could explain the shares with c liars (spec §4.6).
#[test]
fn malicious_share_never_yields_a_wrong_sum() {
    let r = record(params5(), 1);
    let p = r.config.params;
    let session = r
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    let mut agg = r.aggregator_at(Phase::Unmasking).unwrap();
    // Site 0 reveals a corrupted b-share of site 1 (validly signed: site 0 is malicious).
    let mut m = UnmaskShares::from_bytes(upload(&r, Phase::Unmasking, 0), &p).unwrap();
    m.b_shares[1].1[0] ^= 0xff;
    m.signature = sign::sign_message(r.consortium.identity(SiteId(0)), &session, &m.body());
    agg.receive(ToAggregator::UnmaskShares(m)).unwrap();
    for i in 1..5 {
        agg.receive_bytes(SiteId(i), upload(&r, Phase::Unmasking, i))
            .unwrap();
    }
    let before = agg.snapshot();
    let out = match agg.close_phase().unwrap() {
        AggregatorStep::Finished(out) => out,
        AggregatorStep::Send(_) => panic!("unmasking must finish the round"),
    };
    assert_eq!(
        out.blamed,
        vec![],
        "not provable: neither the revealer nor the owner"
    );
    assert_eq!(out.sum, *r.output.as_ref().unwrap().sum);
    // With exactly t shares of site 1, one of them bad, nothing is recoverable: refused with
    // the owner and the count, nobody blamed, the phase still open.
    let mut agg = Aggregator::restore(&before, r.consortium.manifest()).unwrap();
    let mut agg_t = r.aggregator_at(Phase::Unmasking).unwrap();
    let mut bad = UnmaskShares::from_bytes(upload(&r, Phase::Unmasking, 0), &p).unwrap();
    bad.b_shares[1].1[0] ^= 0xff;
    bad.signature = sign::sign_message(r.consortium.identity(SiteId(0)), &session, &bad.body());
    agg_t.receive(ToAggregator::UnmaskShares(bad)).unwrap();
    for i in 1..4 {
        agg_t
            .receive_bytes(SiteId(i), upload(&r, Phase::Unmasking, i))
            .unwrap();
    }
    let snap_t = agg_t.snapshot();
    let e = agg_t.close_phase().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unrecoverable {
                owner: SiteId(1),
                revealed: 4
            }
        ),
        "{e:?}"
    );
    assert_eq!(agg_t.snapshot(), snap_t, "refused close changes nothing");
    // A late honest response makes it recoverable again.
    agg_t
        .receive_bytes(SiteId(4), upload(&r, Phase::Unmasking, 4))
        .unwrap();
    assert!(matches!(
        agg_t.close_phase().unwrap(),
        AggregatorStep::Finished(o) if o.blamed.is_empty()
    ));
    // The restored aggregator (bad response stored) re-derives the same outcome.
    assert!(matches!(
        agg.close_phase().unwrap(),
        AggregatorStep::Finished(o) if o.blamed.is_empty()
    ));
    // Revealing both shares of one site is refused by the aggregator's exact-set check.
    let mut agg = r.aggregator_at(Phase::Unmasking).unwrap();
    let mut m = UnmaskShares::from_bytes(upload(&r, Phase::Unmasking, 0), &p).unwrap();
    m.s_shares.push((SiteId(1), [0; 32]));
    m.signature = sign::sign_message(r.consortium.identity(SiteId(0)), &session, &m.body());
    let e = agg.receive(ToAggregator::UnmaskShares(m)).unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (Sender::Site(SiteId(0)), Misbehaviour::Invalid(_))
    ));
}

/// A revealer lying about every owner at once (and a second about one), n = 7, t = 5, c = 1:
/// the sum is exact, and the first is named (6 ≥ t + c shares agree for the other owners).
/// The second is not: for owner 6 only 5 shares agree, which does not prove the polynomial.
#[test]
fn revealers_lying_about_every_owner_are_named_where_provable() {
    let r = record(params_c(7, 5, 1), 1);
    let p = r.config.params;
    let session = r
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    let mut agg = r.aggregator_at(Phase::Unmasking).unwrap();
    for i in 0..7u16 {
        let mut m = UnmaskShares::from_bytes(upload(&r, Phase::Unmasking, i), &p).unwrap();
        if i == 1 {
            for (_, y) in &mut m.b_shares {
                y[31] ^= 0x80;
            }
        }
        if i == 5 {
            m.b_shares[6].1[0] ^= 1;
        }
        m.signature = sign::sign_message(r.consortium.identity(SiteId(i)), &session, &m.body());
        agg.receive(ToAggregator::UnmaskShares(m)).unwrap();
    }
    let AggregatorStep::Finished(out) = agg.close_phase().unwrap() else {
        panic!("unmasking must finish the round")
    };
    assert_eq!(out.blamed, vec![SiteId(1)]);
    assert_eq!(out.sum, r.output.as_ref().unwrap().sum);
}

/// The same for an s_sk share of a dropped site (n = 8, t = 5, c = 1, 7 revealers): the
/// pairwise masks are still removed, the sum is exact, and the revealer is named (6 = t + c
/// shares agree, which proves the dealt polynomial).
#[test]
fn bad_key_share_of_a_dropped_site_is_survived_and_blamed() {
    let r = RecordedRound::record(
        SimConfig::new(params_c(8, 5, 1), 1, [0x12; 32]).drop_site(7, Phase::MaskedInput),
    );
    let p = r.config.params;
    let session = r
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    let mut agg = r.aggregator_at(Phase::Unmasking).unwrap();
    let mut m = UnmaskShares::from_bytes(upload(&r, Phase::Unmasking, 2), &p).unwrap();
    assert_eq!(m.s_shares[0].0, SiteId(7));
    m.s_shares[0].1[7] ^= 0x21;
    m.signature = sign::sign_message(r.consortium.identity(SiteId(2)), &session, &m.body());
    agg.receive(ToAggregator::UnmaskShares(m)).unwrap();
    for i in [0u16, 1, 3, 4, 5, 6] {
        agg.receive_bytes(SiteId(i), upload(&r, Phase::Unmasking, i))
            .unwrap();
    }
    let AggregatorStep::Finished(out) = agg.close_phase().unwrap() else {
        panic!("unmasking must finish the round")
    };
    assert_eq!(out.blamed, vec![SiteId(2)]);
    assert_eq!(out.contributors.len(), 7);
    assert_eq!(out.sum, r.output.as_ref().unwrap().sum);
}

#[test]
fn minimum_cohort_is_enforced_by_sites_and_aggregator() {
    let mut req = RoundParams::exact(6, 4, 8, 8).unwrap().request();
    req.min_cohort = MinCohort::new(5).unwrap();
    let p = RoundParams::new(req).unwrap();
    let r = record(p, 1);
    // A malicious aggregator tries to isolate inputs: survivor set of 4 < min cohort 5.
    let mut site = r.site_at(SiteId(0), Phase::ConsistencyCheck).unwrap();
    let small = SurvivorSet {
        round: 1,
        survivors: (0..4).map(SiteId).collect(),
    };
    let e = site.answer(ToSite::SurvivorSet(small)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotEnoughSites {
                needed: 5,
                got: 4,
                ..
            }
        ),
        "{e:?}"
    );
    // The honest aggregator refuses to close the masked-input phase with 4 sites.
    let mut agg = r.aggregator_at(Phase::MaskedInput).unwrap();
    for i in 0..4 {
        agg.receive_bytes(SiteId(i), upload(&r, Phase::MaskedInput, i))
            .unwrap();
    }
    let snap = agg.snapshot();
    let e = agg.close_phase().unwrap_err();
    assert!(matches!(
        e,
        Error::NotEnoughSites {
            phase: Phase::MaskedInput,
            needed: 5,
            got: 4
        }
    ));
    assert_eq!(agg.snapshot(), snap, "a refused close changes nothing");
    // One more site answers (late): now it closes.
    agg.receive_bytes(SiteId(4), upload(&r, Phase::MaskedInput, 4))
        .unwrap();
    agg.close_phase().unwrap();
}

#[test]
fn a_site_refuses_a_survivor_set_without_itself_or_with_strangers() {
    let r = record(params5(), 1);
    let mut site = r.site_at(SiteId(0), Phase::ConsistencyCheck).unwrap();
    let e = site
        .answer(ToSite::SurvivorSet(SurvivorSet {
            round: 1,
            survivors: (1..5).map(SiteId).collect(),
        }))
        .unwrap_err();
    assert!(matches!(
        peer_err(&e),
        (Sender::Aggregator, Misbehaviour::Invalid(_))
    ));
    assert_eq!(site.phase(), Phase::MaskedInput, "unchanged");
    let genuine = download(&r, Phase::ConsistencyCheck, 0).to_vec();
    assert!(site.answer_bytes(&genuine).is_ok());
}

#[test]
fn transcript_directions_are_consistent() {
    let r = record(params5(), 1);
    assert!(
        r.transcript
            .iter()
            .any(|e| e.direction == Direction::ToSite)
    );
    for e in &r.transcript {
        let p = &r.config.params;
        match e.direction {
            Direction::ToAggregator => assert_eq!(
                ToAggregator::from_bytes(&e.bytes, p).unwrap().to_bytes(),
                e.bytes
            ),
            Direction::ToSite => {
                assert_eq!(ToSite::from_bytes(&e.bytes, p).unwrap().to_bytes(), e.bytes)
            }
        }
    }
}

#[test]
fn snapshots_are_untrusted_input() {
    // Every truncation and many single-bit flips of real snapshots, at every phase, must be
    // refused or restored without panicking; the intact snapshot restores to the same bytes.
    use amalgam_proto::{Aggregator, Site, SiteRestore};
    let r = record(params5(), 1);
    let ctx = SiteRestore {
        identity: r.consortium.identity(SiteId(1)).clone(),
        manifest: r.consortium.manifest().clone(),
    };
    for phase in [
        Phase::AdvertiseKeys,
        Phase::ShareKeys,
        Phase::MaskedInput,
        Phase::ConsistencyCheck,
        Phase::Unmasking,
    ] {
        let agg = r.aggregator_at(phase).unwrap().snapshot();
        let site = r.site_at(SiteId(1), phase).unwrap().snapshot().into_bytes();
        let restore = |b: &[u8]| Site::restore(b, &ctx, NOW, &mut RoundLog::new());
        assert_eq!(
            Aggregator::restore(&agg, r.consortium.manifest())
                .unwrap()
                .snapshot(),
            agg
        );
        assert_eq!(*restore(&site).unwrap().snapshot().into_bytes(), *site);
        for len in 0..agg.len() {
            assert!(Aggregator::restore(&agg[..len], r.consortium.manifest()).is_err());
        }
        for len in 0..site.len() {
            assert!(restore(&site[..len]).is_err());
        }
        for bit in (0..8 * agg.len()).step_by(37) {
            let mut b = agg.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let _ = Aggregator::restore(&b, r.consortium.manifest());
        }
        for bit in (0..8 * site.len()).step_by(13) {
            let mut b = site.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let _ = restore(&b);
        }
        let mut long = agg.clone();
        long.push(0);
        assert!(matches!(
            Aggregator::restore(&long, r.consortium.manifest()),
            Err(Error::Decode {
                sender: Sender::Local,
                ..
            })
        ));
    }
    // A snapshot restored with another site's identity is refused.
    let snap = r.site_at(SiteId(1), Phase::MaskedInput).unwrap().snapshot();
    let other = SiteRestore {
        identity: r.consortium.identity(SiteId(2)).clone(),
        manifest: r.consortium.manifest().clone(),
    };
    assert!(Site::restore(snap.bytes(), &other, NOW, &mut RoundLog::new()).is_err());
}

#[test]
fn aggregator_restarted_mid_phase_finishes_the_round() {
    use amalgam_proto::Aggregator;
    use amalgam_proto::roles::AggregatorStep;
    let r = RecordedRound::record(
        SimConfig::new(params5(), 4, [0x22; 32]).drop_site(3, Phase::Unmasking),
    );
    let want = r.output.as_ref().unwrap().clone();
    let mut agg = r.aggregator_at(Phase::AdvertiseKeys).unwrap();
    let mut out = None;
    for phase in [
        Phase::AdvertiseKeys,
        Phase::ShareKeys,
        Phase::MaskedInput,
        Phase::ConsistencyCheck,
        Phase::Unmasking,
    ] {
        for (k, env) in r.uploads(phase).enumerate() {
            agg.receive_bytes(env.site, &env.bytes).unwrap();
            if k == 1 {
                // The service persists after every accepted message; the process restarts.
                let snap = agg.snapshot();
                agg = Aggregator::restore(&snap, r.consortium.manifest()).unwrap();
                // The restored aggregator still refuses the duplicate.
                let e = agg.receive_bytes(env.site, &env.bytes).unwrap_err();
                assert_eq!(peer_err(&e).1, Misbehaviour::Duplicate);
            }
        }
        if let AggregatorStep::Finished(o) = agg.close_phase().unwrap() {
            out = Some(o);
        }
    }
    assert_eq!(out.unwrap(), want);
    assert!(
        want.contributors.contains(&SiteId(3)),
        "a site dropping before unmasking still counts"
    );
}
