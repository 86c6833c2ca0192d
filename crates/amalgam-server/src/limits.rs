//! The largest well-formed upload of each phase, computed from the round parameters, so that
//! a body is refused (413) before more than that is buffered.

use amalgam_proto::crypto::share_box::CIPHERTEXT_LEN;
use amalgam_proto::{Phase, RoundParams};

/// Header ("AG", version, type) + round + sender.
const PREFIX: usize = 4 + 8 + 2;
const SIG: usize = 64;

/// The encoded length bound of a site's upload for `phase` (0 for phases without uploads).
pub fn max_upload_len(p: &RoundParams, phase: Phase) -> usize {
    let n = p.n();
    match phase {
        Phase::AdvertiseKeys => PREFIX + 32 + 32 + SIG,
        Phase::ShareKeys => PREFIX + 32 + 4 + n.saturating_sub(1) * (2 + CIPHERTEXT_LEN) + SIG,
        Phase::MaskedInput => PREFIX + 4 + p.packed_len() + SIG,
        Phase::ConsistencyCheck => PREFIX + SIG,
        Phase::Unmasking => PREFIX + 4 + 4 + 2 * n * (2 + 32) + SIG,
        Phase::Finished | Phase::Aborted => 0,
    }
}

/// Bound on the opaque signed bodies (ledger summaries, declines).
pub const MAX_SIGNED_BODY: usize = 64 * 1024;
