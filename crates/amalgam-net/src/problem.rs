//! RFC 9457 problem details (`application/problem+json`) with stable codes.
//!
//! The `code` member is the stable machine-readable identifier (also the last path segment of
//! `type`); `detail` is human text that never carries vector values, seeds, shares or keys.

use serde::{Deserialize, Serialize};

/// Media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Prefix of every problem `type` URI.
pub const TYPE_PREFIX: &str = "urn:amalgam:problem:";

macro_rules! codes {
    ($( $(#[$doc:meta])* $v:ident = $s:literal, $status:literal, $title:literal; )*) => {
        /// Stable problem codes of the API (spec `service.md` §5).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemCode { $( $(#[$doc])* $v, )* }

        impl ProblemCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$v,)*];

            /// The stable string.
            pub fn as_str(self) -> &'static str { match self { $(ProblemCode::$v => $s,)* } }

            /// The HTTP status that carries it.
            pub fn status(self) -> u16 { match self { $(ProblemCode::$v => $status,)* } }

            /// Short human title.
            pub fn title(self) -> &'static str { match self { $(ProblemCode::$v => $title,)* } }

            /// Inverse of [`ProblemCode::as_str`].
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(ProblemCode::$v),)* _ => None }
            }
        }
    };
}

codes! {
    /// No client certificate on a member route.
    AuthNoClientCert = "auth.no-client-cert", 401, "client certificate required";
    /// A key that is not a member (reported in metrics; refused in the TLS handshake).
    AuthUnknownPeer = "auth.unknown-peer", 403, "not a consortium member";
    /// The member is not a site of this consortium (e.g. a decryptor on a site route).
    AuthWrongRole = "auth.wrong-role", 403, "role not allowed on this route";
    /// A replayed signed request (signed-request authentication only; unused with mTLS).
    AuthReplay = "auth.replay", 401, "replayed request";
    /// A different message for a (round, phase, sender) already answered.
    PeerDuplicate = "peer.duplicate", 409, "different message already accepted";
    /// No such round.
    RoundUnknown = "round.unknown", 404, "unknown round";
    /// The round is not collecting this phase.
    RoundWrongPhase = "round.wrong-phase", 409, "wrong phase";
    /// A fallback route on a masking round id (or the reverse): the scheme is derived from
    /// the round id and the manifest's fallback policy, never chosen by a request.
    RoundWrongScheme = "round.wrong-scheme", 409, "wrong scheme for this round";
    /// The round is finished or aborted.
    RoundClosed = "round.closed", 410, "round closed";
    /// The round ended and its secret bodies (downloads, uploads) were crypto-shredded:
    /// they cannot be delivered again; its result stays available.
    RoundShredded = "round.shredded", 410, "round shredded";
    /// The aggregator does not hold this round's global model (not a campaign round, or an
    /// older model no longer kept).
    ModelUnavailable = "model.unavailable", 404, "model not available";
    /// A ledger summary that does not verify (signature, consortium, round or site).
    SummaryInvalid = "summary.invalid", 422, "invalid ledger summary";
    /// A ledger summary whose entry count is below the site's previous one.
    SummaryRegressed = "summary.regressed", 409, "ledger summary regressed";
    /// A committee key-period certificate that does not verify against the manifest (not a
    /// decryptor, signature, consortium digest, or not its period's rounds).
    CommitteeKeyInvalid = "committee.key-invalid", 422, "invalid committee key certificate";
    /// A different certificate for a (member, period) that already has one: a member never
    /// holds two box keys for one period.
    CommitteeKeyConflict = "committee.key-conflict", 409, "conflicting committee key certificate";
    /// Body larger than the phase's maximum.
    BodyTooLarge = "body.too-large", 413, "body too large";
    /// Body that does not decode.
    BodyMalformed = "body.malformed", 400, "malformed body";
    /// The protocol state machine refused the message.
    ProtocolRefused = "protocol.refused", 422, "refused by the protocol";
    /// Overloaded: retry after the indicated delay.
    ServerBusy = "server.busy", 503, "server busy";
    /// Not available yet: retry after the indicated delay.
    NotYet = "not-yet", 425, "not yet";
    /// No such route or resource.
    NotFound = "not-found", 404, "not found";
    /// Unsupported path parameter (e.g. an unknown phase name).
    BadRequest = "request.invalid", 400, "invalid request";
    /// Server-side failure (storage); nothing was accepted.
    Internal = "server.internal", 500, "internal error";
    /// The route exists only in authenticated (TLS) mode.
    InsecureMode = "server.insecure-mode", 403, "not available in insecure mode";
}

impl Serialize for ProblemCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProblemCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProblemCode::parse(&s).ok_or_else(|| serde::de::Error::custom("unknown problem code"))
    }
}

/// A problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:amalgam:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short title of the code.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Human explanation (no secret, no vector value).
    pub detail: String,
    /// Stable code.
    pub code: ProblemCode,
    /// Seconds to wait before retrying (also in `Retry-After`), for 425 and 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl Problem {
    /// A problem of `code` with `detail`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("{TYPE_PREFIX}{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            retry_after_s: None,
        }
    }

    /// With a retry delay.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_s = Some(secs);
        self
    }

    /// JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Strict parse of a problem document (bounded by the caller).
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        let p: Problem = serde_json::from_slice(bytes).ok()?;
        (p.status == p.code.status()).then_some(p)
    }
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status,
            self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ProblemCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert_eq!(ProblemCode::parse(c.as_str()), Some(*c));
            let p = Problem::new(*c, "x");
            assert_eq!(Problem::from_json(&p.to_json()), Some(p));
        }
    }

    #[test]
    fn status_must_match_code() {
        let mut p = Problem::new(ProblemCode::PeerDuplicate, "x");
        p.status = 200;
        assert_eq!(Problem::from_json(&p.to_json()), None);
    }
}
