//! The re-run of an aborted masking round through the homomorphic fallback, as a site runs it
//! (spec `protocol-spec/site-agent.md` §7, `he-fallback.md`).
//!
//! A masking round `r` that aborted may be re-run once as fallback round
//! `FALLBACK_ROUND_BASE + r`, only where the manifest's fallback policy allows it. It is a new
//! round id: a new permit and a second ledger charge, fresh noise, its own rotation seed (the
//! encoding of the fallback round id). In order:
//!
//! 1. the policy, the round id (a fallback id whose masking round is in the campaign), then the
//!    setup, which the site derives itself (`amalgam_consortium::fallback::fallback_setup`) from
//!    the signed manifest, the committee's period certificates (relayed by the aggregator,
//!    each verified against the manifest) and its own model — before anything else;
//! 2. persisted state of this round: resumed, its upload rebuilt from it byte for byte;
//! 3. the rollback check: the aggregator must hold no upload from this site that local state
//!    does not know (`GET /v1/rounds/{r}/fallback/mine`); the fallback high-water mark;
//! 4. the budget rules: the model chain, the abort cap, the ledger against the last summary,
//!    then the charge;
//! 5. training under the permit, the encoded update drawn into one `amalgam_he::SiteRound`
//!    sealed on disk **before** its upload leaves: a restart re-sends identical bytes and
//!    never encrypts the update again with new noise;
//! 6. the published sum, model_{r+1} computed from it here with the fallback round's encoding;
//! 7. the epilogue: a round that timed out (or lost the aggregator) keeps its sealed round until
//!    its deadline, so that a restarted site picks up a late result; the signed ledger summary
//!    is uploaded as after a masking round (the anchor of the next charge).

use std::time::Duration;

use amalgam_consortium::fallback::{fallback_setup, period_of};
use amalgam_consortium::period_key::PeriodCertificate;
use amalgam_dp::ledger::{LedgerError, RoundRequest};
use amalgam_dp::params::SiteCount;
use amalgam_dp::sampler::SamplerKind;
use amalgam_he::{RoundSetup, SiteRound, SiteRoundLog};
use amalgam_net::fallback_api::{is_fallback_round, rerun_of};
use amalgam_proto::SiteId;
use amalgam_proto::codec::Encode;
use amalgam_store::HighWater;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

use crate::agent::SiteAgent;
use crate::error::AgentError;
use crate::model::model_digest;
use crate::round::{RoundOutcome, now_ms, pace};
use crate::statements::DeclineReason;
use crate::trainer::Trainer;
use crate::transport::{RoundResult, Transport, TransportError};

/// Name of a fallback round's sealed `SiteRound` in its round's namespace.
const FALLBACK_STATE: &str = "fallback";
/// Phase byte of its associated data (masking steps are 0..=7).
const FALLBACK_PHASE: u8 = 0x40;
/// Name of the instant (Unix ms) until which a fallback round's sealed state is kept when its
/// result did not come in time.
const FALLBACK_UNTIL: &str = "fallback-until";
/// Phase byte of its associated data.
const FALLBACK_UNTIL_PHASE: u8 = 0x41;
/// The fallback high-water file: one past the highest fallback round id this site claimed.
/// Apart from the masking mark, so that a fallback id (≥ 2^32) never blocks masking rounds.
const FALLBACK_HIGH_WATER: &str = "fallback.highwater";

/// A poll of a fallback round's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackPoll {
    /// The decoded sum (exact, not reduced) and the cohort.
    Published(RoundResult),
    /// Not yet: ask again (after `retry_after` if given).
    NotYet {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The fallback round aborted: no result will come.
    Aborted,
}

/// The aggregator's fallback routes as a site uses them. Every method is one request; the
/// agent retries with the identical bytes.
pub trait FallbackTransport {
    /// The committee's key-period certificates of key period `period` as the aggregator
    /// relays them (`GET /v1/committee/keys?period=p`); the site verifies each.
    fn committee_keys(&mut self, period: u64) -> Result<Vec<Vec<u8>>, TransportError>;
    /// Uploads this site's signed upload of fallback round `round`.
    fn fallback_upload(&mut self, round: u64, body: &[u8]) -> Result<(), TransportError>;
    /// SHA-256 of the upload the aggregator accepted from this site in `round` (`None`: none).
    fn fallback_mine(&mut self, round: u64) -> Result<Option<[u8; 32]>, TransportError>;
    /// Long-polls (up to `wait`) for the result of fallback round `round`.
    fn fallback_result(
        &mut self,
        round: u64,
        wait: Duration,
    ) -> Result<FallbackPoll, TransportError>;
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl SiteAgent {
    /// Runs fallback round `round` (a re-run of masking round `round − FALLBACK_ROUND_BASE`)
    /// against `transport`. The round's setup is derived here from the manifest and the
    /// committee's certificates, never taken from the aggregator. See the module doc for the
    /// order of the checks.
    pub fn run_fallback_round<T, R>(
        &mut self,
        transport: &mut T,
        trainer: &mut R,
        round: u64,
    ) -> Result<RoundOutcome, AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
        R: Trainer + ?Sized,
    {
        // A kept sealed round whose deadline passed can no longer get a result; its seed
        // (which opens this site's own ciphertext) is shredded before any network call.
        self.shred_expired_fallback_rounds()?;
        if !self.rules.fallback_allowed {
            return Err(AgentError::FallbackForbidden(round));
        }
        let rerun = rerun_of(round).ok_or(AgentError::WrongScheme(round))?;
        if rerun > self.rules.max_round {
            return Err(AgentError::RoundOutOfRange {
                round,
                max_round: self.rules.max_round,
            });
        }
        // Only the round this site holds the model of may be re-run: masking round r's re-run
        // starts from model_r, which the site holds as model_round r (it missed round r) or
        // r + 1 (round r aborted: model_r carried over). Any other id would let the aggregator
        // charge the site for rounds it never saw, or move its model chain off its own.
        let held = self.record.model_round;
        if rerun > held || rerun.saturating_add(1) < held {
            return Err(AgentError::FallbackSetup {
                round,
                reason: format!(
                    "it re-runs round {rerun}; this site holds the model of round {held}"
                ),
            });
        }
        // Holding model_{r+1} means round r either completed here or aborted: only an abort
        // may be re-run (a completed round's re-run would release the plant's data for round
        // r a second time and move its model chain off the other sites').
        if held == rerun.saturating_add(1) && self.record.last_aborted != Some(rerun) {
            return Err(AgentError::FallbackSetup {
                round,
                reason: format!("round {rerun} did not abort at this site: it is not re-run"),
            });
        }
        let setup = self.derive_setup(transport, round, rerun)?;
        self.check_setup(&setup, round)?;
        // Persisted state means the charge happened: resumed, never drawn again.
        if let Some(sr) = self.load_fallback(&setup)? {
            if now_ms() > self.fallback_until(round)? {
                // Its deadline passed: no result can come any more.
                return self.fallback_conclude(transport, round, Err(AgentError::Timeout(round)));
            }
            let outcome = self
                .fallback_send(transport, &setup, &sr, true)
                .and_then(|()| self.fallback_finish(transport, round, rerun, &setup));
            return self.fallback_conclude(transport, round, outcome);
        }
        self.fallback_rollback_check(transport, round, None)?;
        if let Some(high_water) = self.fallback_high_water()?
            && round <= high_water
        {
            return Err(AgentError::RoundReused { round, high_water });
        }
        // Nothing is sent for a decline: a missing upload only leaves the cohort smaller.
        if self.record.model_mismatch {
            return Ok(RoundOutcome::Declined(DeclineReason::ModelMismatch));
        }
        if self.record.aborted >= self.rules.max_aborted_rounds {
            return Ok(RoundOutcome::Declined(DeclineReason::AbortCapReached));
        }
        self.check_summary(transport)?;
        // The re-run is bound to the model masking round r was: the one this site holds.
        if !setup.accepts_model(rerun, &self.record.model_digest) {
            return Err(AgentError::FallbackSetup {
                round,
                reason: "its model window does not hold this site's model".into(),
            });
        }
        let request = RoundRequest::under(
            self.rules.dp,
            round,
            self.rules.consortium_digest,
            *setup.context(),
            SamplerKind::Fast,
        );
        // The attempt counts against the abort cap before the charge and is undone only by a
        // completion: a crash anywhere between the charge and the conclusion (training,
        // sealing) can never leave a charged re-run uncounted.
        self.record.aborted = self.record.aborted.saturating_add(1);
        self.save()?;
        let permit = match self.ledger.authorize(request) {
            Ok(p) => p,
            Err(LedgerError::BudgetExceeded { .. }) => {
                self.record.aborted = self.record.aborted.saturating_sub(1);
                self.save()?;
                // The refusal is in the ledger: the id is spent and the summary anchors it.
                self.advance_fallback_high_water(round)?;
                self.upload_summary(transport, round)?;
                return Ok(RoundOutcome::Declined(DeclineReason::BudgetExceeded));
            }
            // Left counted: whether the ledger charged is not known here.
            Err(e) => return Err(e.into()),
        };
        self.advance_fallback_high_water(round)?;
        let outcome = self.fallback_charged(transport, trainer, round, rerun, &setup, permit);
        self.fallback_conclude(transport, round, outcome)
    }

    /// The round's setup from the signed manifest, the committee's certificates of the
    /// round's key period (fetched through `transport`, each checked against the manifest by
    /// `fallback_setup`: consortium, member, signature, period and rounds; missing, extra or
    /// duplicate ones refused) and the model this site holds for the re-run masking round.
    /// An aggregator that relays its own keys, or another member's, is refused here, before
    /// any charge.
    fn derive_setup<T>(
        &mut self,
        transport: &mut T,
        round: u64,
        rerun: u64,
    ) -> Result<RoundSetup, AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
    {
        let bad = |reason: String| AgentError::FallbackSetup { round, reason };
        let manifest = self
            .rules
            .verified
            .clone()
            .ok_or_else(|| bad("no verified manifest to derive the setup from".into()))?;
        let period = period_of(&manifest, round).map_err(|e| bad(e.to_string()))?;
        let frames = self
            .options
            .retry
            .run(|| transport.committee_keys(period))?;
        let certs = frames
            .iter()
            .map(|b| PeriodCertificate::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("a committee certificate does not decode: {e}")))?;
        fallback_setup(
            &manifest,
            round,
            &[(rerun, self.record.model_digest)],
            &certs,
        )
        .map_err(|e| bad(e.to_string()))
    }

    /// Until when a sealed fallback round is kept waiting for its result (Unix ms; written
    /// before the sealed round, so a sealed round always has one).
    fn fallback_until(&self, round: u64) -> Result<u64, AgentError> {
        let bytes = self
            .store
            .get(FALLBACK_UNTIL, &self.aad(round, FALLBACK_UNTIL_PHASE))?
            .ok_or(AgentError::BadState("fallback deadline missing"))?;
        let a: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AgentError::BadState("fallback deadline"))?;
        Ok(u64::from_be_bytes(a))
    }

    /// Deletes every sealed fallback round whose keep-until deadline has passed (or that has
    /// none): no result can come for it any more, and its seed opens this site's individual
    /// ciphertext, which a malicious aggregator may keep. Run when the agent opens and before
    /// every fallback round, whatever the aggregator does.
    pub(crate) fn shred_expired_fallback_rounds(&mut self) -> Result<(), AgentError> {
        let now = now_ms();
        for round in self.store.rounds()? {
            if self.store.stored_aad(FALLBACK_STATE, round)?.is_none() {
                continue;
            }
            if self.fallback_until(round).is_ok_and(|t| now <= t) {
                continue;
            }
            self.store.delete_round(round)?;
        }
        Ok(())
    }

    /// The latest fallback round this site holds persisted state of (charged, not concluded):
    /// a restarted agent runs it again with the same setup before any new round.
    pub fn unfinished_fallback_round(&self) -> Result<Option<u64>, AgentError> {
        for round in self.store.rounds()?.into_iter().rev() {
            if self.store.stored_aad(FALLBACK_STATE, round)?.is_some() {
                return Ok(Some(round));
            }
        }
        Ok(None)
    }

    /// The highest fallback round id this site claimed.
    pub fn last_fallback_round(&self) -> Result<Option<u64>, AgentError> {
        self.fallback_high_water()
    }

    /// Everything the sum must agree on comes from the manifest and the round id: a setup of
    /// another round, bit width, length or site directory is refused before any charge.
    fn check_setup(&self, setup: &RoundSetup, round: u64) -> Result<(), AgentError> {
        let bad = |reason: &str| AgentError::FallbackSetup {
            round,
            reason: reason.into(),
        };
        if setup.round() != round {
            return Err(bad("it is the setup of another round"));
        }
        let p = setup.params();
        if p.input_bits() != self.rules.dp.bits.get() {
            return Err(bad("its input bits are not the manifest's bit width"));
        }
        if p.vector_len() != self.rules.params.d() {
            return Err(bad("its vector length is not the padded model length"));
        }
        if setup.sites().len() != self.rules.manifest.len()
            || setup.sites().key(SiteId(self.site))? != &self.identity.verifying_key()
        {
            return Err(bad("its site directory is not the manifest's"));
        }
        Ok(())
    }

    /// The persisted round of `setup`, if any (a state sealed for another setup of the same
    /// round id does not open: it is never re-encrypted under a second key).
    fn load_fallback(&self, setup: &RoundSetup) -> Result<Option<SiteRound>, AgentError> {
        let round = setup.round();
        if self.store.stored_aad(FALLBACK_STATE, round)?.is_none() {
            return Ok(None);
        }
        let bytes = self
            .store
            .get(FALLBACK_STATE, &self.aad(round, FALLBACK_PHASE))?
            .ok_or(AgentError::BadState("fallback state vanished"))?;
        Ok(Some(SiteRound::from_bytes(&bytes, setup)?))
    }

    /// After the charge: train, encode, draw the sealed round, persist it, send, finish.
    fn fallback_charged<T, R>(
        &mut self,
        transport: &mut T,
        trainer: &mut R,
        round: u64,
        rerun: u64,
        setup: &RoundSetup,
        permit: amalgam_dp::ledger::RoundPermit,
    ) -> Result<RoundOutcome, AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
        R: Trainer + ?Sized,
    {
        let encoded = self.train_and_encode(trainer, round, permit)?;
        if let Some(f) = self.observer.as_mut() {
            f(round, encoded.values());
        }
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| AgentError::BadState("no OS randomness"))?;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        // The fallback high-water mark (persisted above) is this site's claim on the id.
        let mut log = SiteRoundLog::new();
        let sr = SiteRound::draw(
            setup,
            &mut log,
            (rerun, self.record.model_digest),
            encoded.values().to_vec(),
            &mut rng,
        )?;
        drop(rng);
        // The round's collection and release windows are each at most the manifest's longest
        // phase: past both no result can come.
        let until = now_ms().saturating_add(self.rules.phase_timeout_ms.saturating_mul(2));
        self.store.put(
            FALLBACK_UNTIL,
            &self.aad(round, FALLBACK_UNTIL_PHASE),
            &until.to_be_bytes(),
        )?;
        self.store.put(
            FALLBACK_STATE,
            &self.aad(round, FALLBACK_PHASE),
            &sr.to_bytes(),
        )?;
        self.fallback_send(transport, setup, &sr, false)?;
        self.fallback_finish(transport, round, rerun, setup)
    }

    /// Builds the upload from the persisted round (deterministic in it) and sends it, retrying
    /// with the identical bytes; a resumed round first checks the aggregator's copy.
    fn fallback_send<T>(
        &mut self,
        transport: &mut T,
        setup: &RoundSetup,
        sr: &SiteRound,
        resumed: bool,
    ) -> Result<(), AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
    {
        let round = setup.round();
        let bytes = sr
            .upload(setup, SiteId(self.site), &self.identity)?
            .to_bytes();
        if resumed {
            self.fallback_rollback_check(transport, round, Some(&bytes))?;
        }
        crate::fault::fallback_point("persist", round);
        self.options
            .retry
            .run(|| transport.fallback_upload(round, &bytes))?;
        crate::fault::fallback_point("send", round);
        Ok(())
    }

    /// Long-polls the result (at most the manifest's longest phase wait past the upload) and
    /// applies it.
    fn fallback_finish<T>(
        &mut self,
        transport: &mut T,
        round: u64,
        rerun: u64,
        setup: &RoundSetup,
    ) -> Result<RoundOutcome, AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
    {
        let wait = self.options.poll_wait;
        let deadline = now_ms().saturating_add(self.rules.phase_timeout_ms);
        loop {
            let asked = std::time::Instant::now();
            match self
                .options
                .retry
                .run(|| transport.fallback_result(round, wait))?
            {
                FallbackPoll::Published(r) => return self.apply_fallback(round, rerun, setup, &r),
                FallbackPoll::Aborted => return Ok(RoundOutcome::Aborted),
                FallbackPoll::NotYet { retry_after } => {
                    if now_ms() > deadline {
                        return Err(AgentError::Timeout(round));
                    }
                    pace(asked, retry_after, self.options.retry.max);
                }
            }
        }
    }

    /// model_{r+1} from model_r and the fallback sum, decoded with the fallback round's
    /// encoding (its rotation seed). The sum is exact; reduced mod 2^b it is the sum a masking
    /// round would have published.
    fn apply_fallback(
        &mut self,
        round: u64,
        rerun: u64,
        setup: &RoundSetup,
        result: &RoundResult,
    ) -> Result<RoundOutcome, AgentError> {
        let c = &result.contributors;
        let n = self.rules.manifest.len();
        if !c.windows(2).all(|w| w[0] < w[1]) || c.iter().any(|&s| usize::from(s) >= n) {
            return Err(AgentError::BadResult(
                "contributors are not distinct manifest sites",
            ));
        }
        if c.len() < setup.min_cohort() || c.len() < self.rules.dp.min_cohort.get() as usize {
            return Err(AgentError::BadResult("a cohort below the minimum"));
        }
        if result.sum.len() != self.rules.params.d() {
            return Err(AgentError::BadResult("sum length"));
        }
        SiteCount::new(c.len() as u32)?;
        let mask = (1u64 << self.rules.dp.bits.get()) - 1;
        let sum: Vec<u64> = result.sum.iter().map(|v| v & mask).collect();
        let next = self.rules.weights.step(
            self.rules.encoding(round),
            &self.model,
            &sum,
            c,
            self.rules.server_lr,
        )?;
        let digest = model_digest(&next);
        self.model = next;
        self.record.model_digest = digest;
        self.record.model_round = rerun.saturating_add(1);
        Ok(RoundOutcome::FallbackCompleted {
            contributors: c.clone(),
            model_digest: digest,
        })
    }

    /// The epilogue of every charged fallback round: a round that did not complete counts
    /// against the abort cap; the record is persisted. A round whose result did not come in
    /// time (timeout, aggregator unreachable) keeps its sealed state until its deadline, so
    /// that a later run (after a restart too) re-sends the same upload and picks up a late
    /// result; any other end deletes the round's secrets and uploads the signed ledger summary
    /// (the anchor the next charge is checked against).
    fn fallback_conclude<T>(
        &mut self,
        transport: &mut T,
        round: u64,
        outcome: Result<RoundOutcome, AgentError>,
    ) -> Result<RoundOutcome, AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
    {
        // Counted before the charge (see `run_fallback_round`); a completion undoes it.
        if matches!(outcome, Ok(RoundOutcome::FallbackCompleted { .. })) {
            self.record.aborted = self.record.aborted.saturating_sub(1);
        }
        let late = matches!(
            outcome,
            Err(AgentError::Timeout(_) | AgentError::Transport(_))
        );
        let keep = late
            && self.store.stored_aad(FALLBACK_STATE, round)?.is_some()
            && self.fallback_until(round).is_ok_and(|t| now_ms() <= t);
        let saved = self.save();
        if keep {
            saved?;
            return outcome;
        }
        let deleted = self.store.delete_round(round);
        saved?;
        deleted?;
        // After an error the summary is still uploaded where the aggregator answers (the
        // charge must be anchored); its own failure does not hide the round's error.
        let summary = self.upload_summary(transport, round);
        let outcome = outcome?;
        summary?;
        Ok(outcome)
    }

    /// Refuses when the aggregator holds an upload of `round` from this site that local
    /// state does not know (none persisted, or other bytes): the state was restored from an
    /// older copy. Moves the fallback high-water mark past the round.
    fn fallback_rollback_check<T>(
        &mut self,
        transport: &mut T,
        round: u64,
        local: Option<&[u8]>,
    ) -> Result<(), AgentError>
    where
        T: Transport + FallbackTransport + ?Sized,
    {
        let Some(remote) = self.options.retry.run(|| transport.fallback_mine(round))? else {
            return Ok(());
        };
        if local.is_some_and(|b| sha256(b) == remote) {
            return Ok(());
        }
        self.advance_fallback_high_water(round)?;
        self.store.delete_round(round)?;
        Err(AgentError::RolledBack { round })
    }

    fn fallback_high_water(&self) -> Result<Option<u64>, AgentError> {
        Ok(HighWater::load(&self.dir.join(FALLBACK_HIGH_WATER))?
            .value()
            .checked_sub(1))
    }

    /// Moves the high-water mark of `round`'s kind past it (a fallback id never moves the
    /// masking mark: it would block every later masking round).
    pub(crate) fn advance_mark_of(&self, round: u64) -> Result<(), AgentError> {
        if is_fallback_round(round) {
            self.advance_fallback_high_water(round)
        } else {
            self.advance_high_water(round)
        }
    }

    fn advance_fallback_high_water(&self, round: u64) -> Result<(), AgentError> {
        let mut hw = HighWater::load(&self.dir.join(FALLBACK_HIGH_WATER))?;
        let value = round.saturating_add(1);
        if value > hw.value() {
            hw.advance(value)?;
        }
        Ok(())
    }
}
