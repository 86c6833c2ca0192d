//! The built-in models a campaign can pin by name, and the digest of a model's parameter list.
//!
//! A manifest pins a model by name, parameter count, parameter-list digest and the digest of
//! its initial weights. The name must resolve to the same architecture, features and loss at
//! every plant, so each built-in fixes all of them here, in code every site runs; nothing of
//! it comes from a plant's data.

use sha2::{Digest, Sha256};
use tch::Kind;

use crate::features::FeatureSet;
use crate::model::{Arch, Model, ModelError, ModelSpec, param_order};

/// Domain of [`parameter_list_digest`].
const PARAM_LIST_DOMAIN: &[u8] = b"amalgam/v1/train/parameter-list\0";

/// A model compiled into every site, with the parts of the local recipe the manifest does not
/// carry (the loss weight of the failure class, SGD momentum).
#[derive(Debug, Clone, PartialEq)]
pub struct Builtin {
    /// The name a manifest pins (`builtin:NAME`).
    pub name: &'static str,
    /// Architecture and features.
    pub spec: ModelSpec,
    /// `pos_weight` of the BCE loss: fixed here, never computed from local class counts.
    pub pos_weight: f64,
    /// Momentum of local SGD (ignored by Adam).
    pub momentum: f64,
}

/// Names of the built-in models.
pub const BUILTIN_NAMES: [&str; 2] = ["mlp-ai4i", "logistic-ai4i"];

/// Why a built-in name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown built-in model {0:?} (known: mlp-ai4i, logistic-ai4i)")]
pub struct UnknownBuiltin(pub String);

/// The built-in model called `name`: `mlp-ai4i` is the default recipe's MLP (11 → 64 → 32 →
/// 1 on the raw and physics features, `configs/campaign-default.toml`), `logistic-ai4i` a
/// logistic regression on the same features. Both use `pos_weight` 3 and momentum 0.9.
pub fn builtin(name: &str) -> Result<Builtin, UnknownBuiltin> {
    let (name, arch) = match name {
        "mlp-ai4i" => (
            "mlp-ai4i",
            Arch::Mlp {
                hidden: vec![64, 32],
            },
        ),
        "logistic-ai4i" => ("logistic-ai4i", Arch::Logistic),
        other => return Err(UnknownBuiltin(other.to_string())),
    };
    Ok(Builtin {
        name,
        spec: ModelSpec {
            arch,
            features: FeatureSet { physics: true },
        },
        pos_weight: 3.0,
        momentum: 0.9,
    })
}

impl Builtin {
    /// A fresh model of this architecture with weights drawn from `seed`
    /// ([`Model::init_seeded`]); returns the model and its flat initial weights.
    pub fn init(&self, seed: u64) -> Result<(Model, Vec<f32>), ModelError> {
        let mut model = Model::new(&self.spec)?;
        let flat = model.init_seeded(seed)?;
        Ok((model, flat))
    }
}

/// SHA-256 over the domain, the parameter count (u64 LE) and, for each trainable float32
/// parameter in flat order: its dotted name (u32 LE length, bytes), its dtype (`f32`, length
/// prefixed), its rank (u32 LE) and each dimension (u64 LE). Two models with this digest
/// flatten to vectors whose positions mean the same thing. Built-in models only (their
/// VarStore names are the original names).
pub fn parameter_list_digest(model: &Model) -> Result<[u8; 32], ModelError> {
    let vars = model.vs.variables();
    let names: Vec<String> = vars.keys().cloned().collect();
    let ordered: Vec<(String, Vec<i64>)> = param_order(&names, false)?
        .into_iter()
        .filter_map(|n| {
            let t = vars.get(&n)?;
            (t.requires_grad() && t.kind() == Kind::Float).then(|| (n, t.size()))
        })
        .collect();
    let mut h = Sha256::new();
    h.update(PARAM_LIST_DOMAIN);
    h.update((ordered.len() as u64).to_le_bytes());
    for (name, shape) in &ordered {
        h.update((name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(3u32.to_le_bytes());
        h.update(b"f32");
        h.update((shape.len() as u32).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_and_their_parameter_lists_differ() {
        let mlp = builtin("mlp-ai4i").unwrap();
        let log = builtin("logistic-ai4i").unwrap();
        assert_eq!(builtin("mlp").unwrap_err(), UnknownBuiltin("mlp".into()));
        let (m, flat) = mlp.init(1).unwrap();
        // 11*64+64 + 64*32+32 + 32+1.
        assert_eq!(m.numel(), 768 + 2080 + 33);
        assert_eq!(flat.len(), m.numel());
        let (l, _) = log.init(1).unwrap();
        assert_eq!(l.numel(), 12);
        let d = parameter_list_digest(&m).unwrap();
        assert_eq!(d, parameter_list_digest(&mlp.init(2).unwrap().0).unwrap());
        assert_ne!(d, parameter_list_digest(&l).unwrap());
    }
}
