//! The record-level ledger: one per dataset, a permit per local run, the cap held against an
//! operator's best attempts to spend more (many small runs, a restored older copy, a second
//! campaign on the same records), ε exactly the record accountant's.

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use amalgam_dp::ledger::record::{
    DataVersion, DatasetName, RecordFinding, RecordLedger, RecordLedgerError, RecordMechanism,
    RecordPolicy, RecordRunRequest, audit_record_file, data_version, dataset_id,
    default_max_records, record_ledger_path,
};
use amalgam_dp::ledger::{BudgetPolicy, Ledger, LedgerError, PrivacyUnit, ledger_file_name};
use amalgam_dp::params::Sigma;
use amalgam_dp::params::{Delta, Epsilon};
use amalgam_dp::record::{calibrate_noise_multiplier, record_epsilon};
use amalgam_dp::sampler::{SamplerKind, distance_bound};
use ed25519_dalek::SigningKey;

const N: u64 = 10_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn policy(cap: f64) -> RecordPolicy {
    RecordPolicy {
        dataset: dataset_id(&DatasetName::new("plant-A").unwrap()),
        max_records: N,
        epsilon_cap: Epsilon::new(cap).unwrap(),
        delta: Delta::new(1e-6).unwrap(),
    }
}

/// The mechanism of a 100-parameter model, C = 1, γ = 10⁻⁴, whose noise gives z.
fn mechanism(z: f64, sampler: SamplerKind) -> RecordMechanism {
    RecordMechanism::with_multiplier(1.0, 1e-4, 100, sampler, z)
}

/// The data file the runs train on: 8000 of the N_max = 10 000 records.
fn data() -> DataVersion {
    data_version(b"plant A rows", 8000)
}

fn run(id: u8, q: f64, z: f64, steps: u32) -> RecordRunRequest {
    RecordRunRequest {
        run_id: [id; 32],
        q,
        noise_multiplier: z,
        steps,
        data: data(),
        mechanism: mechanism(z, SamplerKind::Fast),
    }
}

fn open(path: &Path, cap: f64) -> RecordLedger {
    RecordLedger::open(path, key(), policy(cap)).unwrap()
}

#[test]
fn one_run_is_charged_exactly_record_epsilon_of_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let mut ledger = open(&path, 10.0);
    let permit = ledger.authorize(run(1, 0.01, 1.1, 500)).unwrap();
    let expected = record_epsilon(0.01, 1.1, 500, Delta::new(1e-6).unwrap()).unwrap();
    assert_eq!(permit.epsilon_total(), expected.epsilon);
    let grant = permit.consume();
    assert_eq!(grant.epsilon_run, expected.epsilon);
    assert_eq!(ledger.spent(), expected.epsilon);
    drop(ledger);
    let report = audit_record_file(&path, Some(&key().verifying_key()), &[]).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.epsilon_total, expected.epsilon);
    assert_eq!(report.order, expected.order);
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.steps, 500);
}

#[test]
fn a_calibrated_run_meets_its_target_and_a_second_one_is_refused_by_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(&dir.path().join("r.ledger"), 1.0);
    let delta = Delta::new(1e-6).unwrap();
    let cal = calibrate_noise_multiplier(Epsilon::new(1.0).unwrap(), delta, 200, 0.02).unwrap();
    let permit = ledger
        .authorize(run(1, 0.02, cal.noise_multiplier, 200))
        .unwrap();
    assert!(permit.epsilon_total() <= 1.0);
    let spent = ledger.spent();
    match ledger.authorize(run(2, 0.02, cal.noise_multiplier, 1)) {
        Err(RecordLedgerError::BudgetExceeded {
            cap,
            spent: s,
            requested,
        }) => {
            assert_eq!(cap, 1.0);
            assert_eq!(s, spent);
            assert!(requested > 1.0);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(ledger.spent(), spent, "a refusal spends nothing");
}

/// The attacker's best split: many tiny runs, each far under the cap alone. The composed ε
/// never passes the cap, the run that would is refused, and the total is the composition of
/// every accepted run (RDP adds), not the largest one.
#[test]
fn many_small_runs_never_pass_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let mut ledger = open(&path, 2.0);
    let delta = Delta::new(1e-6).unwrap();
    let one = record_epsilon(0.01, 2.0, 50, delta).unwrap().epsilon;
    let mut accepted = 0u32;
    let mut refused = 0u32;
    for id in 0..=255u8 {
        match ledger.authorize(run(id, 0.01, 2.0, 50)) {
            Ok(p) => {
                accepted += 1;
                assert!(p.epsilon_total() <= 2.0);
            }
            Err(RecordLedgerError::BudgetExceeded { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(accepted >= 2 && refused > 0, "{accepted} accepted");
    let composed = record_epsilon(0.01, 2.0, 50 * u64::from(accepted), delta)
        .unwrap()
        .epsilon;
    assert!((ledger.spent() - composed).abs() <= 1e-9 * composed);
    assert!(ledger.spent() > one * 1.5, "runs compose, not max");
    drop(ledger);
    let report = audit_record_file(&path, None, &[]).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.refused as u32, refused);
    assert!(report.epsilon_total <= 2.0);
}

#[test]
fn a_permit_is_taken_once_per_run_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let mut ledger = open(&path, 10.0);
    ledger.authorize(run(7, 0.01, 2.0, 10)).unwrap().consume();
    assert!(matches!(
        ledger.authorize(run(7, 0.01, 2.0, 10)),
        Err(RecordLedgerError::RunAlreadyCharged)
    ));
    drop(ledger);
    let mut reopened = open(&path, 10.0);
    assert!(matches!(
        reopened.authorize(run(7, 0.01, 2.0, 10)),
        Err(RecordLedgerError::RunAlreadyCharged)
    ));
}

#[test]
fn a_second_campaign_on_the_same_dataset_keeps_spending() {
    let dir = tempfile::tempdir().unwrap();
    let path = record_ledger_path(dir.path(), &policy(3.0).dataset);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    assert!(path.ends_with(ledger_file_name(PrivacyUnit::RecordInDataset)));
    let first = {
        let mut l = open(&path, 3.0);
        l.authorize(run(1, 0.02, 2.0, 300)).unwrap();
        l.spent()
    };
    // Campaign two: other run ids, same dataset, same ledger.
    let mut l = open(&path, 3.0);
    assert_eq!(l.spent(), first);
    let p = l.authorize(run(2, 0.02, 2.0, 300)).unwrap();
    let both = record_epsilon(0.02, 2.0, 600, Delta::new(1e-6).unwrap()).unwrap();
    assert!((p.epsilon_total() - both.epsilon).abs() <= 1e-9 * both.epsilon);
    assert!(p.epsilon_total() > first);
    // A cap raised at open is not a way around it: the genesis policy binds.
    p.consume();
    drop(l);
    assert!(matches!(
        RecordLedger::open(&path, key(), policy(30.0)),
        Err(RecordLedgerError::PolicyMismatch { .. })
    ));
}

/// The operator's way around a budget keyed by the data file's bytes: append records (or
/// change one byte) so the file hashes differently. The ledger is keyed by the dataset's name,
/// so the changed file lands in the same ledger and its runs, the added records included, are
/// charged on top of the total; the audit lists both versions.
#[test]
fn appending_records_to_the_data_file_keeps_spending_from_the_same_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = record_ledger_path(dir.path(), &policy(3.0).dataset);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut l = open(&path, 3.0);
    l.authorize(run(1, 0.02, 2.0, 300)).unwrap();
    let first = l.spent();
    drop(l);
    let appended = data_version(b"plant A rows\none more row", 8001);
    assert_ne!(appended.file, data().file);
    // Same name, so the same path: nothing about the new bytes opens another ledger.
    assert_eq!(record_ledger_path(dir.path(), &policy(3.0).dataset), path);
    let mut l = open(&path, 3.0);
    assert_eq!(l.spent(), first);
    let mut second = run(2, 0.02, 2.0, 300);
    second.data = appended;
    let p = l.authorize(second).unwrap();
    let both = record_epsilon(0.02, 2.0, 600, Delta::new(1e-6).unwrap()).unwrap();
    assert!((p.epsilon_total() - both.epsilon).abs() <= 1e-9 * both.epsilon);
    // A third run on the new file would pass the cap of the whole dataset: refused.
    let mut third = run(3, 0.02, 2.0, 3000);
    third.data = appended;
    assert!(matches!(
        l.authorize(third),
        Err(RecordLedgerError::BudgetExceeded { .. })
    ));
    drop(l);
    let report = audit_record_file(&path, Some(&key().verifying_key()), &[]).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.data_versions, vec![data(), appended]);
    assert_eq!(report.runs[1].charge.request.data, appended);
}

/// A run on more records than the N_max the δ rule was checked against is refused before
/// anything is written (δ would then exceed 1/(10·N)); so is a run on no record. N_max by
/// default is the largest the δ rule allows.
#[test]
fn a_run_on_more_records_than_declared_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let mut l = open(&path, 10.0);
    let before = std::fs::read(&path).unwrap();
    for records in [N + 1, 0] {
        let mut r = run(1, 0.01, 1.0, 100);
        r.data = data_version(b"grown", records);
        assert!(matches!(
            l.check(&r),
            Err(RecordLedgerError::RecordsAboveDeclared { max_records: N, .. })
        ));
        assert!(matches!(
            l.authorize(r),
            Err(RecordLedgerError::RecordsAboveDeclared { max_records: N, .. })
        ));
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let mut at_max = run(1, 0.01, 1.0, 100);
    at_max.data = data_version(b"full", N);
    l.authorize(at_max).unwrap();
    assert_eq!(default_max_records(1e-6), 100_000);
    assert_eq!(default_max_records(1e-5), 10_000);
    // The default always satisfies the δ rule it is derived from.
    for delta in [1e-6, 3e-7, 1.7e-5, 1e-12] {
        let n = default_max_records(delta);
        assert!(delta <= 1.0 / (10.0 * n as f64), "{delta}: {n}");
        assert!(
            delta > 1.0 / (10.0 * (n + 1) as f64) || n == amalgam_dp::ledger::record::MAX_RECORDS
        );
    }
}

#[test]
fn dataset_names_are_strict_and_ids_differ_from_file_digests() {
    for bad in ["", "a b", "plant/0", "x".repeat(65).as_str(), "é", "a\0"] {
        assert!(
            matches!(
                DatasetName::new(bad),
                Err(RecordLedgerError::DatasetName(_))
            ),
            "{bad:?}"
        );
    }
    let name = DatasetName::new("line-3_sensors.v2").unwrap();
    assert_eq!(name.as_str(), "line-3_sensors.v2");
    assert_ne!(
        dataset_id(&name),
        dataset_id(&DatasetName::new("line-3_sensors.v3").unwrap())
    );
    // Domain-separated: a name's id is never the digest of a file holding the name.
    assert_ne!(
        dataset_id(&name),
        data_version(name.as_str().as_bytes(), 1).file
    );
}

#[test]
fn a_restored_older_copy_is_refused_against_the_kept_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let backup = dir.path().join("backup");
    let mut l = open(&path, 3.0);
    l.authorize(run(1, 0.02, 2.0, 300)).unwrap();
    drop(l);
    std::fs::copy(&path, &backup).unwrap();
    let mut l = open(&path, 3.0);
    let kept = l.authorize(run(2, 0.02, 2.0, 300)).unwrap().anchor();
    drop(l);
    std::fs::copy(&backup, &path).unwrap();
    let l = open(&path, 3.0);
    assert!(matches!(
        l.check_anchor(&kept),
        Err(RecordLedgerError::BehindAnchor(a)) if a == kept
    ));
    drop(l);
    let report = audit_record_file(&path, None, &[kept]).unwrap();
    assert!(matches!(report.findings[..], [RecordFinding::Anchor(_)]));
}

#[test]
fn delta_above_one_tenth_over_n_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy(1.0);
    p.delta = Delta::new(1.0 / (10.0 * N as f64) * 1.01).unwrap();
    assert!(matches!(
        RecordLedger::open(&dir.path().join("a"), key(), p),
        Err(RecordLedgerError::DeltaTooLarge { records: N, .. })
    ));
    assert!(
        !dir.path().join("a").exists() || std::fs::read(dir.path().join("a")).unwrap().is_empty()
    );
    p.delta = Delta::new(1.0 / (10.0 * N as f64)).unwrap();
    RecordLedger::open(&dir.path().join("b"), key(), p).unwrap();
    p.max_records = 0;
    assert!(matches!(
        RecordLedger::open(&dir.path().join("c"), key(), p),
        Err(RecordLedgerError::Records(0))
    ));
}

#[test]
fn a_flipped_byte_or_a_foreign_key_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let mut l = open(&path, 10.0);
    l.authorize(run(1, 0.01, 1.0, 100)).unwrap();
    drop(l);
    let other = SigningKey::from_bytes(&[3; 32]);
    let report = audit_record_file(&path, Some(&other.verifying_key()), &[]).unwrap();
    assert!(!report.is_clean());
    assert!(matches!(
        RecordLedger::open(&path, other, policy(10.0)),
        Err(RecordLedgerError::Tampered(_) | RecordLedgerError::WrongKey)
    ));
    // Flip one byte inside the last record: the file layer refuses it and nothing opens.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(RecordLedger::open(&path, key(), policy(10.0)).is_err());
    let report = audit_record_file(&path, None, &[]).unwrap();
    assert!(!report.is_clean());
}

#[test]
fn the_site_level_ledger_refuses_the_record_unit() {
    let dir = tempfile::tempdir().unwrap();
    let mut p =
        BudgetPolicy::site_level(Epsilon::new(1.0).unwrap(), Delta::new(1e-6).unwrap()).unwrap();
    p.unit = PrivacyUnit::RecordInDataset;
    assert!(matches!(
        Ledger::open(&dir.path().join("s"), key(), p),
        Err(LedgerError::Policy(_))
    ));
}

#[test]
fn a_site_level_ledger_file_is_not_a_record_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let p =
        BudgetPolicy::site_level(Epsilon::new(1.0).unwrap(), Delta::new(1e-6).unwrap()).unwrap();
    drop(Ledger::open(&path, key(), p).unwrap());
    assert!(matches!(
        RecordLedger::open(&path, key(), policy(1.0)),
        Err(RecordLedgerError::Tampered(_))
    ));
}

/// The samplers' share of δ is recomputed from each run's recorded sampler and σ/γ, never
/// taken from the entry: Σ steps·d·(per-sample bound) for the table sampler, 0 for the exact
/// one; and a run whose charged z is above the σ/Δ its noise gives (the operator charging
/// more noise than it draws) is refused before anything is written.
#[test]
fn the_sampler_distance_is_recomputed_and_an_undercharged_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ledger");
    let mut ledger = open(&path, 50.0);
    ledger.authorize(run(1, 0.01, 1.1, 500)).unwrap();
    let mut exact = run(2, 0.01, 1.1, 300);
    exact.mechanism = mechanism(1.1, SamplerKind::Exact);
    ledger.authorize(exact).unwrap();
    let entries = ledger.anchor().entries;

    let mut lying = run(3, 0.01, 2.0, 100);
    lying.mechanism = mechanism(1.0, SamplerKind::Fast);
    assert!(matches!(
        ledger.authorize(lying),
        Err(RecordLedgerError::Mechanism(_))
    ));
    let mut zero_q = run(4, 0.0, 1.0, 100);
    zero_q.q = 0.0;
    assert!(matches!(
        ledger.authorize(zero_q),
        Err(RecordLedgerError::Account(_))
    ));
    assert_eq!(ledger.anchor().entries, entries, "a refused request wrote");
    drop(ledger);

    let report = audit_record_file(&path, Some(&key().verifying_key()), &[]).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let m = mechanism(1.1, SamplerKind::Fast);
    let per_sample = distance_bound(SamplerKind::Fast, Sigma::new(m.sigma / m.gamma).unwrap())
        .unwrap()
        .get();
    assert!(per_sample > 0.0, "the table sampler's bound is not zero");
    assert_eq!(report.sampler_distance, per_sample * 500.0 * 100.0);
    let fast = report.runs[0].charge.request.mechanism.sampler;
    let exact = report.runs[1].charge.request.mechanism.sampler;
    assert_eq!((fast, exact), (SamplerKind::Fast, SamplerKind::Exact));
}
