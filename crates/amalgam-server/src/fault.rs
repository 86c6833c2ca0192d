//! Crash-test fault points: `amalgam_store::fault::fault_point` (cargo feature `fault-points`,
//! never in release builds). The server calls `before-commit` before queueing each append
//! and `after-commit` once its commit is confirmed (before anything is answered), with k =
//! the number of uploads this process accepted before it, plus one; and
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

/// `after-commit(k)`, reached from async code: the point parks a blocking-pool thread, not
/// the runtime's, so the rest of the process keeps running until the harness kills it.
#[cfg(feature = "fault-points")]
pub async fn after_commit(k: u64) {
    let _ = tokio::task::spawn_blocking(move || fault_point("after-commit", k)).await;
}

/// Without the feature there is nothing to reach.
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub async fn after_commit(_k: u64) {}
