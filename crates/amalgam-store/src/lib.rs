//! Crash-safe persistence for Amalgam's service. Pure storage: no network, no protocol logic;
//! the server, the site agent and the decryptor give meaning to what is stored.
//!
//! - [`EventLog`] / [`EventLogHandle`]: the aggregator's append-only SQLite event log
//!   (uploads once each with their responses, phase-close decisions, every download's exact
//!   bytes), hash-chained, its head kept in an anchor file (a cut tail, a deleted write-ahead
//!   log or a rewritten chain is refused at open), single writer thread, exclusive lock,
//!   group commit. The chain has no key: whoever rewrites every file, anchor included, wins
//!   locally; [`EventLogHandle::head`] is for signed records kept elsewhere.
//! - [`BlobVault`]: per-round ChaCha20-Poly1305 blob vault whose round key is deleted to
//!   crypto-shred the round's secret bodies.
//! - [`StateKey`], [`SealedStore`], [`StateAad`], [`HighWater`]: a site's secrets sealed at
//!   rest, bound to consortium, site, round, phase and name; a high-water mark that never
//!   goes backwards.
//! - [`StatementStore`]: the decryptor's once-per-round statement record.
//! - [`atomic_write`], [`fs_kind`]: file utilities for every crate; [`fault::fault_point`]:
//!   crash-test hooks (feature `fault-points`).
//!
//! Every file read is untrusted: sizes are bounded, digests and AEAD tags are checked, and
//! errors ([`StoreError`]) name the file or sequence number that failed. The normative
//! description is `protocol-spec/persistence.md`.

mod crypto;
mod error;
mod eventlog;
pub mod fault;
mod fs;
mod highwater;
mod lock;
mod sealed;
mod sqlite;
mod statement;
mod vault;

pub use crypto::sha256;
pub use error::{Result, StoreError};
pub use eventlog::{
    Durability, Event, EventKind, EventLog, EventLogHandle, EventLogOptions, MAX_META_KEY,
    MAX_META_VALUE, MAX_NONCE, NewEvent, StoredUpload,
};
pub use fs::{FsKind, atomic_write, fs_kind, refuse_network_fs, sync_dir};
pub use highwater::HighWater;
pub use lock::LockFile;
pub use sealed::{SealedStore, StateAad, StateKey};
pub use statement::{Recorded, StatementStore};
pub use vault::BlobVault;
