//! Shamir t-of-n sharing of 32-byte secrets over GF(256), via `blahaj` 0.7 (spec §4.6).
//!
//! `blahaj` (like `sharks`) silently returns a wrong secret when given a share with x = 0 or
//! two shares with the same x. This wrapper refuses both, refuses fewer than t shares,
//! interpolates from exactly t shares, and lets the caller check the result
//! ([`recover_checked`]) against what the owner committed to (its advertised X25519 public
//! key for s_sk, its hash commitment for b): a wrong share never yields a wrong secret
//! silently.

use blahaj::{Share, Sharks};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// One share of a 32-byte secret: x-coordinate (1..=255) and the 32 y-bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretShare {
    /// x-coordinate, never 0 (the holder's [`crate::params::SiteId::share_x`]).
    pub x: u8,
    /// y-values, one per secret byte.
    pub y: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SecretShare {{ x: {}, y: .. }}", self.x)
    }
}

/// Why shares were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Fewer than t shares.
    #[error("needed {needed} shares, got {got}")]
    TooFew {
        /// t.
        needed: usize,
        /// Shares given.
        got: usize,
    },
    /// A share with x = 0 (would be the secret itself).
    #[error("share with x = 0")]
    ZeroX,
    /// Two shares with the same x.
    #[error("two shares with x = {0}")]
    DuplicateX(u8),
    /// t outside 1..=255.
    #[error("threshold {0} outside 1..=255")]
    BadThreshold(usize),
    /// The recovered secret fails the owner's check.
    #[error("recovered secret does not match its public key or commitment")]
    Mismatch,
}

/// Splits `secret` into shares for the x-coordinates `xs` (each 1..=255, distinct), any `t`
/// of which recover it. Coefficients are drawn from `rng` (blahaj's unbiased sampler).
pub fn split<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    t: usize,
    xs: &[u8],
    rng: &mut R,
) -> Result<Vec<SecretShare>, ShamirError> {
    let t8 = u8::try_from(t).map_err(|_| ShamirError::BadThreshold(t))?;
    if t8 == 0 {
        return Err(ShamirError::BadThreshold(t));
    }
    check_xs(xs.iter().copied())?;
    let max_x = xs.iter().copied().max().unwrap_or(0);
    let mut rng = rng;
    let all: Vec<Share> = Sharks(t8)
        .dealer_rng(secret, &mut rng)
        .take(usize::from(max_x))
        .collect();
    let mut out = Vec::with_capacity(xs.len());
    for &x in xs {
        let share = &all[usize::from(x) - 1];
        let bytes = Zeroizing::new(Vec::from(share));
        let mut y = Zeroizing::new([0u8; 32]);
        y.copy_from_slice(&bytes[1..33]);
        out.push(SecretShare { x, y });
    }
    Ok(out)
}

fn check_xs(xs: impl Iterator<Item = u8>) -> Result<(), ShamirError> {
    let mut seen = [false; 256];
    for x in xs {
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if seen[usize::from(x)] {
            return Err(ShamirError::DuplicateX(x));
        }
        seen[usize::from(x)] = true;
    }
    Ok(())
}

/// Recovers the secret from at least `t` shares (exactly the first `t` are interpolated;
/// all are checked for x = 0 and duplicates first).
pub fn recover(t: usize, shares: &[SecretShare]) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
    let t8 = u8::try_from(t).map_err(|_| ShamirError::BadThreshold(t))?;
    if t8 == 0 {
        return Err(ShamirError::BadThreshold(t));
    }
    check_xs(shares.iter().map(|s| s.x))?;
    if shares.len() < t {
        return Err(ShamirError::TooFew {
            needed: t,
            got: shares.len(),
        });
    }
    let mut bshares = Vec::with_capacity(t);
    for s in &shares[..t] {
        let mut bytes = Zeroizing::new(Vec::with_capacity(33));
        bytes.push(s.x);
        bytes.extend_from_slice(s.y.as_ref());
        // 33 bytes >= 2: always accepted.
        let share = Share::try_from(bytes.as_slice()).map_err(|_| ShamirError::ZeroX)?;
        bshares.push(share);
    }
    let secret =
        Zeroizing::new(
            Sharks(t8)
                .recover(bshares.iter())
                .map_err(|_| ShamirError::TooFew {
                    needed: t,
                    got: shares.len(),
                })?,
        );
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&secret);
    Ok(out)
}

/// [`recover`], then `check(secret)` must hold (public key / commitment), else [`ShamirError::Mismatch`].
pub fn recover_checked(
    t: usize,
    shares: &[SecretShare],
    check: impl Fn(&[u8; 32]) -> bool,
) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
    let s = recover(t, shares)?;
    if check(&s) {
        Ok(s)
    } else {
        Err(ShamirError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([3; 32])
    }

    #[test]
    fn split_and_recover_any_t_subset() {
        let secret = [0xabu8; 32];
        let xs: Vec<u8> = (1..=10).collect();
        let shares = split(&secret, 6, &xs, &mut rng()).unwrap();
        assert_eq!(*recover(6, &shares[..6]).unwrap(), secret);
        assert_eq!(*recover(6, &shares[4..]).unwrap(), secret);
        let mut mixed = vec![shares[9].clone(), shares[0].clone(), shares[5].clone()];
        mixed.extend_from_slice(&shares[2..5]);
        assert_eq!(*recover(6, &mixed).unwrap(), secret);
        assert!(matches!(
            recover(6, &shares[..5]),
            Err(ShamirError::TooFew { needed: 6, got: 5 })
        ));
    }

    #[test]
    fn sparse_x_coordinates() {
        let secret = [7u8; 32];
        let xs = [3u8, 200, 255, 17];
        let shares = split(&secret, 3, &xs, &mut rng()).unwrap();
        assert_eq!(shares[2].x, 255);
        assert_eq!(*recover(3, &shares[1..]).unwrap(), secret);
    }

    #[test]
    fn rejects_duplicate_and_zero_x() {
        let secret = [1u8; 32];
        let shares = split(&secret, 2, &[1, 2, 3], &mut rng()).unwrap();
        let dup = vec![shares[0].clone(), shares[0].clone()];
        assert_eq!(recover(2, &dup), Err(ShamirError::DuplicateX(1)));
        let zero = vec![
            SecretShare {
                x: 0,
                y: Zeroizing::new([1; 32]),
            },
            shares[1].clone(),
        ];
        assert_eq!(recover(2, &zero), Err(ShamirError::ZeroX));
        assert_eq!(
            split(&secret, 2, &[0, 1], &mut rng()).unwrap_err(),
            ShamirError::ZeroX
        );
        assert_eq!(
            split(&secret, 2, &[4, 4], &mut rng()).unwrap_err(),
            ShamirError::DuplicateX(4)
        );
    }

    #[test]
    fn bad_share_is_caught_by_check() {
        let secret = [9u8; 32];
        let mut shares = split(&secret, 2, &[1, 2, 3], &mut rng()).unwrap();
        shares[0].y[0] ^= 1;
        assert_eq!(
            recover_checked(2, &shares, |s| *s == secret),
            Err(ShamirError::Mismatch)
        );
        assert!(recover_checked(2, &shares[1..], |s| *s == secret).is_ok());
    }
}
