//! A campaign's training recipe, read from a TOML file that every plant receives.

use serde::{Deserialize, Serialize};

use crate::model::{Arch, ModelSpec};
use crate::train::LocalConfig;

/// Largest accepted recipe file.
pub const MAX_RECIPE_BYTES: usize = 64 * 1024;

/// Model, local training and server-side parameters of a federated campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The model every plant trains.
    pub model: ModelSpec,
    /// Local training at each plant.
    pub local: LocalConfig,
    /// Server-side aggregation.
    pub federated: FederatedConfig,
}

/// Server-side parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedConfig {
    /// Rounds of the campaign.
    pub rounds: usize,
    /// Server learning rate applied to the weighted mean update (1 = plain FedAvg).
    pub server_lr: f64,
    /// Rounds between validation checks; the best validated model is kept.
    pub eval_every: usize,
    /// FedProx μ used by the FedProx arm of an experiment.
    pub fedprox_mu: f64,
    /// Local epochs of per-plant fine-tuning after the campaign.
    pub finetune_epochs: usize,
}

impl Recipe {
    /// Parses and range-checks a recipe.
    pub fn from_toml(text: &str) -> Result<Recipe, String> {
        if text.len() > MAX_RECIPE_BYTES {
            return Err(format!("recipe is over {MAX_RECIPE_BYTES} bytes"));
        }
        let r: Recipe = toml::from_str(text).map_err(|e| format!("recipe: {e}"))?;
        r.validate()?;
        Ok(r)
    }

    /// Range checks.
    pub fn validate(&self) -> Result<(), String> {
        self.local.validate()?;
        if let Arch::Mlp { hidden } = &self.model.arch
            && (hidden.is_empty()
                || hidden.len() > crate::model::MAX_LAYERS
                || hidden
                    .iter()
                    .any(|&h| h == 0 || h > crate::model::MAX_HIDDEN))
        {
            return Err("MLP hidden sizes out of range".into());
        }
        let f = &self.federated;
        if !(1..=100_000).contains(&f.rounds) || !(1..=f.rounds).contains(&f.eval_every) {
            return Err("rounds must be 1..=100000 and eval_every 1..=rounds".into());
        }
        if !(f.server_lr.is_finite() && f.server_lr > 0.0 && f.server_lr <= 100.0) {
            return Err("server_lr must be in (0, 100]".into());
        }
        if !(f.fedprox_mu.is_finite() && (0.0..=100.0).contains(&f.fedprox_mu))
            || f.finetune_epochs > 1000
        {
            return Err("fedprox_mu must be in [0, 100] and finetune_epochs at most 1000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_default_recipe_parses_and_bad_ones_are_refused() {
        let text = include_str!("../../../configs/campaign-default.toml");
        let r = Recipe::from_toml(text).unwrap();
        assert!(r.federated.rounds >= 1);
        assert!(
            Recipe::from_toml(&text.replace("[federated]", "[federated]\nsurprise = 1")).is_err()
        );
        assert!(Recipe::from_toml(&text.replace("pos_weight =", "pos_weight = -1 #")).is_err());
    }
}
