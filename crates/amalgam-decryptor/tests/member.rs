//! The member's persistence rules without a network: one statement per round across
//! restarts, the identical signature re-sent, a second statement refused, the database locked
//! and durable, seeds shredded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The fallback fixture (consortium, committee, in-process aggregator over HTTPS) is the
// aggregator tests' own, shared rather than copied.
#[path = "../../amalgam-server/tests/fb/mod.rs"]
mod common;

use amalgam_decryptor::{DecryptorError, Member};
use amalgam_he::{CohortStatement, SignedUpload, UploadView};
use amalgam_proto::codec::{Decode, Encode};
use common::*;

fn uploads(fx: &Fixture) -> Vec<SignedUpload> {
    let setup = fx.setup(ROUND);
    let xs = inputs();
    (0..SITES)
        .map(|i| SignedUpload::from_bytes(&site_upload(fx, ROUND, i, &xs[i]), &setup).unwrap())
        .collect()
}

fn statement(fx: &Fixture, ups: &[SignedUpload], sites: &[usize]) -> CohortStatement {
    let ctx = *fx.setup(ROUND).context();
    CohortStatement {
        members: sites
            .iter()
            .map(|&i| (ups[i].header.site, ups[i].digest(&ctx)))
            .collect(),
    }
}

#[test]
fn a_restart_after_persisting_resends_the_identical_signature_and_never_signs_a_second() {
    let fx = Fixture::new(true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decryptor.db");
    let ups = uploads(&fx);
    let views: Vec<UploadView> = ups.iter().map(|u| u.view_for(1).unwrap()).collect();
    let all = statement(&fx, &ups, &[0, 1, 2, 3, 4]);
    let without_4 = statement(&fx, &ups, &[0, 1, 2, 3]);
    let (a, b) = fx.members[1];
    let setup = fx.setup(ROUND);

    let mut m = Member::open(&db, 1, a, b).unwrap();
    assert_eq!(m.durability().unwrap().synchronous, 2, "synchronous=FULL");
    // A second process on the same database is refused by the lock.
    assert!(Member::open(&db, 1, a, b).is_err());
    let first = m.sign(&setup, &views, &all).unwrap().signature;
    // The statement is on disk before the signature is handed out.
    assert_eq!(m.recorded(ROUND).unwrap(), Some(all.to_bytes()));
    drop(m);

    // "Crash" between persisting and sending: the restarted member re-sends the same bytes.
    let mut m = Member::open(&db, 1, a, b).unwrap();
    let again = m.sign(&setup, &views, &all).unwrap().signature;
    assert_eq!(again, first);
    // The attacker's best move: ask for S \ {v} (their key sums differ by k_v).
    let e = m.sign(&setup, &views, &without_4).unwrap_err();
    assert!(
        matches!(e, DecryptorError::SecondStatement { round } if round == ROUND),
        "{e}"
    );
    drop(m);
    // Still refused after another restart.
    let mut m = Member::open(&db, 1, a, b).unwrap();
    assert!(matches!(
        m.sign(&setup, &views, &without_4),
        Err(DecryptorError::SecondStatement { .. })
    ));
    // Shredding deletes the round's key; the recorded statement stays.
    assert!(!m.is_shredded(ROUND));
    m.shred(ROUND).unwrap();
    assert!(m.is_shredded(ROUND));
    assert_eq!(m.recorded(ROUND).unwrap(), Some(all.to_bytes()));
}

#[test]
fn a_statement_naming_an_unadmitted_or_tampered_upload_is_refused_and_not_recorded() {
    let fx = Fixture::new(true);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decryptor.db");
    let ups = uploads(&fx);
    let (a, b) = fx.members[0];
    let setup = fx.setup(ROUND);
    let mut m = Member::open(&db, 0, a, b).unwrap();
    // The relay withheld site 4's view but the statement names it.
    let views: Vec<UploadView> = ups[..4].iter().map(|u| u.view_for(0).unwrap()).collect();
    let all = statement(&fx, &ups, &[0, 1, 2, 3, 4]);
    assert!(matches!(
        m.sign(&setup, &views, &all),
        Err(DecryptorError::Protocol(_))
    ));
    // A view whose ciphertext digest was altered does not verify: it is not admitted.
    let mut forged = ups[3].view_for(0).unwrap();
    forged.bodies_digest[0] ^= 1;
    let views: Vec<UploadView> = ups[..3]
        .iter()
        .map(|u| u.view_for(0).unwrap())
        .chain([forged])
        .collect();
    let four = statement(&fx, &ups, &[0, 1, 2, 3]);
    assert!(m.sign(&setup, &views, &four).is_err());
    assert_eq!(
        m.recorded(ROUND).unwrap(),
        None,
        "nothing recorded on refusal"
    );
    // The honest statement is still signable.
    let three = statement(&fx, &ups, &[0, 1, 2]);
    m.sign(&setup, &views, &three).unwrap();
}

/// The aggregator asks a member to sign for a masking round id (below 2^32): the member
/// refuses on its own, and nothing is recorded for that id.
#[test]
fn a_masking_round_id_is_never_signed_whatever_the_aggregator_asks() {
    let fx = Fixture::new(true);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = fx.members[1];
    let mut m = Member::open(&dir.path().join("d.db"), 1, a, b).unwrap();
    let masking = ROUND - amalgam_net::fallback_api::FALLBACK_ROUND_BASE;
    let setup = fx.setup(masking);
    let e = m
        .sign(&setup, &[], &CohortStatement { members: vec![] })
        .unwrap_err();
    assert!(
        matches!(e, DecryptorError::NotAFallbackRound { round } if round == masking),
        "{e}"
    );
    assert_eq!(m.recorded(masking).unwrap(), None);
}
