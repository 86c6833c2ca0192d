//! Encrypted vectors and their sum. An encrypted vector of `d` values is one tfhe compact
//! ciphertext list: `L = ceil(d/2048)` polynomial masks of 2048 words, then `d` bodies, one word
//! per value. Upload is `8·(d + 2048·L)` bytes, about 16 bytes per value. Aggregation is a
//! wrapping add of these word arrays: the aggregator needs no key at all.
//!
//! Masks and bodies are kept apart on purpose: masks (`a ⊛ r + e1`) do not depend on the
//! plaintext, so the decryptor may check the mask sum contribution by contribution while the
//! bodies reach it only as a sum (`protocol-spec/he-fallback.md` §4).

use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Decode, Encode, Reader, Writer};

use crate::error::HeError;
use crate::params::HeParams;
use crate::wire::{put_words, read_words};

/// The accessors of the ciphertext layout both types share: `len` values carried in `words`, all
/// the masks first, then one body word per value. The doc texts are the type's own.
macro_rules! ciphertext_layout {
    ($name:ident, $noun:literal, $words_doc:literal, $masks_doc:literal, $bodies_doc:literal) => {
        impl $name {
            /// Number of plaintext values carried.
            pub fn len(&self) -> usize {
                self.len as usize
            }

            #[doc = concat!(
                "Whether the ", $noun, " carries no value (never true for a validated ", $noun, ")."
            )]
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            #[doc = $words_doc]
            pub fn words(&self) -> &[u64] {
                &self.words
            }

            #[doc = $masks_doc]
            pub fn masks(&self) -> &[u64] {
                &self.words[..self.words.len() - self.len as usize]
            }

            #[doc = $bodies_doc]
            pub fn bodies(&self) -> &[u64] {
                &self.words[self.words.len() - self.len as usize..]
            }
        }
    };
}

/// One site's encrypted vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedVector {
    len: u32,
    words: Vec<u64>,
}

impl EncryptedVector {
    pub(crate) fn from_words(len: u32, words: Vec<u64>) -> Self {
        Self { len, words }
    }
}

ciphertext_layout!(
    EncryptedVector,
    "vector",
    "The ciphertext words: all masks, then all bodies.",
    "The `L·2048` mask words (independent of the plaintext).",
    "The `d` body words (one per value)."
);

impl Encode for EncryptedVector {
    /// Value count (u32), then the words (u64 each). Embedded in messages, so no header.
    fn encode(&self, w: &mut Writer) {
        w.u32(self.len);
        put_words(w, &self.words);
    }
}

impl Decode for EncryptedVector {
    type Context = HeParams;
    const NAME: &'static str = "EncryptedVector";

    /// Strict decoding against the round's parameters: the value count must equal `d` and the
    /// word count is the layout's.
    fn decode(r: &mut Reader<'_>, params: &HeParams) -> Result<Self, DecodeError> {
        let len = read_len(r, params, "ciphertext.len")?;
        let words = read_words(r, params.ciphertext_words(), "ciphertext.words")?;
        Ok(Self { len, words })
    }
}

/// Wrapping sum of encrypted vectors, with the number of vectors it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiphertextSum {
    len: u32,
    sites: u32,
    words: Vec<u64>,
}

impl CiphertextSum {
    /// The empty sum (encryption of zero with zero noise) for vectors of the round's length.
    pub fn zero(params: &HeParams) -> Self {
        Self {
            len: params.vector_len(),
            sites: 0,
            words: vec![0; params.ciphertext_words()],
        }
    }

    /// Adds one encrypted vector: a wrapping add of the word arrays. Refuses a vector of another
    /// length and a sum beyond the cohort the parameters were checked for; on refusal the sum is
    /// unchanged.
    pub fn add(&mut self, ct: &EncryptedVector, params: &HeParams) -> Result<(), HeError> {
        if ct.len != self.len || ct.words.len() != self.words.len() {
            return Err(HeError::LengthMismatch {
                expected: self.len as usize,
                got: ct.len as usize,
            });
        }
        if self.sites >= params.max_sites() {
            return Err(HeError::TooManyContributions {
                sites: self.sites,
                max_sites: params.max_sites(),
            });
        }
        add_words(&mut self.words, &ct.words);
        self.sites += 1;
        Ok(())
    }

    /// Number of vectors summed.
    pub fn sites(&self) -> u32 {
        self.sites
    }
}

ciphertext_layout!(
    CiphertextSum,
    "sum",
    "The summed words: all masks, then all bodies.",
    "The summed mask words.",
    "The summed body words."
);

impl Encode for CiphertextSum {
    /// Value count (u32), site count (u32), then the words (u64 each).
    fn encode(&self, w: &mut Writer) {
        w.u32(self.len);
        w.u32(self.sites);
        put_words(w, &self.words);
    }
}

impl Decode for CiphertextSum {
    type Context = HeParams;
    const NAME: &'static str = "CiphertextSum";

    /// Strict decoding against the round's parameters; the site count is at most `K_max`.
    fn decode(r: &mut Reader<'_>, params: &HeParams) -> Result<Self, DecodeError> {
        let len = read_len(r, params, "sum.len")?;
        let sites = r.u32("sum.sites")?;
        if sites > params.max_sites() {
            return Err(DecodeError::LengthOutOfBounds {
                field: "sum.sites",
                declared: sites.into(),
                min: 0,
                max: params.max_sites().into(),
            });
        }
        let words = read_words(r, params.ciphertext_words(), "sum.words")?;
        Ok(Self { len, sites, words })
    }
}

/// `acc[i] += x[i]` modulo 2^64: the whole of homomorphic addition.
pub fn add_words(acc: &mut [u64], x: &[u64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a = a.wrapping_add(*b);
    }
}

fn read_len(
    r: &mut Reader<'_>,
    params: &HeParams,
    field: &'static str,
) -> Result<u32, DecodeError> {
    let len = r.u32(field)?;
    if len != params.vector_len() {
        let d = u64::from(params.vector_len());
        return Err(DecodeError::LengthOutOfBounds {
            field,
            declared: len.into(),
            min: d,
            max: d,
        });
    }
    Ok(len)
}
