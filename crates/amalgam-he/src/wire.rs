//! Word-array helpers on top of the protocol crate's canonical codec (big-endian, every length
//! checked before it is read), plus the HE message types inside the range the codec reserves.

use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Reader, Writer, msg_type};

/// Message type of a [`crate::messages::SignedContribution`].
pub const MSG_HE_CONTRIBUTION: u8 = msg_type::HE_FIRST;
/// Message type of a [`crate::messages::MaskAttestation`].
pub const MSG_HE_MASK_ATTESTATION: u8 = msg_type::HE_FIRST + 1;
/// Message type of a [`crate::messages::AggregateClaim`].
pub const MSG_HE_AGGREGATE_CLAIM: u8 = msg_type::HE_FIRST + 2;
/// Message type of an encoded [`crate::PublicKey`].
pub const MSG_HE_PUBLIC_KEY: u8 = msg_type::HE_FIRST + 3;
/// Message type of an encoded [`crate::DecryptionKey`] (key files only, never sent).
pub const MSG_HE_SECRET_KEY: u8 = msg_type::HE_FIRST + 4;
/// Message type of an [`crate::audit::AuditEntry`].
pub const MSG_HE_AUDIT_ENTRY: u8 = msg_type::HE_FIRST + 5;

/// Snapshot type of an [`crate::HeAggregator`] (first of the range reserved for other crates).
pub const SNAPSHOT_HE_AGGREGATOR: u8 = msg_type::SNAPSHOT_OTHER_FIRST;

/// Snapshot type of a [`crate::Decryptor`]'s persisted state (audit log; no secret).
pub const SNAPSHOT_HE_DECRYPTOR: u8 = msg_type::SNAPSHOT_OTHER_FIRST + 1;

/// Appends `words` as big-endian `u64`s.
pub(crate) fn put_words(w: &mut Writer, words: &[u64]) {
    for &x in words {
        w.u64(x);
    }
}

/// Reads exactly `count` big-endian `u64`s, checking the byte length before allocating.
pub(crate) fn read_words(
    r: &mut Reader<'_>,
    count: usize,
    field: &'static str,
) -> Result<Vec<u64>, DecodeError> {
    let needed = count.checked_mul(8).ok_or(DecodeError::InvalidValue {
        field,
        reason: "word count overflows",
    })?;
    let raw = r.bytes(needed, field)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect())
}
