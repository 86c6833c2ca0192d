//! The homomorphic fallback on the aggregator (spec `service.md` §9, `he-fallback.md`).
//!
//! A fallback round is a separate round kind with its own event log (so the masking replay is
//! untouched): sites upload one `SignedUpload` each; decryptors fetch their views (the signed
//! upload structure with their own box, every box digest and the ciphertext digest — never a
//! ciphertext), fetch the cohort statement, post their signatures and piece-sum releases; the
//! service publishes only the decoded sum. Ciphertext bodies are secret events of the log,
//! stored in its `BlobVault` under the round's key and crypto-shredded when the round ends;
//! digests, the statement and the signatures stay.
//!
//! * [`setup`]: where a round's `RoundSetup` comes from (manifest, committee keys, round id).
//! * [`state`]: one round's synchronous state (idempotency, refusals change nothing).
//! * [`service`]: locking, persistence before response, timers, long-polls, shredding.
//! * [`keys`]: the committee's key-period certificates the aggregator relays.
//! * [`give_up`]: the campaign's give-up of a re-run that never opened, kept in the log.
//! * [`http`]: the routes and their role checks; [`replay`]: restart.

pub mod give_up;
pub mod http;
pub mod keys;
pub mod openapi;
pub mod replay;
pub mod service;
pub mod setup;
pub mod state;

pub use service::FallbackService;
pub use setup::{CertifiedFallback, FallbackSetups, StaticFallback};
