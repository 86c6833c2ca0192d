//! The ledger file: the only place in this crate that touches the file system.
//!
//! Format: an 8-byte magic `AMDPLDG1`, then records
//! `len u32 LE | payload (len bytes) | SHA-256(len ‖ payload)`, with 1 ≤ len ≤ [`MAX_PAYLOAD`].
//! Appends write one whole record and `fsync` before returning, so after a crash the file holds
//! every acknowledged record followed by at most a prefix of one more. That torn tail (a record
//! running past the end of the file) is recognised and, when the ledger asks, cut off; the
//! ledger records the cut as an entry. A complete record whose checksum fails is never a crash
//! artefact — a write cannot complete a record with the wrong bytes — so it is corruption
//! wherever it sits, the last record included: refused, the file left untouched (truncating it
//! would let one flipped bit roll the ledger back by one entry).
//!
//! An open store holds an exclusive lock on the file (`File::try_lock`) for its lifetime, so a
//! second handle, in this process or another, is refused; before each append it re-reads the
//! file's length, magic and last record and refuses to write if they are not the ones it knows.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// File magic and format version.
pub const MAGIC: &[u8; 8] = b"AMDPLDG1";

/// Largest payload (entry body and signature) a record may hold.
pub const MAX_PAYLOAD: usize = 4096;

const LEN_BYTES: usize = 4;
const CHECKSUM_BYTES: usize = 32;

/// Largest ledger file read (bounds memory on untrusted input): 1 GiB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Errors of the file layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused an operation.
    #[error("ledger file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the ledger magic.
    #[error("not an amalgam-dp ledger (bad magic)")]
    BadMagic,
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("ledger file of {0} bytes exceeds the 1 GiB limit")]
    TooLarge(u64),
    /// An entry to append is empty or longer than [`MAX_PAYLOAD`] (local misuse).
    #[error("ledger record payload of {0} bytes is not in 1..=4096")]
    PayloadSize(usize),
    /// Another handle holds the ledger's lock.
    #[error("the ledger file is locked by another handle (one writer at a time)")]
    Locked,
    /// The file changed underneath the open handle (length, magic or last record differ).
    #[error("the ledger file changed underneath this handle: refusing to append")]
    ChangedUnderneath,
    /// A record is damaged (a complete record failing its checksum): not a crash artefact.
    #[error("ledger corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// Offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The parse of a ledger file's bytes.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Payloads of the intact records, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Bytes of intact content (magic and records); anything after is a torn tail.
    pub valid_len: u64,
    /// Length of the torn tail, when there is one.
    pub torn_bytes: Option<u64>,
    /// The bytes of the torn tail (recorded by digest when the ledger cuts it off).
    pub torn_tail: Vec<u8>,
    /// The framed bytes of the last intact record (the magic when there is none).
    pub last_frame: Vec<u8>,
}

fn checksum(len: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(len);
    h.update(payload);
    h.finalize().into()
}

/// Splits a ledger file's bytes into records (pure; see the module docs for the rules).
pub fn parse(bytes: &[u8]) -> Result<Parsed, StoreError> {
    if bytes.is_empty() {
        // A file just created: nothing torn.
        return Ok(Parsed::default());
    }
    if bytes.len() < MAGIC.len() {
        // A crash while the file was being created leaves a prefix of the magic.
        if MAGIC.starts_with(bytes) {
            return Ok(Parsed {
                payloads: Vec::new(),
                valid_len: 0,
                torn_bytes: Some(bytes.len() as u64),
                torn_tail: bytes.to_vec(),
                last_frame: Vec::new(),
            });
        }
        return Err(StoreError::BadMagic);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::BadMagic);
    }
    let mut payloads = Vec::new();
    let mut offset = MAGIC.len();
    let mut last_start = 0usize;
    let torn = |offset: usize, last_start: usize| -> Result<Parsed, StoreError> {
        Ok(Parsed {
            payloads: Vec::new(),
            valid_len: offset as u64,
            torn_bytes: Some((bytes.len() - offset) as u64),
            torn_tail: bytes[offset..].to_vec(),
            last_frame: bytes[last_start..offset].to_vec(),
        })
    };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let damaged = || StoreError::Corrupt {
            offset: offset as u64,
            reason: "a complete record with a damaged length field",
        };
        if rest.len() < LEN_BYTES {
            return torn(offset, last_start).map(|p| Parsed { payloads, ..p });
        }
        let len_bytes = &rest[..LEN_BYTES];
        let len =
            u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if len == 0 || len > MAX_PAYLOAD {
            if is_record_with_damaged_length(rest) {
                return Err(damaged());
            }
            if rest.len() <= LEN_BYTES + MAX_PAYLOAD + CHECKSUM_BYTES {
                return torn(offset, last_start).map(|p| Parsed { payloads, ..p });
            }
            return Err(StoreError::Corrupt {
                offset: offset as u64,
                reason: "record length out of range",
            });
        }
        let frame = LEN_BYTES + len + CHECKSUM_BYTES;
        if rest.len() < frame {
            if is_record_with_damaged_length(rest) {
                return Err(damaged());
            }
            return torn(offset, last_start).map(|p| Parsed { payloads, ..p });
        }
        let payload = &rest[LEN_BYTES..LEN_BYTES + len];
        let stored = &rest[LEN_BYTES + len..frame];
        if checksum(len_bytes, payload) != stored {
            return Err(StoreError::Corrupt {
                offset: offset as u64,
                reason: "a complete record fails its checksum",
            });
        }
        payloads.push(payload.to_vec());
        last_start = offset;
        offset += frame;
    }
    Ok(Parsed {
        payloads,
        valid_len: offset as u64,
        torn_bytes: None,
        torn_tail: Vec::new(),
        last_frame: bytes[last_start..offset].to_vec(),
    })
}

/// True when `rest` is exactly one complete record whose length field alone is damaged: read
/// with the length its size implies, its checksum (which covers the original length bytes)
/// verifies. A crash leaves a strict prefix of a record, which passes this with probability
/// 2⁻²⁵⁶; a flipped length bit that makes the last record seem to run past the end of the file
/// would otherwise pass for a torn tail and roll the ledger back.
fn is_record_with_damaged_length(rest: &[u8]) -> bool {
    let Some(len) = rest.len().checked_sub(LEN_BYTES + CHECKSUM_BYTES) else {
        return false;
    };
    if len == 0 || len > MAX_PAYLOAD {
        return false;
    }
    let len_bytes = (len as u32).to_le_bytes();
    checksum(&len_bytes, &rest[LEN_BYTES..LEN_BYTES + len]) == rest[LEN_BYTES + len..]
}

fn read_bounded(file: &mut File) -> Result<Vec<u8>, StoreError> {
    let size = file.metadata()?.len();
    if size > MAX_FILE_BYTES {
        return Err(StoreError::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads a ledger file's bytes (at most [`MAX_FILE_BYTES`]) without modifying or locking it.
pub fn read_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut file = File::open(path)?;
    read_bounded(&mut file)
}

/// An open, writable, exclusively locked ledger file.
#[derive(Debug)]
pub struct Store {
    file: File,
    /// Length of the file as this handle last wrote or verified it.
    len: u64,
    /// End of the last intact record (the file length unless a torn tail is still there).
    valid_len: u64,
    /// Framed bytes of the last record (the magic when there is none), re-read before appends.
    last_frame: Vec<u8>,
}

impl Store {
    /// Opens (creating if absent) the ledger at `path` and takes its exclusive lock; reads and
    /// parses it without changing it. Refuses [`StoreError::Locked`] when another handle holds
    /// the lock, and corruption (see the module docs).
    pub fn open(path: &Path) -> Result<(Self, Parsed), StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::Locked,
            std::fs::TryLockError::Error(e) => StoreError::Io(e),
        })?;
        let parsed = parse(&read_bounded(&mut file)?)?;
        let store = Self {
            file,
            len: parsed.valid_len + parsed.torn_bytes.unwrap_or(0),
            valid_len: parsed.valid_len,
            last_frame: parsed.last_frame.clone(),
        };
        Ok((store, parsed))
    }

    /// Cuts off a torn tail and writes the magic into an empty file, then syncs (file and
    /// directory). Called by the ledger only after it has accepted what the file holds.
    pub fn repair(&mut self, parsed: &Parsed, path: &Path) -> Result<(), StoreError> {
        self.verify_unchanged()?;
        let torn = parsed.torn_bytes.is_some();
        let empty = parsed.valid_len == 0;
        if torn {
            self.file.set_len(parsed.valid_len)?;
            self.len = parsed.valid_len;
            self.valid_len = parsed.valid_len;
        }
        if empty {
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(MAGIC)?;
            self.len = MAGIC.len() as u64;
            self.valid_len = self.len;
            self.last_frame = MAGIC.to_vec();
        }
        if torn || empty {
            self.file.sync_all()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Makes a new file's name durable; not every platform can sync a directory.
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }

    /// Re-reads the length, the magic and the last record and refuses if any is not what this
    /// handle last saw (the lock keeps honest writers out; this catches everything else).
    fn verify_unchanged(&mut self) -> Result<(), StoreError> {
        if self.file.metadata()?.len() != self.len {
            return Err(StoreError::ChangedUnderneath);
        }
        let mut head = vec![0u8; MAGIC.len().min(self.len as usize)];
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_exact(&mut head)?;
        if !MAGIC.starts_with(&head) {
            return Err(StoreError::ChangedUnderneath);
        }
        let frame_len = self.last_frame.len() as u64;
        if frame_len > self.valid_len {
            return Err(StoreError::ChangedUnderneath);
        }
        let mut tail = vec![0u8; self.last_frame.len()];
        self.file
            .seek(SeekFrom::Start(self.valid_len - frame_len))?;
        self.file.read_exact(&mut tail)?;
        if tail != self.last_frame {
            return Err(StoreError::ChangedUnderneath);
        }
        Ok(())
    }

    /// Appends one record and syncs it to disk before returning, after checking that the file
    /// is still the one this handle wrote.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(StoreError::PayloadSize(payload.len()));
        }
        self.verify_unchanged()?;
        if self.valid_len != self.len {
            // A torn tail must be cut off (and recorded) before anything is appended.
            return Err(StoreError::ChangedUnderneath);
        }
        let len = (payload.len() as u32).to_le_bytes();
        let mut record = Vec::with_capacity(LEN_BYTES + payload.len() + CHECKSUM_BYTES);
        record.extend_from_slice(&len);
        record.extend_from_slice(payload);
        record.extend_from_slice(&checksum(&len, payload));
        let start = self.file.seek(SeekFrom::End(0))?;
        if let Err(e) = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no half record behind when the OS reports the failure.
            let _ = self.file.set_len(start);
            return Err(e.into());
        }
        self.len = start + record.len() as u64;
        self.valid_len = self.len;
        self.last_frame = record;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for p in payloads {
            let len = (p.len() as u32).to_le_bytes();
            out.extend_from_slice(&len);
            out.extend_from_slice(p);
            out.extend_from_slice(&checksum(&len, p));
        }
        out
    }

    #[test]
    fn every_truncation_of_the_last_record_is_a_torn_tail() {
        let full = file_with(&[b"first", b"second record"]);
        let first_end = MAGIC.len() + 4 + 5 + 32;
        for cut in first_end..full.len() {
            let parsed = parse(&full[..cut]).unwrap();
            assert_eq!(parsed.payloads, vec![b"first".to_vec()], "cut at {cut}");
            assert_eq!(parsed.valid_len, first_end as u64);
            let torn = (cut - first_end) as u64;
            assert_eq!(parsed.torn_bytes, if torn == 0 { None } else { Some(torn) });
        }
        assert_eq!(parse(&full).unwrap().payloads.len(), 2);
    }

    #[test]
    fn damage_before_the_last_record_is_corruption() {
        let mut bytes = file_with(&[b"first", b"second"]);
        bytes[MAGIC.len() + 5] ^= 1;
        assert!(matches!(
            parse(&bytes),
            Err(StoreError::Corrupt { offset: 8, .. })
        ));
        // A complete last record with a bad checksum is corruption too, not a torn tail.
        let mut last = file_with(&[b"first", b"second"]);
        let n = last.len();
        last[n - 1] ^= 1;
        assert!(matches!(
            parse(&last),
            Err(StoreError::Corrupt { offset: 49, .. })
        ));
        // So is a flipped length bit that makes the last record seem to run past the end.
        for bit in 0..32 {
            let mut longer = file_with(&[b"first", b"second"]);
            longer[49 + bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(parse(&longer), Err(StoreError::Corrupt { offset: 49, .. })),
                "bit {bit}"
            );
        }
        assert!(matches!(parse(b"NOTALEDGER"), Err(StoreError::BadMagic)));
        assert_eq!(parse(b"AMDP").unwrap().torn_bytes, Some(4));
    }
}
