//! Amalgam's aggregator service (normative text: `protocol-spec/service.md`).
//!
//! The server drives `amalgam_proto::Aggregator` for each round over an HTTPS API: sites
//! authenticate by mutual TLS with their identity keys ([`amalgam_net::tls`]), upload the
//! canonical bytes of each phase's message and fetch their downloads by long-poll. Round
//! parameters come from the consortium manifest ([`consortium::ConsortiumView`]), never from a
//! request. Every accepted upload, close decision and download is appended to the event log
//! ([`events::EventStore`]) before its response leaves; a restart replays the log into fresh
//! aggregators that re-verify everything ([`replay`]).
//!
//! * [`round`]: one round's synchronous state (idempotency, downloads, deadlines).
//! * [`service`]: the async layer: locks, bounded worker pool, timers, long-polls.
//! * [`http`]: routes and problem+json; [`listen`]: TLS accept loop that binds each
//!   connection to its member.
//! * [`campaign`]: successive rounds, each bound to the model the previous one produced;
//!   [`model`]: the chain of model digests (and the latest models) rounds are bound to.
//! * [`metrics`], [`openapi`], [`fault`].

pub mod campaign;
pub mod consortium;
pub mod events;
pub mod fallback;
pub mod fault;
pub mod http;
pub mod limits;
pub mod listen;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod replay;
pub mod round;
pub mod service;
mod summary;

pub use service::{Service, ServiceConfig};
