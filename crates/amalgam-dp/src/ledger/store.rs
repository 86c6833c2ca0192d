//! The ledger file: the only place in this crate that touches the file system.
//!
//! Format: an 8-byte magic `AMDPLDG1`, then records
//! `len u32 LE | payload (len bytes) | SHA-256(len ‖ payload)`, with 1 ≤ len ≤ [`MAX_PAYLOAD`].
//! Appends write one whole record and `fsync` before returning, so after a crash the file holds
//! every acknowledged record followed by at most a prefix of one more. Opening recognises that
//! torn tail (a record running past the end of the file, or the last record failing its
//! checksum) and truncates it, reporting how many bytes it dropped; damage anywhere else is
//! corruption and is refused without touching the file.

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
    /// A record before the last one is damaged: not a crash artefact.
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
}

fn checksum(len: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(len);
    h.update(payload);
    h.finalize().into()
}

/// Splits a ledger file's bytes into records (pure; see the module docs for the rules).
pub fn parse(bytes: &[u8]) -> Result<Parsed, StoreError> {
    if bytes.len() < MAGIC.len() {
        // A crash while the file was being created leaves a prefix of the magic.
        if MAGIC.starts_with(bytes) {
            return Ok(Parsed {
                payloads: Vec::new(),
                valid_len: 0,
                torn_bytes: Some(bytes.len() as u64),
            });
        }
        return Err(StoreError::BadMagic);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::BadMagic);
    }
    let mut payloads = Vec::new();
    let mut offset = MAGIC.len();
    let torn = |offset: usize| -> Result<Parsed, StoreError> {
        Ok(Parsed {
            payloads: Vec::new(),
            valid_len: offset as u64,
            torn_bytes: Some((bytes.len() - offset) as u64),
        })
    };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < LEN_BYTES {
            return torn(offset).map(|p| Parsed { payloads, ..p });
        }
        let len_bytes = &rest[..LEN_BYTES];
        let len =
            u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if len == 0 || len > MAX_PAYLOAD {
            if rest.len() <= LEN_BYTES + MAX_PAYLOAD + CHECKSUM_BYTES {
                return torn(offset).map(|p| Parsed { payloads, ..p });
            }
            return Err(StoreError::Corrupt {
                offset: offset as u64,
                reason: "record length out of range",
            });
        }
        let frame = LEN_BYTES + len + CHECKSUM_BYTES;
        if rest.len() < frame {
            return torn(offset).map(|p| Parsed { payloads, ..p });
        }
        let payload = &rest[LEN_BYTES..LEN_BYTES + len];
        let stored = &rest[LEN_BYTES + len..frame];
        if checksum(len_bytes, payload) != stored {
            if rest.len() == frame {
                return torn(offset).map(|p| Parsed { payloads, ..p });
            }
            return Err(StoreError::Corrupt {
                offset: offset as u64,
                reason: "checksum mismatch",
            });
        }
        payloads.push(payload.to_vec());
        offset += frame;
    }
    Ok(Parsed {
        payloads,
        valid_len: offset as u64,
        torn_bytes: None,
    })
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

/// Reads and parses a ledger file without modifying it (for audits).
pub fn read_only(path: &Path) -> Result<Parsed, StoreError> {
    let mut file = File::open(path)?;
    parse(&read_bounded(&mut file)?)
}

/// An open, writable ledger file.
#[derive(Debug)]
pub struct Store {
    file: File,
}

impl Store {
    /// Opens (creating if absent) the ledger at `path`, truncating a torn tail.
    pub fn open(path: &Path) -> Result<(Self, Parsed), StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let parsed = parse(&read_bounded(&mut file)?)?;
        let repaired = parsed.torn_bytes.is_some() || parsed.valid_len == 0;
        if parsed.torn_bytes.is_some() {
            file.set_len(parsed.valid_len)?;
        }
        if parsed.valid_len == 0 {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(MAGIC)?;
        }
        if repaired {
            file.sync_all()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Makes a new file's name durable; not every platform can sync a directory.
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        file.seek(SeekFrom::End(0))?;
        Ok((Self { file }, parsed))
    }

    /// Appends one record and syncs it to disk before returning.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(StoreError::PayloadSize(payload.len()));
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
        let mut last = file_with(&[b"first", b"second"]);
        let n = last.len();
        last[n - 1] ^= 1;
        assert_eq!(parse(&last).unwrap().torn_bytes, Some(4 + 6 + 32));
        assert!(matches!(parse(b"NOTALEDGER"), Err(StoreError::BadMagic)));
        assert_eq!(parse(b"AMDP").unwrap().torn_bytes, Some(4));
    }
}
