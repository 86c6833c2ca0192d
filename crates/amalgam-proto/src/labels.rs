//! Domain-separation labels (spec §4). Every hash, KDF and signature input starts with one.

/// Manifest digest.
pub const MANIFEST: &[u8] = b"amalgam/v1/manifest";
/// Round context (pre-session id: caller's context digest, parameters, round number). Version 2:
/// the parameters now carry c, f and the aggregator trust model, and the digest is the caller's.
pub const ROUND_CONTEXT: &[u8] = b"amalgam/v2/round-context";
/// Session id: hash of all accepted round-0 messages.
pub const SESSION: &[u8] = b"amalgam/v1/session";
/// Signature over a site → aggregator message.
pub const SIG_MESSAGE: &[u8] = b"amalgam/v1/sig/message";
/// Signature over the survivor set (consistency check).
pub const SIG_CONSISTENCY: &[u8] = b"amalgam/v1/sig/consistency";
/// HKDF info prefix: share-encryption key.
pub const KDF_SHARE_KEY: &[u8] = b"amalgam/v1/kdf/share-key";
/// AEAD associated-data prefix for encrypted shares.
pub const AAD_SHARE: &[u8] = b"amalgam/v1/aad/share";
/// HKDF info prefix: pairwise mask PRG key.
pub const KDF_PAIR_MASK: &[u8] = b"amalgam/v1/kdf/pair-mask";
/// HKDF info prefix: self mask PRG key.
pub const KDF_SELF_MASK: &[u8] = b"amalgam/v1/kdf/self-mask";
/// Commitment to the self-mask seed b.
pub const B_COMMITMENT: &[u8] = b"amalgam/v1/commit/self-mask-seed";
