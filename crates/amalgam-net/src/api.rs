//! Routes, headers and JSON types of the aggregator's HTTP API (spec `service.md` §4), shared
//! by the server and its clients. Binary bodies are the canonical codec of
//! `amalgam_proto::messages` (`application/octet-stream`); status bodies are JSON.

use amalgam_proto::Phase;
use serde::{Deserialize, Serialize};

/// Service status (JSON [`ServiceStatus`]).
pub const STATUS: &str = "/v1/status";
/// Server time over the authenticated channel (JSON [`ServerTime`]).
pub const TIME: &str = "/v1/time";
/// One round's status (JSON [`RoundStatus`]).
pub const ROUND: &str = "/v1/rounds/{round}";
/// Upload (POST, binary `ToAggregator`) or download by long-poll (GET `?wait=`, binary `ToSite`).
pub const MASKING_PHASE: &str = "/v1/rounds/{round}/masking/{phase}";
/// The round's result by long-poll (JSON [`RoundResult`]).
pub const RESULT: &str = "/v1/rounds/{round}/result";
/// The latest message the authenticated site sent in the round (binary), for its rollback check.
pub const MINE_LATEST: &str = "/v1/rounds/{round}/mine/latest";
/// Signed ledger summary (POST, opaque signed bytes), served back as anchors.
pub const SUMMARY: &str = "/v1/rounds/{round}/summary";
/// Signed decline before AdvertiseKeys (POST, opaque signed bytes).
pub const DECLINE: &str = "/v1/rounds/{round}/decline";
/// The global model round `{round}` is bound to (GET, its canonical little-endian f32 bytes;
/// header [`HEADER_MODEL_DIGEST`]), for a site that missed the previous round's result.
pub const MODEL: &str = "/v1/rounds/{round}/model";
/// Every stored summary of a site (JSON [`Anchors`]).
pub const ANCHORS: &str = "/v1/anchors/{site}";
/// Liveness, on the metrics listener.
pub const HEALTHZ: &str = "/healthz";
/// Prometheus text exposition, on the metrics listener.
pub const METRICS: &str = "/metrics";

/// Every API route on the main listener (the OpenAPI test checks each is documented).
pub const API_ROUTES: &[&str] = &[
    STATUS,
    TIME,
    ROUND,
    MASKING_PHASE,
    RESULT,
    MINE_LATEST,
    SUMMARY,
    DECLINE,
    MODEL,
    ANCHORS,
];

/// Absolute UTC deadline (Unix milliseconds) of the phase a download or status concerns.
pub const HEADER_DEADLINE: &str = "amalgam-phase-deadline";
/// The phase the round is collecting (its URL segment).
pub const HEADER_PHASE: &str = "amalgam-phase";
/// Longest long-poll the server honours, seconds.
pub const MAX_WAIT_S: u64 = 60;

/// URL segment of a masking phase (`None` for Finished/Aborted).
pub fn phase_segment(phase: Phase) -> Option<&'static str> {
    Some(match phase {
        Phase::AdvertiseKeys => "advertise-keys",
        Phase::ShareKeys => "share-keys",
        Phase::MaskedInput => "masked-input",
        Phase::ConsistencyCheck => "consistency-check",
        Phase::Unmasking => "unmasking",
        Phase::Finished | Phase::Aborted => return None,
    })
}

/// Inverse of [`phase_segment`].
pub fn phase_from_segment(s: &str) -> Option<Phase> {
    Some(match s {
        "advertise-keys" => Phase::AdvertiseKeys,
        "share-keys" => Phase::ShareKeys,
        "masked-input" => Phase::MaskedInput,
        "consistency-check" => Phase::ConsistencyCheck,
        "unmasking" => Phase::Unmasking,
        _ => return None,
    })
}

/// `/v1/rounds/{round}/masking/{phase}`.
pub fn masking_path(round: u64, phase: Phase) -> Option<String> {
    phase_segment(phase).map(|p| format!("/v1/rounds/{round}/masking/{p}"))
}

/// `/v1/rounds/{round}/result`.
pub fn result_path(round: u64) -> String {
    format!("/v1/rounds/{round}/result")
}

/// `/v1/rounds/{round}/mine/latest`.
pub fn mine_latest_path(round: u64) -> String {
    format!("/v1/rounds/{round}/mine/latest")
}

/// `/v1/rounds/{round}/model`.
pub fn model_path(round: u64) -> String {
    format!("/v1/rounds/{round}/model")
}

/// Hex digest of the model a model answer carries.
pub const HEADER_MODEL_DIGEST: &str = "amalgam-model-digest";

/// `/v1/rounds/{round}`.
pub fn round_path(round: u64) -> String {
    format!("/v1/rounds/{round}")
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Hex SHA-256 consortium digest the server runs under.
    pub consortium_digest: String,
    /// Manifest epoch.
    pub epoch: u64,
    /// Server time, Unix milliseconds.
    pub server_time_ms: u64,
    /// Rounds the server knows, ascending.
    pub rounds: Vec<RoundStatus>,
}

/// `GET /v1/rounds/{round}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundStatus {
    /// Round id.
    pub round: u64,
    /// `"masking"` (the fallback will add `"he"`).
    pub scheme: String,
    /// Phase being collected (URL segment), or `"finished"` / `"aborted"`.
    pub phase: String,
    /// Absolute deadline of that phase, Unix milliseconds (absent once closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Sites whose upload for the phase was accepted.
    pub responded: u32,
    /// Sites expected in the phase.
    pub expected: u32,
    /// Hex model digest the round is bound to.
    pub model_digest: String,
    /// Why the round aborted (public description), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

/// `GET /v1/time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTime {
    /// Unix milliseconds.
    pub unix_ms: u64,
}

/// `GET /v1/rounds/{round}/result`: the published sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundResult {
    /// Round id.
    pub round: u64,
    /// Σ x_u mod 2^B over the contributors.
    pub sum: Vec<u64>,
    /// Sites in the sum, ascending.
    pub contributors: Vec<u16>,
    /// Sites that advertised keys but are not in the sum.
    pub dropped: Vec<u16>,
    /// Sites named as having revealed bad shares.
    pub blamed: Vec<u16>,
}

/// `GET /v1/anchors/{site}`: the site's stored signed summaries (hex), by round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchors {
    /// Site index.
    pub site: u16,
    /// (round, hex of the signed summary bytes), ascending by round.
    pub summaries: Vec<(u64, String)>,
}

/// The response to an accepted upload (stored with it and repeated verbatim to an identical
/// re-send).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReceipt {
    /// Round id.
    pub round: u64,
    /// Phase (URL segment) or `"decline"` / `"summary"`.
    pub phase: String,
    /// Hex SHA-256 of the accepted body.
    pub sha256: String,
}

/// Domain of the signed decline: the site's identity key signs
/// `"amalgam/v1/decline" ‖ context_digest[32] ‖ round u64 BE`; the body is the 64-byte signature.
pub const DECLINE_DOMAIN: &[u8] = b"amalgam/v1/decline";

/// The bytes a site signs to decline `round` bound to `context_digest`.
pub fn decline_message(context_digest: &[u8; 32], round: u64) -> Vec<u8> {
    let mut m = DECLINE_DOMAIN.to_vec();
    m.extend_from_slice(context_digest);
    m.extend_from_slice(&round.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_segments_round_trip() {
        for p in [
            Phase::AdvertiseKeys,
            Phase::ShareKeys,
            Phase::MaskedInput,
            Phase::ConsistencyCheck,
            Phase::Unmasking,
        ] {
            let s = phase_segment(p).unwrap();
            assert_eq!(phase_from_segment(s), Some(p));
        }
        assert_eq!(phase_segment(Phase::Finished), None);
        assert_eq!(phase_from_segment("AdvertiseKeys"), None);
    }
}
