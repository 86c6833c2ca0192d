//! One error type for every store. Each variant names what was refused and where, so that an
//! operator (or the server's HTTP layer) can tell a tampered file from a locked one from a
//! caller's mistake; a refused operation leaves the stored state as it was.

use std::path::PathBuf;

/// Everything a store operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another handle in this process) holds the exclusive lock: a second
    /// aggregator or decryptor on the same database.
    #[error("{} is locked: another process already has this store open", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The event log does not verify at `seq`: a body whose digest does not match, a broken
    /// hash chain (a row changed, deleted or moved), or a missing sequence number.
    #[error("event log tampered at sequence number {seq}: {what}")]
    Tampered {
        /// The first sequence number that failed verification.
        seq: u64,
        /// What did not verify.
        what: &'static str,
    },
    /// The store holds less than its anchor file records: rows were cut from the tail, the
    /// write-ahead log (`<db>-wal`) was deleted while the process was down, or an older backup
    /// was put back. Acknowledged commits are missing.
    #[error(
        "{} records {anchored} but the store holds only {found}: truncated tail, deleted write-ahead log or an old backup",
        path.display()
    )]
    Truncated {
        /// The anchor file.
        path: PathBuf,
        /// Sequence number (event log) or count (statement store) found.
        found: u64,
        /// What the anchor records.
        anchored: u64,
    },
    /// The event log does not end where its anchor file says (`<db>.anchor`): a row at or
    /// below the anchored head was rewritten (hashes recomputed), rows were appended that the
    /// writer never committed, or the anchor file is missing or damaged.
    #[error("{} does not match the event log at sequence number {seq}: {what}", path.display())]
    AnchorMismatch {
        /// The anchor file.
        path: PathBuf,
        /// The sequence number where log and anchor disagree.
        seq: u64,
        /// What disagreed.
        what: &'static str,
    },
    /// A file outside the event log (vault blob, sealed state, key, statement row) failed its
    /// integrity check: wrong length, bad header, or authentication failure.
    #[error("{} failed its integrity check: {what}", path.display())]
    Corrupt {
        /// The file (or database) that failed.
        path: PathBuf,
        /// What did not verify.
        what: &'static str,
    },
    /// The round's key was deleted (crypto-shredding): its secret bodies are gone for good.
    #[error("round {round} was shredded; its secret bodies are no longer readable")]
    Shredded {
        /// The shredded round.
        round: u64,
    },
    /// The round's vault key file is missing although the round holds encrypted data, and the
    /// round was not shredded: the store refuses to mint a new key over it.
    #[error("the key for round {round} is missing but the round has encrypted data")]
    KeyMissing {
        /// The round whose key is missing.
        round: u64,
    },
    /// A decryptor tried to record a second, different statement for a round.
    #[error("round {round} already has a different recorded statement")]
    SecondStatement {
        /// The round.
        round: u64,
    },
    /// A body, response or file exceeds its configured maximum.
    #[error("{what} of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A secret file is readable or writable by group or others.
    #[error("{} has mode {mode:o}; a secret file must not be accessible to group or others", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A second upload or download for the same (round, phase, site) key.
    #[error("a {kind} for round {round}, phase {phase}, site {site} is already stored")]
    Duplicate {
        /// "upload" or "download".
        kind: &'static str,
        /// The round.
        round: u64,
        /// The phase.
        phase: u8,
        /// The sender (upload) or recipient (download).
        site: u32,
    },
    /// A sealed file's header names another round, phase, consortium, site or version than
    /// the caller expects (a file moved or restored from elsewhere).
    #[error("sealed file {} was written for a different round, phase, site or consortium", path.display())]
    SealedMismatch {
        /// The file.
        path: PathBuf,
    },
    /// A high-water mark would go backwards.
    #[error("high-water mark {} would go backwards from {current} to {requested}", path.display())]
    Backwards {
        /// The high-water file.
        path: PathBuf,
        /// The stored value.
        current: u64,
        /// The refused value.
        requested: u64,
    },
    /// The directory is on a network file system, where locks and fsync are not reliable.
    #[error("{} is on a network file system ({kind}); locks and fsync are not reliable there", path.display())]
    NetworkFs {
        /// The directory.
        path: PathBuf,
        /// The file system's name.
        kind: &'static str,
    },
    /// The database was written by another, unknown schema version.
    #[error("{} has schema version {found}, this build reads version {expected}", path.display())]
    SchemaVersion {
        /// The database.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The version this build writes.
        expected: i64,
    },
    /// The caller passed something this store cannot hold (bad name, missing sender...).
    #[error("invalid {what}: {why}")]
    InvalidInput {
        /// The argument.
        what: &'static str,
        /// Why it was refused.
        why: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("operating system randomness unavailable")]
    Entropy,
    /// An earlier chained append (one whose caller already acted on it, see
    /// `EventLogHandle::queue_chained`) was lost: its caller's state is ahead of the log, so
    /// nothing chained after it may commit. The log refuses every append until it is reopened.
    #[error("the event log refuses appends: an earlier chained append was lost ({why})")]
    Poisoned {
        /// What lost the earlier append.
        why: String,
    },
    /// The event log's writer thread has stopped (all its work is committed or refused).
    #[error("the event log writer has stopped")]
    Closed,
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file system failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Results of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;
