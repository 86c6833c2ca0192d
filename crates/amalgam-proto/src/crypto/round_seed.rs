//! The site's round seed (spec §4.7): the one 32-byte value drawn from the caller's CSPRNG at
//! the start of a round, from which every other secret of that round is derived.
//!
//! Deriving c_sk, s_sk, the self-mask seed b and both Shamir polynomials from one persisted
//! seed makes every transition a pure function of (state, download): a site restored from a
//! snapshot and shown the same download produces the same bytes again (the same AEAD key,
//! nonce *and* plaintext, so nothing new leaks), never fresh b or fresh polynomials.

use hkdf::Hkdf;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, SeedableRng};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::crypto::kdf::Key32;
use crate::params::SiteId;

/// HKDF info prefix of every round-seed derivation (then the purpose, u64 round, u16 site).
const LABEL: &[u8] = b"amalgam/v1/kdf/round-seed/";

/// What a derived value is for (its HKDF info suffix).
#[derive(Clone, Copy)]
enum Purpose {
    ShareKeyPair,
    MaskKeyPair,
    SelfMaskSeed,
    SPolynomial,
    BPolynomial,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ShareKeyPair => b"c_sk",
            Purpose::MaskKeyPair => b"s_sk",
            Purpose::SelfMaskSeed => b"b",
            Purpose::SPolynomial => b"shamir-s",
            Purpose::BPolynomial => b"shamir-b",
        }
    }
}

/// A round seed, wiped on drop.
#[derive(Clone)]
pub struct RoundSeed(Zeroizing<[u8; 32]>);

impl RoundSeed {
    /// Draws a fresh seed from the caller's CSPRNG.
    pub fn draw<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(s.as_mut());
        Self(s)
    }

    /// A seed read back from a snapshot.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// The raw seed (for the snapshot only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// HKDF-SHA256(salt = round_context, ikm = seed, info = LABEL ‖ purpose ‖ round ‖ site).
    fn derive(&self, ctx: &[u8; 32], round: u64, site: SiteId, purpose: Purpose) -> Key32 {
        let mut info = Vec::with_capacity(LABEL.len() + 18);
        info.extend_from_slice(LABEL);
        info.extend_from_slice(purpose.label());
        info.extend_from_slice(&round.to_be_bytes());
        info.extend_from_slice(&site.0.to_be_bytes());
        let hk = Hkdf::<sha2::Sha256>::new(Some(ctx), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        #[allow(clippy::expect_used)]
        hk.expand(&info, out.as_mut()).expect("32 <= 255 * 32");
        out
    }

    /// The share-encryption key pair secret c_sk.
    pub fn c_sk(&self, ctx: &[u8; 32], round: u64, site: SiteId) -> StaticSecret {
        StaticSecret::from(*self.derive(ctx, round, site, Purpose::ShareKeyPair))
    }

    /// The mask-agreement key pair secret s_sk.
    pub fn s_sk(&self, ctx: &[u8; 32], round: u64, site: SiteId) -> StaticSecret {
        StaticSecret::from(*self.derive(ctx, round, site, Purpose::MaskKeyPair))
    }

    /// The self-mask seed b.
    pub fn b_seed(&self, ctx: &[u8; 32], round: u64, site: SiteId) -> Key32 {
        self.derive(ctx, round, site, Purpose::SelfMaskSeed)
    }

    /// The CSPRNG drawing the coefficients of the Shamir polynomial of s_sk (`s = true`) or b.
    pub fn shamir_rng(&self, ctx: &[u8; 32], round: u64, site: SiteId, s: bool) -> ChaCha20Rng {
        let purpose = if s {
            Purpose::SPolynomial
        } else {
            Purpose::BPolynomial
        };
        ChaCha20Rng::from_seed(*self.derive(ctx, round, site, purpose))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_separated_and_deterministic() {
        let seed = RoundSeed::from_bytes(Zeroizing::new([4; 32]));
        let ctx = [1u8; 32];
        let a = seed.b_seed(&ctx, 7, SiteId(2));
        assert_eq!(*a, *seed.b_seed(&ctx, 7, SiteId(2)));
        assert_ne!(*a, *seed.b_seed(&ctx, 8, SiteId(2)), "round separates");
        assert_ne!(*a, *seed.b_seed(&ctx, 7, SiteId(3)), "site separates");
        assert_ne!(
            *a,
            *seed.b_seed(&[2; 32], 7, SiteId(2)),
            "context separates"
        );
        assert_ne!(
            seed.c_sk(&ctx, 7, SiteId(2)).to_bytes(),
            seed.s_sk(&ctx, 7, SiteId(2)).to_bytes()
        );
    }
}
