//! Site-side encryption of a quantized vector under the decryptor's compact public key.
//!
//! The vector becomes one compact ciphertext list (tfhe's compact PKE, the variant with the exact
//! binary-NTT convolution): per chunk of 2048 values fresh binary randomness `r`, mask
//! `a ⊛ r + e1`, bodies `rev(b ⊛ r) + e2 + m·Δ`, with `e1`, `e2` TUniform(17).

use rand_core::CryptoRng;
use tfhe::core_crypto::algorithms::lwe_encryption::re_randomization::rerand_encrypt_lwe_compact_ciphertext_list_with_compact_public_key as encrypt_list;
use tfhe::core_crypto::prelude::*;
use zeroize::Zeroize;

use crate::ciphertext::EncryptedVector;
use crate::error::HeError;
use crate::keys::{PublicKey, RngSeeder, noise_distribution};
use crate::params::{HeParams, LWE_DIMENSION};

/// Encrypts `values` (each in `[0, 2^b)`, exactly `d` of them) as `m·2^(64-P)`. Randomness comes
/// from tfhe's AES-CTR noise generator seeded from `rng`.
pub fn encrypt_vector<R: CryptoRng + ?Sized>(
    public_key: &PublicKey,
    params: &HeParams,
    values: &[u64],
    rng: &mut R,
) -> Result<EncryptedVector, HeError> {
    if values.len() != params.vector_len() as usize {
        return Err(HeError::LengthMismatch {
            expected: params.vector_len() as usize,
            got: values.len(),
        });
    }
    let limit = 1u64 << params.input_bits();
    if let Some(index) = values.iter().position(|v| *v >= limit) {
        return Err(HeError::ValueOutOfRange {
            index,
            input_bits: params.input_bits(),
        });
    }
    let mut seeder = RngSeeder(rng);
    let mask_seed = seeder.seed();
    let mut generator =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(mask_seed, &mut seeder);
    let noise = noise_distribution();
    let delta_log = params.delta_log2();
    let mut words = vec![0u64; params.ciphertext_words()];
    let mut plain: Vec<u64> = values.iter().map(|v| v << delta_log).collect();
    let mut list = LweCompactCiphertextList::from_container(
        words.as_mut_slice(),
        LweSize(LWE_DIMENSION + 1),
        LweCiphertextCount(values.len()),
        CiphertextModulus::new_native(),
    );
    encrypt_list(
        public_key.tfhe(),
        &mut list,
        &PlaintextList::from_container(plain.as_slice()),
        noise,
        noise,
        generator.noise_generator_mut(),
    );
    plain.zeroize();
    Ok(EncryptedVector::from_words(params.vector_len(), words))
}
