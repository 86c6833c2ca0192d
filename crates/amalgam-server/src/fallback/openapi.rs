//! The fallback routes in the OpenAPI document (from the same route constants the router
//! uses; a test checks each is documented).

use amalgam_net::ProblemCode as P;
use amalgam_net::fallback_api as f;
use utoipa::openapi::path::HttpMethod;

use crate::openapi::Doc;

const COMMON: &[P] = &[
    P::AuthNoClientCert,
    P::AuthWrongRole,
    P::RoundUnknown,
    P::RoundWrongScheme,
    P::BadRequest,
];

const POSTED: &[P] = &[
    P::AuthNoClientCert,
    P::AuthWrongRole,
    P::RoundUnknown,
    P::RoundWrongScheme,
    P::BadRequest,
    P::BodyTooLarge,
    P::BodyMalformed,
    P::ProtocolRefused,
    P::PeerDuplicate,
    P::RoundWrongPhase,
    P::RoundClosed,
    P::ServerBusy,
];

/// The fallback operations.
pub(crate) const DOCS: &[Doc] = &[
    Doc {
        path: f::FALLBACK_UPLOAD,
        method: HttpMethod::Post,
        id: "fallback_upload",
        summary: "A site's SignedUpload (type 0x48), exactly the length computed from the round setup",
        ok: &[(
            200,
            "UploadReceipt (JSON); identical re-send gets the same body",
        )],
        problems: POSTED,
    },
    Doc {
        path: f::FALLBACK_VIEWS,
        method: HttpMethod::Get,
        id: "fallback_views",
        summary: "The decryptor's UploadViews (framed): boxes and digests, never a ciphertext",
        ok: &[(200, "framed UploadView bytes")],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::RoundUnknown,
            P::RoundWrongScheme,
            P::BadRequest,
            P::RoundClosed,
            P::ServerBusy,
        ],
    },
    Doc {
        path: f::FALLBACK_STATEMENT,
        method: HttpMethod::Get,
        id: "fallback_statement",
        summary: "The cohort statement once the cohort closed (long-poll ?wait=)",
        ok: &[(200, "CohortStatement bytes (type 0x4a)")],
        problems: &[
            P::AuthNoClientCert,
            P::RoundUnknown,
            P::RoundWrongScheme,
            P::NotYet,
            P::RoundClosed,
        ],
    },
    Doc {
        path: f::FALLBACK_SIGNATURES,
        method: HttpMethod::Post,
        id: "fallback_signature",
        summary: "A decryptor's StatementSignature (type 0x4b, 69 bytes) on the closed statement",
        ok: &[(200, "UploadReceipt (JSON)")],
        problems: POSTED,
    },
    Doc {
        path: f::FALLBACK_SIGNATURES,
        method: HttpMethod::Get,
        id: "fallback_signatures",
        summary: "Every collected statement signature (framed), by member",
        ok: &[(200, "framed StatementSignature bytes")],
        problems: COMMON,
    },
    Doc {
        path: f::FALLBACK_RELEASE,
        method: HttpMethod::Post,
        id: "fallback_release",
        summary: "A decryptor's PieceSumRelease (type 0x4c)",
        ok: &[(200, "UploadReceipt (JSON)")],
        problems: POSTED,
    },
    Doc {
        path: f::FALLBACK_MINE,
        method: HttpMethod::Get,
        id: "fallback_mine",
        summary: "The digest of the calling site's own accepted upload (its rollback check)",
        ok: &[
            (200, "FallbackMine (JSON)"),
            (204, "no upload from this site"),
        ],
        problems: COMMON,
    },
    Doc {
        path: f::FALLBACK_RESULT,
        method: HttpMethod::Get,
        id: "fallback_result",
        summary: "The decoded sum and cohort (long-poll ?wait=); nothing else of the round",
        ok: &[(200, "FallbackResult (JSON)")],
        problems: &[
            P::AuthNoClientCert,
            P::RoundUnknown,
            P::RoundWrongScheme,
            P::NotYet,
            P::RoundClosed,
        ],
    },
    Doc {
        path: f::FALLBACK_SUMMARY,
        method: HttpMethod::Post,
        id: "fallback_summary",
        summary: "The site's signed ledger summary after a fallback round (served as an anchor)",
        ok: &[(
            200,
            "UploadReceipt (JSON); identical re-send gets the same body",
        )],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::RoundUnknown,
            P::RoundWrongScheme,
            P::BadRequest,
            P::BodyTooLarge,
            P::SummaryInvalid,
            P::SummaryRegressed,
            P::PeerDuplicate,
            P::ServerBusy,
        ],
    },
    Doc {
        path: f::FALLBACK_ANCHORS,
        method: HttpMethod::Get,
        id: "fallback_anchors",
        summary: "A site's stored signed summaries of fallback rounds, by round",
        ok: &[(200, "Anchors (JSON)")],
        problems: &[P::AuthNoClientCert, P::BadRequest, P::ServerBusy],
    },
    Doc {
        path: f::COMMITTEE_KEYS,
        method: HttpMethod::Post,
        id: "committee_key_post",
        summary: "A decryptor's own key-period certificate (159 bytes), checked against the manifest and stored before the answer",
        ok: &[(
            200,
            "CommitteeKeyReceipt (JSON); identical re-post gets the same body",
        )],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::BodyTooLarge,
            P::CommitteeKeyInvalid,
            P::CommitteeKeyConflict,
            P::ServerBusy,
        ],
    },
    Doc {
        path: f::COMMITTEE_KEYS,
        method: HttpMethod::Get,
        id: "committee_keys",
        summary: "Every stored certificate of key period ?period=p (framed, member order); each party verifies them against the manifest",
        ok: &[(200, "framed PeriodCertificate bytes")],
        problems: &[P::AuthNoClientCert, P::BadRequest, P::ServerBusy],
    },
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_fallback_route_is_documented() {
        let doc = crate::openapi::document();
        for r in amalgam_net::fallback_api::FALLBACK_ROUTES {
            assert!(doc.paths.paths.contains_key(*r), "{r} undocumented");
        }
        let item = &doc.paths.paths[amalgam_net::fallback_api::FALLBACK_SIGNATURES];
        assert!(item.get.is_some() && item.post.is_some());
        let keys = &doc.paths.paths[amalgam_net::fallback_api::COMMITTEE_KEYS];
        assert!(keys.get.is_some() && keys.post.is_some());
        assert!(crate::openapi::json().contains("committee.key-conflict"));
        assert!(crate::openapi::json().contains("round.wrong-scheme"));
    }
}
