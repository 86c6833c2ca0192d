//! Domain-separation labels (spec consortium.md §3). Every hash and signature of this crate
//! starts with one, so that no value signed here is valid anywhere else.

/// Signature over a manifest's canonical bytes.
pub const MANIFEST_SIG: &[u8] = b"amalgam/consortium/manifest/v1";
/// `consortium_digest` = SHA-256(label ‖ canonical bytes).
pub const DIGEST: &[u8] = b"amalgam/consortium/digest/v1";
/// `context_digest` = SHA-256(label ‖ consortium_digest ‖ model digest).
pub const CONTEXT: &[u8] = b"amalgam/consortium/context/v1";
/// Public per-round seed of the randomized Hadamard rotation.
pub const ROTATION_SEED: &[u8] = b"amalgam/consortium/hadamard-seed/v1";
/// Join request signature.
pub const JOIN: &[u8] = b"amalgam/consortium/join/v1";
/// Key rotation statement (old key signs the new key).
pub const KEY_ROTATION: &[u8] = b"amalgam/consortium/key-rotation/v1";
/// Fingerprint of an identity key.
pub const FINGERPRINT: &[u8] = b"amalgam/consortium/fingerprint/v1";
/// Canonical encoding magic (first bytes of every manifest body).
pub const BODY_MAGIC: &[u8] = b"AMCM\x01";
