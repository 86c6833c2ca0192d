//! Models on tch, and their parameters as one flat f32 vector.
//!
//! Federated averaging and secure aggregation see a model as a vector, so every plant must
//! flatten identically: parameters are taken in ascending order of their original dotted names
//! (byte order, so `layer1.bias` precedes `layer1.weight`), only those that
//! require gradients and are float32, each flattened row-major. tch stores a TorchScript
//! parameter `a.b` under `a_b`; two originals that collide after that rename (`a.b` and `a_b`) are
//! refused, since one of them would silently get another name and the vector order would no
//! longer follow the rule.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::Module};

use crate::features::FeatureSet;

/// Largest accepted hidden layer and depth of a built-in MLP.
pub const MAX_HIDDEN: usize = 4096;
/// Most hidden layers of a built-in MLP.
pub const MAX_LAYERS: usize = 8;

/// Built-in architecture. K = 1 output logit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Arch {
    /// Logistic regression.
    Logistic,
    /// Multi-layer perceptron with ReLU between layers.
    Mlp {
        /// Hidden layer sizes.
        hidden: Vec<usize>,
    },
}

/// A model's identity: architecture and features (the same at every plant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Architecture.
    pub arch: Arch,
    /// Feature set.
    pub features: FeatureSet,
}

/// Why a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Hidden sizes out of range.
    #[error("MLP needs 1..={MAX_LAYERS} hidden layers of 1..={MAX_HIDDEN} units")]
    Hidden,
    /// Two parameter names collide after tch's `.` to `_` rename.
    #[error("parameters {0:?} and {1:?} collide after tch renames '.' to '_'")]
    Collision(String, String),
    /// A flat vector of the wrong length.
    #[error("flat vector has {got} values, the model has {want} parameters")]
    FlatLength {
        /// Values given.
        got: usize,
        /// Parameters of the model.
        want: usize,
    },
    /// A non-finite value in a flat vector.
    #[error("flat vector holds a non-finite value at {0}")]
    NonFinite(usize),
    /// The model has no trainable float32 parameter (e.g. a traced TorchScript model).
    #[error(
        "model has no trainable float32 parameter (a traced TorchScript model has none: script it)"
    )]
    NoTrainable,
    /// A BatchNorm-like layer while differential privacy is on: rows of a batch interact, and
    /// its running statistics are buffers computed from local data, outside the accounting.
    #[error("BatchNorm is refused when differential privacy is on: {0}")]
    BatchNorm(String),
    /// The input width does not match.
    #[error("model output has shape {0:?}, expected [n, 1]")]
    Output(Vec<i64>),
    /// The batched per-example gradient path needs the layers of a built-in model.
    #[error("the batched per-example gradient path needs a built-in model")]
    NotBuiltin,
    /// Features and labels of different shapes (features `[n, d]`, labels `[n, 1]`).
    #[error("features of shape {x:?} and labels of shape {y:?} do not pair up")]
    Rows {
        /// Shape of the features.
        x: Vec<i64>,
        /// Shape of the labels.
        y: Vec<i64>,
    },
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Orders parameters for the flat vector: ascending original dotted name. Returns, in that
/// order, the names under which tch's VarStore holds them (`.` replaced by `_` when
/// `renamed`); refuses a collision after the rename.
pub fn param_order(original: &[String], renamed: bool) -> Result<Vec<String>, ModelError> {
    let mut sorted: Vec<&String> = original.iter().collect();
    sorted.sort();
    let mut seen: std::collections::HashMap<String, &String> = Default::default();
    let mut out = Vec::with_capacity(sorted.len());
    for name in sorted {
        let stored = if renamed {
            name.replace('.', "_")
        } else {
            name.clone()
        };
        if let Some(prev) = seen.insert(stored.clone(), name) {
            return Err(ModelError::Collision(prev.clone(), name.clone()));
        }
        out.push(stored);
    }
    Ok(out)
}

enum Net {
    Builtin(Vec<nn::Linear>),
    Script(tch::TrainableCModule),
}

/// A model with its parameters in a VarStore and a fixed flat order.
pub struct Model {
    /// The variables.
    pub vs: nn::VarStore,
    net: Net,
    order: Vec<Tensor>,
    numel: usize,
    /// Whether one row's output is known not to depend on the other rows of its batch: true
    /// for the built-ins (linear layers and ReLU only), true for a TorchScript model only when
    /// it was loaded with the differential-privacy check ([`Model::load_script`] with `dp`).
    rows_independent: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("parameters", &self.numel)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Builds a built-in model, initialized from torch's generator (seed it with
    /// `tch::manual_seed` first for a reproducible start).
    pub fn new(spec: &ModelSpec) -> Result<Model, ModelError> {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let mut sizes = vec![spec.features.dim()];
        if let Arch::Mlp { hidden } = &spec.arch {
            if hidden.is_empty()
                || hidden.len() > MAX_LAYERS
                || hidden.iter().any(|&h| h == 0 || h > MAX_HIDDEN)
            {
                return Err(ModelError::Hidden);
            }
            sizes.extend(hidden);
        }
        sizes.push(1);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                nn::linear(
                    &root / format!("layer{i}"),
                    w[0] as i64,
                    w[1] as i64,
                    Default::default(),
                )
            })
            .collect();
        Self::finish(vs, Net::Builtin(layers), false, None, true)
    }

    /// Loads a scripted TorchScript model taking `features` inputs for training. Refuses
    /// traced models (no trainable variables), name collisions, and BatchNorm when `dp` is on.
    pub fn load_script(
        path: &std::path::Path,
        features: FeatureSet,
        dp: bool,
    ) -> Result<Model, ModelError> {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut probe = tch::CModule::load(path)?;
        let named = probe.named_parameters()?;
        let original: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        param_order(&original, true)?;
        if dp {
            crate::script::refuse_batch_norm(&mut probe, features.dim())?;
        }
        let module = tch::TrainableCModule::load(path, vs.root())?;
        Self::finish(vs, Net::Script(module), true, Some(original), dp)
    }

    fn finish(
        vs: nn::VarStore,
        net: Net,
        renamed: bool,
        original: Option<Vec<String>>,
        rows_independent: bool,
    ) -> Result<Model, ModelError> {
        let vars = vs.variables();
        let original = original.unwrap_or_else(|| vars.keys().cloned().collect());
        let order: Vec<Tensor> = param_order(&original, renamed)?
            .into_iter()
            .filter_map(|n| vars.get(&n).map(Tensor::shallow_clone))
            .filter(|t| t.requires_grad() && t.kind() == Kind::Float)
            .collect();
        if order.is_empty() {
            return Err(ModelError::NoTrainable);
        }
        let numel = order.iter().map(Tensor::numel).sum();
        Ok(Model {
            vs,
            net,
            order,
            numel,
            rows_independent,
        })
    }

    /// Re-initializes the parameters from `seed`, uniform in ±1/sqrt(fan-in) like torch's
    /// linear layers, without touching torch's global generator (so concurrent experiments stay
    /// reproducible). Fan-in of a 2-D weight is its column count; a 1-D bias takes the fan-in of
    /// the weight that follows it in flat order (`layerN.bias` sorts before `layerN.weight`).
    pub fn init_seeded(&mut self, seed: u64) -> Result<Vec<f32>, ModelError> {
        use rand_core::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let sizes: Vec<Vec<i64>> = self.order.iter().map(Tensor::size).collect();
        let mut flat = Vec::with_capacity(self.numel);
        for (i, size) in sizes.iter().enumerate() {
            let fan = match size.as_slice() {
                [_, f] => *f,
                _ => sizes
                    .get(i + 1)
                    .and_then(|s| s.get(1))
                    .copied()
                    .unwrap_or(1),
            };
            let bound = 1.0 / (fan.max(1) as f64).sqrt();
            let n: i64 = size.iter().product();
            for _ in 0..n {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                flat.push(((2.0 * u - 1.0) * bound) as f32);
            }
        }
        self.set_from_flat(&flat)?;
        Ok(flat)
    }

    /// The linear layers of a built-in model, input first (`None` for a TorchScript model).
    pub(crate) fn linear_layers(&self) -> Option<&[nn::Linear]> {
        match &self.net {
            Net::Builtin(layers) => Some(layers),
            Net::Script(_) => None,
        }
    }

    /// Refuses a model that may hold a batch-norm layer, for training under record-level
    /// differential privacy: a TorchScript model loaded without the row-independence check,
    /// or any variable of the store that is a batch-norm buffer (`running_mean`,
    /// `running_var`, `num_batches_tracked`), wherever it was added from.
    pub fn refuse_batch_norm(&self) -> Result<(), ModelError> {
        if !self.rows_independent {
            return Err(ModelError::BatchNorm(
                "the TorchScript model was loaded without the row-independence check (load it \
                 with differential privacy on)"
                    .into(),
            ));
        }
        const BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];
        let mut names: Vec<String> = self.vs.variables().into_keys().collect();
        names.sort();
        if let Some(n) = names
            .iter()
            .find(|n| BUFFERS.iter().any(|b| n.ends_with(b)))
        {
            return Err(ModelError::BatchNorm(format!(
                "the model holds the batch-norm buffer {n:?}"
            )));
        }
        Ok(())
    }

    /// Number of values in the flat vector.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// The trainable parameters in flat order.
    pub fn params(&self) -> &[Tensor] {
        &self.order
    }

    /// The parameters as one vector, in flat order.
    pub fn flat(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.numel);
        for t in &self.order {
            let flat = t.detach().flatten(0, -1);
            let n = flat.numel();
            let start = out.len();
            out.resize(start + n, 0.0);
            flat.copy_data(&mut out[start..], n);
        }
        out
    }

    /// Overwrites the parameters from a flat vector (refused unless the length matches and
    /// every value is finite; nothing changes on refusal).
    pub fn set_from_flat(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        if flat.len() != self.numel {
            return Err(ModelError::FlatLength {
                got: flat.len(),
                want: self.numel,
            });
        }
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite(i));
        }
        tch::no_grad(|| {
            let mut at = 0;
            for t in &mut self.order {
                let n = t.numel();
                let src = Tensor::from_slice(&flat[at..at + n]).view(t.size().as_slice());
                t.copy_(&src);
                at += n;
            }
        });
        Ok(())
    }

    /// Splits a flat vector into tensors shaped like the parameters (no gradient).
    pub fn unflatten(&self, flat: &[f32]) -> Result<Vec<Tensor>, ModelError> {
        if flat.len() != self.numel {
            return Err(ModelError::FlatLength {
                got: flat.len(),
                want: self.numel,
            });
        }
        let mut at = 0;
        Ok(self
            .order
            .iter()
            .map(|t| {
                let n = t.numel();
                let out = Tensor::from_slice(&flat[at..at + n]).view(t.size().as_slice());
                at += n;
                out
            })
            .collect())
    }

    /// Switches dropout/normalization layers (TorchScript models) to training or evaluation mode.
    pub fn set_train(&mut self, train: bool) {
        if let Net::Script(m) = &mut self.net {
            if train { m.set_train() } else { m.set_eval() }
        }
    }

    /// Logits, shape `[n, 1]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let out = match &self.net {
            Net::Builtin(layers) => {
                let mut h = x.shallow_clone();
                for (i, l) in layers.iter().enumerate() {
                    h = l.forward(&h);
                    if i + 1 < layers.len() {
                        h = h.relu();
                    }
                }
                h
            }
            Net::Script(m) => m.forward_ts(&[x])?,
        };
        let size = out.size();
        if size.len() != 2 || size[1] != 1 {
            return Err(ModelError::Output(size));
        }
        Ok(out)
    }

    /// Failure probabilities in evaluation mode.
    pub fn predict(&mut self, x: &Tensor) -> Result<Vec<f32>, ModelError> {
        self.set_train(false);
        let p = tch::no_grad(|| self.forward(x).map(|l| l.sigmoid().flatten(0, -1)))?;
        let n = p.numel();
        let mut out = vec![0.0f32; n];
        p.copy_data(&mut out, n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        ModelSpec {
            arch: Arch::Mlp { hidden: vec![4, 3] },
            features: FeatureSet { physics: false },
        }
    }

    #[test]
    fn order_is_by_original_name_and_collisions_are_refused() {
        let names: Vec<String> = ["b.weight", "a.weight", "a.bias", "a_c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            param_order(&names, true).unwrap(),
            ["a_bias", "a_weight", "a_c", "b_weight"]
        );
        let clash: Vec<String> = ["x.y", "x_y"].iter().map(|s| s.to_string()).collect();
        assert!(
            matches!(param_order(&clash, true), Err(ModelError::Collision(a, b)) if a == "x.y" && b == "x_y")
        );
        assert!(param_order(&clash, false).is_ok());
    }

    #[test]
    fn flat_round_trips_in_name_order() {
        tch::manual_seed(1);
        let mut m = Model::new(&spec()).unwrap();
        // 8*4+4 + 4*3+3 + 3*1+1 parameters.
        assert_eq!(m.numel(), 36 + 15 + 4);
        let flat = m.flat();
        // layer0.bias (4 values) comes first, then layer0.weight (32 values).
        let vars = m.vs.variables();
        let b0 = Vec::<f32>::try_from(&vars["layer0.bias"]).unwrap();
        assert_eq!(&flat[..4], b0.as_slice());
        let w0 = Vec::<f32>::try_from(vars["layer0.weight"].flatten(0, -1)).unwrap();
        assert_eq!(&flat[4..36], w0.as_slice());
        let new: Vec<f32> = (0..m.numel()).map(|i| i as f32 * 0.01).collect();
        m.set_from_flat(&new).unwrap();
        assert_eq!(m.flat(), new);
        assert!(matches!(
            m.set_from_flat(&new[1..]),
            Err(ModelError::FlatLength { .. })
        ));
        let mut bad = new.clone();
        bad[3] = f32::NAN;
        assert!(matches!(
            m.set_from_flat(&bad),
            Err(ModelError::NonFinite(3))
        ));
        assert_eq!(m.flat(), new, "a refused vector changes nothing");
        assert!(matches!(
            Model::new(&ModelSpec {
                arch: Arch::Mlp { hidden: vec![] },
                features: FeatureSet::default()
            }),
            Err(ModelError::Hidden)
        ));
    }
}
