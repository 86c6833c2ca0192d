//! The recipe search: an in-process federated experiment over seeds, run on demand
//! (`cargo test -p amalgam-train --test recipe_search -- --ignored --nocapture`), since it takes
//! minutes. Environment: `AMALGAM_RECIPE` (default configs/campaign-default.toml),
//! `AMALGAM_SPLIT` (type | mode | mode-exclusive), `AMALGAM_SEEDS` (5), `AMALGAM_ROUNDS`.
//! The same run is `amalgam experiment`; this entry point needs only this crate.

use amalgam_train::campaign::Recipe;
use amalgam_train::split::{SplitConfig, SplitKind, split};

use amalgam_train::summary::{summarize, table};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
#[ignore = "minutes of training; run on demand"]
fn recipe_search() {
    let path =
        std::env::var("AMALGAM_RECIPE").unwrap_or_else(|_| "configs/campaign-default.toml".into());
    let mut recipe =
        Recipe::from_toml(&std::fs::read_to_string(root().join(&path)).unwrap()).unwrap();
    if let Ok(r) = std::env::var("AMALGAM_ROUNDS") {
        recipe.federated.rounds = r.parse().unwrap();
        recipe.federated.eval_every = recipe.federated.eval_every.min(recipe.federated.rounds);
    }
    let kind = match std::env::var("AMALGAM_SPLIT").as_deref() {
        Ok("mode") => SplitKind::Mode,
        Ok("mode-exclusive") => SplitKind::ModeExclusive,
        _ => SplitKind::Type,
    };
    let seeds: u64 = std::env::var("AMALGAM_SEEDS").map_or(5, |s| s.parse().unwrap());
    let rows = amalgam_train::data::read_csv(&root().join("data/ai4i2020.csv")).unwrap();
    let mut runs = Vec::new();
    for seed in 0..seeds {
        let s = split(
            &rows,
            &SplitConfig {
                kind,
                seed,
                ..SplitConfig::default()
            },
        )
        .unwrap();
        let t = std::time::Instant::now();
        runs.push(amalgam_train::experiment::run(&rows, &s, &recipe, seed).unwrap());
        eprintln!("seed {seed}: {:.1} s", t.elapsed().as_secs_f64());
    }
    println!(
        "recipe {path}, split {kind:?}, {seeds} seeds\n{}",
        table(&summarize(&runs))
    );
}

/// A tiny experiment runs every method and scores them on the same test rows.
#[test]
fn a_tiny_experiment_runs_every_method() {
    let text = std::fs::read_to_string(root().join("configs/campaign-default.toml")).unwrap();
    let mut recipe = Recipe::from_toml(&text).unwrap();
    recipe.federated.rounds = 2;
    recipe.federated.eval_every = 1;
    recipe.federated.finetune_epochs = 1;
    let rows = amalgam_train::data::read_csv(&root().join("data/ai4i2020.csv")).unwrap();
    let rows = &rows[..2000];
    let cfg = SplitConfig {
        plants: 3,
        kind: SplitKind::ModeExclusive,
        seed: 4,
        ..SplitConfig::default()
    };
    let s = split(rows, &cfg).unwrap();
    let out = amalgam_train::experiment::run(rows, &s, &recipe, 4).unwrap();
    let names: Vec<&str> = out.iter().map(|m| m.method).collect();
    assert_eq!(
        names,
        [
            "centralized",
            "fedavg",
            "fedprox",
            "fedavg+finetune",
            "local-only"
        ]
    );
    assert_eq!(out[3].models.len(), 3);
    for m in &out {
        for s in &m.models {
            assert_eq!(s.test.rows, s.test.rows.max(1));
            assert_eq!(s.test.rows, out[0].models[0].test.rows);
            assert!((0.0..=1.0).contains(&s.test.auprc));
        }
        assert!(m.unseen_mode_recall.is_some(), "{}", m.method);
    }
}
