//! The aggregator service under measurement: a consortium with keys from OS randomness, the
//! real `amalgam-server` over mutual TLS with its SQLite event log (`synchronous=FULL`), site
//! clients on `amalgam-net`'s HTTPS client, and the floor routes that carry the same bytes
//! through the same listener, connections and log with nothing of the protocol around them.
//!
//! * [`fixture`]: the deployment (consortium, TLS identities, service settings, listener).
//! * [`floor`]: one upload per site, the same packed summation, one download.
//! * [`live`]: sites running `amalgam_proto::Site` over the API, computing as they go.
//! * [`fallback`]: the homomorphic fallback's aggregator, precomputed site uploads and an
//!   in-process decryptor committee over the same kind of connections.
//! * [`record`]: one round run in memory first, so that a load generator can replay each
//!   site's uploads over HTTPS without computing them while it is measured.

pub mod fallback;
pub mod fixture;
pub mod floor;
pub mod live;
pub mod record;

pub use fixture::{Deployment, Running, os_seed};
