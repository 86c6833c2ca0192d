//! The SecAgg+ breaks of the review, replayed against the real state machines (spec §6.1):
//! each now fails to attack.

use std::collections::BTreeSet;

use amalgam_proto::cohort;
use amalgam_proto::messages::{SurvivorSet, ToSite, UnmaskRequest};
use amalgam_proto::params::{AggregatorTrust, RoundParams, SiteId};
use amalgam_proto::phase::Phase;
use amalgam_proto::sim::SimConfig;
use amalgam_proto::{Error, ParamError};
use amalgam_tests::harness::{NOW, RecordedRound};

/// Break 1 (two survivor views in Harary mode) and the malicious half of break 2 (padding U3
/// with nobody's neighbours): Harary mode is refused against a malicious aggregator at
/// parameter time, for every (n, k) the review's search hit and every threshold.
#[test]
fn harary_views_under_a_malicious_aggregator_are_refused_at_parameter_time() {
    for (n, k) in [(12, 4), (10, 4), (14, 6), (20, 4), (20, 8)] {
        for t in 1..=k + 1 {
            for c in 1..k {
                let Ok(curious) = RoundParams::harary(n, k, t, t.max(c + 2), c, k + 1 - t, 8, 4)
                else {
                    continue;
                };
                let mut req = curious.request();
                req.trust = AggregatorTrust::Malicious;
                assert_eq!(
                    RoundParams::new(req),
                    Err(ParamError::HararyNeedsCuriousAggregator { k })
                );
            }
        }
    }
}

/// Break 2, curious half: natural dropouts plus colluders (invisible vertices) cut the ring.
/// Find a dropout pattern that every neighbourhood rule accepts but that leaves the survivors'
/// graph cuttable by c sites; the honest aggregator refuses to close, and a site shown that set
/// refuses to sign it, state unchanged.
#[test]
fn ring_cut_by_dropouts_and_colluders_is_refused_by_aggregator_and_sites() {
    // Search the curious Harary sets for n <= 12 for dropouts (at most f) that every
    // neighbourhood rule accepts but that leave a cut of at most c sites.
    let mut found = None;
    'search: for n in 6..=12u16 {
        for k in (2..=n - 2).step_by(2) {
            for c in 1..k {
                for t in 1..=k + 1 {
                    let m = t.max(c + 2);
                    let Ok(p) = RoundParams::harary(n, k, t, m, c, k + 1 - t, 8, 4) else {
                        continue;
                    };
                    let all: Vec<SiteId> = (0..n).map(SiteId).collect();
                    for a in 0..n {
                        for b in a..n {
                            for d in b..n {
                                let out = [a, b, d];
                                let u3: Vec<SiteId> = all
                                    .iter()
                                    .copied()
                                    .filter(|v| !out.contains(&v.0))
                                    .collect();
                                let closed = |u: SiteId| {
                                    u3.iter()
                                        .filter(|&&v| v == u || p.are_neighbours(u, v))
                                        .count()
                                };
                                if u3.len() >= usize::from(p.min_cohort().get())
                                    && u3.iter().all(|&u| closed(u) >= p.t())
                                    && cohort::check_connectivity(&p, &u3).is_err()
                                {
                                    found = Some((p, out, u3));
                                    break 'search;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let (p, out, u3) = found.expect("a ring cut that only the connectivity rule catches");
    let mut config = SimConfig::new(p, 1, [0x21; 32]);
    for site in out {
        config = config.drop_site(site, Phase::MaskedInput);
    }
    let r = RecordedRound::record(config);
    assert!(
        matches!(r.output, Err(Error::CohortDisconnected { .. })),
        "{:?}",
        r.output
    );
    // A site shown the cut set refuses to sign it (so it never reveals), state unchanged.
    let mut site = r.site_at(u3[0], Phase::ConsistencyCheck).unwrap();
    let before = site.snapshot();
    let e = site
        .handle(
            ToSite::SurvivorSet(SurvivorSet {
                round: 1,
                survivors: u3.clone(),
            }),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(e, Error::CohortDisconnected { .. }), "{e:?}");
    assert_eq!(site.snapshot(), before);
}

/// Routing trimmed into a band, and U3 padded with sites whose shares were never routed: a
/// site refuses any survivor set naming a neighbour outside its mask set (complete graph).
#[test]
fn survivor_sets_beyond_the_routed_mask_set_are_refused() {
    let p = RoundParams::exact(8, 6, 8, 4).unwrap(); // c = 3, f = 2
    let u1: BTreeSet<u16> = (0..8).collect();
    // Site 0 was routed only the band {1, 2, 3, 4, 5} (t - 1 = 5 shares: it accepts).
    let band: BTreeSet<u16> = (1..6).collect();
    assert!(cohort::check_mask_set(&p, band.len()).is_ok());
    let set = |v: &[u16]| v.iter().copied().map(SiteId).collect::<Vec<_>>();
    let check = |s: &[SiteId]| {
        cohort::check_survivor_set(
            &p,
            SiteId(0),
            |v| u1.contains(&v.0),
            |v| v.0 == 0 || band.contains(&v.0),
            s,
        )
    };
    // Padding the band with 6 and 7 (never masked with site 0): refused.
    assert!(matches!(
        check(&set(&[0, 1, 2, 3, 4, 5, 6, 7])),
        Err(Error::PeerMisbehaved { .. })
    ));
    // The band itself is a cohort of 6 >= m: accepted; its sum is the round's output.
    assert!(check(&set(&[0, 1, 2, 3, 4, 5])).is_ok());
}

/// Unmask requests that show different signer subsets: below the quorum Q (or with fewer
/// than t signers in the site's neighbourhood) nothing is revealed and nothing changes.
#[test]
fn unmask_requests_below_the_quorum_reveal_nothing() {
    let p = RoundParams::exact(7, 5, 8, 4).unwrap(); // c = 2, Q = floor((7 + 2)/2) + 1 = 5
    assert_eq!(p.quorum(7), 5);
    let r = RecordedRound::record(SimConfig::new(p, 1, [0x22; 32]));
    let genuine = r
        .downloads(Phase::Unmasking)
        .find(|e| e.site == SiteId(0))
        .unwrap()
        .bytes
        .clone();
    let ToSite::UnmaskRequest(full) =
        <ToSite as amalgam_proto::codec::Decode>::from_bytes(&genuine, &p).unwrap()
    else {
        panic!("not an unmask request")
    };
    let mut site = r.site_at(SiteId(0), Phase::Unmasking).unwrap();
    let before = site.snapshot();
    for keep in 1..5 {
        let subset = UnmaskRequest {
            round: full.round,
            signatures: full.signatures[..keep].to_vec(),
        };
        let e = site.handle(ToSite::UnmaskRequest(subset), NOW).unwrap_err();
        assert!(
            matches!(e, Error::NotEnoughSites { phase: Phase::ConsistencyCheck, needed: 5, got } if got == keep),
            "{e:?}"
        );
        assert_eq!(site.snapshot(), before);
    }
    assert!(site.handle(ToSite::UnmaskRequest(full), NOW).is_ok());
}
