//! Ring arithmetic shared by key generation and decryption: the phase of a compact ciphertext
//! list computed with one negacyclic polynomial product instead of 2048 dot products.
//!
//! tfhe expands list entry `j` to an LWE ciphertext with mask `X^j · M` in `Z[X]/(X^N + 1)` and
//! body `b_j`. tfhe's semi-reverse convolution computes `C = M · rev(s)` with `rev(s) = X^(N-1) ·
//! Σ s_i X^-i`, whose coefficient `N-1-j` is exactly `<X^j · M, s>`. So all `N` phases
//! `b_j - <X^j·M, s>` cost one product; `s` is binary, so tfhe's exact binary NTT applies.

use tfhe::core_crypto::algorithms::slice_algorithms::slice_binary_semi_reverse_negacyclic_convolution;

use crate::params::LWE_DIMENSION;

/// Writes `out[j] = bodies[j] - <X^j·mask, secret>` for every `j < bodies.len()`.
///
/// `mask`, `secret` and `scratch` have length 2048; `bodies` and `out` the same length, at most
/// 2048. `secret` holds only 0 and 1.
pub(crate) fn list_phases(
    mask: &[u64],
    bodies: &[u64],
    secret: &[u64],
    scratch: &mut [u64],
    out: &mut [u64],
) {
    debug_assert_eq!(mask.len(), LWE_DIMENSION);
    debug_assert_eq!(bodies.len(), out.len());
    slice_binary_semi_reverse_negacyclic_convolution(scratch, mask, secret);
    for (j, (o, b)) in out.iter_mut().zip(bodies).enumerate() {
        *o = b.wrapping_sub(scratch[LWE_DIMENSION - 1 - j]);
    }
}

/// `out = rev(lhs · rev(binary))`: the body half of a compact encryption with randomness
/// `binary`, before noise and plaintext are added (tfhe's own encryption formula).
pub(crate) fn body_convolution(lhs: &[u64], binary: &[u64], scratch: &mut [u64], out: &mut [u64]) {
    slice_binary_semi_reverse_negacyclic_convolution(scratch, lhs, binary);
    for (o, s) in out.iter_mut().zip(scratch.iter().rev()) {
        *o = *s;
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};
    use tfhe::core_crypto::prelude::*;

    use crate::decrypt::sum_phases;
    use crate::params::he_params;
    use crate::{CiphertextSum, DecryptionKey, encrypt_vector};

    #[test]
    fn one_product_equals_tfhe_expansion_and_dot_products() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let key = DecryptionKey::generate(&mut rng);
        let params = he_params(16, 4, 2048 + 77).unwrap();
        let values: Vec<u64> = (0..params.vector_len())
            .map(|_| rng.next_u64() >> 48)
            .collect();
        let ct = encrypt_vector(key.public_key(), &params, &values, &mut rng).unwrap();
        let mut sum = CiphertextSum::zero(&params);
        sum.add(&ct, &params).unwrap();
        let fast = sum_phases(&key, &params, &sum).unwrap();

        // Reference: tfhe's own expansion to 2048 LWE ciphertexts per list, then one dot product
        // per value.
        let secret = LweSecretKey::from_container(key.secret_words().to_vec());
        let compact = LweCompactCiphertextList::from_container(
            ct.words(),
            LweSize(2049),
            LweCiphertextCount(values.len()),
            CiphertextModulus::new_native(),
        );
        let expanded = compact.expand_into_lwe_ciphertext_list();
        let mut out = PlaintextList::new(0u64, PlaintextCount(values.len()));
        decrypt_lwe_ciphertext_list(&secret, &expanded, &mut out);
        let reference = out.as_ref().to_vec();
        assert_eq!(fast, reference);
        // And the phases round to the plaintexts.
        let d = params.delta_log2();
        let decoded: Vec<u64> = fast
            .iter()
            .map(|p| p.wrapping_add(1 << (d - 1)) >> d)
            .collect();
        assert_eq!(decoded, values);
    }

    #[test]
    fn bias_unit_is_the_public_key_noise_summed_negacyclically() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let key = DecryptionKey::generate(&mut rng);
        let words = key.public_key().tfhe().as_ref();
        let (a, b) = words.split_at(2048);
        let mut conv = vec![0u64; 2048];
        super::slice_binary_semi_reverse_negacyclic_convolution(&mut conv, a, key.secret_words());
        let e: Vec<i64> = b
            .iter()
            .zip(&conv)
            .map(|(x, y)| x.wrapping_sub(*y) as i64)
            .collect();
        assert!(e.iter().all(|x| x.abs() <= 1 << 17));
        // E_pk(1)_j is a ± sum of all 2048 coefficients of e_pk: same parity as their plain sum
        // and the same magnitude bound, and the last entry is their plain sum.
        let total: i64 = e.iter().sum();
        let unit = key.bias_unit();
        assert!(unit.iter().all(|u| u.abs() <= 2048 << 17));
        assert!(unit.iter().all(|u| (u - total).rem_euclid(2) == 0));
        assert!(unit.contains(&total) || unit.contains(&-total));
    }
}
