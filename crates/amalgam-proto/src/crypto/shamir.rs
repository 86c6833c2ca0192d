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

/// The checks every recovery makes first: 1 ≤ t ≤ 255, no x = 0 or duplicate share, at least
/// t shares. Returns t as the share crate's `u8` threshold.
fn check_recovery_inputs(t: usize, shares: &[SecretShare]) -> Result<u8, ShamirError> {
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
    Ok(t8)
}

/// Recovers the secret from at least `t` shares (exactly the first `t` are interpolated;
/// all are checked for x = 0 and duplicates first).
pub fn recover(t: usize, shares: &[SecretShare]) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
    let t8 = check_recovery_inputs(t, shares)?;
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

/// Most interpolations the subset search in [`recover_robust`] tries before giving up (bounds
/// the work a flood of bad shares can cause). Only reached beyond the decoding radius.
pub const MAX_RECOVERY_ATTEMPTS: usize = 16_384;

/// A secret recovered by [`recover_robust`], with the shares provably off the owner's polynomial.
#[derive(Debug)]
pub struct Recovered {
    /// The secret, which passed the owner's check.
    pub secret: Zeroizing<[u8; 32]>,
    /// x-coordinates of the shares that are not on the polynomial the secret came from,
    /// ascending; empty when that polynomial could not be proven to be the dealt one (see
    /// [`recover_robust`]).
    pub bad_x: Vec<u8>,
}

/// Recovers a secret from `shares` (at least `t`, some possibly wrong) that passes `check`,
/// and names the shares that are provably wrong (spec §4.6, robust recovery). `c` is the
/// number of colluding sites the round tolerates.
///
/// Secret: each byte position is decoded as a Reed–Solomon codeword (Gao's algorithm over
/// blahaj's GF(256), field polynomial 0x11d, x = holder coordinate), which corrects up to
/// ⌊(r − t)/2⌋ wrong shares among r in O(r²) per byte. If decoding fails or its f(0) fails
/// `check`, the subset search runs (leave out e of the first t + e shares, e = 0, 1, ...,
/// at most [`MAX_RECOVERY_ATTEMPTS`] interpolations).
///
/// Blame: a share is named only when the accepted polynomial agrees with at least t + c of
/// the revealed shares. At most c of those are corrupt, so at least t honest ones lie on it,
/// and t points fix a polynomial of degree < t: it is the polynomial the owner dealt. With
/// fewer agreeing shares another polynomial with the same f(0) may explain the shares with
/// at most c liars (two colluders can cancel their errors at x = 0), so nobody is named.
/// A share off the dealt polynomial was sent wrong by its revealer *or dealt wrong by the
/// owner*: the shares alone cannot tell these apart.
pub fn recover_robust(
    t: usize,
    c: usize,
    shares: &[SecretShare],
    check: impl Fn(&[u8; 32]) -> bool,
) -> Result<Recovered, ShamirError> {
    check_recovery_inputs(t, shares)?;
    if let Some(polys) = gf::decode_all(t, shares) {
        let mut secret = Zeroizing::new([0u8; 32]);
        for (b, p) in polys.iter().enumerate() {
            secret[b] = p.first().copied().unwrap_or(0);
        }
        if check(&secret) {
            // Decoded: no search for a better-supported polynomial (none can be proven).
            let bad_x = blame(t, c, shares, &polys).unwrap_or_default();
            return Ok(Recovered { secret, bad_x });
        }
    }
    // Beyond the radius: the first passing subset gives the secret; the search goes on (within
    // the cap) for a passing polynomial that t + c shares agree with, which alone may blame.
    let mut found: Option<Zeroizing<[u8; 32]>> = None;
    let mut attempts = 0usize;
    let spare = shares.len() - t;
    'search: for e in 0..=spare {
        let window = t + e;
        let mut left_out: Vec<usize> = (0..e).collect();
        loop {
            if attempts >= MAX_RECOVERY_ATTEMPTS {
                break 'search;
            }
            attempts += 1;
            let subset: Vec<SecretShare> = (0..window)
                .filter(|i| !left_out.contains(i))
                .map(|i| shares[i].clone())
                .collect();
            let secret = recover(t, &subset)?;
            if check(&secret) {
                let polys = gf::interpolate_all(&subset);
                if let Some(bad_x) = blame(t, c, shares, &polys) {
                    return Ok(Recovered { secret, bad_x });
                }
                found.get_or_insert(secret);
            }
            if !next_combination(&mut left_out, window) {
                break;
            }
        }
    }
    match found {
        Some(secret) => Ok(Recovered {
            secret,
            bad_x: Vec::new(),
        }),
        None => Err(ShamirError::Mismatch),
    }
}

/// The x of every share off `polys` (one polynomial per byte), if at least t + c shares lie
/// on it; None when fewer do (the polynomial is then not provably the dealt one, see
/// [`recover_robust`]).
fn blame(t: usize, c: usize, shares: &[SecretShare], polys: &[gf::Poly]) -> Option<Vec<u8>> {
    let off: Vec<u8> = shares
        .iter()
        .filter(|s| {
            polys
                .iter()
                .enumerate()
                .any(|(b, p)| gf::eval(p, s.x) != s.y[b])
        })
        .map(|s| s.x)
        .collect();
    let agreeing = shares.len() - off.len();
    if agreeing < t.saturating_add(c) {
        return None;
    }
    let mut off = off;
    off.sort_unstable();
    Some(off)
}

/// GF(256) arithmetic with blahaj's field polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11d, generator
/// 2), and Reed–Solomon decoding of Shamir shares. Polynomials are coefficient vectors, lowest
/// degree first, zeroized on drop (they are the owner's secret polynomial).
mod gf {
    use super::SecretShare;
    use zeroize::Zeroizing;

    pub(super) type Poly = Zeroizing<Vec<u8>>;

    const fn tables() -> ([u8; 512], [u8; 256]) {
        let mut exp = [0u8; 512];
        let mut log = [0u8; 256];
        let mut v: u16 = 1;
        let mut i = 0;
        while i < 255 {
            exp[i] = v as u8;
            exp[i + 255] = v as u8;
            log[v as usize] = i as u8;
            v <<= 1;
            if v & 0x100 != 0 {
                v ^= 0x11d;
            }
            i += 1;
        }
        (exp, log)
    }
    const TABLES: ([u8; 512], [u8; 256]) = tables();
    const EXP: [u8; 512] = TABLES.0;
    const LOG: [u8; 256] = TABLES.1;

    pub(super) fn mul(a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            0
        } else {
            EXP[usize::from(LOG[usize::from(a)]) + usize::from(LOG[usize::from(b)])]
        }
    }

    /// a / b for b ≠ 0 (callers never divide by zero: x-coordinates are distinct, leading
    /// coefficients are trimmed nonzero).
    fn div(a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            0
        } else {
            EXP[usize::from(LOG[usize::from(a)]) + 255 - usize::from(LOG[usize::from(b)])]
        }
    }

    fn trim(p: &mut Vec<u8>) {
        while p.last() == Some(&0) {
            p.pop();
        }
    }

    /// Degree, with the zero polynomial at "−1" represented as None.
    fn deg(p: &[u8]) -> Option<usize> {
        p.iter().rposition(|&c| c != 0)
    }

    pub(super) fn eval(p: &[u8], x: u8) -> u8 {
        p.iter().rev().fold(0u8, |acc, &c| mul(acc, x) ^ c)
    }

    /// Newton interpolation through (xs[i], ys[i]) (distinct xs), degree < len.
    fn interpolate(xs: &[u8], ys: &[u8]) -> Poly {
        let n = xs.len();
        // Divided differences, in place.
        let mut dd = Zeroizing::new(ys.to_vec());
        for j in 1..n {
            for i in (j..n).rev() {
                dd[i] = div(dd[i] ^ dd[i - 1], xs[i] ^ xs[i - j]);
            }
        }
        // Horner on the Newton form: p = dd[n-1]; p = p·(X − x_i) + dd[i].
        let mut p: Poly = Zeroizing::new(Vec::with_capacity(n));
        for i in (0..n).rev() {
            // p ← p·(X + xs[i]) + dd[i]
            p.insert(0, 0);
            for k in 0..p.len() - 1 {
                let m = mul(p[k + 1], xs[i]);
                p[k] ^= m;
            }
            p[0] ^= dd[i];
        }
        trim(&mut p);
        p
    }

    /// (quotient, remainder) of a / b, b nonzero.
    fn divmod(a: &[u8], b: &[u8]) -> Option<(Poly, Poly)> {
        let db = deg(b)?;
        let lead = b[db];
        let mut r: Poly = Zeroizing::new(a.to_vec());
        trim(&mut r);
        let mut q: Poly = Zeroizing::new(vec![0u8; r.len().saturating_sub(db).max(1)]);
        while let Some(dr) = deg(&r) {
            if dr < db {
                break;
            }
            let f = div(r[dr], lead);
            q[dr - db] = f;
            for (k, &bk) in b.iter().enumerate().take(db + 1) {
                r[dr - db + k] ^= mul(f, bk);
            }
            trim(&mut r);
        }
        trim(&mut q);
        Some((q, r))
    }

    fn mul_poly(a: &[u8], b: &[u8]) -> Poly {
        if a.is_empty() || b.is_empty() {
            return Zeroizing::new(Vec::new());
        }
        let mut out: Poly = Zeroizing::new(vec![0u8; a.len() + b.len() - 1]);
        for (i, &ai) in a.iter().enumerate() {
            for (j, &bj) in b.iter().enumerate() {
                out[i + j] ^= mul(ai, bj);
            }
        }
        trim(&mut out);
        out
    }

    fn add_poly(a: &[u8], b: &[u8]) -> Poly {
        let mut out: Poly = Zeroizing::new(vec![0u8; a.len().max(b.len())]);
        for (i, &v) in a.iter().enumerate() {
            out[i] ^= v;
        }
        for (i, &v) in b.iter().enumerate() {
            out[i] ^= v;
        }
        trim(&mut out);
        out
    }

    /// Gao's decoder: the polynomial of degree < k within ⌊(r − k)/2⌋ of the points, or None.
    fn gao(xs: &[u8], ys: &[u8], k: usize) -> Option<Poly> {
        let r = xs.len();
        let mut g0: Poly = Zeroizing::new(vec![1u8]);
        for &x in xs {
            g0 = mul_poly(&g0, &[x, 1]);
        }
        let g1 = interpolate(xs, ys);
        // Extended Euclid on (g0, g1), tracking only the cofactor of g1.
        let (mut r_prev, mut r_cur) = (g0, g1);
        let (mut v_prev, mut v_cur): (Poly, Poly) =
            (Zeroizing::new(Vec::new()), Zeroizing::new(vec![1u8]));
        while let Some(d) = deg(&r_cur) {
            if 2 * d < r + k {
                break;
            }
            let (q, rem) = divmod(&r_prev, &r_cur)?;
            let v_next = add_poly(&v_prev, &mul_poly(&q, &v_cur));
            r_prev = core::mem::replace(&mut r_cur, rem);
            v_prev = core::mem::replace(&mut v_cur, v_next);
        }
        let (f, rem) = divmod(&r_cur, &v_cur)?;
        if deg(&rem).is_some() || deg(&f).is_some_and(|d| d >= k) {
            return None;
        }
        Some(f)
    }

    /// One decoded polynomial per byte position, or None if any position fails to decode.
    pub(super) fn decode_all(k: usize, shares: &[SecretShare]) -> Option<Vec<Poly>> {
        let xs: Vec<u8> = shares.iter().map(|s| s.x).collect();
        let mut ys: Poly = Zeroizing::new(vec![0u8; shares.len()]);
        let mut out = Vec::with_capacity(32);
        for b in 0..32 {
            for (y, s) in ys.iter_mut().zip(shares) {
                *y = s.y[b];
            }
            out.push(gao(&xs, &ys, k)?);
        }
        Some(out)
    }

    /// The polynomials through exactly `shares` (one per byte position).
    pub(super) fn interpolate_all(shares: &[SecretShare]) -> Vec<Poly> {
        let xs: Vec<u8> = shares.iter().map(|s| s.x).collect();
        let mut ys: Poly = Zeroizing::new(vec![0u8; shares.len()]);
        (0..32)
            .map(|b| {
                for (y, s) in ys.iter_mut().zip(shares) {
                    *y = s.y[b];
                }
                interpolate(&xs, &ys)
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn field_matches_blahaj_tables() {
            // blahaj's EXP table starts 1, 2, 4, ..., 0x80, 0x1d (reduction by 0x11d).
            assert_eq!(&EXP[..9], &[1, 2, 4, 8, 16, 32, 64, 128, 0x1d]);
            for a in 1..=255u8 {
                assert_eq!(mul(a, div(1, a)), 1);
            }
        }

        #[test]
        fn interpolation_round_trips() {
            let p = vec![5u8, 0, 7, 1];
            let xs = [1u8, 2, 3, 9, 200];
            let ys: Vec<u8> = xs.iter().map(|&x| eval(&p, x)).collect();
            assert_eq!(&*interpolate(&xs, &ys), &p);
            assert_eq!(gao(&xs, &ys, 4).as_deref(), Some(&p));
        }
    }
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

    use sha2::{Digest, Sha256};

    fn commit(b: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    /// Two colluders (x = 2, 3) choose errors that cancel at x = 0 over the first t shares.
    fn cancelling_colluders() -> ([u8; 32], Vec<SecretShare>) {
        let secret = [0x42u8; 32];
        let honest = split(&secret, 7, &(1..=10).collect::<Vec<u8>>(), &mut rng()).unwrap();
        for v in 1..=255u8 {
            let mut sh = honest.clone();
            sh[1].y[0] ^= 1;
            sh[2].y[0] ^= v;
            if *recover(7, &sh).unwrap() == secret {
                return (secret, sh);
            }
        }
        panic!("a cancelling error exists");
    }

    #[test]
    fn cancelling_colluders_frame_nobody() {
        let (secret, sh) = cancelling_colluders();
        let c = commit(&secret);
        // n = 10, t = 7, c = 3: the polynomial through x = 1..=7 (liars 8, 9, 10) and the dealt
        // one (liars 2, 3) both explain the shares with at most c liars: nobody is named.
        let r = recover_robust(7, 3, &sh, |s| commit(s) == c).unwrap();
        assert_eq!(*r.secret, secret);
        assert!(r.bad_x.is_empty(), "blamed {:?}", r.bad_x);
        // With c = 1, the 8 agreeing shares (≥ t + c) prove the dealt polynomial: exactly the
        // liars are named, never x = 8, 9, 10.
        let r = recover_robust(7, 1, &sh, |s| commit(s) == c).unwrap();
        assert_eq!(r.bad_x, vec![2, 3]);
    }

    #[test]
    fn three_bad_of_many_decode_without_search() {
        let secret = [9u8; 32];
        let c = commit(&secret);
        let mut shares = split(&secret, 45, &(1..=67).collect::<Vec<u8>>(), &mut rng()).unwrap();
        for (k, i) in [42usize, 43, 44].into_iter().enumerate() {
            for j in 0..32 {
                shares[i].y[j] ^= (j as u8).wrapping_mul(37).wrapping_add(k as u8 * 91 + 1) | 1;
            }
        }
        let calls = core::cell::Cell::new(0usize);
        let start = std::time::Instant::now();
        let r = recover_robust(45, 22, &shares, |s| {
            calls.set(calls.get() + 1);
            commit(s) == c
        })
        .unwrap();
        eprintln!("3 bad of 67 at t = 45: {:?}", start.elapsed());
        assert_eq!(*r.secret, secret);
        // Decoded at the first try; 64 agreeing < t + c = 67, so nobody is named.
        assert_eq!(calls.get(), 1);
        assert!(r.bad_x.is_empty());
        // With c = 19 (t + c = 64) the three are named.
        let r = recover_robust(45, 19, &shares, |s| commit(s) == c).unwrap();
        assert_eq!(r.bad_x, vec![43, 44, 45]);
    }

    #[test]
    fn share_dealt_wrong_names_its_holder() {
        // A corrupt owner deals holder x = 6 an off-polynomial share; holder 6 reveals it
        // honestly. The shares cannot tell this from holder 6 lying: x = 6 is named, and blame
        // means "the revealer, or the owner that dealt it" (spec §4.6).
        let secret = [7u8; 32];
        let c = commit(&secret);
        let mut shares = split(&secret, 4, &(1..=7).collect::<Vec<u8>>(), &mut rng()).unwrap();
        shares[5].y[0] ^= 1;
        let r = recover_robust(4, 2, &shares, |s| commit(s) == c).unwrap();
        assert_eq!(*r.secret, secret);
        assert_eq!(r.bad_x, vec![6]);
    }

    #[test]
    fn random_errors_within_radius_name_exactly_the_liars() {
        use rand_core::Rng;
        let mut g = ChaCha20Rng::from_seed([0x77; 32]);
        for _ in 0..300 {
            let n = 3 + (g.next_u32() % 40) as usize;
            let t = n / 2 + 1 + (g.next_u32() as usize % (n - n / 2));
            let c_max = (2 * t).saturating_sub(n + 1);
            let c = if c_max == 0 {
                0
            } else {
                g.next_u32() as usize % (c_max + 1)
            };
            let r_min = t;
            let r = r_min + (g.next_u32() as usize % (n - r_min + 1));
            let radius = (r - t) / 2;
            let mut secret = [0u8; 32];
            g.fill_bytes(&mut secret);
            let xs: Vec<u8> = (1..=n as u8).collect();
            let mut shares = split(&secret, t, &xs, &mut g).unwrap();
            shares.truncate(r);
            let errs = if radius == 0 {
                0
            } else {
                g.next_u32() as usize % (radius + 1)
            };
            let mut liars = Vec::new();
            while liars.len() < errs {
                let i = g.next_u32() as usize % r;
                if !liars.contains(&i) {
                    liars.push(i);
                }
            }
            for &i in &liars {
                let b = g.next_u32() as usize % 32;
                shares[i].y[b] ^= 1 + (g.next_u32() % 255) as u8;
            }
            let r = recover_robust(t, c, &shares, |s| *s == secret).unwrap();
            assert_eq!(*r.secret, secret);
            let mut want: Vec<u8> = liars.iter().map(|&i| shares[i].x).collect();
            want.sort_unstable();
            if shares.len() - errs >= t + c {
                assert_eq!(r.bad_x, want, "n {n} t {t} c {c}");
            } else {
                // Never an honest share; possibly nobody.
                assert!(r.bad_x.iter().all(|x| want.contains(x)));
            }
        }
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
                let r = recover_robust(4, 1, &shares, |s| *s == secret).unwrap();
                assert_eq!(*r.secret, secret);
                let mut want = vec![shares[a].x, shares[b].x];
                want.dedup();
                assert_eq!(r.bad_x, want, "bad shares at {a}, {b}");
            }
        }
        let r = recover_robust(4, 1, &good, |s| *s == secret).unwrap();
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
            recover_robust(3, 0, &shares, |s| *s == secret).unwrap_err(),
            ShamirError::Mismatch
        );
        let dup = vec![shares[1].clone(), shares[1].clone(), shares[2].clone()];
        assert_eq!(
            recover_robust(2, 0, &dup, |s| *s == secret).unwrap_err(),
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
