//! Routes and bodies of the homomorphic fallback on the aggregator's API (spec `service.md`
//! §9, `he-fallback.md`, `decryptor.md`). Binary bodies are the canonical codec of
//! `amalgam_he`; lists are framed (`u32 n ‖ (u32 len ‖ bytes)×n`).
//!
//! Whether a round is a fallback round is derived from its id and the manifest's fallback
//! policy, never from a request: ids at or above [`FALLBACK_ROUND_BASE`] are fallback re-runs
//! of masking round `id − FALLBACK_ROUND_BASE`, and exist only where the policy allows them.

use serde::{Deserialize, Serialize};

/// First fallback round id. A masking round `r` that aborted may be re-run (once) as the
/// fallback round `FALLBACK_ROUND_BASE + r`: a new round id, so fresh noise under a new permit
/// and a second ledger charge. Masking round ids stay below it.
pub const FALLBACK_ROUND_BASE: u64 = 1 << 32;

/// Site upload of its `SignedUpload` (POST, binary).
pub const FALLBACK_UPLOAD: &str = "/v1/rounds/{round}/fallback/upload";
/// Decryptor relay: the authenticated decryptor's `UploadView`s (GET, framed binary) — the
/// signed upload structure with its own box, every box digest and the ciphertext digest,
/// never a ciphertext.
pub const FALLBACK_VIEWS: &str = "/v1/rounds/{round}/fallback/views";
/// The cohort statement once the cohort closed (GET `?wait=`, binary `CohortStatement`).
pub const FALLBACK_STATEMENT: &str = "/v1/rounds/{round}/fallback/statement";
/// A decryptor's `StatementSignature` (POST), and every collected signature (GET, framed).
pub const FALLBACK_SIGNATURES: &str = "/v1/rounds/{round}/fallback/signatures";
/// A decryptor's `PieceSumRelease` (POST, binary).
pub const FALLBACK_RELEASE: &str = "/v1/rounds/{round}/fallback/release";
/// The decoded sum (GET `?wait=`, JSON [`FallbackResult`]).
pub const FALLBACK_RESULT: &str = "/v1/rounds/{round}/fallback/result";

/// The authenticated site's own accepted upload, as the aggregator stores it (GET, JSON
/// [`FallbackMine`]; 404 `round.unknown` for a round it does not know, 204 when it holds no
/// upload from this site): the site's rollback check, so a site restored from an older state
/// copy never encrypts its update a second time with fresh noise.
pub const FALLBACK_MINE: &str = "/v1/rounds/{round}/fallback/mine";

/// The site's signed ledger summary after a fallback round (POST, `LedgerSummary::LEN` = 267
/// bytes; the same `LedgerSummary` as after a masking round, with the record ledger's anchor),
/// stored and served back as an anchor.
pub const FALLBACK_SUMMARY: &str = "/v1/rounds/{round}/fallback/summary";

/// A site's stored summaries of fallback rounds (GET, JSON `api::Anchors`), beside the
/// masking rounds' `/v1/anchors/{site}`.
pub const FALLBACK_ANCHORS: &str = "/v1/anchors/{site}/fallback";

/// The committee's key-period certificates (POST: a decryptor posts its own 159-byte
/// certificate; GET `?period=p`: every stored certificate of period p, framed, member order).
pub const COMMITTEE_KEYS: &str = "/v1/committee/keys";

/// `/v1/anchors/{site}/fallback`.
pub fn fallback_anchors_path(site: u16) -> String {
    format!("/v1/anchors/{site}/fallback")
}

/// `/v1/committee/keys?period=p`.
pub fn committee_keys_path(period: u64) -> String {
    format!("{COMMITTEE_KEYS}?period={period}")
}

/// Largest body of a committee key post: one certificate, with room for a format change.
pub const MAX_COMMITTEE_KEY_BODY: usize = 1024;

/// The order in which a site's summaries were uploaded: masking round r, then its fallback
/// re-run (`FALLBACK_ROUND_BASE + r`), then masking round r + 1. A site's latest anchor is the
/// summary of the highest key.
pub fn summary_order(round: u64) -> (u64, bool) {
    match rerun_of(round) {
        Some(r) => (r, true),
        None => (round, false),
    }
}

/// Every fallback route on the main listener.
pub const FALLBACK_ROUTES: &[&str] = &[
    FALLBACK_UPLOAD,
    FALLBACK_MINE,
    FALLBACK_SUMMARY,
    FALLBACK_ANCHORS,
    COMMITTEE_KEYS,
    FALLBACK_VIEWS,
    FALLBACK_STATEMENT,
    FALLBACK_SIGNATURES,
    FALLBACK_RELEASE,
    FALLBACK_RESULT,
];

/// Largest number of frames in a framed list (one per site at most).
pub const MAX_FRAMES: usize = 65_535;

/// Whether `round` is a fallback round id.
pub fn is_fallback_round(round: u64) -> bool {
    round >= FALLBACK_ROUND_BASE
}

/// The fallback round that re-runs masking round `masking_round` (`None` if it is not a
/// masking round id).
pub fn fallback_round_of(masking_round: u64) -> Option<u64> {
    (!is_fallback_round(masking_round)).then(|| FALLBACK_ROUND_BASE + masking_round)
}

/// The masking round a fallback round re-runs (`None` for a masking round id).
pub fn rerun_of(fallback_round: u64) -> Option<u64> {
    fallback_round.checked_sub(FALLBACK_ROUND_BASE)
}

/// `/v1/rounds/{round}/fallback/{what}` for `what` in upload, views, statement, signatures,
/// release, result.
pub fn fallback_path(round: u64, what: &str) -> String {
    format!("/v1/rounds/{round}/fallback/{what}")
}

/// Frames a list: `u32 n ‖ (u32 len ‖ bytes)×n`, big-endian.
pub fn encode_frames(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + items.iter().map(|i| 4 + i.len()).sum::<usize>());
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_be_bytes());
        out.extend_from_slice(i);
    }
    out
}

/// Why a framed list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("framed list refused: {0}")]
pub struct FrameError(pub &'static str);

/// Parses a framed list strictly: at most `max_items` frames of at most `max_len` bytes each,
/// no trailing bytes.
pub fn decode_frames(
    bytes: &[u8],
    max_items: usize,
    max_len: usize,
) -> Result<Vec<Vec<u8>>, FrameError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
        let (h, t) = b.split_at_checked(n).ok_or(FrameError("truncated"))?;
        *b = t;
        Ok(h)
    }
    fn len(b: &mut &[u8]) -> Result<usize, FrameError> {
        let h = take(b, 4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(h);
        Ok(u32::from_be_bytes(a) as usize)
    }
    let mut b = bytes;
    let n = len(&mut b)?;
    if n > max_items {
        return Err(FrameError("too many frames"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let l = len(&mut b)?;
        if l > max_len {
            return Err(FrameError("frame too long"));
        }
        out.push(take(&mut b, l)?.to_vec());
    }
    if !b.is_empty() {
        return Err(FrameError("trailing bytes"));
    }
    Ok(out)
}

/// `GET /v1/rounds/{round}/fallback/result`: the decoded sum, and nothing else of the round
/// (never a phase, residual or ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackResult {
    /// Round id.
    pub round: u64,
    /// Σ x_i over the cohort (exact: an honest cohort always decodes, he-fallback.md §2).
    pub sum: Vec<u64>,
    /// Sites in the cohort statement, ascending.
    pub contributors: Vec<u16>,
    /// Hex SHA-256 of the cohort statement bytes the quorum signed.
    pub statement_sha256: String,
}

/// `GET /v1/rounds/{round}/fallback/mine`: the digest of the one upload the aggregator accepted
/// from the authenticated site (never the upload itself: its boxes and bodies are the round's
/// secrets at rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackMine {
    /// Round id.
    pub round: u64,
    /// Hex SHA-256 of the exact upload bytes accepted.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ids_partition() {
        assert_eq!(fallback_round_of(7), Some(FALLBACK_ROUND_BASE + 7));
        assert_eq!(rerun_of(FALLBACK_ROUND_BASE + 7), Some(7));
        assert_eq!(fallback_round_of(FALLBACK_ROUND_BASE), None);
        assert_eq!(rerun_of(3), None);
        assert!(!is_fallback_round(FALLBACK_ROUND_BASE - 1));
    }

    #[test]
    fn frames_are_strict() {
        let f = encode_frames(&[vec![1, 2], vec![], vec![3]]);
        assert_eq!(
            decode_frames(&f, 3, 2).unwrap(),
            vec![vec![1, 2], vec![], vec![3]]
        );
        assert!(decode_frames(&f, 2, 2).is_err());
        assert!(decode_frames(&f, 3, 1).is_err());
        let mut t = f.clone();
        t.push(0);
        assert!(decode_frames(&t, 3, 2).is_err());
        assert!(decode_frames(&f[..f.len() - 1], 3, 2).is_err());
    }
}
