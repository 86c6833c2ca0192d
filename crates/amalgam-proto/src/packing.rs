//! Bit-packing of vectors at exactly B bits per element (spec §3.4).
//!
//! Element i occupies bits [i·B, (i+1)·B) of a little-endian bit stream: stream bit j is
//! bit (j mod 8) of byte ⌊j/8⌋, and each element is written least-significant bit first.
//! The packed length is ⌈d·B/8⌉ bytes; unused high bits of the last byte must be zero.
//! Unpacking is strict: wrong lengths and nonzero padding are refused.
//!
//! Blocks of 64 elements occupy exactly B little-endian u64 words, which the fast paths exploit.

use crate::error::DecodeError;
use crate::params::mask_bits;

/// Calls `$f::<B>($args)` with `B` the const generic equal to the runtime width `$bits`.
macro_rules! dispatch_bits {
    ($bits:expr, $f:ident, $($args:expr),*) => {
        match $bits {
            1 => $f::<1>($($args),*), 2 => $f::<2>($($args),*), 3 => $f::<3>($($args),*),
            4 => $f::<4>($($args),*), 5 => $f::<5>($($args),*), 6 => $f::<6>($($args),*),
            7 => $f::<7>($($args),*), 8 => $f::<8>($($args),*), 9 => $f::<9>($($args),*),
            10 => $f::<10>($($args),*), 11 => $f::<11>($($args),*), 12 => $f::<12>($($args),*),
            13 => $f::<13>($($args),*), 14 => $f::<14>($($args),*), 15 => $f::<15>($($args),*),
            16 => $f::<16>($($args),*), 17 => $f::<17>($($args),*), 18 => $f::<18>($($args),*),
            19 => $f::<19>($($args),*), 20 => $f::<20>($($args),*), 21 => $f::<21>($($args),*),
            22 => $f::<22>($($args),*), 23 => $f::<23>($($args),*), 24 => $f::<24>($($args),*),
            25 => $f::<25>($($args),*), 26 => $f::<26>($($args),*), 27 => $f::<27>($($args),*),
            28 => $f::<28>($($args),*), 29 => $f::<29>($($args),*), 30 => $f::<30>($($args),*),
            31 => $f::<31>($($args),*), 32 => $f::<32>($($args),*), 33 => $f::<33>($($args),*),
            34 => $f::<34>($($args),*), 35 => $f::<35>($($args),*), 36 => $f::<36>($($args),*),
            37 => $f::<37>($($args),*), 38 => $f::<38>($($args),*), 39 => $f::<39>($($args),*),
            40 => $f::<40>($($args),*), 41 => $f::<41>($($args),*), 42 => $f::<42>($($args),*),
            43 => $f::<43>($($args),*), 44 => $f::<44>($($args),*), 45 => $f::<45>($($args),*),
            46 => $f::<46>($($args),*), 47 => $f::<47>($($args),*), 48 => $f::<48>($($args),*),
            49 => $f::<49>($($args),*), 50 => $f::<50>($($args),*), 51 => $f::<51>($($args),*),
            52 => $f::<52>($($args),*), 53 => $f::<53>($($args),*), 54 => $f::<54>($($args),*),
            55 => $f::<55>($($args),*), 56 => $f::<56>($($args),*), 57 => $f::<57>($($args),*),
            58 => $f::<58>($($args),*), 59 => $f::<59>($($args),*), 60 => $f::<60>($($args),*),
            61 => $f::<61>($($args),*), 62 => $f::<62>($($args),*), 63 => $f::<63>($($args),*),
            _ => $f::<64>($($args),*),
        }
    };
}

/// Elements per block: a block of 64 elements of B bits is exactly B little-endian u64 words.
const BLOCK: usize = 64;

/// Packs whole blocks of 64 elements; `vals.len()` % 64 == 0.
#[inline(always)]
fn pack_blocks<const B: u32, T: Copy + Into<u64>>(vals: &[T], out: &mut Vec<u8>) {
    let mask = mask_bits(B as u8);
    if B <= 32 {
        // Groups of 8 elements are exactly B bytes (at most four u64 words).
        for group in vals.chunks_exact(8) {
            let mut w = [0u64; 5];
            for (k, &v) in group.iter().enumerate() {
                let v = v.into() & mask;
                let off = k as u32 * B;
                let (i, s) = ((off / 64) as usize, off % 64);
                w[i] |= v << s;
                if s + B > 64 {
                    w[i + 1] |= v >> (64 - s);
                }
            }
            let mut bytes = [0u8; 40];
            for (dst, word) in bytes.chunks_exact_mut(8).zip(w) {
                dst.copy_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&bytes[..B as usize]);
        }
        return;
    }
    for block in vals.chunks_exact(BLOCK) {
        let mut w = [0u64; 65];
        for (k, &v) in block.iter().enumerate() {
            let v = v.into() & mask;
            let off = k as u32 * B;
            let (i, s) = ((off / 64) as usize, off % 64);
            w[i] |= v << s;
            if s + B > 64 {
                w[i + 1] |= v >> (64 - s);
            }
        }
        for word in &w[..B as usize] {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
}

fn pack_blocks_u32<const B: u32>(vals: &[u32], out: &mut Vec<u8>) {
    pack_blocks::<B, u32>(vals, out)
}

fn pack_blocks_u64<const B: u32>(vals: &[u64], out: &mut Vec<u8>) {
    pack_blocks::<B, u64>(vals, out)
}

/// Writes whole groups of 8 packed elements into `out` (B <= 32: B bytes, at most four u64
/// words).
fn write_groups_u32<const B: u32>(bytes: &[u8], out: &mut [u32]) {
    let mask = mask_bits(B as u8);
    for (src, dst) in bytes.chunks_exact(B as usize).zip(out.chunks_exact_mut(8)) {
        let mut buf = [0u8; 40];
        buf[..B as usize].copy_from_slice(src);
        let mut w = [0u64; 5];
        for (word, b) in w.iter_mut().zip(buf.chunks_exact(8)) {
            *word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        for (k, x) in dst.iter_mut().enumerate() {
            let off = k as u32 * B;
            let (i, s) = ((off / 64) as usize, off % 64);
            let mut v = w[i] >> s;
            if s + B > 64 {
                v |= w[i + 1] << (64 - s);
            }
            *x = (v & mask) as u32;
        }
    }
}

/// Adds whole blocks of 64 packed elements from `bytes` (B·8 bytes per block) into `acc`.
fn add_blocks_u64<const B: u32>(bytes: &[u8], acc: &mut [u64]) {
    let mask = mask_bits(B as u8);
    for (src, dst) in bytes
        .chunks_exact(8 * B as usize)
        .zip(acc.chunks_exact_mut(BLOCK))
    {
        let mut w = [0u64; 65];
        for (word, b) in w.iter_mut().zip(src.chunks_exact(8)) {
            *word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        for (k, x) in dst.iter_mut().enumerate() {
            let off = k as u32 * B;
            let (i, s) = ((off / 64) as usize, off % 64);
            let mut v = w[i] >> s;
            if s + B > 64 {
                v |= w[i + 1] << (64 - s);
            }
            *x = x.wrapping_add(v & mask);
        }
    }
}

/// Packed length of `d` elements of `bits` bits.
pub fn packed_len(d: usize, bits: u8) -> usize {
    (d * usize::from(bits)).div_ceil(8)
}

/// Streaming packer: feed elements in order (any chunking), then [`Packer::finish`].
#[derive(Debug)]
pub struct Packer {
    out: Vec<u8>,
    bits: u8,
    acc: u128,
    nacc: u32,
}

impl Packer {
    /// Packer for `d` elements of `bits` (1..=64) bits.
    pub fn new(d: usize, bits: u8) -> Self {
        Self {
            out: Vec::with_capacity(packed_len(d, bits)),
            bits,
            acc: 0,
            nacc: 0,
        }
    }

    /// Appends u32 elements (only the low `bits` bits of each are used; `bits` <= 32).
    pub fn push_u32(&mut self, vals: &[u32]) {
        let mut rest = vals;
        if self.nacc == 0 {
            let whole = vals.len() / BLOCK * BLOCK;
            dispatch_bits!(self.bits, pack_blocks_u32, &vals[..whole], &mut self.out);
            rest = &vals[whole..];
        }
        let mask = mask_bits(self.bits);
        for &v in rest {
            self.push_one(u64::from(v) & mask);
        }
    }

    /// Appends u64 elements (only the low `bits` bits of each are used).
    pub fn push_u64(&mut self, vals: &[u64]) {
        let mut rest = vals;
        if self.nacc == 0 {
            let whole = vals.len() / BLOCK * BLOCK;
            dispatch_bits!(self.bits, pack_blocks_u64, &vals[..whole], &mut self.out);
            rest = &vals[whole..];
        }
        let mask = mask_bits(self.bits);
        for &v in rest {
            self.push_one(v & mask);
        }
    }

    #[inline(always)]
    fn push_one(&mut self, v: u64) {
        self.acc |= u128::from(v) << self.nacc;
        self.nacc += u32::from(self.bits);
        if self.nacc >= 64 {
            self.out.extend_from_slice(&(self.acc as u64).to_le_bytes());
            self.acc >>= 64;
            self.nacc -= 64;
        }
    }

    /// The packed bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let nbytes = (self.nacc as usize).div_ceil(8);
        let bytes = (self.acc as u64).to_le_bytes();
        self.out.extend_from_slice(&bytes[..nbytes]);
        self.out
    }
}

/// Packs `vals` at `bits` bits per element.
pub fn pack(vals: &[u64], bits: u8) -> Vec<u8> {
    let mut p = Packer::new(vals.len(), bits);
    p.push_u64(vals);
    p.finish()
}

/// Checks length and padding of a packed vector of `d` elements of `bits` bits.
pub fn check_packed(
    bytes: &[u8],
    d: usize,
    bits: u8,
    field: &'static str,
) -> Result<(), DecodeError> {
    let want = packed_len(d, bits);
    if bytes.len() != want {
        return Err(DecodeError::LengthOutOfBounds {
            field,
            declared: bytes.len() as u64,
            min: want as u64,
            max: want as u64,
        });
    }
    let used = (d * usize::from(bits)) % 8;
    if used != 0 {
        let last = bytes[want - 1];
        if last >> used != 0 {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "nonzero padding bits",
            });
        }
    }
    Ok(())
}

/// Streaming unpacker over a checked packed vector.
#[derive(Debug)]
pub struct Unpacker<'a> {
    bytes: &'a [u8],
    pos: usize,
    bits: u8,
    acc: u128,
    nacc: u32,
}

impl<'a> Unpacker<'a> {
    /// Unpacker; call [`check_packed`] first.
    pub fn new(bytes: &'a [u8], bits: u8) -> Self {
        Self {
            bytes,
            pos: 0,
            bits,
            acc: 0,
            nacc: 0,
        }
    }

    #[inline(always)]
    fn next_one(&mut self) -> u64 {
        let b = u32::from(self.bits);
        if self.nacc < b {
            let mut w = [0u8; 8];
            let take = (self.bytes.len() - self.pos).min(8);
            w[..take].copy_from_slice(&self.bytes[self.pos..self.pos + take]);
            self.pos += take;
            self.acc |= u128::from(u64::from_le_bytes(w)) << self.nacc;
            self.nacc += 8 * take as u32;
        }
        let v = (self.acc as u64) & mask_bits(self.bits);
        self.acc >>= b;
        self.nacc -= b;
        v
    }

    /// Overwrites `acc` with the next `acc.len()` elements (u32 words; `bits` <= 32). Sums of
    /// u32-word vectors are formed packed ([`crate::packed_sum`]); only the result is unpacked.
    pub fn write_into_u32(&mut self, acc: &mut [u32]) {
        let mut rest: &mut [u32] = acc;
        if self.nacc == 0 {
            let whole = rest.len() / BLOCK * BLOCK;
            let nbytes = whole / 8 * usize::from(self.bits);
            let (head, tail) = rest.split_at_mut(whole);
            let src = &self.bytes[self.pos..self.pos + nbytes];
            dispatch_bits!(self.bits, write_groups_u32, src, head);
            self.pos += nbytes;
            rest = tail;
        }
        for a in rest.iter_mut() {
            *a = self.next_one() as u32;
        }
    }

    /// Adds the next `acc.len()` elements into `acc` (wrapping, u64 words).
    pub fn add_into_u64(&mut self, acc: &mut [u64]) {
        let mut rest: &mut [u64] = acc;
        if self.nacc == 0 {
            let whole = rest.len() / BLOCK * BLOCK;
            let nbytes = whole / 8 * usize::from(self.bits);
            let (head, tail) = rest.split_at_mut(whole);
            dispatch_bits!(
                self.bits,
                add_blocks_u64,
                &self.bytes[self.pos..self.pos + nbytes],
                head
            );
            self.pos += nbytes;
            rest = tail;
        }
        for a in rest.iter_mut() {
            *a = a.wrapping_add(self.next_one());
        }
    }
}

/// Strictly unpacks `d` elements of `bits` bits.
pub fn unpack(bytes: &[u8], d: usize, bits: u8) -> Result<Vec<u64>, DecodeError> {
    check_packed(bytes, d, bits, "packed")?;
    let mut out = vec![0u64; d];
    Unpacker::new(bytes, bits).add_into_u64(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_widths() {
        for bits in 1..=64u8 {
            for d in [1usize, 7, 8, 9, 63, 64, 65, 100, 200, 1000, 4103] {
                let vals: Vec<u64> = (0..d as u64)
                    .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & mask_bits(bits))
                    .collect();
                let p = pack(&vals, bits);
                assert_eq!(p.len(), packed_len(d, bits));
                assert_eq!(unpack(&p, d, bits).unwrap(), vals, "bits {bits} d {d}");
                if bits <= 32 {
                    let mut pk = Packer::new(d, bits);
                    let v32: Vec<u32> = vals.iter().map(|&v| v as u32).collect();
                    pk.push_u32(&v32[..d / 2]);
                    pk.push_u32(&v32[d / 2..]);
                    assert_eq!(pk.finish(), p);
                    let mut acc = vec![u32::MAX; d];
                    Unpacker::new(&p, bits).write_into_u32(&mut acc);
                    assert_eq!(acc, v32, "overwriting, bits {bits} d {d}");
                    // In whole blocks then the rest.
                    let split = d / 128 * 64;
                    let mut acc = vec![u32::MAX; d];
                    let mut up = Unpacker::new(&p, bits);
                    up.write_into_u32(&mut acc[..split]);
                    up.write_into_u32(&mut acc[split..]);
                    assert_eq!(acc, v32, "chunked, bits {bits} d {d}");
                }
            }
        }
    }

    #[test]
    fn layout_is_lsb_first() {
        assert_eq!(pack(&[1, 2, 3], 3), vec![0b11_010_001, 0]);
        assert_eq!(pack(&[0x1ff], 9), vec![0xff, 0x01]);
    }

    #[test]
    fn strict_unpacking() {
        let p = pack(&[1, 2, 3], 3); // 9 bits, 7 padding bits
        assert!(unpack(&p, 3, 3).is_ok());
        let mut bad = p.clone();
        bad[1] |= 0x80;
        assert!(matches!(
            unpack(&bad, 3, 3),
            Err(DecodeError::InvalidValue { .. })
        ));
        assert!(matches!(
            unpack(&p[..1], 3, 3),
            Err(DecodeError::LengthOutOfBounds { .. })
        ));
        let mut long = p.clone();
        long.push(0);
        assert!(matches!(
            unpack(&long, 3, 3),
            Err(DecodeError::LengthOutOfBounds { .. })
        ));
    }
}
