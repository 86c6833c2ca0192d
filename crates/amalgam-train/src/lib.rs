//! The plant trainer of Amalgam: AI4I 2020 data, seeded plant splits, metrics, models on tch
//! (libtorch 2.13.0), local training with FedAvg/FedProx, and in-process federated experiments.
//!
//! Every plant of a campaign runs the same code on its own rows: the same features with the
//! same public bounds ([`features`]), the same model with the same flat parameter order
//! ([`model`]), the same local recipe ([`train`], [`campaign`]). Its output per round is one
//! update vector — the input of secure aggregation. The experiment module ([`experiment`])
//! runs a whole consortium in one process, with plaintext aggregation, to choose and check a
//! recipe against centralized training on the pooled rows.
//!
//! Record-level differential privacy inside the trainer is DP-SGD ([`dpsgd`]): Poisson
//! subsampling, per-example clipping, grid rounding and discrete Gaussian noise.
//!
//! Normative behaviour: `protocol-spec/training.md`.

// Replayable Poisson coins must never reach a release build (as amalgam-dp's seeded streams).
#[cfg(all(feature = "test-vectors", not(debug_assertions), not(test)))]
compile_error!(
    "amalgam-train's `test-vectors` feature (replayable Poisson coins) is for tests only and \
     cannot be built without debug assertions"
);

pub mod builtin;
pub mod campaign;
pub mod data;
pub mod dpsgd;
pub mod experiment;
pub mod export;
pub mod features;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod plant_files;
pub mod record_curve;
pub mod script;
pub mod secure_campaign;
pub mod site_trainer;
pub mod split;
pub mod summary;
pub mod train;
