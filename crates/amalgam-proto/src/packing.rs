//! Bit-packing of vectors at exactly B bits per element (spec §3.4).
//!
//! Element i occupies bits [i·B, (i+1)·B) of a little-endian bit stream: stream bit j is
//! bit (j mod 8) of byte ⌊j/8⌋, and each element is written least-significant bit first.
//! The packed length is ⌈d·B/8⌉ bytes; unused high bits of the last byte must be zero.
//! Unpacking is strict: wrong lengths and nonzero padding are refused.
//!
//! Groups of 8 elements occupy exactly B bytes, which the fast paths exploit.

use crate::error::DecodeError;
use crate::params::mask_bits;

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
        Self { out: Vec::with_capacity(packed_len(d, bits)), bits, acc: 0, nacc: 0 }
    }

    /// Appends u32 elements (only the low `bits` bits of each are used; `bits` <= 32).
    pub fn push_u32(&mut self, vals: &[u32]) {
        let mask = mask_bits(self.bits);
        match self.bits {
            8 if self.nacc == 0 => self.out.extend(vals.iter().map(|&v| v as u8)),
            16 if self.nacc == 0 => {
                for &v in vals {
                    self.out.extend_from_slice(&(v as u16).to_le_bytes());
                }
            }
            32 if self.nacc == 0 => {
                for &v in vals {
                    self.out.extend_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                for &v in vals {
                    self.push_one(u64::from(v) & mask);
                }
            }
        }
    }

    /// Appends u64 elements (only the low `bits` bits of each are used).
    pub fn push_u64(&mut self, vals: &[u64]) {
        let mask = mask_bits(self.bits);
        if self.bits == 64 {
            for &v in vals {
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            return;
        }
        for &v in vals {
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
pub fn check_packed(bytes: &[u8], d: usize, bits: u8, field: &'static str) -> Result<(), DecodeError> {
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
            return Err(DecodeError::InvalidValue { field, reason: "nonzero padding bits" });
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
        Self { bytes, pos: 0, bits, acc: 0, nacc: 0 }
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

    /// Adds the next `acc.len()` elements into `acc` (wrapping, u32 words; `bits` <= 32).
    pub fn add_into_u32(&mut self, acc: &mut [u32]) {
        match self.bits {
            8 if self.nacc == 0 => {
                let src = &self.bytes[self.pos..self.pos + acc.len()];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a = a.wrapping_add(u32::from(s));
                }
                self.pos += acc.len();
            }
            16 if self.nacc == 0 => {
                let src = &self.bytes[self.pos..self.pos + 2 * acc.len()];
                for (a, s) in acc.iter_mut().zip(src.chunks_exact(2)) {
                    *a = a.wrapping_add(u32::from(u16::from_le_bytes([s[0], s[1]])));
                }
                self.pos += 2 * acc.len();
            }
            32 if self.nacc == 0 => {
                let src = &self.bytes[self.pos..self.pos + 4 * acc.len()];
                for (a, s) in acc.iter_mut().zip(src.chunks_exact(4)) {
                    *a = a.wrapping_add(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
                }
                self.pos += 4 * acc.len();
            }
            _ => {
                for a in acc.iter_mut() {
                    *a = a.wrapping_add(self.next_one() as u32);
                }
            }
        }
    }

    /// Adds the next `acc.len()` elements into `acc` (wrapping, u64 words).
    pub fn add_into_u64(&mut self, acc: &mut [u64]) {
        if self.bits == 64 {
            let src = &self.bytes[self.pos..self.pos + 8 * acc.len()];
            for (a, s) in acc.iter_mut().zip(src.chunks_exact(8)) {
                let mut w = [0u8; 8];
                w.copy_from_slice(s);
                *a = a.wrapping_add(u64::from_le_bytes(w));
            }
            self.pos += 8 * acc.len();
            return;
        }
        for a in acc.iter_mut() {
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
            for d in [1usize, 7, 8, 9, 100] {
                let vals: Vec<u64> =
                    (0..d as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & mask_bits(bits)).collect();
                let p = pack(&vals, bits);
                assert_eq!(p.len(), packed_len(d, bits));
                assert_eq!(unpack(&p, d, bits).unwrap(), vals, "bits {bits} d {d}");
                if bits <= 32 {
                    let mut pk = Packer::new(d, bits);
                    let v32: Vec<u32> = vals.iter().map(|&v| v as u32).collect();
                    pk.push_u32(&v32[..d / 2]);
                    pk.push_u32(&v32[d / 2..]);
                    assert_eq!(pk.finish(), p);
                    let mut acc = vec![0u32; d];
                    Unpacker::new(&p, bits).add_into_u32(&mut acc);
                    assert_eq!(acc, v32);
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
        assert!(matches!(unpack(&bad, 3, 3), Err(DecodeError::InvalidValue { .. })));
        assert!(matches!(unpack(&p[..1], 3, 3), Err(DecodeError::LengthOutOfBounds { .. })));
        let mut long = p.clone();
        long.push(0);
        assert!(matches!(unpack(&long, 3, 3), Err(DecodeError::LengthOutOfBounds { .. })));
    }
}
