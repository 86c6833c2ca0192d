//! TorchScript export of the built-in models: the traced module, loaded back by libtorch,
//! predicts what the Rust model predicts on real AI4I rows, for any batch size; refused
//! weights write nothing; the file is written atomically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amalgam_train::builtin::builtin;
use amalgam_train::data::{Row, read_csv};
use amalgam_train::export::{ExportError, Exported, export_torchscript};
use amalgam_train::model::{Model, ModelError};
use amalgam_train::train::{Batch, LocalConfig, OptimizerKind, train_epochs};
use tch::Tensor;

fn rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ai4i2020.csv");
    let mut rows = read_csv(std::path::Path::new(path)).unwrap();
    rows.truncate(2000);
    rows
}

/// A built-in model trained for two epochs on the rows (so the weights are not an init).
fn trained(name: &str, rows: &[Row]) -> (amalgam_train::builtin::Builtin, Model, Batch) {
    let b = builtin(name).unwrap();
    let (mut m, _) = b.init(3).unwrap();
    let refs: Vec<&Row> = rows.iter().collect();
    let labels: Vec<bool> = refs.iter().map(|r| r.failure).collect();
    let f = b.spec.features;
    let batch = Batch::new(&f.matrix(&refs), &labels, f.dim());
    let cfg = LocalConfig {
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        momentum: 0.0,
        epochs: 2,
        batch_size: 64,
        prox_mu: 0.0,
        pos_weight: b.pos_weight,
    };
    train_epochs(&mut m, None, &batch, &cfg, 2, 9).unwrap();
    (b, m, batch)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn exported_modules_predict_what_the_rust_models_predict_on_ai4i_rows() {
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    for name in ["mlp-ai4i", "logistic-ai4i"] {
        let (b, mut m, batch) = trained(name, &rows);
        let path = dir.path().join(format!("{name}.pt"));
        export_torchscript(&b.spec, &m.flat(), &path).unwrap();
        let want = m.predict(&batch.x).unwrap();
        let distinct: std::collections::HashSet<u32> = want.iter().map(|p| p.to_bits()).collect();
        assert!(distinct.len() > 100, "{name}: scores vary from row to row");

        // Loaded with plain `tch::CModule::load`: logits [B, 1] equal the Rust model's.
        let raw = tch::CModule::load(&path).unwrap();
        let logits = tch::no_grad(|| raw.forward_ts(&[&batch.x])).unwrap();
        assert_eq!(logits.size(), [rows.len() as i64, 1], "{name}");
        let rust_logits = tch::no_grad(|| m.forward(&batch.x)).unwrap();
        let got: Vec<f32> = Vec::try_from(logits.flatten(0, -1)).unwrap();
        let exp: Vec<f32> = Vec::try_from(rust_logits.flatten(0, -1)).unwrap();
        let d = max_diff(&got, &exp);
        eprintln!(
            "{name}: {} rows, largest logit difference {d:e}",
            rows.len()
        );
        assert!(d <= 1e-6, "{name}: logits differ by {d}");

        // Probabilities through the inference wrapper, on the whole set and on one row.
        let e = Exported::load(&path, b.spec.features.dim()).unwrap();
        assert!(
            max_diff(&e.predict(&batch.x).unwrap(), &want) <= 1e-6,
            "{name}"
        );
        let one = batch.x.narrow(0, 17, 1);
        let p = e.predict(&one).unwrap();
        assert!((p[0] - want[17]).abs() <= 1e-6, "{name}: batch of one");

        // The export is a frozen trace: a scripted-model load refuses to train it.
        assert!(matches!(
            Model::load_script(&path, b.spec.features, false),
            Err(ModelError::NoTrainable)
        ));
        // A module fed the wrong width is refused with the shapes.
        assert!(matches!(
            Exported::load(&path, b.spec.features.dim() - 3),
            Err(ExportError::Torch(_) | ExportError::Shape { .. })
        ));
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["logistic-ai4i.pt", "mlp-ai4i.pt"],
        "no temporary file left"
    );
}

#[test]
fn refused_weights_write_nothing() {
    let b = builtin("mlp-ai4i").unwrap();
    let (m, flat) = b.init(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.pt");
    assert!(matches!(
        export_torchscript(&b.spec, &flat[1..], &path),
        Err(ExportError::Model(ModelError::FlatLength { .. }))
    ));
    let mut bad = flat.clone();
    bad[5] = f32::INFINITY;
    assert!(matches!(
        export_torchscript(&b.spec, &bad, &path),
        Err(ExportError::Model(ModelError::NonFinite(5)))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Overwriting an existing export replaces it whole.
    export_torchscript(&b.spec, &flat, &path).unwrap();
    let other: Vec<f32> = flat.iter().map(|v| -v).collect();
    export_torchscript(&b.spec, &other, &path).unwrap();
    let e = Exported::load(&path, 11).unwrap();
    let x = Tensor::from_slice(&[0.1f32; 11]).view([1, 11]);
    let mut neg = Model::new(&b.spec).unwrap();
    neg.set_from_flat(&other).unwrap();
    assert!((e.predict(&x).unwrap()[0] - neg.predict(&x).unwrap()[0]).abs() <= 1e-6);
    assert_eq!(m.numel(), flat.len());
}
