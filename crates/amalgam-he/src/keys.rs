//! Decryptor key generation, the public key with its pinned fingerprint, and the secret key
//! (zeroized on drop, never cloned).

use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_binary_semi_reverse_negacyclic_convolution;
use tfhe::core_crypto::commons::math::random::{Seed, Seeder};
use tfhe::core_crypto::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use crate::error::HeError;
use crate::params::{LWE_DIMENSION, NOISE_BOUND_LOG2};
use crate::ring::{body_convolution, list_phases};
use crate::wire::{MSG_HE_PUBLIC_KEY, MSG_HE_SECRET_KEY, put_words, read_words};
use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Decode, Encode, HEADER_LEN, Reader, Writer};

/// Length of an encoded public key: header, dimension, noise bound, mask and body.
pub const PUBLIC_KEY_BYTES: usize = HEADER_LEN + 4 + 1 + 2 * LWE_DIMENSION * 8;

/// Length of an encoded secret key: header, packed secret bits, public key.
pub const SECRET_KEY_BYTES: usize = HEADER_LEN + LWE_DIMENSION / 8 + PUBLIC_KEY_BYTES;

/// The TUniform(17) distribution used for every noise sample.
pub(crate) fn noise_distribution() -> DynamicDistribution<u64> {
    DynamicDistribution::new_t_uniform(NOISE_BOUND_LOG2)
}

/// Feeds tfhe's AES-CTR generators with seeds drawn from the caller's cryptographic RNG.
pub(crate) struct RngSeeder<'a, R: CryptoRng + ?Sized>(pub(crate) &'a mut R);

impl<R: CryptoRng + ?Sized> Seeder for RngSeeder<'_, R> {
    fn seed(&mut self) -> Seed {
        let mut bytes = Zeroizing::new([0u8; 16]);
        self.0.fill_bytes(bytes.as_mut());
        Seed(u128::from_le_bytes(*bytes))
    }

    fn is_available() -> bool {
        true
    }
}

/// SHA-256 of a public key's canonical bytes; pinned in the consortium configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyFingerprint(pub [u8; 32]);

impl KeyFingerprint {
    /// Lowercase hex, for configuration files and errors.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The decryptor's compact public key `(a, b = a ⊛ s + e_pk)`; sites encrypt under it.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    inner: LweCompactPublicKeyOwned<u64>,
}

impl Encode for PublicKey {
    /// Header (type 0x43), LWE dimension (u32), noise bound log2 (u8), mask and body (u64 each).
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_PUBLIC_KEY);
        w.u32(LWE_DIMENSION as u32);
        w.u8(NOISE_BOUND_LOG2 as u8);
        put_words(w, self.inner.as_ref());
    }
}

impl Decode for PublicKey {
    type Context = ();
    const NAME: &'static str = "HePublicKey";

    /// Strict decoding; every `u64` of mask and body is a valid value.
    fn decode(r: &mut Reader<'_>, _: &()) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_PUBLIC_KEY)?;
        if r.u32("public_key.dimension")? != LWE_DIMENSION as u32 {
            return Err(DecodeError::InvalidValue {
                field: "public_key.dimension",
                reason: "must be 2048",
            });
        }
        if u32::from(r.u8("public_key.noise")?) != NOISE_BOUND_LOG2 {
            return Err(DecodeError::InvalidValue {
                field: "public_key.noise",
                reason: "must be TUniform(17)",
            });
        }
        let words = read_words(r, 2 * LWE_DIMENSION, "public_key.words")?;
        Ok(Self {
            inner: LweCompactPublicKey::from_container(words, CiphertextModulus::new_native()),
        })
    }
}

impl PublicKey {
    /// SHA-256 of the canonical encoding.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint(Sha256::digest(self.to_bytes()).into())
    }

    /// Returns the key only if its fingerprint equals the pinned one (sites call this before
    /// encrypting anything).
    pub fn pinned(self, expected: &KeyFingerprint) -> Result<Self, HeError> {
        let got = self.fingerprint();
        if &got != expected {
            return Err(HeError::KeyMismatch {
                expected: expected.to_hex(),
                got: got.to_hex(),
            });
        }
        Ok(self)
    }

    pub(crate) fn tfhe(&self) -> &LweCompactPublicKeyOwned<u64> {
        &self.inner
    }
}

/// The decryptor's secret: binary LWE key `s`, plus `E_pk(1)`, the phase a noiseless encryption
/// of zero with all-ones randomness would have, from which the bias of any sum is derived.
/// Wiped on drop; deliberately not `Clone`.
pub struct DecryptionKey {
    secret: LweSecretKeyOwned<u64>,
    bias_unit: Vec<i64>,
    public: PublicKey,
}

impl Drop for DecryptionKey {
    fn drop(&mut self) {
        self.secret.as_mut().zeroize();
        self.bias_unit.zeroize();
    }
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("fingerprint", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl DecryptionKey {
    /// Generates a fresh key pair from the caller's cryptographic RNG: tfhe's secret and
    /// encryption generators (AES-CTR) are seeded from it.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seeder = RngSeeder(rng);
        let mut secret_gen = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
        let secret = allocate_and_generate_new_binary_lwe_secret_key(
            LweDimension(LWE_DIMENSION),
            &mut secret_gen,
        );
        let mask_seed = seeder.seed();
        let mut enc_gen =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(mask_seed, &mut seeder);
        let pk = allocate_and_generate_new_lwe_compact_public_key(
            &secret,
            noise_distribution(),
            CiphertextModulus::new_native(),
            &mut enc_gen,
        );
        Self::from_parts(secret, PublicKey { inner: pk })
    }

    fn from_parts(secret: LweSecretKeyOwned<u64>, public: PublicKey) -> Self {
        let bias_unit = all_ones_phase(secret.as_ref(), &public);
        Self {
            secret,
            bias_unit,
            public,
        }
    }

    /// The public key to distribute (its fingerprint goes into the consortium configuration).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn secret_words(&self) -> &[u64] {
        self.secret.as_ref()
    }

    pub(crate) fn bias_unit(&self) -> &[i64] {
        &self.bias_unit
    }

    /// Secret encoding for the key file: header (type 0x44), `s` packed one bit per coefficient
    /// (LSB first), then the encoded public key. Returned in a buffer wiped when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(SECRET_KEY_BYTES);
        w.header(MSG_HE_SECRET_KEY);
        let mut packed = Zeroizing::new([0u8; LWE_DIMENSION / 8]);
        for (byte, chunk) in packed.iter_mut().zip(self.secret.as_ref().chunks(8)) {
            *byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &bit)| acc | ((bit as u8) << i));
        }
        w.bytes(packed.as_ref());
        self.public.encode(&mut w);
        Zeroizing::new(w.into_bytes())
    }

    /// Strict decoding of [`Self::to_secret_bytes`]; refuses a secret that does not match the
    /// public key stored with it (its implied `e_pk` must lie within the TUniform(17) bound).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, HeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(MSG_HE_SECRET_KEY)?;
        let packed = Zeroizing::new(r.array::<{ LWE_DIMENSION / 8 }>("secret_key.bits")?);
        let public = PublicKey::decode(&mut r, &())?;
        r.finish("HeSecretKey")?;
        let mut words = vec![0u64; LWE_DIMENSION];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from((packed[i / 8] >> (i % 8)) & 1);
        }
        let secret = LweSecretKey::from_container(words);
        if !public_key_noise_within_bound(secret.as_ref(), &public) {
            return Err(HeError::Decode(DecodeError::InvalidValue {
                field: "secret_key.bits",
                reason: "secret does not match the public key stored with it",
            }));
        }
        Ok(Self::from_parts(secret, public))
    }
}

/// `E_pk(1)`: phase of `(a ⊛ 1, rev(b ⊛ 1))`, i.e. of an encryption of zero with randomness
/// all ones and no fresh noise. The mean of a sum of `K` ciphertexts' phases is `(K/2)·E_pk(1)`.
fn all_ones_phase(secret: &[u64], public: &PublicKey) -> Vec<i64> {
    let (a, b) = public.inner.as_ref().split_at(LWE_DIMENSION);
    let ones = vec![1u64; LWE_DIMENSION];
    let mut scratch = vec![0u64; LWE_DIMENSION];
    let mut mask = vec![0u64; LWE_DIMENSION];
    let mut body = vec![0u64; LWE_DIMENSION];
    slice_binary_semi_reverse_negacyclic_convolution(&mut mask, a, &ones);
    body_convolution(b, &ones, &mut scratch, &mut body);
    let mut phase = vec![0u64; LWE_DIMENSION];
    list_phases(&mask, &body, secret, &mut scratch, &mut phase);
    scratch.zeroize();
    phase.into_iter().map(|p| p as i64).collect()
}

/// Whether `b - a ⊛ s` is a TUniform(17) vector, i.e. `s` is the secret behind this public key.
fn public_key_noise_within_bound(secret: &[u64], public: &PublicKey) -> bool {
    let (a, b) = public.inner.as_ref().split_at(LWE_DIMENSION);
    let mut conv = vec![0u64; LWE_DIMENSION];
    slice_binary_semi_reverse_negacyclic_convolution(&mut conv, a, secret);
    let bound = 1i64 << NOISE_BOUND_LOG2;
    let ok = b
        .iter()
        .zip(&conv)
        .all(|(bi, ci)| (bi.wrapping_sub(*ci) as i64).abs() <= bound);
    conv.zeroize();
    ok
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn public_key_round_trips_and_fingerprint_pins() {
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let key = DecryptionKey::generate(&mut rng);
        let bytes = key.public_key().to_bytes();
        assert_eq!(bytes.len(), PUBLIC_KEY_BYTES);
        let decoded = PublicKey::from_bytes(&bytes, &()).unwrap();
        assert_eq!(&decoded, key.public_key());
        let fp = key.public_key().fingerprint();
        assert_eq!(fp.0, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert!(decoded.clone().pinned(&fp).is_ok());
        let other = DecryptionKey::generate(&mut rng);
        assert!(matches!(
            decoded.pinned(&other.public_key().fingerprint()),
            Err(HeError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn public_key_decoding_is_strict() {
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let bytes = DecryptionKey::generate(&mut rng).public_key().to_bytes();
        assert!(matches!(
            PublicKey::from_bytes(&bytes[..100], &()),
            Err(DecodeError::Truncated { .. })
        ));
        let mut b = bytes.clone();
        b.push(1);
        assert!(matches!(
            PublicKey::from_bytes(&b, &()),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let mut b = bytes.clone();
        b[HEADER_LEN + 2] = 0;
        assert!(matches!(
            PublicKey::from_bytes(&b, &()),
            Err(DecodeError::InvalidValue {
                field: "public_key.dimension",
                ..
            })
        ));
        let mut b = bytes.clone();
        b[HEADER_LEN + 4] = 9;
        assert!(matches!(
            PublicKey::from_bytes(&b, &()),
            Err(DecodeError::InvalidValue {
                field: "public_key.noise",
                ..
            })
        ));
        let mut b = bytes;
        b[3] = MSG_HE_SECRET_KEY;
        assert!(matches!(
            PublicKey::from_bytes(&b, &()),
            Err(DecodeError::UnexpectedMessageType { .. })
        ));
    }

    #[test]
    fn secret_key_round_trips_and_must_match_its_public_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(23);
        let key = DecryptionKey::generate(&mut rng);
        let bytes = key.to_secret_bytes();
        let back = DecryptionKey::from_secret_bytes(&bytes).unwrap();
        assert_eq!(back.secret_words(), key.secret_words());
        assert_eq!(back.bias_unit(), key.bias_unit());
        // Flip one secret bit: the implied public-key noise is no longer small.
        assert_eq!(bytes.len(), SECRET_KEY_BYTES);
        let mismatch = |b: &[u8]| {
            matches!(
                DecryptionKey::from_secret_bytes(b),
                Err(HeError::Decode(DecodeError::InvalidValue {
                    field: "secret_key.bits",
                    ..
                }))
            )
        };
        let mut bad = bytes.to_vec();
        bad[HEADER_LEN] ^= 1;
        assert!(mismatch(&bad));
        // Pair the secret with another key's public half.
        let other = DecryptionKey::generate(&mut rng);
        let mut mixed = bytes[..HEADER_LEN + 256].to_vec();
        mixed.extend_from_slice(&other.public_key().to_bytes());
        assert!(mismatch(&mixed));
        assert!(matches!(
            DecryptionKey::from_secret_bytes(&bytes[..bytes.len() - 1]),
            Err(HeError::Decode(DecodeError::Truncated { .. }))
        ));
    }

    #[test]
    fn secret_is_binary_and_fresh_per_generation() {
        let mut rng = ChaCha20Rng::seed_from_u64(24);
        let a = DecryptionKey::generate(&mut rng);
        let b = DecryptionKey::generate(&mut rng);
        assert!(a.secret_words().iter().all(|&x| x <= 1));
        let weight: u64 = a.secret_words().iter().sum();
        assert!((824..1224).contains(&weight), "secret weight {weight}");
        assert_ne!(a.secret_words(), b.secret_words());
        assert_ne!(a.public_key(), b.public_key());
    }
}
