//! Crate-internal end-to-end tests of the state machines through the simulator.

use crate::error::Error;
use crate::params::{RoundParams, SiteId};
use crate::phase::Phase;
use crate::sim::{self, SimConfig};

fn check(cfg: SimConfig) -> sim::SimReport {
    let params = cfg.params;
    let inputs = cfg.inputs.clone();
    let report = sim::run(cfg).unwrap();
    assert!(report.sum_is_exact(&params, &inputs), "{report:?}");
    report
}

#[test]
fn honest_round_no_dropouts() {
    let p = RoundParams::exact(5, 4, 16, 100).unwrap();
    let r = check(SimConfig::new(p, 1, [1; 32]));
    let out = r.output.unwrap();
    assert_eq!(out.contributors.len(), 5);
    assert!(r.site_errors.is_empty() && r.aggregator_errors.is_empty());
}

#[test]
fn dropouts_in_every_phase() {
    let p = RoundParams::exact(10, 6, 12, 50).unwrap();
    let cfg = SimConfig::new(p, 7, [2; 32])
        .drop_site(0, Phase::AdvertiseKeys)
        .drop_site(3, Phase::ShareKeys)
        .drop_site(5, Phase::MaskedInput)
        .drop_site(7, Phase::ConsistencyCheck);
    let r = check(cfg);
    let out = r.output.unwrap();
    assert_eq!(out.contributors, [1, 2, 4, 6, 7, 8, 9].map(SiteId).to_vec());
}

#[test]
fn dropout_before_unmasking_still_sums_its_input() {
    let p = RoundParams::exact(7, 5, 8, 33).unwrap();
    let r = check(
        SimConfig::new(p, 2, [3; 32])
            .drop_site(2, Phase::Unmasking)
            .drop_site(4, Phase::Unmasking),
    );
    assert_eq!(r.output.unwrap().contributors.len(), 7);
}

#[test]
fn too_few_survivors_gives_needed_got() {
    let p = RoundParams::exact(5, 4, 8, 10).unwrap();
    let r = sim::run(
        SimConfig::new(p, 2, [4; 32])
            .drop_site(0, Phase::MaskedInput)
            .drop_site(1, Phase::MaskedInput),
    )
    .unwrap();
    assert!(
        matches!(
            r.output,
            Err(Error::NotEnoughSites {
                needed: 4,
                got: 3,
                ..
            })
        ),
        "{:?}",
        r.output
    );
    let r = sim::run(
        SimConfig::new(p, 2, [4; 32])
            .drop_site(0, Phase::Unmasking)
            .drop_site(1, Phase::Unmasking)
            .drop_site(2, Phase::Unmasking),
    )
    .unwrap();
    assert!(
        matches!(
            r.output,
            Err(Error::NotEnoughSites {
                phase: Phase::Unmasking,
                needed: 4,
                got: 2
            })
        ),
        "{:?}",
        r.output
    );
}

#[test]
fn modular_and_wide_sums() {
    check(
        SimConfig::new(RoundParams::modular(4, 3, 20, 77).unwrap(), 1, [5; 32])
            .drop_site(1, Phase::MaskedInput),
    );
    check(
        SimConfig::new(RoundParams::exact(4, 3, 40, 77).unwrap(), 1, [6; 32])
            .drop_site(1, Phase::MaskedInput),
    );
    check(SimConfig::new(
        RoundParams::modular(3, 3, 64, 9).unwrap(),
        1,
        [7; 32],
    ));
}

#[test]
fn harary_graph_with_dropouts() {
    // Curious aggregator (Harary is refused against a malicious one), c = 1, f = 1.
    let p = RoundParams::harary(12, 4, 4, 6, 1, 1, 10, 40).unwrap();
    let r = check(
        SimConfig::new(p, 3, [8; 32])
            .drop_site(0, Phase::MaskedInput)
            .drop_site(6, Phase::ConsistencyCheck),
    );
    assert_eq!(r.output.unwrap().contributors.len(), 11);
}

#[test]
fn snapshot_restore_between_every_phase() {
    let p = RoundParams::exact(6, 4, 16, 300).unwrap();
    let mut cfg = SimConfig::new(p, 9, [9; 32])
        .drop_site(1, Phase::MaskedInput)
        .drop_site(2, Phase::Unmasking);
    cfg.snapshot_between_phases = true;
    let r = check(cfg);
    assert_eq!(r.output.unwrap().contributors.len(), 5);
}
