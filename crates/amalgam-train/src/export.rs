//! TorchScript export of a trained built-in model, for plants that serve predictions outside
//! Amalgam (any libtorch or `torch.jit.load` runtime).
//!
//! The export is a *traced* module: its weights are frozen constants, so it is for inference
//! only (training a campaign model takes the flat vector, never this file). It takes float32
//! `[B, F]` in the documented feature order of [`crate::features`] (Type one-hot L, M, H; the
//! five raw columns scaled onto [-1, 1] by their public bounds; then, when the model uses them,
//! the three physics features) and returns logits `[B, 1]`; the failure probability is their
//! sigmoid. The decision threshold is not part of the module: it travels with the `.json`
//! model (`amalgam evaluate --threshold`).

use std::path::{Path, PathBuf};

use tch::{CModule, Device, Kind, Tensor};

use crate::model::{Model, ModelError, ModelSpec};

/// Rows of the example batch the trace runs on (the traced graph is batch-size independent).
const TRACE_ROWS: i64 = 2;

/// Why an export or an exported module was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The spec or the weights were refused.
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// libtorch failed to trace, save or load.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The file could not be written or moved into place.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A loaded module does not map `[B, dim]` to `[B, 1]`.
    #[error("exported module maps [{rows}, {dim}] to {got:?}, expected [{rows}, 1]")]
    Shape {
        /// Rows probed.
        rows: i64,
        /// Input width probed.
        dim: i64,
        /// Output shape.
        got: Vec<i64>,
    },
}

/// Traces the built-in model `spec` with `weights` (flat order, checked like
/// [`Model::set_from_flat`]) and writes the TorchScript module to `path` atomically (a
/// temporary file in the same directory, then a rename). Nothing is written on refusal.
pub fn export_torchscript(
    spec: &ModelSpec,
    weights: &[f32],
    path: &Path,
) -> Result<(), ExportError> {
    let mut model = Model::new(spec)?;
    model.set_from_flat(weights)?;
    model.vs.freeze();
    let dim = spec.features.dim() as i64;
    let example = Tensor::f_zeros([TRACE_ROWS, dim], (Kind::Float, Device::Cpu))?;
    let mut failed = None;
    let mut closure = |inputs: &[Tensor]| match model.forward(&inputs[0]) {
        Ok(t) => vec![t],
        Err(e) => {
            failed = Some(e);
            vec![inputs[0].shallow_clone()]
        }
    };
    let module = tch::no_grad(|| {
        CModule::create_by_tracing("Amalgam", "forward", &[example], &mut closure)
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source: std::io::Error| ExportError::Io { path: p, source }
    };
    let result = module.save(&tmp).map_err(ExportError::from).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An exported (traced) module loaded for inference.
pub struct Exported {
    module: CModule,
    dim: i64,
}

impl std::fmt::Debug for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exported").field("dim", &self.dim).finish()
    }
}

impl Exported {
    /// Loads `path` and checks that it maps `[B, dim]` to `[B, 1]`. A TorchScript file is
    /// code run by libtorch's interpreter: load only modules the consortium produced.
    pub fn load(path: &Path, dim: usize) -> Result<Exported, ExportError> {
        let mut module = CModule::load(path)?;
        module.f_set_eval()?;
        let dim = dim as i64;
        let rows = 3;
        let probe = Tensor::f_zeros([rows, dim], (Kind::Float, Device::Cpu))?;
        let got = tch::no_grad(|| module.forward_ts(&[probe]))?.size();
        if got != [rows, 1] {
            return Err(ExportError::Shape { rows, dim, got });
        }
        Ok(Exported { module, dim })
    }

    /// Logits `[n, 1]` of a `[n, dim]` float32 batch.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, ExportError> {
        let out = tch::no_grad(|| self.module.forward_ts(&[x]))?;
        let size = out.size();
        if size.len() != 2 || size[1] != 1 {
            return Err(ExportError::Shape {
                rows: x.size().first().copied().unwrap_or(0),
                dim: self.dim,
                got: size,
            });
        }
        Ok(out)
    }

    /// Failure probabilities (sigmoid of the logits), as [`Model::predict`] computes them.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<f32>, ExportError> {
        let p = tch::no_grad(|| self.logits(x).map(|l| l.sigmoid().flatten(0, -1)))?;
        let n = p.numel();
        let mut out = vec![0.0f32; n];
        p.f_copy_data(&mut out, n)?;
        Ok(out)
    }
}
