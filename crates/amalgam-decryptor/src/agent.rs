//! The committee member over the network: outbound only (it never listens), through the
//! mTLS [`ApiClient`] that pins the aggregator. One round: wait for the cohort statement, fetch
//! this member's views (never a ciphertext), sign once (recorded first), post the signature,
//! wait for a quorum, post the release, shred the round's seeds.

use std::sync::Arc;
use std::time::Duration;

use amalgam_he::{CohortStatement, RoundSetup, StatementSignature, UploadView};
use amalgam_net::client::{ApiClient, ApiResponse};
use amalgam_net::fallback_api::{MAX_FRAMES, decode_frames, fallback_path, is_fallback_round};
use amalgam_proto::codec::{Decode, Encode};
use amalgam_store::fault::fault_point;

use crate::error::DecryptorError;
use crate::member::Member;

/// Derives a fallback round's setup (the same one the aggregator and the sites derive).
pub type SetupFn = Arc<dyn Fn(u64) -> Result<RoundSetup, String> + Send + Sync>;

/// How long the member waits.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Long-poll per request for the statement (≤ 60 s, the server's cap).
    pub long_poll: Duration,
    /// Pause between signature-list polls while the quorum is incomplete.
    pub poll: Duration,
    /// Polls before giving up on a round (the round's deadline ends it anyway).
    pub max_polls: u32,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            long_poll: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            max_polls: 900,
        }
    }
}

/// What became of a round this member served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed and released; the round's seeds are shredded.
    Released {
        /// Sites in the signed statement.
        cohort: Vec<u16>,
    },
    /// Signed, but the round finished from other members' releases before this one's
    /// arrived (410); the seeds are shredded all the same.
    FinishedWithout {
        /// Sites in the signed statement.
        cohort: Vec<u16>,
    },
}

/// One committee member connected to the aggregator.
pub struct DecryptorAgent {
    // A mutex only to make the agent `Sync` (SQLite connections are not): one round at a
    // time uses it, never across an await.
    member: std::sync::Mutex<Member>,
    client: ApiClient,
    setups: SetupFn,
    fallback_allowed: bool,
    patience: Patience,
}

impl core::fmt::Debug for DecryptorAgent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DecryptorAgent(..)")
    }
}

fn ok(r: &ApiResponse, what: &str) -> Result<(), DecryptorError> {
    if r.status.is_success() {
        return Ok(());
    }
    let p = r.problem();
    Err(DecryptorError::Answer(format!(
        "{what}: HTTP {} {}",
        r.status.as_u16(),
        p.map(|p| format!("{}: {}", p.code.as_str(), p.detail))
            .unwrap_or_default()
    )))
}

impl DecryptorAgent {
    /// A member talking to the aggregator through `client`. `fallback_allowed` is the fallback
    /// policy of the member's own verified manifest (never the aggregator's word): where it is
    /// false, no round is served.
    pub fn new(
        member: Member,
        client: ApiClient,
        setups: SetupFn,
        fallback_allowed: bool,
        patience: Patience,
    ) -> Self {
        Self {
            member: std::sync::Mutex::new(member),
            client,
            setups,
            fallback_allowed,
            patience,
        }
    }

    /// The member (its store), e.g. to inspect what it recorded.
    pub fn member_mut(&mut self) -> &mut Member {
        self.member
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn index(&self) -> usize {
        self.member
            .lock()
            .map(|m| m.index())
            .unwrap_or_else(|p| p.into_inner().index())
    }

    async fn statement(&self, round: u64) -> Result<Vec<u8>, DecryptorError> {
        let path = format!(
            "{}?wait={}",
            fallback_path(round, "statement"),
            self.patience.long_poll.as_secs()
        );
        for _ in 0..self.patience.max_polls.max(1) {
            let r = self.client.get(&path).await?;
            match r.status.as_u16() {
                200 => return Ok(r.body),
                425 => continue,
                410 => {
                    return Err(DecryptorError::Ended {
                        round,
                        why: r.problem().map(|p| p.detail).unwrap_or_default(),
                    });
                }
                _ => ok(&r, "statement")?,
            }
        }
        Err(DecryptorError::Answer(
            "no statement before giving up".into(),
        ))
    }

    async fn views(&self, setup: &RoundSetup) -> Result<Vec<UploadView>, DecryptorError> {
        let r = self
            .client
            .get(&fallback_path(setup.round(), "views"))
            .await?;
        ok(&r, "views")?;
        // At most one view per site of the setup (never the codec's generic frame limit).
        let frames = decode_frames(&r.body, setup.sites().len().min(MAX_FRAMES), 1 << 20)
            .map_err(|e| DecryptorError::Answer(e.to_string()))?;
        let index = self.index();
        let mut views = Vec::with_capacity(frames.len());
        for f in &frames {
            match UploadView::from_bytes(f, setup, index) {
                Ok(v) => views.push(v),
                Err(e) => tracing::warn!(error = %e, "undecodable view skipped"),
            }
        }
        Ok(views)
    }

    async fn signatures(&self, round: u64) -> Result<Vec<StatementSignature>, DecryptorError> {
        let r = self.client.get(&fallback_path(round, "signatures")).await?;
        ok(&r, "signatures")?;
        let frames = decode_frames(&r.body, amalgam_he::committee::MAX_MEMBERS, 69)
            .map_err(|e| DecryptorError::Answer(e.to_string()))?;
        Ok(frames
            .iter()
            .filter_map(|b| StatementSignature::from_bytes(b, &()).ok())
            .collect())
    }

    /// Serves one fallback round to its end (see the module docs). A restart simply calls
    /// this again: the recorded statement makes it re-send the identical signature, and a
    /// different statement is refused.
    pub async fn serve_round(&mut self, round: u64) -> Result<Outcome, DecryptorError> {
        // Checked here, before anything is fetched: the aggregator is not trusted with the
        // policy or with the id range.
        if !self.fallback_allowed {
            return Err(DecryptorError::PolicyForbids { round });
        }
        if !is_fallback_round(round) {
            return Err(DecryptorError::NotAFallbackRound { round });
        }
        let setup = (self.setups)(round).map_err(DecryptorError::Setup)?;
        let bytes = self.statement(round).await?;
        let statement = CohortStatement::from_bytes(&bytes, &())
            .map_err(|e| DecryptorError::Answer(format!("statement: {e}")))?;
        let views = self.views(&setup).await?;
        let signed = self.member_mut().sign(&setup, &views, &statement)?;
        // From here on the round's seeds are in the vault: every way out of the round shreds
        // them, failures included (a refused signature or release, an unreachable aggregator,
        // no quorum in time). A member that gives up never leaves seeds beside their key; the
        // price is that it cannot take part in the round again.
        let out = self.finish(round, &signed, &statement).await;
        let shred = self.member_mut().shred(round);
        let out = out?;
        shred?;
        Ok(out)
    }

    /// The part of a round after signing: post the signature, wait for a quorum, release.
    async fn finish(
        &mut self,
        round: u64,
        signed: &crate::member::Signed,
        statement: &CohortStatement,
    ) -> Result<Outcome, DecryptorError> {
        let r = self
            .client
            .post(
                &fallback_path(round, "signatures"),
                signed.signature.to_bytes(),
            )
            .await?;
        ok(&r, "signature")?;
        fault_point("after-signature-sent", round);
        let mut polls = 0;
        let release = loop {
            let sigs = self.signatures(round).await?;
            match self.member_mut().release(signed, &sigs) {
                Ok(rel) => break rel,
                Err(DecryptorError::Protocol(amalgam_he::HeError::NoQuorum { .. }))
                    if polls < self.patience.max_polls =>
                {
                    polls += 1;
                    tokio::time::sleep(self.patience.poll).await;
                }
                Err(e) => return Err(e),
            }
        };
        let r = self
            .client
            .post(&fallback_path(round, "release"), release.to_bytes())
            .await?;
        let cohort = statement.sites().map(|s| s.0).collect();
        if r.status.as_u16() == 410 {
            // Finished (or aborted) without this release: nothing more to do with the seeds.
            return Ok(Outcome::FinishedWithout { cohort });
        }
        ok(&r, "release")?;
        fault_point("after-release", round);
        Ok(Outcome::Released { cohort })
    }
}
