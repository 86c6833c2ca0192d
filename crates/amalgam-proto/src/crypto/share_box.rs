//! Encryption of one site's shares to one recipient (spec §4.4): ChaCha20-Poly1305 under a
//! key from HKDF over the X25519 agreement of the c keys; the AAD binds session id, round,
//! sender and recipient, and the plaintext repeats sender and recipient (Bonawitz et al.).

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use zeroize::Zeroizing;

use crate::labels;
use crate::params::SiteId;

/// Plaintext: sender u16 | recipient u16 | s_sk share y (32) | b share y (32).
pub const PLAINTEXT_LEN: usize = 2 + 2 + 32 + 32;
/// Ciphertext: plaintext + 16-byte Poly1305 tag.
pub const CIPHERTEXT_LEN: usize = PLAINTEXT_LEN + 16;

/// The two share y-values a recipient holds for one owner.
#[derive(Clone, PartialEq, Eq)]
pub struct SharePair {
    /// Share of the owner's s_sk.
    pub s: Zeroizing<[u8; 32]>,
    /// Share of the owner's self-mask seed b.
    pub b: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for SharePair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SharePair(..)")
    }
}

fn aad(session_id: &[u8; 32], round: u64, sender: SiteId, recipient: SiteId) -> Vec<u8> {
    let mut a = Vec::with_capacity(labels::AAD_SHARE.len() + 32 + 12);
    a.extend_from_slice(labels::AAD_SHARE);
    a.extend_from_slice(session_id);
    a.extend_from_slice(&round.to_be_bytes());
    a.extend_from_slice(&sender.0.to_be_bytes());
    a.extend_from_slice(&recipient.0.to_be_bytes());
    a
}

/// Encrypts `pair` from `sender` to `recipient`. The key is used for this one message only,
/// so the nonce is all zero.
pub fn seal(
    key: &[u8; 32],
    session_id: &[u8; 32],
    round: u64,
    sender: SiteId,
    recipient: SiteId,
    pair: &SharePair,
) -> [u8; CIPHERTEXT_LEN] {
    let mut pt = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    pt[0..2].copy_from_slice(&sender.0.to_be_bytes());
    pt[2..4].copy_from_slice(&recipient.0.to_be_bytes());
    pt[4..36].copy_from_slice(pair.s.as_ref());
    pt[36..68].copy_from_slice(pair.b.as_ref());
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let aad = aad(session_id, round, sender, recipient);
    // Encryption of 68 bytes cannot fail.
    #[allow(clippy::expect_used)]
    let ct = cipher
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: pt.as_ref(),
                aad: &aad,
            },
        )
        .expect("ChaCha20-Poly1305 encryption");
    let mut out = [0u8; CIPHERTEXT_LEN];
    out.copy_from_slice(&ct);
    out
}

/// Decrypts and checks the embedded sender/recipient. `None` on any failure (opaque, dalek
/// style: tampered ciphertext, wrong key, wrong AAD, wrong embedded ids).
pub fn open(
    key: &[u8; 32],
    session_id: &[u8; 32],
    round: u64,
    sender: SiteId,
    recipient: SiteId,
    ct: &[u8; CIPHERTEXT_LEN],
) -> Option<SharePair> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let aad = aad(session_id, round, sender, recipient);
    let pt = Zeroizing::new(
        cipher
            .decrypt(&Nonce::from([0u8; 12]), Payload { msg: ct, aad: &aad })
            .ok()?,
    );
    if pt.len() != PLAINTEXT_LEN
        || pt[0..2] != sender.0.to_be_bytes()
        || pt[2..4] != recipient.0.to_be_bytes()
    {
        return None;
    }
    let mut s = Zeroizing::new([0u8; 32]);
    let mut b = Zeroizing::new([0u8; 32]);
    s.copy_from_slice(&pt[4..36]);
    b.copy_from_slice(&pt[36..68]);
    Some(SharePair { s, b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = [5u8; 32];
        let sid = [6u8; 32];
        let pair = SharePair {
            s: Zeroizing::new([1; 32]),
            b: Zeroizing::new([2; 32]),
        };
        let ct = seal(&key, &sid, 3, SiteId(1), SiteId(2), &pair);
        assert_eq!(open(&key, &sid, 3, SiteId(1), SiteId(2), &ct), Some(pair));
        assert!(
            open(&key, &sid, 4, SiteId(1), SiteId(2), &ct).is_none(),
            "round bound"
        );
        assert!(
            open(&key, &[7; 32], 3, SiteId(1), SiteId(2), &ct).is_none(),
            "session bound"
        );
        assert!(
            open(&key, &sid, 3, SiteId(2), SiteId(1), &ct).is_none(),
            "direction bound"
        );
        for bit in [0usize, 100, 8 * CIPHERTEXT_LEN - 1] {
            let mut bad = ct;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                open(&key, &sid, 3, SiteId(1), SiteId(2), &bad).is_none(),
                "bit {bit}"
            );
        }
    }
}
