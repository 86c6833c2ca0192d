//! Checks on TorchScript models before they may train under differential privacy.
//!
//! The DP accountant bounds each example's influence through per-example gradient clipping,
//! which is only sound when one row's output does not depend on the other rows of its batch.
//! BatchNorm in training mode breaks that (batch statistics), and its running statistics are
//! buffers outside the flat parameter vector, computed from local data. TorchScript exposes no
//! buffer list through tch, so the check is behavioural: in training mode, with the same torch
//! generator state (so dropout masks match), row 0's output must not change when the other rows
//! of the batch change.

use tch::{Kind, Tensor};

use crate::model::ModelError;

/// Refuses a module in which rows of a training batch interact. `probe` is a separately
/// loaded copy (training mode may update its buffers); `dim` is the input width.
pub fn refuse_batch_norm(probe: &mut tch::CModule, dim: usize) -> Result<(), ModelError> {
    probe.f_set_train()?;
    let d = dim as i64;
    let a = Tensor::f_linspace(-1.0, 1.0, d, (Kind::Float, tch::Device::Cpu))?.view([1, d]);
    let b = Tensor::f_full([3, d], 0.5, (Kind::Float, tch::Device::Cpu))?;
    let c = Tensor::f_full([3, d], -0.9, (Kind::Float, tch::Device::Cpu))?;
    let run = |other: &Tensor| -> Result<Tensor, ModelError> {
        tch::manual_seed(0x5eed);
        let x = Tensor::f_cat(&[&a, other], 0)?;
        Ok(tch::no_grad(|| probe.forward_ts(&[x]))?.f_get(0)?)
    };
    let (ya, yb) = (run(&b)?, run(&c)?);
    let diff = (ya - yb).abs().max().double_value(&[]);
    probe.f_set_eval()?;
    if diff > 1e-6 {
        return Err(ModelError::BatchNorm(format!(
            "row outputs depend on the rest of the batch (difference {diff:.3e})"
        )));
    }
    Ok(())
}
