//! Element-wise sums of bit-packed vectors (B ≤ 32) computed on the packed words themselves.
//!
//! Why: the aggregator adds n uploads of d elements each. Unpacking every upload costs about
//! 1.2 cycles per element on baseline x86-64, which SSE2 cannot vectorise (no per-lane variable
//! shifts); that alone put server unmasking at 1.5x its keystream floor. Adding in the packed
//! domain instead is a fixed sequence of lane-wise u32 operations that the compiler vectorises
//! (each loop is compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time by
//! `multiversion`), and only the final sum is unpacked, once per chunk rather than once per
//! upload. Measured at n = 10, d = 2^20, B = 20: unmasking went from 1.50x its keystream floor
//! to 1.41x with baseline SSE2 code and 1.20x with the AVX-512 clone (benches/README.md).
//!
//! # Method (SIMD-within-a-register addition)
//!
//! The packed stream (spec §3.4) is read as little-endian u32 words. `tops` marks, in each word,
//! the most significant bit of every element whose top bit falls in that word. For two words
//! `x`, `a`:
//!
//! ```text
//! s   = (x & !tops) + (a & !tops)      (wrapping u32 add)
//! sum = s ^ ((x ^ a) & tops)
//! ```
//!
//! Below a top bit both addends are cleared, so a carry out of an element's lower bits stops
//! there; the xor then sets the top bit to its sum mod 2 (plus the carry that arrived). This is
//! the element-wise sum mod 2^B for every element that lies wholly in the word. An element that
//! straddles words `w` and `w + 1` has no top bit in word `w`, so the carry out of its low part
//! leaves bit 31 as the u32 overflow. That overflow is counted per word (`carries[w]`) instead
//! of being propagated, and added into the high part (bits below the element's top in word
//! `w + 1`) once, when the sum is unpacked. Deferring it is exact because the high part is itself
//! summed mod 2^(bits in word w + 1), where additions commute.
//!
//! 32 elements of B bits are exactly B words, so `tops` repeats every B words; sums run over
//! blocks of 128 elements (4·B words, a multiple of the SSE2 lane count). A chunk of the
//! protocol's unmasking starts on an element boundary that is also a word boundary, so no carry
//! crosses chunks.

use multiversion::multiversion;

use crate::packing::{Unpacker, packed_len};
use crate::params::mask_bits;

/// Elements per block: 128 elements of B bits are exactly 4·B u32 words.
const BLOCK_ELEMS: usize = 128;
/// Blocks per span: the unit of the vectorised loop, whose top-bit pattern is precomputed
/// (at most 16 KiB at B = 32, so it stays in L1 next to the data).
const SPAN_BLOCKS: usize = 32;

/// Running element-wise sum, mod 2^B, of packed vectors of the same length (B ≤ 32).
#[derive(Debug)]
pub struct PackedSum {
    bits: u8,
    /// Top-bit pattern of one span (`SPAN_BLOCKS` · 4·B words).
    tops: Vec<u32>,
    /// High-part masks of one span, for settling carries (see [`highs_pattern`]).
    highs: Vec<u32>,
    /// Element count of the vectors being summed.
    len: usize,
    /// Vectors added so far.
    count: usize,
    /// Packed sum as little-endian words, padded with zeros to whole blocks.
    acc: Vec<u32>,
    /// Overflows out of bit 31 of each word, owed to the next word's first element.
    carries: Vec<u32>,
    /// Zero-padded copy of a vector's last, partial block.
    tail: Vec<u8>,
    /// The settled sum as packed bytes, for unpacking.
    bytes: Vec<u8>,
}

impl PackedSum {
    /// A sum of packed vectors of `bits` (1..=32) bits per element, at most `max_len` elements.
    ///
    /// # Panics
    /// If `bits` is 0 or above 32 (a caller bug: the protocol's u64 path handles B > 32).
    pub fn new(bits: u8, max_len: usize) -> Self {
        assert!((1..=32).contains(&bits), "PackedSum needs 1..=32 bits");
        let block_words = 4 * usize::from(bits);
        let words = max_len.div_ceil(BLOCK_ELEMS) * block_words;
        Self {
            bits,
            tops: tops_pattern(bits).repeat(SPAN_BLOCKS),
            highs: highs_pattern(bits).repeat(SPAN_BLOCKS),
            len: 0,
            count: 0,
            acc: vec![0; words],
            carries: vec![0; words],
            tail: vec![0; 4 * block_words],
            bytes: vec![0; 4 * words],
        }
    }

    /// Starts a new sum of vectors of `len` elements (at most the `max_len` given to `new`).
    ///
    /// # Panics
    /// If `len` exceeds `max_len`.
    pub fn clear(&mut self, len: usize) {
        assert!(len <= self.capacity(), "PackedSum length over its capacity");
        self.len = len;
        self.count = 0;
    }

    fn capacity(&self) -> usize {
        self.acc.len() / self.block_words() * BLOCK_ELEMS
    }

    fn block_words(&self) -> usize {
        4 * usize::from(self.bits)
    }

    /// Padded word length of the current sum.
    fn padded_words(&self) -> usize {
        self.len.div_ceil(BLOCK_ELEMS) * self.block_words()
    }

    /// Adds one packed vector: exactly [`packed_len`]`(len, bits)` bytes, checked beforehand
    /// (zero padding bits) by [`crate::packing::check_packed`] or its caller.
    ///
    /// # Panics
    /// If `packed` has the wrong length (a caller bug: uploads are checked on receipt).
    pub fn add(&mut self, packed: &[u8]) {
        assert_eq!(
            packed.len(),
            packed_len(self.len, self.bits),
            "packed length"
        );
        let padded = self.padded_words();
        let block_bytes = 4 * self.block_words();
        let whole = packed.len() / block_bytes * block_bytes;
        let (head, rest) = packed.split_at(whole);
        self.tail.fill(0);
        self.tail[..rest.len()].copy_from_slice(rest);
        let tail = &self.tail[..if rest.is_empty() { 0 } else { block_bytes }];
        let (acc_head, acc_tail) = self.acc[..padded].split_at_mut(whole / 4);
        if self.count == 0 {
            copy_words(head, acc_head);
            copy_words(tail, acc_tail);
        } else {
            let (carry_head, carry_tail) = self.carries[..padded].split_at_mut(whole / 4);
            if self.count == 1 {
                carry_head.fill(0);
                carry_tail.fill(0);
            }
            for ((src, acc), carries) in head
                .chunks(4 * self.tops.len())
                .zip(acc_head.chunks_mut(self.tops.len()))
                .zip(carry_head.chunks_mut(self.tops.len()))
            {
                add_words(src, acc, carries, &self.tops);
            }
            add_words(tail, acc_tail, carry_tail, &self.tops);
        }
        self.count += 1;
    }

    /// Writes the sum (mod 2^B; zeros if nothing was added) into `out`, `len` elements.
    ///
    /// # Panics
    /// If `out.len()` is not the `len` given to [`PackedSum::clear`].
    pub fn unpack_into(&mut self, out: &mut [u32]) {
        assert_eq!(out.len(), self.len, "output length");
        if self.count == 0 {
            out.fill(0);
            return;
        }
        if self.count > 1 {
            self.settle_carries();
        }
        let words = self.padded_words();
        for (b, w) in self.bytes.chunks_exact_mut(4).zip(&self.acc[..words]) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let bytes = &self.bytes[..packed_len(self.len, self.bits)];
        Unpacker::new(bytes, self.bits).write_into_u32(out);
    }

    /// Adds each word's counted overflows into the high part of the element that straddles it
    /// and the next word. A span starts on an element boundary, so no carry crosses spans.
    fn settle_carries(&mut self) {
        let words = self.padded_words();
        let span = self.highs.len();
        for (acc, carries) in self.acc[..words]
            .chunks_mut(span)
            .zip(self.carries[..words].chunks(span))
        {
            let n = acc.len();
            for ((a, &owed), &m) in acc[1..]
                .iter_mut()
                .zip(&carries[..n - 1])
                .zip(&self.highs[1..])
            {
                *a = (*a & !m) | ((*a & m).wrapping_add(owed) & m);
            }
        }
    }
}

/// For each of the 4·B words of a block, the bits below the top of the element that began in
/// the previous word (zero where the word starts on an element boundary).
fn highs_pattern(bits: u8) -> Vec<u32> {
    let b = usize::from(bits);
    (0..4 * b)
        .map(|w| match (32 * w) % b {
            0 => 0,
            offset => mask_bits((b - offset) as u8) as u32,
        })
        .collect()
}

/// For each of the 4·B words of a block, the element top bits it holds.
fn tops_pattern(bits: u8) -> Vec<u32> {
    let b = usize::from(bits);
    let mut tops = vec![0u32; 4 * b];
    for element in 0..BLOCK_ELEMS {
        let top = element * b + b - 1;
        tops[top / 32] |= 1 << (top % 32);
    }
    tops
}

/// `acc[w] += carries[w − 1]` in the bits of `highs[w]`; `acc` starts on an element boundary.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn settle_words(acc: &mut [u32], carries: &[u32], highs: &[u32]) {
    let n = acc.len();
    if n < 2 {
        return;
    }
    for ((a, &owed), &m) in acc[1..].iter_mut().zip(&carries[..n - 1]).zip(&highs[1..]) {
        *a = (*a & !m) | ((*a & m).wrapping_add(owed) & m);
    }
}

/// Reads little-endian words.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn copy_words(src: &[u8], dst: &mut [u32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// Adds the words of `src` (little-endian bytes, starting on a block boundary) into `acc`,
/// counting word overflows in `carries`. Written as one flat lane-wise loop so that it
/// vectorises; compiled for AVX-512, AVX2 and baseline, chosen at run time.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn add_words(src: &[u8], acc: &mut [u32], carries: &mut [u32], tops: &[u32]) {
    for (((x, a), c), &t) in src
        .chunks_exact(4)
        .zip(acc.iter_mut())
        .zip(carries.iter_mut())
        .zip(tops)
    {
        let x = u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let y = *a;
        let low = y & !t;
        let s = (x & !t).wrapping_add(low);
        *c += u32::from(s < low);
        *a = s ^ ((x ^ y) & t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packing::{pack, unpack};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    fn check(bits: u8, len: usize, vectors: &[Vec<u64>]) {
        let mask = mask_bits(bits);
        let mut sum = PackedSum::new(bits, len.max(1) + 300);
        sum.clear(len);
        let mut want = vec![0u64; len];
        for v in vectors {
            sum.add(&pack(v, bits));
            for (w, x) in want.iter_mut().zip(v) {
                *w = w.wrapping_add(*x) & mask;
            }
        }
        let mut got = vec![u32::MAX; len];
        sum.unpack_into(&mut got);
        let got: Vec<u64> = got.iter().map(|&g| u64::from(g)).collect();
        assert_eq!(got, want, "bits {bits} len {len} vectors {}", vectors.len());
    }

    #[test]
    fn sums_equal_unpacked_sums_at_every_width() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        for bits in 1..=32u8 {
            let mask = mask_bits(bits);
            for len in [0usize, 1, 31, 32, 127, 128, 129, 1000] {
                for count in [1usize, 2, 7, 40] {
                    let vectors: Vec<Vec<u64>> = (0..count)
                        .map(|_| (0..len).map(|_| rng.next_u64() & mask).collect())
                        .collect();
                    check(bits, len, &vectors);
                }
            }
        }
    }

    #[test]
    fn carries_at_their_maximum_are_exact() {
        // All-ones elements carry out of every bit; 255 of them is the consortium maximum.
        for bits in 1..=32u8 {
            let len = 300;
            let ones = vec![vec![mask_bits(bits); len]; 255];
            check(bits, len, &ones);
        }
    }

    #[test]
    fn reuse_after_clear_forgets_the_previous_sum() {
        let bits = 21;
        let mut sum = PackedSum::new(bits, 500);
        sum.clear(500);
        sum.add(&pack(&vec![mask_bits(bits); 500], bits));
        sum.add(&pack(&vec![mask_bits(bits); 500], bits));
        sum.clear(200);
        let v: Vec<u64> = (0..200).collect();
        sum.add(&pack(&v, bits));
        let mut got = vec![0u32; 200];
        sum.unpack_into(&mut got);
        assert_eq!(unpack(&pack(&v, bits), 200, bits).unwrap(), v);
        assert!(got.iter().zip(&v).all(|(&g, &w)| u64::from(g) == w));
    }

    #[test]
    fn nothing_added_is_zero() {
        let mut sum = PackedSum::new(20, 10);
        sum.clear(10);
        let mut got = vec![7u32; 10];
        sum.unpack_into(&mut got);
        assert_eq!(got, vec![0; 10]);
    }
}
