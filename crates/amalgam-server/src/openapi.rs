//! The OpenAPI document of the API, generated from the same route constants the router uses
//! and the problem codes each route can return (`amalgam serve --openapi` prints it; a test
//! checks that every route is documented).

use amalgam_net::ProblemCode as P;
use amalgam_net::api;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, Paths};
use utoipa::openapi::{Info, OpenApi, Response};

pub(crate) struct Doc {
    pub(crate) path: &'static str,
    pub(crate) method: HttpMethod,
    pub(crate) id: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) ok: &'static [(u16, &'static str)],
    pub(crate) problems: &'static [P],
}

const AUTH: &[P] = &[
    P::AuthNoClientCert,
    P::AuthWrongRole,
    P::RoundUnknown,
    P::BadRequest,
];

/// Every operation of the main listener.
const DOCS: &[Doc] = &[
    Doc {
        path: api::STATUS,
        method: HttpMethod::Get,
        id: "status",
        summary: "Service status: consortium digest, epoch, server time, rounds with phases and deadlines",
        ok: &[(200, "ServiceStatus (JSON)")],
        problems: &[],
    },
    Doc {
        path: api::TIME,
        method: HttpMethod::Get,
        id: "time",
        summary: "Server time over the authenticated channel",
        ok: &[(200, "ServerTime (JSON)")],
        problems: &[],
    },
    Doc {
        path: api::ROUND,
        method: HttpMethod::Get,
        id: "round_status",
        summary: "One round's status",
        ok: &[(200, "RoundStatus (JSON); amalgam-phase-deadline header")],
        problems: AUTH,
    },
    Doc {
        path: api::MASKING_PHASE,
        method: HttpMethod::Post,
        id: "upload",
        summary: "Upload the site's canonical ToAggregator message for the phase",
        ok: &[(
            200,
            "UploadReceipt (JSON); identical re-send gets the same body",
        )],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::RoundUnknown,
            P::BadRequest,
            P::PeerDuplicate,
            P::RoundWrongPhase,
            P::RoundClosed,
            P::BodyTooLarge,
            P::BodyMalformed,
            P::ProtocolRefused,
            P::ServerBusy,
            P::Internal,
        ],
    },
    Doc {
        path: api::MASKING_PHASE,
        method: HttpMethod::Get,
        id: "download",
        summary: "Long-poll (?wait=s) for the ToSite message sent at the close of the phase",
        ok: &[
            (200, "ToSite bytes, identical on every delivery"),
            (204, "the phase closed without a message for this site"),
        ],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::RoundUnknown,
            P::BadRequest,
            P::NotYet,
            P::RoundClosed,
            P::RoundShredded,
        ],
    },
    Doc {
        path: api::RESULT,
        method: HttpMethod::Get,
        id: "result",
        summary: "Long-poll (?wait=s) for the round's published sum",
        ok: &[(200, "RoundResult (JSON)")],
        problems: &[
            P::AuthNoClientCert,
            P::RoundUnknown,
            P::NotYet,
            P::RoundClosed,
        ],
    },
    Doc {
        path: api::MINE_LATEST,
        method: HttpMethod::Get,
        id: "mine_latest",
        summary: "The latest message the authenticated site sent in the round (rollback check)",
        ok: &[(200, "ToAggregator bytes"), (204, "nothing sent yet")],
        problems: AUTH,
    },
    Doc {
        path: api::SUMMARY,
        method: HttpMethod::Post,
        id: "summary",
        summary: "Store the site's signed ledger summary for the round (served as anchors)",
        ok: &[(200, "UploadReceipt (JSON)")],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::RoundUnknown,
            P::PeerDuplicate,
            P::BodyTooLarge,
            P::SummaryInvalid,
            P::SummaryRegressed,
        ],
    },
    Doc {
        path: api::MODEL,
        method: HttpMethod::Get,
        id: "model",
        summary: "The global model the round is bound to (little-endian f32 bytes; digest header)",
        ok: &[(200, "model bytes")],
        problems: &[
            P::AuthNoClientCert,
            P::RoundUnknown,
            P::ModelUnavailable,
            P::BadRequest,
        ],
    },
    Doc {
        path: api::DECLINE,
        method: HttpMethod::Post,
        id: "decline",
        summary: "Signed decline before AdvertiseKeys closes (not a dropout)",
        ok: &[(200, "UploadReceipt (JSON)")],
        problems: &[
            P::AuthNoClientCert,
            P::AuthWrongRole,
            P::RoundUnknown,
            P::PeerDuplicate,
            P::RoundWrongPhase,
            P::BodyMalformed,
            P::ProtocolRefused,
        ],
    },
    Doc {
        path: api::ANCHORS,
        method: HttpMethod::Get,
        id: "anchors",
        summary: "A site's stored signed summaries by round",
        ok: &[(200, "Anchors (JSON)")],
        problems: &[P::AuthNoClientCert, P::BadRequest],
    },
];

fn operation(d: &Doc) -> Operation {
    let mut b = OperationBuilder::new()
        .operation_id(Some(d.id))
        .summary(Some(d.summary));
    for (status, what) in d.ok {
        b = b.response(status.to_string(), Response::new(*what));
    }
    // One response per status, naming every problem code it can carry.
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for p in d.problems {
        by_status.entry(p.status()).or_default().push(p.as_str());
    }
    for (status, codes) in by_status {
        b = b.response(
            status.to_string(),
            Response::new(format!("application/problem+json: {}", codes.join(", "))),
        );
    }
    b.build()
}

/// The document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for d in DOCS.iter().chain(crate::fallback::openapi::DOCS) {
        paths.add_path_operation(d.path, vec![d.method.clone()], operation(d));
    }
    OpenApi::new(
        Info::new("Amalgam aggregator API", env!("CARGO_PKG_VERSION")),
        paths,
    )
}

/// The document as pretty JSON.
pub fn json() -> String {
    document().to_pretty_json().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        for r in amalgam_net::api::API_ROUTES {
            assert!(
                doc.paths.paths.contains_key(*r),
                "{r} missing from the OpenAPI document"
            );
        }
        let item = &doc.paths.paths[amalgam_net::api::MASKING_PHASE];
        assert!(item.get.is_some() && item.post.is_some());
        let json = super::json();
        for code in [
            "peer.duplicate",
            "round.wrong-phase",
            "body.too-large",
            "not-yet",
        ] {
            assert!(json.contains(code), "{code} undocumented");
        }
    }
}
