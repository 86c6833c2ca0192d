//! Errors of key files and manifests. Each says what was refused and why, and — for files —
//! which path; a manifest refused for a signature names the member it concerns.

use std::path::PathBuf;

/// Why an identity key could not be created, written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key directory or file grants access beyond its owner.
    #[error(
        "{what} {path} has mode {mode:04o}, which lets others read it; \
         fix with `chmod {fix:o} {path}`",
        path = .path.display()
    )]
    Permissions {
        /// "key directory" or "key file".
        what: &'static str,
        /// The path refused.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to set (0700 for the directory, 0600 for the file).
        fix: u32,
    },
    /// The path is a symbolic link, which could point anywhere.
    #[error("{} is a symbolic link; give the key file itself", .0.display())]
    Symlink(PathBuf),
    /// The key file changed between looking at its name and opening it.
    #[error("{} was replaced while it was being opened; refusing it", .0.display())]
    Swapped(PathBuf),
    /// A key already exists there; generating would overwrite a plant's identity.
    #[error("{} already exists; an identity key is never overwritten", .0.display())]
    Exists(PathBuf),
    /// The file is not a key file of the documented format.
    #[error("{path} is not an Amalgam identity key file: {reason}", path = .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The operating system refused a read or write.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No randomness from the operating system.
    #[error("the operating system's random number generator failed")]
    Entropy,
}

/// Why a manifest, draft, join request, or epoch high-water file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read or written.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is larger than any valid one.
    #[error("{} is larger than {max} bytes", .path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Largest accepted size.
        max: usize,
    },
    /// The bytes do not decode (truncated, trailing data, bad tag, non-canonical form).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The TOML draft or request does not parse.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// Which file kind.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A manifest field breaks a rule (the rule is named).
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// Protocol parameters refused by amalgam-proto's validation.
    #[error("unsafe protocol parameters: {0}")]
    Params(#[from] amalgam_proto::ParamError),
    /// DP parameters refused by amalgam-dp's validation.
    #[error("unsafe DP parameters: {0}")]
    DpParams(#[from] amalgam_dp::error::ParamError),
    /// A member's signature is absent.
    #[error("member {name} ({organisation}) has not signed this manifest")]
    MissingSignature {
        /// Member name.
        name: String,
        /// Organisation.
        organisation: String,
    },
    /// A member's signature does not verify over the exact canonical bytes.
    #[error("the signature of member {name} ({organisation}) does not verify")]
    BadSignature {
        /// Member name.
        name: String,
        /// Organisation.
        organisation: String,
    },
    /// A signature slot count differs from the member count (a signature by a non-member,
    /// or a slot dropped).
    #[error("{signatures} signature slots for {members} members")]
    SignatureCount {
        /// Slots in the file.
        signatures: usize,
        /// Members in the manifest.
        members: usize,
    },
    /// A join request's signature does not verify under the key it carries.
    #[error("the join request of {name} is not signed by its key")]
    BadJoinRequest {
        /// Requested member name.
        name: String,
    },
    /// The signer's key is not a member of the draft.
    #[error("key {fingerprint} is not a member of this draft")]
    NotAMember {
        /// Fingerprint of the key.
        fingerprint: String,
    },
    /// The manifest does not list this party's own key: it never signed it, so it must not
    /// accept it (an aggregator alone could otherwise build a next epoch of itself and Sybils).
    #[error("this manifest does not list your key {fingerprint}: you did not sign it, refusing it")]
    NotListed {
        /// Fingerprint of the party's own key.
        fingerprint: String,
    },
    /// `sign` without every other member's fingerprint verified out of band.
    #[error("refusing to sign: fingerprints not verified for {0}")]
    Unverified(String),
    /// A key rotation statement is missing or does not verify.
    #[error("key rotation of member {name}: {reason}")]
    Rotation {
        /// Member name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Another consortium's manifest.
    #[error("manifest of consortium {got:?}, expected {expected:?}")]
    WrongConsortium {
        /// The one accepted before.
        expected: String,
        /// The one presented.
        got: String,
    },
    /// An epoch below the one already accepted (rollback).
    #[error("epoch {got} is older than the accepted epoch {accepted}")]
    EpochRegressed {
        /// Highest accepted.
        accepted: u64,
        /// Presented.
        got: u64,
    },
    /// The accepted epoch number with different content (a fork).
    #[error("epoch {epoch} differs from the accepted manifest of that epoch (fork)")]
    EpochForked {
        /// The epoch.
        epoch: u64,
    },
    /// An epoch more than one above the accepted one: its chain cannot be checked.
    #[error("epoch {got} skips epochs after the accepted epoch {accepted}; present each in turn")]
    EpochGap {
        /// Highest accepted.
        accepted: u64,
        /// Presented.
        got: u64,
    },
    /// The previous-epoch digest does not chain to the accepted manifest.
    #[error("epoch {epoch} does not chain: its previous digest is not the accepted epoch's")]
    ChainBroken {
        /// The epoch presented.
        epoch: u64,
    },
    /// A round number that is not allowed (e.g. beyond the campaign).
    #[error("round {round}: {reason}")]
    Round {
        /// The round.
        round: u64,
        /// Why.
        reason: &'static str,
    },
}

impl ManifestError {
    /// Whether the failure is one of authenticity (signatures, chain, rotation): the CLI exits
    /// with status 4 for these.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::MissingSignature { .. }
                | Self::BadSignature { .. }
                | Self::SignatureCount { .. }
                | Self::BadJoinRequest { .. }
                | Self::Rotation { .. }
                | Self::EpochRegressed { .. }
                | Self::EpochForked { .. }
                | Self::EpochGap { .. }
                | Self::ChainBroken { .. }
                | Self::WrongConsortium { .. }
                | Self::NotAMember { .. }
                | Self::NotListed { .. }
                | Self::Unverified(_)
        )
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
