//! Whole rounds through the `amalgam` binary: one `amalgam serve` and five
//! `amalgam site run --synthetic-trainer` processes over real mutually authenticated HTTPS.
//! The published sum equals the plaintext sum of the contributors' encoded updates, with no
//! dropout and with two of six sites killed after ShareKeys (their masks are removed in Unmasking).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::world::{World, expect_completed};
use harness::{check_round, world::STEP};

/// Phase length (seconds) when a phase must close on its deadline.
const SHORT: u64 = 15;

#[test]
fn five_sites_complete_a_round_and_the_sum_is_the_plaintext_sum() {
    let w = World::new(301, 5, None);
    let s = w.serve("127.0.0.1:0", 60, None);
    let mut sites = w.sites(&s.url, |_| None);
    for p in &mut sites {
        expect_completed(p);
    }
    check_round(&w, s, &[0, 1, 2, 3, 4], 25, 60);
}

#[test]
fn two_of_six_sites_drop_out_after_share_keys_and_the_sum_is_the_survivors() {
    // Two dropouts need six sites: the protocol refuses parameters tolerating no colluder,
    // and c + 2f < n with c = 1, f = 2 needs n >= 6 (threshold 4). MaskedInput closes on its
    // deadline without the two: phases are short, yet long enough for six processes to start
    // and advertise their keys on a loaded machine.
    let w = World::new(302, 6, Some(4));
    let s = w.serve("127.0.0.1:0", SHORT, None);
    let mut sites = w.sites(&s.url, |i| {
        (i >= 4).then(|| "after-send-share-keys:1".into())
    });
    for p in &mut sites[4..] {
        assert_eq!(
            p.expect_line("FAULT ", STEP),
            "FAULT after-send-share-keys 1"
        );
        p.kill();
    }
    for p in &mut sites[..4] {
        expect_completed(p);
    }
    // Survivors: 5 uploads each; the dropouts' AdvertiseKeys and ShareKeys.
    check_round(&w, s, &[0, 1, 2, 3], 4 * 5 + 2 * 2, SHORT);
}
