//! Seed boxes: a site's piece seeds for one committee member (spec he-fallback.md §5.2).
//!
//! Key = HKDF-SHA256 over X25519(site's per-round box secret, member's certified period key),
//! info = label ‖ binding; ChaCha20-Poly1305 with AAD = binding and a zero nonce (one key per
//! box). The binding is (round context, sender site, recipient member, piece ids, both public
//! keys): a box copied into another site's upload, another round or to another member does not
//! open, so a colluder cannot re-submit an honest site's seeds as its own.

use amalgam_proto::SiteId;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey as BoxPublic, StaticSecret};
use zeroize::Zeroizing;

/// A 32-byte piece seed (wiped on drop).
pub type Seed = Zeroizing<[u8; 32]>;

/// Bytes of a box holding `pieces` seeds.
pub fn box_len(pieces: usize) -> usize {
    32 * pieces + 16
}

/// Who a box is from and for, and what it holds.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    /// Round context.
    pub round_context: &'a [u8; 32],
    /// Sender site.
    pub sender: SiteId,
    /// Recipient committee member.
    pub recipient: usize,
    /// Piece ids in the box, ascending.
    pub pieces: &'a [usize],
    /// The site's per-round box public key.
    pub sender_key: &'a [u8; 32],
    /// The member's certified period box key.
    pub recipient_key: &'a [u8; 32],
}

impl Binding<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + 2 * self.pieces.len());
        b.extend_from_slice(b"amalgam/v2/he-seed-box");
        b.extend_from_slice(self.round_context);
        b.extend_from_slice(&self.sender.0.to_be_bytes());
        b.extend_from_slice(&(self.recipient as u16).to_be_bytes());
        b.extend_from_slice(&(self.pieces.len() as u16).to_be_bytes());
        for &p in self.pieces {
            b.extend_from_slice(&(p as u16).to_be_bytes());
        }
        b.extend_from_slice(self.sender_key);
        b.extend_from_slice(self.recipient_key);
        b
    }
}

fn box_cipher(shared: &[u8; 32], binding: &[u8]) -> ChaCha20Poly1305 {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    #[allow(clippy::expect_used)]
    Hkdf::<Sha256>::new(None, shared)
        .expand(binding, key.as_mut())
        .expect("32-byte HKDF output");
    ChaCha20Poly1305::new(&Key::from(*key))
}

/// Seals `seeds` (one per piece of `binding.pieces`) with the site's box secret.
pub fn seal(sender_secret: &StaticSecret, binding: &Binding<'_>, seeds: &[Seed]) -> Vec<u8> {
    let shared = sender_secret.diffie_hellman(&BoxPublic::from(*binding.recipient_key));
    let info = binding.bytes();
    let cipher = box_cipher(shared.as_bytes(), &info);
    let mut pt = Zeroizing::new(Vec::with_capacity(32 * seeds.len()));
    for s in seeds {
        pt.extend_from_slice(s.as_ref());
    }
    // Encrypting a few hundred bytes cannot fail.
    #[allow(clippy::expect_used)]
    cipher
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &pt,
                aad: &info,
            },
        )
        .expect("ChaCha20-Poly1305 encryption")
}

/// Opens a box with the member's box secret; `None` on any failure (opaque: wrong binding,
/// tampering, a non-contributory key, a wrong length).
pub fn open(
    recipient_secret: &StaticSecret,
    binding: &Binding<'_>,
    sealed: &[u8],
) -> Option<Vec<Seed>> {
    let shared = recipient_secret.diffie_hellman(&BoxPublic::from(*binding.sender_key));
    if !shared.was_contributory() || sealed.len() != box_len(binding.pieces.len()) {
        return None;
    }
    let info = binding.bytes();
    let cipher = box_cipher(shared.as_bytes(), &info);
    let pt = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: sealed,
                    aad: &info,
                },
            )
            .ok()?,
    );
    Some(
        pt.chunks_exact(32)
            .map(|c| {
                let mut s = Zeroizing::new([0u8; 32]);
                s.copy_from_slice(c);
                s
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_opens_only_under_its_own_binding() {
        let site = StaticSecret::from([1; 32]);
        let member = StaticSecret::from([2; 32]);
        let (sk, rk) = (
            BoxPublic::from(&site).to_bytes(),
            BoxPublic::from(&member).to_bytes(),
        );
        let ctx = [7; 32];
        let pieces = [0, 2];
        let b = Binding {
            round_context: &ctx,
            sender: SiteId(3),
            recipient: 1,
            pieces: &pieces,
            sender_key: &sk,
            recipient_key: &rk,
        };
        let seeds = vec![Zeroizing::new([5; 32]), Zeroizing::new([6; 32])];
        let sealed = seal(&site, &b, &seeds);
        assert_eq!(sealed.len(), box_len(2));
        assert_eq!(open(&member, &b, &sealed).unwrap(), seeds);
        let other_ctx = [8; 32];
        for wrong in [
            Binding {
                sender: SiteId(4),
                ..b
            },
            Binding { recipient: 0, ..b },
            Binding {
                round_context: &other_ctx,
                ..b
            },
            Binding {
                pieces: &[0, 1],
                ..b
            },
        ] {
            assert!(open(&member, &wrong, &sealed).is_none());
        }
    }
}
