//! The one AEAD construction every store uses: ChaCha20-Poly1305 under a 32-byte key with a
//! fresh random 96-bit nonce per encryption, stored in front of the ciphertext. Random nonces
//! are safe here because each key encrypts few messages (one round's bodies, or one site's
//! state files), far below the ~2^32 messages at which collisions become a concern.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

/// Nonce length in bytes.
pub(crate) const NONCE_LEN: usize = 12;
/// Poly1305 tag length in bytes.
pub(crate) const TAG_LEN: usize = 16;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `nonce ‖ ciphertext ‖ tag` of `plaintext` under `key` and `aad`, nonce from the OS.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| StoreError::Entropy)?;
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption fails only for messages beyond the cipher's 256 GiB limit, which the
        // stores' size bounds exclude; report it rather than panic.
        .map_err(|_| StoreError::InvalidInput {
            what: "plaintext",
            why: "too long for ChaCha20-Poly1305",
        })?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens `nonce ‖ ciphertext ‖ tag`; `None` on any failure (wrong key, AAD, or bytes).
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    cipher
        .decrypt(&Nonce::from(n), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}
