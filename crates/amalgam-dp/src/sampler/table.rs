//! Cumulative distribution table (CDT) for a discrete Gaussian of small-to-moderate σ.
//!
//! The table holds P[X ≤ v] for v ∈ [−M, M] as 128-bit fixed-point numbers, computed in exact
//! integer arithmetic (dashu) at 256 fractional bits and rounded once. A sample draws a uniform
//! 128-bit u (the low 64 bits only when the high words tie, probability ≈ 2⁻⁶⁴ per lookup) and
//! returns the first v with u < P[X ≤ v] (inversion sampling). A guide table indexed by the top
//! bits of u gives the start of the scan, so a lookup costs about one comparison.
//!
//! # Distance bound (total variation from N_Z(0, σ²))
//! * truncation to [−M, M]: the dropped mass is at most 2·Σ_{x>M} e^{−x²/2σ²} / Z ≤
//!   2·(σ²/M)·e^{−M²/2σ²} (Gaussian tail: the sum from M+1 is below the integral from M, and
//!   the normaliser Z ≥ 1);
//! * rounding each cumulative value to 2⁻¹²⁸ moves each probability by at most 2·2⁻¹²⁸, so the
//!   distance is at most N·2⁻¹²⁷ for N = 2M + 1 entries;
//! * the cumulative values are computed to within N³·2⁻²⁵⁶ ≤ 2⁻¹⁹⁰ before that rounding (see
//!   [`FRAC_BITS`]), adding at most N·2⁻¹⁹⁰.

use dashu::integer::UBig;
use dashu::rational::RBig;
use rand_core::Rng;

/// Fractional bits of the fixed-point arithmetic used while building the table. With N ≤ 2²²
/// entries the accumulated error of the recurrence below is at most N²·2⁻²⁵⁶ ≤ 2⁻²¹² per weight.
const FRAC_BITS: usize = 256;

/// Half-width M is chosen so that e^{−M²/2σ²} ≤ 2^−TAIL_BITS.
const TAIL_BITS: f64 = 150.0;

/// Largest number of entries a table may have (bounds memory at 16 MiB + guide).
pub(crate) const MAX_ENTRIES: usize = 1 << 20;

/// A discrete Gaussian N_Z(0, var) as a cumulative distribution table.
#[derive(Clone)]
pub(crate) struct CdtTable {
    /// Half-width: the table covers [−M, M].
    half_width: i64,
    /// High 64 bits of P[X ≤ −M + i] · 2¹²⁸, for i in 0..N−1 (the last entry is implicit: 1).
    hi: Vec<u64>,
    /// Low 64 bits of the same.
    lo: Vec<u64>,
    /// For each value j of the top `guide_bits` bits of u, the first index whose cumulative
    /// value exceeds j · 2^(128 − guide_bits).
    guide: Vec<u32>,
    /// Number of top bits indexing `guide`.
    guide_bits: u32,
    /// Upper bound on the total-variation distance from N_Z(0, var).
    distance: f64,
}

/// e^{−t} in fixed point (`t_fp` = t·2^FRAC_BITS, t ≤ 2^8), by its alternating Taylor series;
/// each term is truncated once, so the result is within (terms + 1)·2^−FRAC_BITS of e^{−t}.
fn exp_neg_fixed(t_fp: &UBig) -> UBig {
    let one = UBig::ONE << FRAC_BITS;
    let mut positive = one.clone();
    let mut negative = UBig::ZERO;
    let mut term = one;
    let mut k: u64 = 1;
    loop {
        term = (&term * t_fp) >> FRAC_BITS;
        term /= UBig::from(k);
        if term == UBig::ZERO {
            break;
        }
        if k % 2 == 1 {
            negative += &term;
        } else {
            positive += &term;
        }
        k += 1;
    }
    if positive > negative {
        positive - negative
    } else {
        UBig::ZERO
    }
}

impl CdtTable {
    /// Builds the table for N_Z(0, `variance`), `variance` an exact positive rational.
    /// Returns `None` when the table would exceed [`MAX_ENTRIES`].
    pub(crate) fn new(variance: &RBig) -> Option<Self> {
        let var_f64 = variance.to_f64().value();
        if !(var_f64.is_finite() && var_f64 > 0.0) {
            return None;
        }
        let sigma = var_f64.sqrt();
        let half_width_f = (sigma * (2.0 * TAIL_BITS * std::f64::consts::LN_2).sqrt()).ceil() + 1.0;
        let entries_f = 2.0 * half_width_f + 1.0;
        if entries_f > MAX_ENTRIES as f64 {
            return None;
        }
        let half_width = half_width_f as i64;
        let m = half_width as usize;

        // t = 1 / (2·var) in fixed point, exactly floored.
        let (num, den) = (
            variance.numerator().clone().into_parts().1,
            variance.denominator().clone(),
        );
        let t_fp = (den << FRAC_BITS) / (num << 1);
        let q = exp_neg_fixed(&t_fp); // e^{−t}
        let q2 = (&q * &q) >> FRAC_BITS; // e^{−2t}

        // Weights w(x) = e^{−t x²} for x = 0..=M via w(x+1) = w(x)·e^{−t(2x+1)}.
        let mut weights = Vec::with_capacity(m + 1);
        let mut w = UBig::ONE << FRAC_BITS;
        let mut ratio = q;
        for _ in 0..=m {
            weights.push(w.clone());
            w = (&w * &ratio) >> FRAC_BITS;
            ratio = (&ratio * &q2) >> FRAC_BITS;
        }
        let total: UBig = weights.iter().skip(1).fold(UBig::ZERO, |acc, x| acc + x)
            * UBig::from(2u8)
            + &weights[0];

        // Cumulative values over v = −M..=M−1, scaled to 2^128 with rounding to nearest.
        let entries = 2 * m + 1;
        let mut hi = Vec::with_capacity(entries - 1);
        let mut lo = Vec::with_capacity(entries - 1);
        let mut cumulative = UBig::ZERO;
        let half = &total >> 1;
        let max128 = UBig::from(u128::MAX);
        for i in 0..entries - 1 {
            let x = (i as i64 - half_width).unsigned_abs() as usize;
            cumulative += &weights[x];
            let scaled = ((&cumulative << 128) + &half) / &total;
            let scaled = if scaled > max128 {
                max128.clone()
            } else {
                scaled
            };
            let value = u128::try_from(&scaled).unwrap_or(u128::MAX);
            hi.push((value >> 64) as u64);
            lo.push(value as u64);
        }

        let guide_bits = (usize::BITS - entries.leading_zeros() + 1).clamp(4, 16);
        let mut guide = Vec::with_capacity(1 << guide_bits);
        let mut index = 0usize;
        for j in 0..(1u64 << guide_bits) {
            let threshold_hi = j << (64 - guide_bits);
            // First index with cumulative > threshold (threshold has a zero low word).
            while index < hi.len()
                && (hi[index] < threshold_hi || (hi[index] == threshold_hi && lo[index] == 0))
            {
                index += 1;
            }
            guide.push(index as u32);
        }

        let tail_log2 = (2.0 * var_f64 / half_width_f).log2()
            - (half_width_f * half_width_f) / (2.0 * var_f64) / std::f64::consts::LN_2;
        let distance = 2f64.powf(tail_log2) + entries as f64 * (2f64.powi(-127) + 2f64.powi(-190));
        Some(Self {
            half_width,
            hi,
            lo,
            guide,
            guide_bits,
            distance,
        })
    }

    /// Upper bound on the total-variation distance of one sample from N_Z(0, var).
    pub(crate) fn distance(&self) -> f64 {
        self.distance
    }

    /// The exact output distribution of [`CdtTable::sample`]: the probability of −M + i is the
    /// difference of consecutive 128-bit cumulative values (the last one being 2¹²⁸), returned
    /// as (−M, probabilities). For the white-box sampler test.
    #[cfg(test)]
    pub(crate) fn pmf(&self) -> (i64, Vec<f64>) {
        let scale = 2f64.powi(-128);
        let mut previous = 0u128;
        let mut out = Vec::with_capacity(self.hi.len() + 1);
        for (&h, &l) in self.hi.iter().zip(&self.lo) {
            let c = (u128::from(h) << 64) | u128::from(l);
            out.push((c - previous) as f64 * scale);
            previous = c;
        }
        // The implicit last cumulative value is 2^128: the remaining mass.
        out.push((u128::MAX - previous) as f64 * scale + scale);
        (-self.half_width, out)
    }

    /// Draws one sample.
    #[inline]
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        let u_hi = rng.next_u64();
        let mut u_lo: Option<u64> = None;
        let mut i = self.guide[(u_hi >> (64 - self.guide_bits)) as usize] as usize;
        let last = self.hi.len();
        while i < last {
            let h = self.hi[i];
            if h > u_hi {
                break;
            }
            if h == u_hi {
                let low = *u_lo.get_or_insert_with(|| rng.next_u64());
                if self.lo[i] > low {
                    break;
                }
            }
            i += 1;
        }
        i as i64 - self.half_width
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn variance(sigma: f64) -> RBig {
        let s = RBig::try_from(sigma).unwrap();
        &s * &s
    }

    #[test]
    fn fixed_point_exp_matches_f64() {
        for t in [0.0, 1e-9, 0.125, 0.5, 1.0, 2.0, 7.5] {
            let t_fp = UBig::from((t * 2f64.powi(60)) as u128) << (FRAC_BITS - 60);
            let e = exp_neg_fixed(&t_fp);
            let approx = (&e >> (FRAC_BITS - 60)).to_f64().value() / 2f64.powi(60);
            assert!((approx - (-t).exp()).abs() < 1e-15, "t={t}: {approx}");
        }
    }

    #[test]
    fn table_probabilities_match_the_analytic_pmf() {
        for sigma in [0.5, 1.0, 3.0, 10.0] {
            let table = CdtTable::new(&variance(sigma)).unwrap();
            let m = table.half_width;
            let z: f64 = (-m..=m)
                .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
                .sum();
            let mut previous = 0.0f64;
            for i in 0..table.hi.len() {
                let cdf = (table.hi[i] as f64 + table.lo[i] as f64 / 2f64.powi(64)) / 2f64.powi(64);
                let x = i as i64 - m;
                let p = (-(x * x) as f64 / (2.0 * sigma * sigma)).exp() / z;
                assert!(
                    (cdf - previous - p).abs() < 1e-15 + 1e-12 * p,
                    "sigma={sigma} x={x}"
                );
                previous = cdf;
            }
            assert!(
                table.distance() < 1e-30,
                "sigma={sigma}: {}",
                table.distance()
            );
        }
    }

    #[test]
    fn guide_start_never_skips_the_answer() {
        let table = CdtTable::new(&variance(2.0)).unwrap();
        for (j, &start) in table.guide.iter().enumerate() {
            let threshold = (j as u64) << (64 - table.guide_bits);
            // Every index before `start` has cumulative ≤ threshold ≤ any u in bucket j.
            if start > 0 {
                let k = start as usize - 1;
                assert!(table.hi[k] < threshold || (table.hi[k] == threshold && table.lo[k] == 0));
            }
        }
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let bound = table.half_width;
        for _ in 0..10_000 {
            let x = table.sample(&mut rng);
            assert!((-bound..=bound).contains(&x));
        }
    }

    #[test]
    fn oversized_tables_are_refused() {
        assert!(CdtTable::new(&variance(1e6)).is_none());
    }
}
