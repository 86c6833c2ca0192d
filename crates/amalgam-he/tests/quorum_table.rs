//! The two-active-sets attack searched exhaustively over every row of the spec's committee
//! table (he-fallback.md §2): the aggregator shows S to some honest members and S ∖ {v} to
//! others, every corrupt member signs both and releases whatever it holds for both. A cohort
//! is opened when the members releasing for it hold every piece. With c_d corrupt members no
//! assignment opens both; with c_d + 1 some assignment does (the search can fail).

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use amalgam_he::*;
use common::*;

/// (c, t_c, Q, c_d) of every row of he-fallback.md §2.
const ROWS: [(usize, usize, usize, usize); 7] = [
    (1, 1, 1, 0),
    (3, 2, 3, 1),
    (4, 2, 3, 1),
    (5, 3, 4, 2),
    (5, 2, 4, 1),
    (7, 4, 6, 3),
    (7, 3, 5, 2),
];

fn subsets(c: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..1 << c)
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..c).filter(|i| m >> i & 1 == 1).collect())
        .collect()
}

/// Whether some split of the honest members opens both cohorts, with `corrupt` members
/// signing and releasing for both.
fn some_split_opens_both(c: usize, t: usize, q: usize, cd: usize, corrupt_count: usize) -> bool {
    let mut w = world(
        &Shape {
            sites: 4,
            min_cohort: 2,
            c,
            t,
            q,
            corrupt: cd,
            d: 64,
        },
        40 + c as u64,
    );
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..3 {
        let u = w.upload(s);
        agg.receive(&u).unwrap();
    }
    let s = agg.close().unwrap();
    let mut smaller = s.clone();
    smaller.members.remove(2);
    // One instance per member per statement, each with its own record (a modelling device:
    // an honest member is shown one statement and only that instance's output is used).
    let mut on_s = w.fresh_decryptors();
    let mut on_small = w.fresh_decryptors();
    forward(&agg, &mut on_s);
    forward(&agg, &mut on_small);
    let sig_s = sign_all(&mut on_s, &(0..c).collect::<Vec<_>>(), &s);
    let sig_small = sign_all(&mut on_small, &(0..c).collect::<Vec<_>>(), &smaller);
    let committee = w.setup.committee().clone();
    let covers = |releasing: &[usize]| {
        (0..committee.pieces()).all(|p| releasing.iter().any(|&m| committee.holds(m, p)))
    };
    for corrupt in subsets(c, corrupt_count) {
        let honest: Vec<usize> = (0..c).filter(|m| !corrupt.contains(m)).collect();
        for assignment in 0..3u32.pow(honest.len() as u32) {
            let side = |i: usize| assignment / 3u32.pow(i as u32) % 3;
            let mut signed_s: Vec<StatementSignature> =
                corrupt.iter().map(|&m| sig_s[m].clone()).collect();
            let mut signed_small: Vec<StatementSignature> =
                corrupt.iter().map(|&m| sig_small[m].clone()).collect();
            let mut shown_s = Vec::new();
            let mut shown_small = Vec::new();
            for (i, &m) in honest.iter().enumerate() {
                match side(i) {
                    0 => {
                        signed_s.push(sig_s[m].clone());
                        shown_s.push(m);
                    }
                    1 => {
                        signed_small.push(sig_small[m].clone());
                        shown_small.push(m);
                    }
                    _ => {}
                }
            }
            // The honest members shown a statement release for it only past the quorum check.
            let mut open_s = corrupt.clone();
            if let Some(&m) = shown_s.first()
                && on_s[m].release(&s, &signed_s).is_ok()
            {
                open_s.extend(&shown_s);
            }
            let mut open_small = corrupt.clone();
            if let Some(&m) = shown_small.first()
                && on_small[m].release(&smaller, &signed_small).is_ok()
            {
                open_small.extend(&shown_small);
            }
            if covers(&open_s) && covers(&open_small) {
                return true;
            }
        }
    }
    false
}

#[test]
fn no_row_of_the_table_opens_two_cohorts_with_c_d_corrupt_members() {
    for (c, t, q, cd) in ROWS {
        assert!(
            !some_split_opens_both(c, t, q, cd, cd),
            "(c, t_c, Q, c_d) = ({c}, {t}, {q}, {cd}): two cohorts opened"
        );
    }
}

#[test]
fn one_more_corrupt_member_than_the_row_allows_opens_two_cohorts() {
    for (c, t, q, cd) in ROWS {
        assert!(
            some_split_opens_both(c, t, q, cd, cd + 1),
            "(c, t_c, Q, c_d + 1) = ({c}, {t}, {q}, {}): the search found no break",
            cd + 1
        );
    }
}
