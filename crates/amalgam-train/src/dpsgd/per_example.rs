//! Per-example gradients of the weighted BCE-with-logits loss, two ways.
//!
//! * [`batched`], for the built-in models: one forward pass keeping each linear layer's input
//!   `a` and pre-activation `z = a·Wᵀ + b`, then the backward pass of the *summed* loss to the
//!   pre-activations written out for the built-ins' Linear/ReLU chain (∂ℓ/∂z at the logit,
//!   then ∂L/∂z_{l−1} = (∂L/∂z_l·W_l) ∘ [z_{l−1} > 0]) instead of autograd's, whose graph
//!   costs more than the arithmetic on a 64-row sample. Since no row's loss depends on
//!   another row, row i of ∂L/∂z is example i's own gradient at that layer, and its weight
//!   gradient is the outer product (∂L/∂z)ᵢ ⊗ aᵢ, its bias gradient (∂L/∂z)ᵢ. The tests hold
//!   it to torch's autograd gradient and to the one-at-a-time path.
//! * [`one_at_a_time`], for any module (the TorchScript path): a forward and backward pass
//!   per example.
//!
//! Both run the model in evaluation mode: dropout would draw from torch's generator, and a
//! model whose rows interact is refused before either is reached ([`super::dp_sgd_train`]).

use tch::{Kind, Reduction, Tensor};

use crate::model::{Model, ModelError, param_order};

/// The per-example gradients of a sample: `rows` × `dim` values, row-major, each row in the
/// model's flat order.
#[derive(Debug, Clone, PartialEq)]
pub struct PerExample {
    /// Examples.
    pub rows: usize,
    /// Parameters (the flat vector's length).
    pub dim: usize,
    /// The gradients, row-major.
    pub values: Vec<f32>,
}

impl PerExample {
    /// Example i's gradient.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The L2 norm of each example's gradient (in f64).
    pub fn norms(&self) -> Vec<f64> {
        (0..self.rows).map(|i| l2(self.row(i))).collect()
    }
}

/// L2 norm in f64. Eight running sums instead of one: a single chain of dependent f64
/// additions would bound the loop by the adder's latency (it runs once per example per step
/// over every parameter); the lanes are independent, so the compiler vectorises them.
pub(crate) fn l2(v: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    let tail: f64 = rest.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (lanes.iter().sum::<f64>() + tail).sqrt()
}

/// Per-example losses `[n]`: BCE with logits, the fixed `pos_weight` inside each example's
/// loss (before any clipping).
fn per_example_loss(logits: &Tensor, y: &Tensor, pos_weight: f64) -> Result<Tensor, ModelError> {
    let pw = Tensor::from_slice(&[pos_weight as f32]);
    Ok(logits.f_binary_cross_entropy_with_logits::<Tensor>(y, None, Some(pw), Reduction::None)?)
}

/// Checks `x` `[n, d]` and `y` `[n, 1]` agree on n; returns n.
fn rows_of(x: &Tensor, y: &Tensor) -> Result<usize, ModelError> {
    let (sx, sy) = (x.size(), y.size());
    if sx.len() != 2 || sy.len() != 2 || sy[1] != 1 || sx[0] != sy[0] {
        return Err(ModelError::Rows { x: sx, y: sy });
    }
    Ok(sx[0] as usize)
}

/// Copies a float tensor into a `Vec<f32>`.
fn to_vec(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    let t = t.f_to_kind(Kind::Float)?.f_contiguous()?.f_flatten(0, -1)?;
    let n = t.numel();
    let mut out = vec![0.0f32; n];
    t.f_copy_data(&mut out, n)?;
    Ok(out)
}

/// The batched path, for built-in models (a TorchScript model is refused with
/// [`ModelError::NotBuiltin`]); see the module documentation.
pub fn batched(
    model: &mut Model,
    x: &Tensor,
    y: &Tensor,
    pos_weight: f64,
) -> Result<PerExample, ModelError> {
    let n = rows_of(x, y)?;
    let dim = model.numel();
    if n == 0 {
        return Ok(PerExample {
            rows: 0,
            dim,
            values: Vec::new(),
        });
    }
    model.set_train(false);
    let layers = model.linear_layers().ok_or(ModelError::NotBuiltin)?;
    let dz = tch::no_grad(|| -> Result<_, ModelError> {
        let mut inputs = Vec::with_capacity(layers.len());
        let mut pre = Vec::with_capacity(layers.len());
        let mut h = x.shallow_clone();
        for (i, l) in layers.iter().enumerate() {
            // The same operation as the layer's own forward (`nn::Linear`).
            let z = h.f_linear(&l.ws, l.bs.as_ref())?;
            inputs.push(h);
            h = if i + 1 < layers.len() {
                z.f_relu()?
            } else {
                z.shallow_clone()
            };
            pre.push(z);
        }
        // ∂ℓᵢ/∂zᵢ of BCE-with-logits with pos_weight w at the logit z:
        // ℓ = −[w·y·log σ(z) + (1 − y)·log(1 − σ(z))], so ∂ℓ/∂z = σ(z)·(1 − y + w·y) − w·y.
        let w = pos_weight as f32;
        let logit = &pre[pre.len() - 1];
        let mut g = logit
            .f_sigmoid()?
            .f_mul(&(y * f64::from(w - 1.0) + 1.0))?
            .f_sub(&(y * f64::from(w)))?;
        // Back through the chain z_l = a_l·W_lᵀ + b_l, a_l = relu(z_{l−1}): row i only ever
        // meets row i, so each row of g is that example's own gradient at z_l.
        let mut dz = Vec::with_capacity(layers.len());
        for l in (1..layers.len()).rev() {
            let next = g.f_matmul(&layers[l].ws)?.f_mul(&pre[l - 1].f_gt(0.0)?)?;
            dz.push(std::mem::replace(&mut g, next));
        }
        dz.push(g);
        dz.reverse();
        Ok((inputs, dz))
    })?;
    let (inputs, dz) = dz;
    // Each layer's per-example gradients under their parameter names, then the flat order.
    let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * layers.len());
    for (i, ((l, a), g)) in layers.iter().zip(&inputs).zip(&dz).enumerate() {
        // The outer products (∂ℓᵢ/∂zᵢ) ⊗ aᵢ by broadcasting (cheaper than einsum's bmm here).
        let w = g.f_unsqueeze(2)?.f_mul(&a.f_unsqueeze(1)?)?;
        named.push((format!("layer{i}.weight"), w.f_reshape([n as i64, -1])?));
        if l.bs.is_some() {
            named.push((format!("layer{i}.bias"), g.shallow_clone()));
        }
    }
    let names: Vec<String> = named.iter().map(|(k, _)| k.clone()).collect();
    let order = param_order(&names, false)?;
    let mut cols = Vec::with_capacity(order.len());
    for name in &order {
        if let Some((_, t)) = named.iter().find(|(k, _)| k == name) {
            cols.push(t.shallow_clone());
        }
    }
    let all = Tensor::f_cat(&cols, 1)?;
    if all.size() != [n as i64, dim as i64] {
        return Err(ModelError::FlatLength {
            got: all.size().get(1).copied().unwrap_or(0) as usize,
            want: dim,
        });
    }
    Ok(PerExample {
        rows: n,
        dim,
        values: to_vec(&all)?,
    })
}

/// The one-example-at-a-time path: works for any module whose parameters are the model's
/// flat-order tensors.
pub fn one_at_a_time(
    model: &mut Model,
    x: &Tensor,
    y: &Tensor,
    pos_weight: f64,
) -> Result<PerExample, ModelError> {
    let n = rows_of(x, y)?;
    let dim = model.numel();
    model.set_train(false);
    let params: Vec<Tensor> = model.params().iter().map(Tensor::shallow_clone).collect();
    let mut values = Vec::with_capacity(n * dim);
    for i in 0..n as i64 {
        let xi = x.f_narrow(0, i, 1)?;
        let yi = y.f_narrow(0, i, 1)?;
        let loss = per_example_loss(&model.forward(&xi)?, &yi, pos_weight)?.f_sum(Kind::Float)?;
        let grads = Tensor::f_run_backward(&[loss], &params, false, false)?;
        for (g, p) in grads.iter().zip(&params) {
            if g.defined() {
                values.extend(to_vec(g)?);
            } else {
                // A parameter the output does not depend on has a zero gradient.
                values.resize(values.len() + p.numel(), 0.0);
            }
        }
    }
    if values.len() != n * dim {
        return Err(ModelError::FlatLength {
            got: values.len(),
            want: n * dim,
        });
    }
    Ok(PerExample {
        rows: n,
        dim,
        values,
    })
}
