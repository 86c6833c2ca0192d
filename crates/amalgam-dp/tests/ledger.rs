//! Budget enforcement, persistence, crash recovery and tamper detection of the ε ledger.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use amalgam_dp::ledger::audit::{AuditReport, Finding, audit_bytes, audit_file, entry_hash};
use amalgam_dp::ledger::entry::{Decision, EntryBody, EntryKind, EpsilonTotal};
use amalgam_dp::ledger::store::{MAGIC, parse};
use amalgam_dp::ledger::{BudgetPolicy, Ledger, LedgerError, RoundRequest};
use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma, SiteCount,
};
use amalgam_dp::sampler::SamplerKind;
use ed25519_dalek::{SigningKey, VerifyingKey};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn policy(cap: f64) -> BudgetPolicy {
    BudgetPolicy::site_level(Epsilon::new(cap).unwrap(), Delta::new(1e-6).unwrap()).unwrap()
}

/// A round whose ρ is about 0.005 (Δ ≈ γ·C + small, σ_tot = 10·Δ).
fn request(round_id: u64) -> RoundRequest {
    RoundRequest {
        round_id,
        manifest_digest: [0x11; 32],
        round_context: [round_id as u8; 32],
        min_cohort: SiteCount::new(4).unwrap(),
        colluders: 0,
        n_cohort: SiteCount::new(5).unwrap(),
        clip: ClipNorm::new(1.0).unwrap(),
        gamma: Gamma::new(1000.0).unwrap(),
        bits: BitWidth::new(24).unwrap(),
        local_sigma: Sigma::new(5.0).unwrap(),
        dim: Dimension::new(1000).unwrap(),
        beta: RoundingBias::recommended(),
        sampler: SamplerKind::Fast,
    }
}

fn open(path: &Path, cap: f64) -> Ledger {
    Ledger::open(path, key(), policy(cap)).unwrap().0
}

fn ledger_with_rounds(path: &Path, rounds: u64) {
    let mut ledger = open(path, 100.0);
    for r in 0..rounds {
        common::authorize_in_epoch(&mut ledger, request(r)).unwrap();
    }
}

/// An audit that found nothing but the missing anchor.
fn clean_unanchored(report: &AuditReport) -> bool {
    report.findings == vec![Finding::Unanchored]
}

fn audit_unanchored(path: &Path, vk: &VerifyingKey) -> AuditReport {
    audit_file(path, vk, &[]).unwrap()
}

#[test]
fn rounds_are_refused_before_the_cap_is_crossed_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let mut ledger = open(&path, 2.0);
    let mut accepted = 0;
    let err = loop {
        match common::authorize_in_epoch(&mut ledger, request(accepted)) {
            Ok(permit) => {
                assert!(permit.epsilon_total().get() <= 2.0);
                accepted += 1;
            }
            Err(e) => break e,
        }
    };
    let LedgerError::BudgetExceeded {
        cap,
        spent,
        requested,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(cap, 2.0);
    assert!(spent <= 2.0 && requested > 2.0 && requested > spent);
    assert!((ledger.spent().unwrap().get() - spent).abs() < 1e-12);
    let anchor = ledger.anchor();
    // The refusal spent nothing and was recorded; the same round is refused again.
    assert!(matches!(
        common::authorize_in_epoch(&mut ledger, request(accepted)),
        Err(LedgerError::BudgetExceeded { .. })
    ));
    assert!(matches!(
        common::authorize_in_epoch(&mut ledger, request(0)),
        Err(LedgerError::RoundAlreadyAccepted(0))
    ));
    drop(ledger);
    let report = audit_file(&path, &key().verifying_key(), &[anchor]).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!((report.accepted, report.refused), (accepted as usize, 2));
    assert!((report.epsilon_total - spent).abs() < 1e-9);
    assert!(accepted > 5);
}

#[test]
fn totals_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    ledger_with_rounds(&path, 3);
    let (mut ledger, report) = Ledger::open(&path, key(), policy(100.0)).unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(report.torn_bytes, None);
    let before = ledger.spent().unwrap().get();
    assert!(before > 0.0);
    assert!(matches!(
        common::authorize_in_epoch(&mut ledger, request(2)),
        Err(LedgerError::RoundAlreadyAccepted(2))
    ));
    common::authorize_in_epoch(&mut ledger, request(3)).unwrap();
    assert!(ledger.spent().unwrap().get() > before);
    // Another site's key cannot open (or extend) this ledger.
    drop(ledger);
    let other = SigningKey::from_bytes(&[8; 32]);
    assert!(matches!(
        Ledger::open(&path, other, policy(100.0)),
        Err(LedgerError::WrongKey)
    ));
}

#[test]
fn truncation_at_every_offset_of_the_last_record_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    ledger_with_rounds(&path, 3);
    let full = std::fs::read(&path).unwrap();
    let parsed = parse(&full).unwrap();
    let last_len = 4 + parsed.payloads[4].len() + 32;
    let last_start = full.len() - last_len;
    for cut in last_start..full.len() {
        let torn = dir.path().join(format!("torn-{cut}"));
        std::fs::write(&torn, &full[..cut]).unwrap();
        let (mut ledger, report) = Ledger::open(&torn, key(), policy(100.0)).unwrap();
        let expected_torn = (cut - last_start) as u64;
        assert_eq!(
            report.torn_bytes,
            (expected_torn > 0).then_some(expected_torn)
        );
        // The cut is itself recorded: a recovery entry replaces the torn bytes.
        assert_eq!(
            report.entries,
            if expected_torn > 0 { 5 } else { 4 },
            "cut {cut}"
        );
        // The lost round can be authorized again and the ledger verifies, listing the
        // recovery (sampled: each authorization fsyncs).
        if (cut - last_start).is_multiple_of(16) || cut + 1 == full.len() {
            common::authorize_in_epoch(&mut ledger, request(2)).unwrap();
            drop(ledger);
            let report = audit_unanchored(&torn, &key().verifying_key());
            assert!(clean_unanchored(&report), "{:?}", report.findings);
            // The epoch, and the recovery when bytes were cut.
            assert_eq!(
                report.events.len(),
                1 + usize::from(expected_torn > 0),
                "{:?}",
                report.events
            );
        }
    }
    // A crash while creating the file leaves a prefix of the magic.
    let fresh = dir.path().join("fresh");
    std::fs::write(&fresh, &MAGIC[..3]).unwrap();
    let (_, report) = Ledger::open(&fresh, key(), policy(1.0)).unwrap();
    // Genesis, then the recorded recovery of the 3 torn bytes.
    assert_eq!((report.entries, report.torn_bytes), (2, Some(3)));
}

/// Applies `edit` to the charge in `body`.
fn edit_charge(body: &mut EntryBody, edit: impl FnOnce(&mut amalgam_dp::ledger::entry::Charge)) {
    match &mut body.kind {
        EntryKind::Charge(c) => edit(c),
        other => panic!("not a charge: {other:?}"),
    }
}

fn findings(bytes: &[u8], vk: &VerifyingKey) -> Vec<Finding> {
    audit_bytes(bytes, vk, &[]).unwrap().findings
}

#[test]
fn audit_detects_edited_deleted_reordered_and_foreign_signed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    ledger_with_rounds(&path, 4);
    let vk = key().verifying_key();
    let payloads = parse(&std::fs::read(&path).unwrap()).unwrap().payloads;
    assert!(clean_unanchored(
        &audit_bytes(&common::reframe(&payloads), &vk, &[]).unwrap()
    ));

    // Edited: σ raised in entry 2 (the first charge, after the epoch) without re-signing.
    let mut edited = payloads.clone();
    let mut b = common::body(&edited[2]);
    edit_charge(&mut b, |c| {
        c.request.local_sigma = Sigma::new(50.0).unwrap()
    });
    let sig = edited[2][edited[2].len() - 64..].to_vec();
    edited[2] = [b.to_bytes(), sig].concat();
    let f = findings(&common::reframe(&edited), &vk);
    assert!(f.contains(&Finding::BadSignature { index: 2 }), "{f:?}");

    // Deleted: entry 2 removed.
    let mut deleted = payloads.clone();
    deleted.remove(2);
    let f = findings(&common::reframe(&deleted), &vk);
    assert!(f.contains(&Finding::BrokenChain { index: 2 }), "{f:?}");
    assert!(
        f.contains(&Finding::SequenceMismatch {
            index: 2,
            recorded: 3
        }),
        "{f:?}"
    );

    // Reordered: entries 3 and 4 swapped.
    let mut reordered = payloads.clone();
    reordered.swap(3, 4);
    let f = findings(&common::reframe(&reordered), &vk);
    assert!(f.contains(&Finding::BrokenChain { index: 3 }), "{f:?}");
    assert!(
        f.contains(&Finding::SequenceMismatch {
            index: 3,
            recorded: 4
        }),
        "{f:?}"
    );

    // Foreign-signed: entry 4 rewritten (smaller ε) and signed by another key, chain intact.
    let mut foreign = payloads.clone();
    let mut b = common::body(&foreign[4]);
    edit_charge(&mut b, |c| {
        c.epsilon_total = EpsilonTotal::new(0.1).unwrap()
    });
    foreign[4] = common::sign(&b, &SigningKey::from_bytes(&[9; 32]));
    let f = findings(&common::reframe(&foreign), &vk);
    assert!(f.contains(&Finding::BadSignature { index: 4 }), "{f:?}");
}

#[test]
fn audit_recomputes_totals_instead_of_trusting_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    ledger_with_rounds(&path, 3);
    let vk = key().verifying_key();
    let payloads = parse(&std::fs::read(&path).unwrap()).unwrap().payloads;
    let honest = audit_bytes(&common::reframe(&payloads), &vk, &[]).unwrap();
    // The site itself understates its spend in a validly signed, correctly chained entry.
    let mut lying = payloads.clone();
    let mut b = common::body(&lying[3]);
    edit_charge(&mut b, |c| {
        c.rho_total = c.rho_round;
        c.epsilon_total = EpsilonTotal::new(0.5).unwrap();
    });
    lying[3] = common::sign(&b, &key());
    let report = audit_bytes(&common::reframe(&lying), &vk, &[]).unwrap();
    assert!(report.findings.iter().any(|f| matches!(
        f,
        Finding::ValueMismatch {
            index: 3,
            field: "rho_total",
            ..
        }
    )));
    assert!(report.findings.iter().any(|f| matches!(
        f,
        Finding::ValueMismatch {
            index: 3,
            field: "epsilon_total",
            ..
        }
    )));
    // The audit's own totals are the honest ones, not the recorded lie.
    assert!((report.epsilon_total - honest.epsilon_total).abs() < 1e-12);
    assert_eq!(honest.head, hex::encode(entry_hash(&payloads[4])));
    assert!(matches!(
        common::body(&payloads[3]).kind,
        EntryKind::Charge(ref c) if c.decision == Decision::Accepted
    ));
}

#[test]
fn corruption_before_the_tail_is_refused_without_touching_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    ledger_with_rounds(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[MAGIC.len() + 20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Ledger::open(&path, key(), policy(100.0)),
        Err(LedgerError::Store(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn inconsistent_requests_are_refused_without_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let mut ledger = open(&path, 100.0);
    let bad = RoundRequest {
        n_cohort: SiteCount::new(3).unwrap(),
        ..request(0)
    };
    common::enter_epoch_of(&mut ledger, &request(0));
    assert!(matches!(
        ledger.authorize(bad),
        Err(LedgerError::RoundParamsMismatch { field: "n_cohort" })
    ));
    assert!(matches!(
        ledger.record_epoch([0x11; 32], 1, common::params_of(&bad)),
        Err(LedgerError::Param(_))
    ));
    // No honest noise left: every colluder tolerated is a plant whose share is known.
    let all_colluding = RoundRequest {
        colluders: 4,
        ..request(0)
    };
    assert!(matches!(
        ledger.record_epoch([0x11; 32], 1, common::params_of(&all_colluding)),
        Err(LedgerError::Param(_))
    ));
    common::authorize_in_epoch(&mut ledger, request(0)).unwrap();
    drop(ledger);
    let report = audit_unanchored(&path, &key().verifying_key());
    assert_eq!((report.entries, report.accepted), (3, 1));
}

#[test]
fn anchors_reveal_truncation_and_rewritten_history() {
    use amalgam_dp::ledger::audit::{Anchor, AnchorParseError};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    ledger_with_rounds(&path, 3);
    let vk = key().verifying_key();
    let payloads = parse(&std::fs::read(&path).unwrap()).unwrap().payloads;
    let report = audit_bytes(&common::reframe(&payloads), &vk, &[]).unwrap();
    let anchor = Anchor::of(&report).unwrap();
    assert_eq!(anchor.entries, 5);
    assert_eq!(Anchor::parse(&anchor.to_string()), Ok(anchor));
    let genesis_only = Anchor {
        entries: 1,
        head: entry_hash(&payloads[0]),
    };

    // The ledger grew after the anchor was published: still clean.
    ledger_with_rounds_from(&path, 3, 5);
    let grown = parse(&std::fs::read(&path).unwrap()).unwrap().payloads;
    assert_eq!(grown.len(), 7);
    let report = audit_bytes(&common::reframe(&grown), &vk, &[genesis_only, anchor]).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.anchors_checked, 2);

    // The last entry cut off: only the anchor shows it.
    let cut = &payloads[..4];
    assert!(clean_unanchored(
        &audit_bytes(&common::reframe(cut), &vk, &[]).unwrap()
    ));
    let f = audit_bytes(&common::reframe(cut), &vk, &[anchor])
        .unwrap()
        .findings;
    assert_eq!(
        f,
        vec![Finding::Truncated {
            anchored: 5,
            present: 4
        }]
    );

    // History rewritten and re-signed by the site's own key (a smaller ε in entry 4, chain
    // intact): only the anchor can tell.
    let mut rewritten = payloads.clone();
    let mut b = common::body(&rewritten[4]);
    edit_charge(&mut b, |c| {
        c.epsilon_total = EpsilonTotal::new(c.epsilon_total.get() * 0.5).unwrap()
    });
    rewritten[4] = common::sign(&b, &key());
    let f = audit_bytes(&common::reframe(&rewritten), &vk, &[anchor])
        .unwrap()
        .findings;
    assert!(f.contains(&Finding::AnchorMismatch { index: 4 }), "{f:?}");

    assert_eq!(Anchor::parse("3"), Err(AnchorParseError::Form));
    assert_eq!(Anchor::parse("x:00"), Err(AnchorParseError::Entries));
    assert_eq!(Anchor::parse("3:abcd"), Err(AnchorParseError::Head));
}

/// Appends rounds `from..to` to an existing ledger.
fn ledger_with_rounds_from(path: &Path, from: u64, to: u64) {
    let mut ledger = open(path, 100.0);
    for r in from..to {
        common::authorize_in_epoch(&mut ledger, request(r)).unwrap();
    }
}
