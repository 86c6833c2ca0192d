//! Canonical binary codec (spec §3): bounded [`Reader`], [`Writer`], [`Encode`]/[`Decode`].
//!
//! All integers are fixed-width **big-endian**. Variable-length fields carry a `u32` count
//! that the decoder checks against a bound derived from the round parameters *before*
//! reading or allocating anything. Decoding a whole message with [`Decode::from_bytes`]
//! rejects trailing bytes. Every message starts with the 4-byte [header](write_header):
//! magic `"AG"`, version [`VERSION`], message type (see [`msg_type`]).
//!
//! The primitives are public so that other Amalgam crates (the homomorphic fallback)
//! encode their messages exactly the same way.

use crate::error::DecodeError;

/// Magic bytes opening every encoded message and snapshot.
pub const MAGIC: [u8; 2] = *b"AG";
/// Wire format version implemented here (2: parameters carry c, f and the trust model, the
/// round context binds the caller's context digest; spec §13 change log). Shared by the
/// homomorphic fallback's messages.
pub const VERSION: u8 = 2;
/// Length of the message header (magic, version, type).
pub const HEADER_LEN: usize = 4;

/// Message type registry (spec §3.2). Ranges: `0x01..=0x1f` masking protocol,
/// `0x40..=0x5f` homomorphic fallback, `0x70..=0x7f` snapshots.
pub mod msg_type {
    /// Site → aggregator, round 0.
    pub const ADVERTISE_KEYS: u8 = 0x01;
    /// Aggregator → site, end of round 0: all accepted advertisements.
    pub const KEYS_BROADCAST: u8 = 0x02;
    /// Site → aggregator, round 1: encrypted shares.
    pub const SHARE_KEYS: u8 = 0x03;
    /// Aggregator → site, end of round 1: the shares addressed to this site.
    pub const ROUTED_SHARES: u8 = 0x04;
    /// Site → aggregator, round 2: bit-packed masked input.
    pub const MASKED_INPUT: u8 = 0x05;
    /// Aggregator → site, end of round 2: survivor set to sign.
    pub const SURVIVOR_SET: u8 = 0x06;
    /// Site → aggregator, round 3: signature over the survivor set.
    pub const CONSISTENCY_SIGNATURE: u8 = 0x07;
    /// Aggregator → site, end of round 3: the survivors' signatures (the unmasking request).
    pub const UNMASK_REQUEST: u8 = 0x08;
    /// Site → aggregator, round 4: revealed shares.
    pub const UNMASK_SHARES: u8 = 0x09;
    /// First type reserved for the homomorphic fallback.
    pub const HE_FIRST: u8 = 0x40;
    /// Last type reserved for the homomorphic fallback.
    pub const HE_LAST: u8 = 0x5f;
    /// A site's record of used round ids (its persisted high-water mark).
    pub const SITE_ROUND_LOG: u8 = 0x6f;
    /// Snapshot of a site state machine.
    pub const SITE_SNAPSHOT: u8 = 0x70;
    /// Snapshot of an aggregator state machine.
    pub const AGGREGATOR_SNAPSHOT: u8 = 0x71;
    /// Reserved for snapshots of other crates' state machines (`0x72..=0x7f`).
    pub const SNAPSHOT_OTHER_FIRST: u8 = 0x72;
}

/// Append-only canonical encoder.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty writer with capacity.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Writes the message header: magic, version, `msg_type`.
    pub fn header(&mut self, msg_type: u8) {
        write_header(self, msg_type);
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `0x00` or `0x01`.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Raw bytes (fixed-length field; the length is implied by the spec).
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A `u32` count. Panics if `n` does not fit (no protocol value comes close).
    pub fn count(&mut self, n: usize) {
        #[allow(clippy::expect_used)]
        let n = u32::try_from(n).expect("count fits in u32");
        self.u32(n);
    }

    /// `u32` length followed by the bytes.
    pub fn bytes_prefixed(&mut self, v: &[u8]) {
        self.count(v.len());
        self.bytes(v);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Borrow the bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Bounded decoder over untrusted bytes. Never panics, never allocates more than the
/// bounds passed to it allow.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A safe preallocation for `count` decoded items of at least `min_len` encoded bytes each:
    /// no more than the remaining bytes can hold. A declared count is untrusted (a 150-byte
    /// snapshot could declare 2^24 elements), so decoders never reserve by it alone.
    pub fn capacity(&self, count: usize, min_len: usize) -> usize {
        count.min(self.remaining() / min_len.max(1))
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes consumed so far (e.g. the signed part of a message before its signature).
    pub fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    /// Reads exactly `n` bytes of `field`.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Strict boolean: only `0x00` and `0x01`.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue {
                field,
                reason: "boolean must be 0 or 1",
            }),
        }
    }

    /// A `u32` count checked against `min..=max` before anything is allocated.
    pub fn count(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        if n < min || n > max {
            return Err(DecodeError::LengthOutOfBounds {
                field,
                declared: n as u64,
                min: min as u64,
                max: max as u64,
            });
        }
        Ok(n)
    }

    /// `u32` length (checked against `min..=max`) followed by that many bytes.
    pub fn bytes_prefixed(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let n = self.count(field, min, max)?;
        self.bytes(n, field)
    }

    /// Reads the 4-byte header and returns the message type (magic and version checked).
    pub fn header(&mut self) -> Result<u8, DecodeError> {
        read_header(self)
    }

    /// Reads the header and checks that the message type is `expected`.
    pub fn expect_header(&mut self, expected: u8) -> Result<(), DecodeError> {
        let found = read_header(self)?;
        if found != expected {
            return Err(DecodeError::UnexpectedMessageType { expected, found });
        }
        Ok(())
    }

    /// Fails if any byte is left after the value named `after`.
    pub fn finish(&self, after: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { after, count }),
        }
    }
}

/// Writes the 4-byte header.
pub fn write_header(w: &mut Writer, msg_type: u8) {
    w.bytes(&MAGIC);
    w.u8(VERSION);
    w.u8(msg_type);
}

/// Reads and checks magic and version; returns the message type byte.
pub fn read_header(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let magic = r.array::<2>("magic")?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    r.u8("message_type")
}

/// Peeks at the message type of an encoded message without consuming it.
pub fn peek_message_type(bytes: &[u8]) -> Result<u8, DecodeError> {
    read_header(&mut Reader::new(bytes))
}

/// Canonical encoding.
pub trait Encode {
    /// Appends the canonical encoding of `self`.
    fn encode(&self, w: &mut Writer);

    /// The canonical encoding as a fresh vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// Strict decoding of untrusted bytes. `Context` carries the bounds (usually the
/// [`RoundParams`](crate::params::RoundParams)); use `()` when none are needed.
pub trait Decode: Sized {
    /// What the decoder needs to bound lengths.
    type Context: ?Sized;

    /// Name used in [`DecodeError::TrailingBytes`].
    const NAME: &'static str;

    /// Decodes one value from the reader.
    fn decode(r: &mut Reader<'_>, ctx: &Self::Context) -> Result<Self, DecodeError>;

    /// Decodes a complete buffer: one value, no trailing bytes.
    fn from_bytes(bytes: &[u8], ctx: &Self::Context) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r, ctx)?;
        r.finish(Self::NAME)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut w = Writer::new();
        w.u16(0x0102);
        w.u32(0x0304_0506);
        w.u64(0x0708_090a_0b0c_0d0e);
        assert_eq!(
            w.as_slice(),
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
        );
        let b = w.into_bytes();
        let mut r = Reader::new(&b);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        assert_eq!(r.u32("b").unwrap(), 0x0304_0506);
        assert_eq!(r.u64("c").unwrap(), 0x0708_090a_0b0c_0d0e);
        r.finish("x").unwrap();
    }

    #[test]
    fn truncation_names_the_field() {
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(
            r.u32("round"),
            Err(DecodeError::Truncated {
                field: "round",
                needed: 4,
                remaining: 2
            })
        );
    }

    #[test]
    fn counts_are_bounded_before_reading() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let b = w.into_bytes();
        let err = Reader::new(&b).bytes_prefixed("shares", 0, 10).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::LengthOutOfBounds {
                field: "shares",
                ..
            }
        ));
    }

    #[test]
    fn header_checks_magic_version_type() {
        let mut w = Writer::new();
        w.header(msg_type::MASKED_INPUT);
        let b = w.into_bytes();
        assert_eq!(peek_message_type(&b), Ok(msg_type::MASKED_INPUT));
        assert!(matches!(
            Reader::new(&b).expect_header(msg_type::SHARE_KEYS),
            Err(DecodeError::UnexpectedMessageType { .. })
        ));
        let mut bad = b.clone();
        bad[2] = 9;
        assert!(matches!(
            peek_message_type(&bad),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        bad[0] = b'X';
        assert!(matches!(
            peek_message_type(&bad),
            Err(DecodeError::BadMagic { .. })
        ));
    }

    #[test]
    fn strict_bool_and_trailing() {
        assert!(Reader::new(&[2]).bool("f").is_err());
        let mut r = Reader::new(&[1, 0]);
        assert!(r.bool("f").unwrap());
        assert_eq!(
            r.finish("v"),
            Err(DecodeError::TrailingBytes {
                after: "v",
                count: 1
            })
        );
    }
}
