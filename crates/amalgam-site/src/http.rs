//! The [`Transport`] over mutually authenticated HTTPS (`protocol-spec/service.md`): the
//! site presents a certificate over its identity key, the aggregator is accepted only through
//! its binding to the pinned identity key of the manifest. The async client (reqwest on
//! tokio) runs on a runtime this transport owns; the agent's core stays synchronous.

use std::time::Duration;

use amalgam_consortium::{IdentityKey, VerifiedManifest};
use amalgam_net::client::{ApiClient, ApiResponse, ClientError, RetryPolicy};
use amalgam_net::tls::{AggregatorPin, client_config, member_identity};
use amalgam_net::{api, fallback_api};
use amalgam_proto::Phase;

use crate::transport::{Download, RoundResult, Transport, TransportError};

/// Largest answer of the small routes (status, round status, anchors, answers to uploads):
/// these carry no vector.
const MAX_SMALL: usize = 1 << 20;
/// Largest problem `detail` shown, in characters.
const MAX_DETAIL: usize = 512;

/// Largest answer of the routes that carry a round's messages or its sum (downloads, the
/// result, this site's latest message), from the manifest alone: a fixed allowance, a few
/// KiB per site (keys, encrypted shares, unmask shares), and the sum as JSON (at most 21
/// characters per u64 value) or the masked input (at most 8 bytes per value).
pub fn max_message_answer(n: usize, d: usize) -> usize {
    (64usize << 10)
        .saturating_add(n.saturating_mul(8 << 10))
        .saturating_add(d.saturating_mul(24))
}

/// The aggregator's problem text as it may be printed: control characters escaped, length
/// bounded (it comes from the party the threat model distrusts).
pub fn printable_detail(detail: &str) -> String {
    let mut out = String::new();
    for c in detail.chars().take(MAX_DETAIL) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The HTTPS transport of one site.
pub struct HttpTransport {
    rt: tokio::runtime::Runtime,
    /// Small routes, answers bounded by [`MAX_SMALL`].
    client: ApiClient,
    /// Message and result routes, answers bounded by [`max_message_answer`].
    large: ApiClient,
    site: u16,
}

impl core::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

fn client_error(e: ClientError) -> TransportError {
    match e {
        ClientError::PinMismatch(p) => {
            TransportError::Auth(format!("probable TLS interception: {p}"))
        }
        ClientError::BodyTooLarge { max } => {
            TransportError::Malformed(format!("answer above {max} bytes"))
        }
        other => TransportError::Unreachable(other.to_string()),
    }
}

/// Maps a non-success answer to the transport's error classes.
fn refusal(r: &ApiResponse) -> TransportError {
    let status = r.status.as_u16();
    let (code, detail) = r.problem().map_or_else(
        || (format!("http.{status}"), String::new()),
        |p| {
            (
                printable_detail(p.code.as_str()),
                printable_detail(&p.detail),
            )
        },
    );
    match status {
        401 | 403 => TransportError::Auth(format!("{code}: {detail}")),
        425 | 503 => TransportError::Retry {
            retry_after: r.retry_after.map(Duration::from_secs),
        },
        _ => TransportError::Refused { code, detail },
    }
}

fn wait_query(wait: Duration) -> String {
    format!("?wait={}", wait.as_secs().clamp(1, api::MAX_WAIT_S))
}

fn hex32(s: &str) -> Result<[u8; 32], TransportError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| TransportError::Malformed("digest is not 64 hex digits".into()))?;
    Ok(out)
}

impl HttpTransport {
    /// The summaries of one anchors route, checked to be this site's and, for `fallback`,
    /// fallback round ids only (and masking ids only otherwise). 404 on the fallback route:
    /// none.
    fn anchors(
        &mut self,
        path: &str,
        fallback: bool,
    ) -> Result<Vec<(u64, String)>, TransportError> {
        let r = self.get(path)?;
        if fallback && r.status.as_u16() == 404 {
            return Ok(Vec::new());
        }
        if !r.status.is_success() {
            return Err(refusal(&r));
        }
        let anchors: api::Anchors = Self::json(&r)?;
        if anchors.site != self.site {
            return Err(TransportError::Malformed("anchors of another site".into()));
        }
        if anchors
            .summaries
            .iter()
            .any(|(round, _)| fallback_api::is_fallback_round(*round) != fallback)
        {
            return Err(TransportError::Malformed(
                "anchors of the other round kind".into(),
            ));
        }
        Ok(anchors.summaries)
    }

    /// A transport to `base_url` (`https://host:port`) for the site holding `identity`, the
    /// aggregator pinned by `manifest`.
    pub fn new(
        base_url: &str,
        identity: &IdentityKey,
        manifest: &VerifiedManifest,
        policy: RetryPolicy,
    ) -> Result<Self, TransportError> {
        let site = manifest
            .site_index(&identity.verifying_key())
            .ok_or_else(|| TransportError::Auth("this key is not a site of the manifest".into()))?;
        let tls_identity = member_identity(&identity.to_pkcs8_der())
            .map_err(|e| TransportError::Auth(e.to_string()))?;
        let pin = AggregatorPin {
            identity: manifest.aggregator().key,
            consortium_digest: manifest.consortium_digest(),
        };
        let tls =
            client_config(&tls_identity, pin).map_err(|e| TransportError::Auth(e.to_string()))?;
        let params = manifest
            .round_params(0)
            .map_err(|e| TransportError::Malformed(e.to_string()))?;
        let small_policy = RetryPolicy {
            max_body: MAX_SMALL,
            ..policy
        };
        let large_policy = RetryPolicy {
            max_body: max_message_answer(params.n(), params.d()),
            ..policy
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        let (client, large) = {
            let _guard = rt.enter();
            (
                ApiClient::new(base_url, tls.clone(), small_policy).map_err(client_error)?,
                ApiClient::new(base_url, tls, large_policy).map_err(client_error)?,
            )
        };
        Ok(Self {
            rt,
            client,
            large,
            site,
        })
    }

    /// `GET /v1/status`: the rounds the aggregator knows.
    pub fn status(&mut self) -> Result<api::ServiceStatus, TransportError> {
        let r = self.get(api::STATUS)?;
        if !r.status.is_success() {
            return Err(refusal(&r));
        }
        Self::json(&r)
    }

    fn get(&self, path: &str) -> Result<ApiResponse, TransportError> {
        self.rt
            .block_on(self.client.get(path))
            .map_err(client_error)
    }

    fn get_large(&self, path: &str) -> Result<ApiResponse, TransportError> {
        self.rt.block_on(self.large.get(path)).map_err(client_error)
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<ApiResponse, TransportError> {
        self.rt
            .block_on(self.client.post(path, body.to_vec()))
            .map_err(client_error)
    }

    fn phase_path(round: u64, phase: Phase) -> Result<String, TransportError> {
        api::masking_path(round, phase)
            .ok_or_else(|| TransportError::Malformed(format!("{phase} has no route")))
    }

    fn json<T: serde::de::DeserializeOwned>(r: &ApiResponse) -> Result<T, TransportError> {
        serde_json::from_slice(&r.body).map_err(|e| TransportError::Malformed(e.to_string()))
    }
}

impl Transport for HttpTransport {
    fn upload(&mut self, round: u64, phase: Phase, body: &[u8]) -> Result<(), TransportError> {
        let r = self.post(&Self::phase_path(round, phase)?, body)?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(refusal(&r))
        }
    }

    fn download(
        &mut self,
        round: u64,
        phase: Phase,
        wait: Duration,
    ) -> Result<Download, TransportError> {
        let path = format!("{}{}", Self::phase_path(round, phase)?, wait_query(wait));
        let r = self.get_large(&path)?;
        match r.status.as_u16() {
            200 => Ok(Download::Message(r.body)),
            204 => Ok(Download::Excluded),
            425 => Ok(Download::NotYet {
                retry_after: r.retry_after.map(Duration::from_secs),
            }),
            _ => match refusal(&r) {
                TransportError::Refused { code, .. } if code == "round.closed" => {
                    Ok(Download::Aborted)
                }
                // Ended and erased: nothing more for this site; its result stays available.
                TransportError::Refused { code, .. } if code == "round.shredded" => {
                    Ok(Download::Excluded)
                }
                e => Err(e),
            },
        }
    }

    fn mine_latest(&mut self, round: u64) -> Result<Option<Vec<u8>>, TransportError> {
        let r = self.get_large(&api::mine_latest_path(round))?;
        match r.status.as_u16() {
            200 => Ok(Some(r.body)),
            204 | 404 => Ok(None),
            _ => Err(refusal(&r)),
        }
    }

    fn decline(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError> {
        let r = self.post(&format!("/v1/rounds/{round}/decline"), body)?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(refusal(&r))
        }
    }

    fn upload_summary(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError> {
        // A fallback round's summary goes to the fallback routes (the masking service knows
        // no fallback round id).
        let path = if fallback_api::is_fallback_round(round) {
            fallback_api::fallback_path(round, "summary")
        } else {
            format!("/v1/rounds/{round}/summary")
        };
        let r = self.post(&path, body)?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(refusal(&r))
        }
    }

    /// The latest of this site's stored summaries, masking and fallback, in upload order
    /// ([`fallback_api::summary_order`]): masking round r, its fallback re-run, round r + 1.
    /// An aggregator without the fallback routes (404) holds no fallback summary.
    fn latest_summary(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let mut all = self.anchors(&format!("/v1/anchors/{}", self.site), false)?;
        all.extend(self.anchors(&fallback_api::fallback_anchors_path(self.site), true)?);
        all.into_iter()
            .max_by_key(|(round, _)| fallback_api::summary_order(*round))
            .map(|(_, h)| {
                hex::decode(h).map_err(|_| TransportError::Malformed("summary is not hex".into()))
            })
            .transpose()
    }

    fn summaries(&mut self) -> Result<Vec<Vec<u8>>, TransportError> {
        let mut all = self.anchors(&format!("/v1/anchors/{}", self.site), false)?;
        all.extend(self.anchors(&fallback_api::fallback_anchors_path(self.site), true)?);
        all.into_iter()
            .map(|(_, h)| {
                hex::decode(h).map_err(|_| TransportError::Malformed("summary is not hex".into()))
            })
            .collect()
    }

    fn round_model(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError> {
        let r = self.get(&api::round_path(round))?;
        match r.status.as_u16() {
            200 => {
                let st: api::RoundStatus = Self::json(&r)?;
                if st.round != round {
                    return Err(TransportError::Malformed("status of another round".into()));
                }
                Ok(Some(hex32(&st.model_digest)?))
            }
            404 => Ok(None),
            _ => Err(refusal(&r)),
        }
    }

    fn model(&mut self, round: u64) -> Result<Option<Vec<u8>>, TransportError> {
        let r = self.get_large(&api::model_path(round))?;
        match r.status.as_u16() {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(refusal(&r)),
        }
    }

    fn result(
        &mut self,
        round: u64,
        wait: Duration,
    ) -> Result<Option<RoundResult>, TransportError> {
        let r = self.get_large(&format!("{}{}", api::result_path(round), wait_query(wait)))?;
        match r.status.as_u16() {
            200 => {
                let res: api::RoundResult = Self::json(&r)?;
                if res.round != round {
                    return Err(TransportError::Malformed("result of another round".into()));
                }
                Ok(Some(RoundResult {
                    sum: res.sum,
                    contributors: res.contributors,
                    model_digest: None,
                }))
            }
            425 => Ok(None),
            _ => Err(refusal(&r)),
        }
    }
}

impl crate::fallback::FallbackTransport for HttpTransport {
    fn fallback_upload(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError> {
        let r = self.post(&fallback_api::fallback_path(round, "upload"), body)?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(refusal(&r))
        }
    }

    fn committee_keys(&mut self, period: u64) -> Result<Vec<Vec<u8>>, TransportError> {
        let r = self.get(&fallback_api::committee_keys_path(period))?;
        if !r.status.is_success() {
            return Err(refusal(&r));
        }
        fallback_api::decode_frames(
            &r.body,
            amalgam_he::committee::MAX_MEMBERS,
            fallback_api::MAX_COMMITTEE_KEY_BODY,
        )
        .map_err(|e| TransportError::Malformed(e.to_string()))
    }

    fn fallback_mine(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError> {
        let r = self.get(&fallback_api::fallback_path(round, "mine"))?;
        match r.status.as_u16() {
            200 => {
                let mine: fallback_api::FallbackMine = Self::json(&r)?;
                if mine.round != round {
                    return Err(TransportError::Malformed("upload of another round".into()));
                }
                Ok(Some(hex32(&mine.sha256)?))
            }
            204 => Ok(None),
            _ => Err(refusal(&r)),
        }
    }

    fn fallback_result(
        &mut self,
        round: u64,
        wait: Duration,
    ) -> Result<crate::fallback::FallbackPoll, TransportError> {
        use crate::fallback::FallbackPoll;
        let path = format!(
            "{}{}",
            fallback_api::fallback_path(round, "result"),
            wait_query(wait)
        );
        let r = self.get_large(&path)?;
        match r.status.as_u16() {
            200 => {
                let res: fallback_api::FallbackResult = Self::json(&r)?;
                if res.round != round {
                    return Err(TransportError::Malformed("result of another round".into()));
                }
                Ok(FallbackPoll::Published(RoundResult {
                    sum: res.sum,
                    contributors: res.contributors,
                    model_digest: None,
                }))
            }
            425 => Ok(FallbackPoll::NotYet {
                retry_after: r.retry_after.map(Duration::from_secs),
            }),
            _ => match refusal(&r) {
                TransportError::Refused { code, .. } if code == "round.closed" => {
                    Ok(FallbackPoll::Aborted)
                }
                e => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregator_detail_is_printed_with_control_characters_escaped() {
        let shown = printable_detail("ok\u{1b}[2J\nforged line\r\u{7}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("ok\\u{1b}[2J\\n"), "{shown:?}");
        assert_eq!(printable_detail(&"x".repeat(10_000)).len(), MAX_DETAIL);
    }

    #[test]
    fn answer_bounds_follow_the_manifest_not_one_gib() {
        let b = max_message_answer(5, 8);
        assert!(b < MAX_SMALL, "{b}");
        // A large round still bounds far below 1 GiB.
        assert!(max_message_answer(100, 1 << 20) < 64 << 20);
    }
}
