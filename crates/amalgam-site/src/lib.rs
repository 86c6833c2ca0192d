//! The Amalgam site agent: what a plant runs to take part in secure-aggregation rounds.
//!
//! Normative behaviour: `protocol-spec/site-agent.md`. Per round the agent
//!
//! * takes every parameter from the verified manifest and the round id ([`ConsortiumRules`]),
//!   never from the aggregator;
//! * applies the budget rules before AdvertiseKeys: the abort cap, the ledger checked against
//!   the last summary it uploaded, the ε charge ([`amalgam_dp::ledger::Ledger::authorize`]);
//!   a site over a cap sends a signed [`statements::Decline`] and is never a dropout;
//! * trains under the permit ([`Trainer`]), clips, rotates, noises and encodes the update
//!   ([`amalgam_dp::encoding::DdgCodec`]), and drives [`amalgam_proto::Site`] over a
//!   [`Transport`], persisting every state sealed (`amalgam_store::SealedStore`) before its
//!   upload leaves;
//! * checks for a restore from an older state copy before the round and each phase;
//! * decodes the published sum, computes model_{r+1} itself ([`model`]) and checks the
//!   aggregator's, deletes the round's secrets, uploads a signed [`statements::LedgerSummary`].
//!
//! [`fallback`] runs the re-run of an aborted masking round through the homomorphic fallback
//! where the manifest's policy allows it: a new round id, a second charge, fresh noise, one
//! sealed upload persisted before it leaves.
//!
//! The core is synchronous and transport-independent: [`testing`] runs whole rounds in
//! memory against `amalgam_proto::Aggregator`; [`http::HttpTransport`] drives the same core
//! over mutually authenticated HTTPS. [`fault`] holds the crash-test points (feature
//! `fault-points`, test builds only) at which a harness kills the agent.

pub mod agent;
pub mod error;
pub mod fallback;
pub mod fault;
pub mod http;
pub mod model;
pub mod record;
pub mod retry;
pub mod round;
pub mod rules;
pub mod statements;
pub mod testing;
pub mod timing;
pub mod trainer;
pub mod transport;

pub use agent::{AgentOptions, SiteAgent};
pub use error::AgentError;
pub use fallback::{FallbackPoll, FallbackTransport};
pub use round::RoundOutcome;
pub use rules::ConsortiumRules;
pub use trainer::{
    FixedUpdateTrainer, GlobalModel, Permits, RecordCharge, RoundInfo, SyntheticTrainer,
    TrainError, TrainOutput, Trainer,
};
pub use transport::{Download, RoundResult, Transport, TransportError};
