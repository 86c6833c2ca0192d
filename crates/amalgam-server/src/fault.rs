//! Crash-test fault points: `amalgam_store::fault::fault_point` (cargo feature `fault-points`,
//! never in release builds). The server calls `before-commit` and `after-commit` around each
//! append, with k = the number of uploads this process accepted, plus one; and
//! `after-response` once an upload's response body has been handed to the connection in full,
//! with k = the number of uploads this process accepted so far (this one included).

pub use amalgam_store::fault::fault_point;

use axum::response::Response;

/// Arms `after-response` on an upload's response: the point is reached when the connection
/// drops the body, i.e. after it took every byte. It parks a blocking-pool thread, not the
/// connection's task, so the bytes still leave while the harness kills the process.
#[cfg(feature = "fault-points")]
pub fn after_response(r: Response, k: u64) -> Response {
    use http_body_util::BodyExt;

    struct Armed(u64);
    impl Drop for Armed {
        fn drop(&mut self) {
            let k = self.0;
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn_blocking(move || fault_point("after-response", k));
            } else {
                fault_point("after-response", k);
            }
        }
    }
    let armed = Armed(k);
    let (parts, body) = r.into_parts();
    let body = body.map_frame(move |f| {
        let _ = &armed;
        f
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// Without the feature the response is returned as it is.
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub fn after_response(r: Response, _k: u64) -> Response {
    r
}
