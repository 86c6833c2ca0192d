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

/// Most interpolations [`recover_robust`] tries before giving up (bounds the work a flood of
/// bad shares can cause: at t = 170 this still covers every choice of two bad shares).
pub const MAX_RECOVERY_ATTEMPTS: usize = 16_384;

/// A secret recovered by [`recover_robust`], with the shares that disagree with it.
#[derive(Debug)]
pub struct Recovered {
    /// The secret, which passed the owner's check.
    pub secret: Zeroizing<[u8; 32]>,
    /// x-coordinates of the shares that are not on the owner's polynomial, ascending.
    pub bad_x: Vec<u8>,
}

/// Recovers a secret from `shares` (at least `t`, some possibly wrong) that passes `check`,
/// and names every share that disagrees with it (spec §5.2 A4, robust recovery).
///
/// Search: for e = 0, 1, 2, ... leave out e of the first t + e shares and interpolate the
/// remaining t, until one passes `check` (at most [`MAX_RECOVERY_ATTEMPTS`] interpolations).
/// Any e wrong shares are found this way as long as t + e shares were given.
///
/// Blame: once a passing t-subset S is known, a further share j is wrong exactly when
/// S ∖ {S₀} ∪ {j} fails the check. This is deterministic, not probabilistic: in Lagrange
/// interpolation at 0 every coefficient Π x_i / (x_i − x_j) is nonzero for distinct nonzero
/// x, so an error in j always changes the interpolated secret. (For an X25519 s_sk, errors
/// confined to the bits clamping ignores give the same key and cannot be seen, nor do they
/// matter.)
pub fn recover_robust(
    t: usize,
    shares: &[SecretShare],
    check: impl Fn(&[u8; 32]) -> bool,
) -> Result<Recovered, ShamirError> {
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
    let mut attempts = 0usize;
    let spare = shares.len() - t;
    for e in 0..=spare {
        let window = t + e;
        let mut left_out: Vec<usize> = (0..e).collect();
        loop {
            if attempts >= MAX_RECOVERY_ATTEMPTS {
                return Err(ShamirError::Mismatch);
            }
            attempts += 1;
            let subset: Vec<SecretShare> = (0..window)
                .filter(|i| !left_out.contains(i))
                .map(|i| shares[i].clone())
                .collect();
            let secret = recover(t, &subset)?;
            if check(&secret) {
                let bad_x = blame(t, shares, &subset, &check)?;
                return Ok(Recovered { secret, bad_x });
            }
            if !next_combination(&mut left_out, window) {
                break;
            }
        }
    }
    Err(ShamirError::Mismatch)
}

/// The x of every share in `shares` outside the passing subset `good` that disagrees with it.
fn blame(
    t: usize,
    shares: &[SecretShare],
    good: &[SecretShare],
    check: &impl Fn(&[u8; 32]) -> bool,
) -> Result<Vec<u8>, ShamirError> {
    let mut bad = Vec::new();
    let mut probe: Vec<SecretShare> = good.iter().skip(1).cloned().collect();
    for s in shares {
        if good.iter().any(|g| g.x == s.x) {
            continue;
        }
        probe.push(s.clone());
        if !check(&*recover(t, &probe)?) {
            bad.push(s.x);
        }
        probe.pop();
    }
    bad.sort_unstable();
    Ok(bad)
}

/// Advances `c` (ascending indices below `n`) to the next combination of its size in
/// lexicographic order; false after the last one.
fn next_combination(c: &mut [usize], n: usize) -> bool {
    let k = c.len();
    for i in (0..k).rev() {
        if c[i] < n - k + i {
            c[i] += 1;
            for j in i + 1..k {
                c[j] = c[j - 1] + 1;
            }
            return true;
        }
    }
    false
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

    #[test]
    fn robust_recovery_names_bad_shares_anywhere() {
        let secret = [0x5au8; 32];
        let xs: Vec<u8> = (1..=7).collect();
        let good = split(&secret, 4, &xs, &mut rng()).unwrap();
        // One or two bad shares, at every position: recovered, and exactly those blamed.
        for a in 0..7 {
            for b in a..7 {
                let mut shares = good.clone();
                shares[a].y[3] ^= 0x40;
                shares[b].y[0] ^= 1;
                let r = recover_robust(4, &shares, |s| *s == secret).unwrap();
                assert_eq!(*r.secret, secret);
                let mut want = vec![shares[a].x, shares[b].x];
                want.dedup();
                assert_eq!(r.bad_x, want, "bad shares at {a}, {b}");
            }
        }
        let r = recover_robust(4, &good, |s| *s == secret).unwrap();
        assert!(r.bad_x.is_empty());
    }

    #[test]
    fn robust_recovery_needs_t_good_shares() {
        let secret = [0x11u8; 32];
        let mut shares = split(&secret, 3, &[1, 2, 3, 4], &mut rng()).unwrap();
        shares[0].y[0] ^= 1;
        shares[3].y[0] ^= 1;
        // Two bad of four with t = 3: only two good shares remain.
        assert_eq!(
            recover_robust(3, &shares, |s| *s == secret).unwrap_err(),
            ShamirError::Mismatch
        );
        let dup = vec![shares[1].clone(), shares[1].clone(), shares[2].clone()];
        assert_eq!(
            recover_robust(2, &dup, |s| *s == secret).unwrap_err(),
            ShamirError::DuplicateX(2)
        );
    }

    #[test]
    fn combinations_are_enumerated_in_order() {
        let mut c = vec![0, 1];
        let mut all = vec![c.clone()];
        while next_combination(&mut c, 4) {
            all.push(c.clone());
        }
        assert_eq!(all.len(), 6);
        assert_eq!(all[5], vec![2, 3]);
        let mut empty: Vec<usize> = Vec::new();
        assert!(!next_combination(&mut empty, 3));
    }
}
