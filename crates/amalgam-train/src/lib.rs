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
//! Normative behaviour: `protocol-spec/training.md`.

pub mod builtin;
pub mod campaign;
pub mod data;
pub mod experiment;
pub mod export;
pub mod features;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod plant_files;
pub mod script;
pub mod site_trainer;
pub mod split;
pub mod summary;
pub mod train;
