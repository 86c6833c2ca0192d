//! A synthetic campaign report shared by the rendering tests.
#![allow(dead_code)]

use amalgam_report::{
    Campaign, CurvePoint, EpsilonRow, ModeFigure, ModelFigures, ModelKind, PrivacySetting,
    ProtocolFigures, RoundRow, SCHEMA, SimulationReport, TimeShare,
};

fn modes(base: f64) -> Vec<ModeFigure> {
    ["TWF", "HDF", "PWF", "OSF", "RNF"]
        .iter()
        .enumerate()
        .map(|(i, m)| ModeFigure {
            mode: (*m).into(),
            rows: 10 + i,
            recall: (*m != "RNF").then_some(base - 0.05 * i as f64),
            auroc: (*m != "RNF").then_some(0.9 - 0.01 * i as f64),
        })
        .collect()
}

fn model(kind: ModelKind, plant: Option<u16>, test_set: &str, f1: f64) -> ModelFigures {
    ModelFigures {
        kind,
        plant,
        test_set: test_set.into(),
        rows: 1500,
        failures: 51,
        threshold: 0.4375,
        f1,
        auprc: f1 + 0.0311,
        auroc: Some(0.9512),
        precision: f1 + 0.0123,
        recall: f1 - 0.0211,
        modes: modes(f1),
    }
}

/// Three plants, four rounds, site-level DP with every ε under 10, a curve and an export.
pub fn sample() -> SimulationReport {
    let plants = 3u16;
    SimulationReport {
        schema: SCHEMA.into(),
        campaign: Campaign {
            config_digest: "c0".repeat(32),
            consortium_digest: "d1".repeat(32),
            model: "builtin:mlp-ai4i".into(),
            parameters: 2881,
            plants,
            split: "type".into(),
            split_seed: 11,
            init_seed: 12,
            rounds: 4,
            dropout_rate: 0.125,
            bits: 16,
            weights: "uniform (every contributing plant counts once)".into(),
            single_operator: true,
            wall_seconds: 12.75,
        },
        privacy: PrivacySetting::SiteLevel {
            clip: 1.5,
            sigma: 5.7,
            delta: 1e-6,
            epsilon_cap: 10.0,
            accountant: "zCDP (opendp)".into(),
        },
        protocol: ProtocolFigures {
            threshold: 2,
            colluders: 1,
            dropouts: 1,
            min_cohort: 2,
        },
        rounds: (1..=4u64)
            .map(|r| RoundRow {
                round: r,
                survivors: plants,
                epsilon: (0..plants)
                    .map(|p| Some(1.1 * r as f64 + 0.1 * f64::from(p)))
                    .collect(),
                loss: (r != 2).then_some(0.9 / r as f64),
                val_f1: Some(0.5 + 0.07 * r as f64),
                seconds: 2.5 + r as f64,
            })
            .collect(),
        models: vec![
            model(ModelKind::Federated, None, "global", 0.8123),
            model(ModelKind::FineTuned, Some(0), "plant", 0.7741),
            model(ModelKind::FineTuned, Some(1), "plant", 0.7012),
            model(ModelKind::LocalOnly, Some(0), "plant", 0.5333),
            model(ModelKind::Centralized, None, "global", 0.8641),
            model(ModelKind::Centralized, Some(0), "plant", 0.8212),
        ],
        epsilon: (0..plants)
            .map(|p| EpsilonRow {
                plant: p,
                unit: "site-update-per-round".into(),
                spent: Some(4.4 + 0.1 * f64::from(p)),
                cap: Some(10.0),
                delta: Some(1e-6),
                entries: 4,
                ledger_head: format!("{p:02x}").repeat(32),
            })
            .collect(),
        time_share: Some(TimeShare {
            training: 0.6125,
            dp_encoding: 0.0875,
            masking: 0.1375,
            persistence: 0.0625,
            http: 0.0625,
        }),
        curve: vec![
            CurvePoint {
                sigma: 0.0,
                epsilon: None,
                f1: 0.8123,
                f1_ci95: 0.0211,
                auprc: 0.8434,
                seeds: 5,
                real_processes: true,
            },
            CurvePoint {
                sigma: 2.0,
                epsilon: Some(31.5),
                f1: 0.7311,
                f1_ci95: 0.0305,
                auprc: 0.7522,
                seeds: 5,
                real_processes: false,
            },
            CurvePoint {
                sigma: 5.7,
                epsilon: Some(8.25),
                f1: 0.6418,
                f1_ci95: 0.0402,
                auprc: 0.6633,
                seeds: 5,
                real_processes: false,
            },
        ],
        exports: vec!["model.pt".into()],
        record_level: Vec::new(),
        unseen_modes: Vec::new(),
        record_curve: None,
    }
}

/// The same campaign run with `privacy = none`: every ε is ∞.
pub fn no_dp() -> SimulationReport {
    let mut r = sample();
    r.privacy = PrivacySetting::None;
    for row in &mut r.rounds {
        row.epsilon.iter_mut().for_each(|e| *e = None);
    }
    for e in &mut r.epsilon {
        e.spent = None;
        e.cap = None;
        e.delta = None;
    }
    r.curve.clear();
    r
}

/// Writes `r` as `dir/report.json`.
pub fn write(dir: &std::path::Path, r: &SimulationReport) {
    std::fs::write(dir.join("report.json"), r.to_json()).unwrap();
}

/// Renders `r` in a fresh directory; returns the directory and the page.
pub fn render(r: &SimulationReport) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), r);
    amalgam_report::render_dir(dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    (dir, html)
}
