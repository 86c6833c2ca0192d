//! Word-array helpers on top of the protocol crate's canonical codec (big-endian, every length
//! checked before it is read), plus the HE message types inside the range the codec reserves.

use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Reader, Writer, msg_type};

use crate::field::Q;

/// Message type of a [`crate::upload::SignedUpload`].
pub const MSG_HE_UPLOAD: u8 = msg_type::HE_FIRST + 8;
/// Message type of a [`crate::upload::UploadView`] (what one decryptor receives).
pub const MSG_HE_UPLOAD_VIEW: u8 = msg_type::HE_FIRST + 9;
/// Message type of a [`crate::statement::CohortStatement`].
pub const MSG_HE_STATEMENT: u8 = msg_type::HE_FIRST + 10;
/// Message type of a [`crate::statement::StatementSignature`].
pub const MSG_HE_STATEMENT_SIGNATURE: u8 = msg_type::HE_FIRST + 11;
/// Message type of a [`crate::release::PieceSumRelease`].
pub const MSG_HE_PIECE_SUMS: u8 = msg_type::HE_FIRST + 12;

/// Snapshot type of a [`crate::aggregator::HeAggregator`] (no secret).
pub const SNAPSHOT_HE_AGGREGATOR: u8 = msg_type::SNAPSHOT_OTHER_FIRST + 4;
/// Snapshot type of a [`crate::decryptor::Decryptor`] (holds seeds: the caller seals it).
pub const SNAPSHOT_HE_DECRYPTOR: u8 = msg_type::SNAPSHOT_OTHER_FIRST + 2;
/// Snapshot type of a [`crate::site::SiteRound`] (holds the seed and update: sealed by the caller).
pub const SNAPSHOT_HE_SITE_ROUND: u8 = msg_type::SNAPSHOT_OTHER_FIRST + 3;
/// Record type of a [`crate::round_record::MemberRoundRecord`] (no secret).
pub const SNAPSHOT_HE_MEMBER_RECORD: u8 = msg_type::SNAPSHOT_OTHER_FIRST + 5;
/// Record type of a [`crate::round_record::SiteRoundLog`] (no secret).
pub const SNAPSHOT_HE_SITE_LOG: u8 = msg_type::SNAPSHOT_OTHER_FIRST + 6;

/// Appends `words` as big-endian `u64`s.
pub(crate) fn put_words(w: &mut Writer, words: &[u64]) {
    for &x in words {
        w.u64(x);
    }
}

/// Reads exactly `count` canonical (below q) big-endian `u64`s, checking the byte length before
/// allocating.
pub(crate) fn read_field_words(
    r: &mut Reader<'_>,
    count: usize,
    field: &'static str,
) -> Result<Vec<u64>, DecodeError> {
    let needed = count.checked_mul(8).ok_or(DecodeError::InvalidValue {
        field,
        reason: "word count overflows",
    })?;
    let raw = r.bytes(needed, field)?;
    let mut out = Vec::with_capacity(count);
    for c in raw.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let v = u64::from_be_bytes(b);
        if v >= Q {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "value not below q",
            });
        }
        out.push(v);
    }
    Ok(out)
}
