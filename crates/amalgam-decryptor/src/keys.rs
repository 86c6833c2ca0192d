//! The member's side of the committee key relay (spec `decryptor.md` §2, `service.md` §9):
//! it posts its own key-period certificate ahead of the period, and anyone may fetch a
//! period's certificates. The aggregator checks a posted certificate against the manifest and
//! stores it before answering; every party verifies what it fetches again
//! (`amalgam_consortium::fallback::fallback_setup`), so these calls carry bytes only.

use amalgam_net::client::ApiClient;
use amalgam_net::fallback_api::{
    COMMITTEE_KEYS, MAX_COMMITTEE_KEY_BODY, committee_keys_path, decode_frames,
};

use crate::error::DecryptorError;

/// Largest number of certificates in a period's answer (one per committee member).
const MAX_CERTIFICATES: usize = amalgam_he::committee::MAX_MEMBERS;

/// Posts this member's certificate `bytes` (`POST /v1/committee/keys`). An identical re-post
/// succeeds; a different certificate already stored for the same (member, period) is
/// [`DecryptorError::KeyConflict`]: this member drew a second box key for the period (its
/// key file was lost), which it must not use.
pub async fn post_certificate(client: &ApiClient, bytes: &[u8]) -> Result<(), DecryptorError> {
    let r = client.post(COMMITTEE_KEYS, bytes.to_vec()).await?;
    if r.status.is_success() {
        return Ok(());
    }
    let p = r.problem();
    let detail = p
        .as_ref()
        .map(|p| format!("{}: {}", p.code.as_str(), p.detail))
        .unwrap_or_default();
    if r.status.as_u16() == 409 {
        return Err(DecryptorError::KeyConflict(detail));
    }
    Err(DecryptorError::Answer(format!(
        "committee key: HTTP {} {detail}",
        r.status.as_u16()
    )))
}

/// The stored certificates of key period `period` (`GET /v1/committee/keys?period=p`), as
/// bytes, unverified.
pub async fn fetch_certificates(
    client: &ApiClient,
    period: u64,
) -> Result<Vec<Vec<u8>>, DecryptorError> {
    let r = client.get(&committee_keys_path(period)).await?;
    if !r.status.is_success() {
        return Err(DecryptorError::Answer(format!(
            "committee keys: HTTP {}",
            r.status.as_u16()
        )));
    }
    decode_frames(&r.body, MAX_CERTIFICATES, MAX_COMMITTEE_KEY_BODY)
        .map_err(|e| DecryptorError::Answer(e.to_string()))
}
