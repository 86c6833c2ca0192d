//! One round, as a site runs it (spec `protocol-spec/site-agent.md`):
//!
//! 1. rollback check (the aggregator's copy of this site's latest message of the round);
//! 2. budget rules: the model chain, the abort cap, the ledger against the last uploaded
//!    summary, then the charge (a site over its cap or the abort cap declines here, before
//!    AdvertiseKeys, with a signed decline);
//! 3. training under the permit, DDG encoding, the sealed encoded update persisted;
//! 4. the masking protocol: every state persisted (sealed) before its upload is released,
//!    a rollback check before each phase, the persisted phase deadline;
//! 5. the published sum decoded, model_{r+1} computed here and compared with the
//!    aggregator's, the round's secrets deleted, a signed ledger summary uploaded.

use std::time::Instant;

use amalgam_dp::encoding::DdgCodec;
use amalgam_dp::ledger::audit::Anchor;
use amalgam_dp::ledger::{LedgerError, RoundRequest};
use amalgam_dp::params::SiteCount;
use amalgam_dp::sampler::SamplerKind;
use amalgam_proto::codec::{Decode, Encode};
use amalgam_proto::crypto::kdf::masking_round_context;
use amalgam_proto::messages::ToAggregator;
use amalgam_proto::site::{Outgoing, PhaseTimeout, Timestamp};
use amalgam_proto::{Phase, Site};
use rand_core::SeedableRng;

use crate::agent::{SiteAgent, UPDATE};
use crate::error::AgentError;
use crate::model::model_digest;
use crate::statements::{DeclineReason, LedgerSummary};
use crate::timing::{RoundTiming, Stage};
use crate::trainer::{GlobalModel, Permits, RoundInfo, Trainer};
use crate::transport::{Download, RoundResult, Transport};
use amalgam_net::api;

/// How a round ended for this site.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundOutcome {
    /// The round finished; the site's computed model_{r+1} matched the aggregator's.
    Completed {
        /// Contributors of the sum.
        contributors: Vec<u16>,
        /// Digest of model_{r+1}.
        model_digest: [u8; 32],
    },
    /// The round finished but the aggregator's model is not the one this site computed: the
    /// site declines the next rounds.
    ModelMismatch,
    /// The site declined before AdvertiseKeys (signed decline sent; no charge, no dropout).
    Declined(DeclineReason),
    /// The round was aborted after this site's charge (counts against the abort cap).
    Aborted,
    /// The site was left out of a later phase's set (charged; its input may be in the sum).
    Excluded,
    /// A fallback re-run finished: the site computed model_{r+1} from its published sum
    /// ([`crate::fallback`]).
    FallbackCompleted {
        /// The cohort whose inputs are in the sum.
        contributors: Vec<u16>,
        /// Digest of model_{r+1}.
        model_digest: [u8; 32],
    },
}

/// Shortest interval between two polls of the same thing: an aggregator answering a long
/// poll at once (or a 425 without `Retry-After`) cannot make the site loop hot.
pub const MIN_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Sleeps so that polls started at `asked` are at least [`MIN_POLL`] apart, or the server's
/// `Retry-After` (capped at `cap`) when it gave a longer one.
pub(crate) fn pace(
    asked: std::time::Instant,
    retry_after: Option<std::time::Duration>,
    cap: std::time::Duration,
) {
    let hint = retry_after.map_or(std::time::Duration::ZERO, |d| d.min(cap));
    let left = MIN_POLL.saturating_sub(asked.elapsed()).max(hint);
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The phase an upload answers.
fn upload_phase(msg: &ToAggregator) -> Phase {
    match msg {
        ToAggregator::AdvertiseKeys(_) => Phase::AdvertiseKeys,
        ToAggregator::ShareKeys(_) => Phase::ShareKeys,
        ToAggregator::MaskedInput(_) => Phase::MaskedInput,
        ToAggregator::ConsistencySignature(_) => Phase::ConsistencyCheck,
        ToAggregator::UnmaskShares(_) => Phase::Unmasking,
    }
}

impl SiteAgent {
    /// Runs round `round` (train, charge, mask, decode, next model) against `transport`.
    pub fn run_round<T: Transport + ?Sized, R: Trainer + ?Sized>(
        &mut self,
        transport: &mut T,
        trainer: &mut R,
        round: u64,
    ) -> Result<RoundOutcome, AgentError> {
        if round > self.rules.max_round {
            return Err(AgentError::RoundOutOfRange {
                round,
                max_round: self.rules.max_round,
            });
        }
        self.timing = RoundTiming::default();
        let now = now_ms();
        // A round with persisted state is resumed (before its deadline), never restarted.
        if let Some(site) = self.restore_round(round, now)? {
            // Persisted state means the charge happened: every exit goes through the epilogue.
            let outcome = self.resume(transport, round, site);
            return self.conclude(transport, round, outcome);
        }
        self.rollback_check(transport, round, None)?;
        if let Some(high_water) = self.high_water()?
            && round <= high_water
        {
            return Err(AgentError::RoundReused { round, high_water });
        }
        // A round the aggregator does not bind to a model is not joined (no charge); a decline
        // is signed over the context the aggregator binds the round to.
        let served = self
            .options
            .retry
            .run(|| transport.round_model(round))?
            .ok_or(AgentError::RoundNotBound(round))?;
        if self.record.model_mismatch {
            return self.decline(transport, round, &served, DeclineReason::ModelMismatch);
        }
        if self.record.aborted >= self.rules.max_aborted_rounds {
            return self.decline(transport, round, &served, DeclineReason::AbortCapReached);
        }
        self.check_summary(transport)?;
        // The model the aggregator binds this round to must be the one this site computed.
        if served != self.record.model_digest {
            // Only a site that holds model_r for this very round knows the aggregator is
            // wrong; one that missed a round declines this one and may follow a later one.
            if self.record.model_round == round {
                self.record.model_mismatch = true;
                self.save()?;
                return self.decline(transport, round, &served, DeclineReason::ModelMismatch);
            }
            // A site that missed a result follows the served model only if it recomputes it
            // from the chain itself (site-agent.md §5/§6): the aggregator's bytes or word
            // never move the model.
            if !self.catch_up(transport, round, &served)? {
                return self.decline(transport, round, &served, DeclineReason::ModelMismatch);
            }
        }

        // The charge: every parameter from the manifest and the round id.
        let params = self.rules.params;
        let context_digest = self.rules.context_digest(&self.record.model_digest);
        let round_context = masking_round_context(&context_digest, &params, round);
        let request = RoundRequest::under(
            self.rules.dp,
            round,
            self.rules.consortium_digest,
            round_context,
            SamplerKind::Fast,
        );
        // The record cap first: a run it would refuse declines the round before either
        // budget is spent.
        if self.record_refuses(round)? {
            return self.decline(
                transport,
                round,
                &served,
                DeclineReason::RecordBudgetExceeded,
            );
        }
        let permit = match self.ledger.authorize(request) {
            Ok(p) => p,
            Err(LedgerError::BudgetExceeded { .. }) => {
                return self.decline(transport, round, &served, DeclineReason::BudgetExceeded);
            }
            Err(e) => return Err(e.into()),
        };
        self.advance_high_water(round)?;
        // Charged from here on: whatever happens, the epilogue counts a round that did not
        // complete against the abort cap and deletes its secrets.
        let outcome = self.charged(transport, trainer, round, permit, context_digest);
        self.conclude(transport, round, outcome)
    }

    /// Resumes a round from its persisted state.
    fn resume<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
        site: Site,
    ) -> Result<RoundOutcome, AgentError> {
        self.rollback_check(transport, round, Some(&site))?;
        if let Some(out) = site.resend() {
            self.send(transport, &site, out)?;
        }
        self.drive(transport, site)
    }

    /// The part of a round after its charge: train, encode, mask, drive, finish.
    fn charged<T: Transport + ?Sized, R: Trainer + ?Sized>(
        &mut self,
        transport: &mut T,
        trainer: &mut R,
        round: u64,
        permit: amalgam_dp::ledger::RoundPermit,
        context_digest: [u8; 32],
    ) -> Result<RoundOutcome, AgentError> {
        let params = self.rules.params;
        let encoded = self.train_and_encode(trainer, round, permit)?;
        let t = Instant::now();
        let sealed = self.ledger.seal_update(&encoded)?;
        self.store.put(UPDATE, &self.aad(round, 0), &sealed)?;
        self.timing.add(Stage::Persistence, t);
        if let Some(f) = self.observer.as_mut() {
            f(round, encoded.values());
        }

        let timeout = PhaseTimeout::from_millis(self.rules.phase_timeout_ms)?;
        let t = Instant::now();
        let mut site = Site::with_context_digest(
            params,
            self.rules.manifest.clone(),
            context_digest,
            round,
            self.identity.clone(),
            timeout,
            &mut self.record.round_log,
        )?;
        self.timing.add(Stage::Masking, t);
        let t = Instant::now();
        self.save()?;
        self.timing.add(Stage::Persistence, t);
        let t = Instant::now();
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| AgentError::BadState("no OS randomness"))?;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        let out = site.start(encoded.values().to_vec(), Timestamp(now_ms()), &mut rng)?;
        drop(rng);
        self.timing.add(Stage::Masking, t);
        self.send(transport, &site, out)?;
        self.drive(transport, site)
    }

    /// Trains under `permit` and returns the noised, encoded update of `round`: the noise is
    /// drawn under the permit before the first training step, with `round`'s encoding (its
    /// rotation seed comes from the round id), once per charged round id.
    pub(crate) fn train_and_encode<R: Trainer + ?Sized>(
        &mut self,
        trainer: &mut R,
        round: u64,
        permit: amalgam_dp::ledger::RoundPermit,
    ) -> Result<amalgam_dp::encoding::EncodedUpdate, AgentError> {
        let started = Instant::now();
        let mut trained_for = std::time::Duration::ZERO;
        let out = self.train_and_encode_timed(trainer, round, permit, &mut trained_for);
        // Encoding is the whole call but the trainer's own time.
        let spent = started.elapsed().saturating_sub(trained_for);
        self.timing.encoding = self.timing.encoding.saturating_add(spent);
        out
    }

    fn train_and_encode_timed<R: Trainer + ?Sized>(
        &mut self,
        trainer: &mut R,
        round: u64,
        permit: amalgam_dp::ledger::RoundPermit,
        trained_for: &mut std::time::Duration,
    ) -> Result<amalgam_dp::encoding::EncodedUpdate, AgentError> {
        // The weight's scale before any noise is drawn or record permit taken, so that a site
        // without a weight wastes no charge.
        self.rules.weights.scale(self.site)?;
        let site_steps = permit.steps();
        let epsilon_total = permit.epsilon_total().get();
        let codec = DdgCodec::new(self.rules.encoding(round))?;
        let kind = self.rules.policy.kind();
        let noise = codec.draw_noise(permit, kind)?;
        // The record permit, charged before the first training step and consumed whole.
        let record = self.take_record_permit(round)?;
        let permits = Permits {
            round,
            site_steps,
            epsilon_total,
            local_steps: self.rules.local_steps,
            record,
        };
        // Training before joining: its duration never counts against a phase deadline.
        let info = RoundInfo {
            round,
            campaign_digest: self.rules.campaign_digest,
            local_steps: self.rules.local_steps,
        };
        let global = GlobalModel {
            digest: self.record.model_digest,
            values: &self.model,
        };
        let t = Instant::now();
        let trained = trainer.train(global, &info, &permits);
        *trained_for = t.elapsed();
        let trained = trained?;
        crate::record::check_reported(permits.record.as_ref(), trained.record_charge.as_ref())?;
        if trained.update.len() != self.rules.model_len {
            return Err(AgentError::Train(crate::trainer::TrainError::Shape {
                expected: self.rules.model_len,
                got: trained.update.len(),
            }));
        }
        let update: Vec<f64> = trained.update.iter().map(|&v| f64::from(v)).collect();
        // Declared weights: the update is clipped to C first and then scaled by
        // w_site / max w ≤ 1, so its norm stays within C (the site-level sensitivity the noise
        // is calibrated to) and the weight survives clipping. Noised weights: clipped, scaled by
        // the private w = min(n / n_cap, 1) and followed by κ·w, clipped jointly to C. Uniform
        // weights leave it as is (the encoder clips).
        let vector = self.rules.weights.site_vector(
            self.site,
            &update,
            trained.weight,
            self.rules.dp.clip,
        )?;
        codec.check_update(&vector)?;
        let encoded = codec.encode(noise, &vector)?;
        encoded.check_origin(&self.ledger.ledger_id(), kind)?;
        Ok(encoded)
    }

    /// Whether the record ledger would refuse `round`'s local run (false without record-level
    /// DP). A ledger behind its kept anchor is an error, not a decline.
    fn record_refuses(&self, round: u64) -> Result<bool, AgentError> {
        let Some(r) = self.record_dp.as_ref() else {
            return Ok(false);
        };
        self.check_kept_anchor(&r.ledger)?;
        let run_id = crate::record::record_run_id(
            &self.rules.consortium_digest,
            &self.rules.campaign_digest,
            round,
        );
        match r.ledger.check(&r.request(run_id, self.rules.local_steps)) {
            Ok(_) => Ok(false),
            Err(amalgam_dp::ledger::record::RecordLedgerError::BudgetExceeded { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes `round`'s record permit (its charge on disk, the kept anchor moved) and consumes
    /// it; `None` without record-level DP. Over the cap this is an error naming the cap.
    fn take_record_permit(
        &mut self,
        round: u64,
    ) -> Result<Option<amalgam_dp::ledger::record::RecordGrant>, AgentError> {
        let Some(r) = self.record_dp.as_ref() else {
            return Ok(None);
        };
        self.check_kept_anchor(&r.ledger)?;
        let run_id = crate::record::record_run_id(
            &self.rules.consortium_digest,
            &self.rules.campaign_digest,
            round,
        );
        let request = r.request(run_id, self.rules.local_steps);
        let Some(r) = self.record_dp.as_mut() else {
            return Ok(None);
        };
        let permit = r.ledger.authorize(request)?;
        let (dataset, ledger_id, anchor) = (
            r.ledger.policy().dataset,
            *permit.ledger_id(),
            permit.anchor(),
        );
        self.keep_record_anchor(&dataset, &ledger_id, &anchor)?;
        Ok(Some(permit.consume()))
    }

    /// Persists the state that produced `out`, then releases and uploads it (retrying with
    /// the identical bytes).
    fn send<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        site: &Site,
        out: Outgoing,
    ) -> Result<(), AgentError> {
        let snap = self.timing.time(Stage::Persistence, || site.snapshot());
        self.persist_snapshot(&snap)?;
        let t = Instant::now();
        let msg = out.release(&snap)?;
        let phase = upload_phase(&msg);
        let bytes = msg.to_bytes();
        self.timing.add(Stage::Masking, t);
        let round = site.round();
        // Releasing is local: nothing has left the site at this point.
        crate::fault::site_point("persist", phase, round);
        self.options
            .retry
            .run(|| transport.upload(round, phase, &bytes))?;
        crate::fault::site_point("send", phase, round);
        Ok(())
    }

    /// Waits for each download, checks for a rollback, answers, until the site is done.
    fn drive<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        mut site: Site,
    ) -> Result<RoundOutcome, AgentError> {
        let round = site.round();
        while !site.is_done() {
            let now = now_ms();
            if site.deadline().is_some_and(|d| Timestamp(now) > d) {
                return Err(AgentError::Timeout(round));
            }
            let phase = site.phase();
            let wait = self.options.poll_wait;
            let asked = std::time::Instant::now();
            let got = self
                .options
                .retry
                .run(|| transport.download(round, phase, wait))?;
            match got {
                Download::NotYet { retry_after } => {
                    pace(asked, retry_after, self.options.retry.max)
                }
                Download::Excluded => return Ok(RoundOutcome::Excluded),
                Download::Aborted => return Ok(RoundOutcome::Aborted),
                Download::Message(bytes) => {
                    self.rollback_check(transport, round, Some(&site))?;
                    let handled = self.timing.time(Stage::Masking, || {
                        site.handle_bytes(&bytes, Timestamp(now_ms()))
                    });
                    match handled {
                        Ok(out) => self.send(transport, &site, out)?,
                        Err(e) if site.is_done() => {
                            // The protocol aborted or abandoned the round (spec §5.1).
                            let snap = site.snapshot();
                            self.persist_snapshot(&snap)?;
                            return Err(e.into());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        self.finish(transport, round)
    }

    /// Fetches the published sum, computes model_{r+1} and checks the aggregator's.
    fn finish<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
    ) -> Result<RoundOutcome, AgentError> {
        let result = self
            .fetch_result(transport, round)?
            .ok_or(AgentError::Timeout(round))?;
        let t = Instant::now();
        let applied = self.apply_result(round, &result, true);
        self.timing.add(Stage::Encoding, t);
        applied
    }

    /// The contributor list the FedAvg step divides by comes from the aggregator: it must be
    /// manifest sites, strictly ascending, at least the threshold and the minimum cohort, and
    /// hold this site when its input is in the sum (it finished Unmasking).
    fn check_contributors(&self, result: &RoundResult, in_sum: bool) -> Result<(), AgentError> {
        let c = &result.contributors;
        let n = self.rules.params.n();
        let least = self
            .rules
            .params
            .t()
            .max(usize::from(self.rules.params.min_cohort().get()));
        if !c.windows(2).all(|w| w[0] < w[1]) || c.iter().any(|&s| usize::from(s) >= n) {
            return Err(AgentError::BadResult(
                "contributors are not distinct manifest sites",
            ));
        }
        if c.len() < least {
            return Err(AgentError::BadResult(
                "fewer contributors than the threshold",
            ));
        }
        if in_sum && !c.contains(&self.site) {
            return Err(AgentError::BadResult(
                "this site's input is in the sum but not listed",
            ));
        }
        Ok(())
    }

    /// Long-polls the published result of `round`, at most the manifest's longest phase wait
    /// (`None` when it did not come), never polling faster than [`MIN_POLL`].
    fn fetch_result<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
    ) -> Result<Option<RoundResult>, AgentError> {
        let wait = self.options.poll_wait;
        let deadline = now_ms().saturating_add(self.rules.phase_timeout_ms);
        loop {
            let asked = std::time::Instant::now();
            if let Some(r) = self.options.retry.run(|| transport.result(round, wait))? {
                return Ok(Some(r));
            }
            if now_ms() > deadline {
                return Ok(None);
            }
            pace(asked, None, self.options.retry.max);
        }
    }

    /// model_{r+1} from model_r (the model this site checked round r is bound to) and the
    /// published sum; compared with the aggregator's statement of it, when it makes one.
    fn apply_result(
        &mut self,
        round: u64,
        result: &RoundResult,
        in_sum: bool,
    ) -> Result<RoundOutcome, AgentError> {
        self.check_contributors(result, in_sum)?;
        SiteCount::new(result.contributors.len() as u32)?;
        // The aggregator computes model_{r+1} with this same function.
        let next = self.rules.weights.step(
            self.rules.encoding(round),
            &self.model,
            &result.sum,
            &result.contributors,
            self.rules.server_lr,
        )?;
        let digest = model_digest(&next);
        let outcome = if result.model_digest.is_none_or(|d| d == digest) {
            RoundOutcome::Completed {
                contributors: result.contributors.clone(),
                model_digest: digest,
            }
        } else {
            self.record.model_mismatch = true;
            RoundOutcome::ModelMismatch
        };
        self.model = next;
        self.record.model_digest = digest;
        self.record.model_round = round.saturating_add(1);
        Ok(outcome)
    }

    /// Recomputes the model for `round` from the one this site holds: for each round k in
    /// `model_round..round`, the published result of k steps the model with [`next_model`];
    /// a round without a result (aborted, or an id never opened) leaves it unchanged, so
    /// skipping or aborting rounds can never move the model off the chain. Adopts the
    /// recomputed model when its digest is the one `round` is bound to; `false` (nothing
    /// changed) otherwise, and when a result is not yet published or does not verify.
    fn catch_up<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
        served: &[u8; 32],
    ) -> Result<bool, AgentError> {
        let mut model = self.model.clone();
        for k in self.record.model_round..round {
            let result = match self
                .options
                .retry
                .run(|| transport.result(k, std::time::Duration::ZERO))
            {
                Ok(Some(r)) => r,
                // Round k is already over (a later one is open): a result not published is
                // unprovable, the site does not guess.
                Ok(None) => return Ok(false),
                // No result for k (aborted, never opened): model_k carries over.
                Err(crate::transport::TransportError::Refused { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if self.check_contributors(&result, false).is_err()
                || SiteCount::new(result.contributors.len() as u32).is_err()
            {
                return Ok(false);
            }
            model = match self.rules.weights.step(
                self.rules.encoding(k),
                &model,
                &result.sum,
                &result.contributors,
                self.rules.server_lr,
            ) {
                Ok(m) => m,
                Err(_) => return Ok(false),
            };
        }
        if model_digest(&model) != *served || model.iter().any(|v| !v.is_finite()) {
            return Ok(false);
        }
        self.model = model;
        self.record.model_digest = *served;
        self.record.model_round = round;
        self.save()?;
        Ok(true)
    }

    /// The epilogue of every charged round, on every exit path. A round that did not end
    /// `Completed` counts against the abort cap, unless this site still obtained its published
    /// result (an excluded, timed-out or disconnected site long-polls it and steps its model,
    /// so that it can follow the next round). The count is persisted before returning, the
    /// round's secrets are deleted, and the ledger summary uploaded.
    fn conclude<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
        outcome: Result<RoundOutcome, AgentError>,
    ) -> Result<RoundOutcome, AgentError> {
        let mut completed = matches!(outcome, Ok(RoundOutcome::Completed { .. }));
        match &outcome {
            // The result was fetched and refused (or applied): not fetched again.
            Ok(RoundOutcome::Completed { .. } | RoundOutcome::ModelMismatch)
            | Err(AgentError::BadResult(_) | AgentError::Model(_)) => {}
            Ok(RoundOutcome::Aborted) => {
                // No result will come: model_r carries over to the next round, and this
                // round's fallback re-run may start from it.
                self.record.model_round = round.saturating_add(1);
                self.record.last_aborted = Some(round);
            }
            _ => {
                if let Ok(Some(result)) = self.fetch_result(transport, round)
                    && let Ok(o) = self.apply_result(round, &result, false)
                {
                    completed = matches!(o, RoundOutcome::Completed { .. });
                }
            }
        }
        if !completed {
            self.record.aborted = self.record.aborted.saturating_add(1);
        }
        let saved = self.save();
        let deleted = self.store.delete_round(round);
        saved?;
        deleted?;
        let outcome = outcome?;
        self.upload_summary(transport, round)?;
        Ok(outcome)
    }

    /// Sends a signed decline and the ledger summary, and moves the high-water mark past the
    /// round (a declined round id is never joined later, and the summary uploaded for it
    /// does not read as a rollback at the next check). The decline is amalgam-net's
    /// [`api::decline_message`] over the context the aggregator binds the round to, the
    /// format its server verifies; it depends only on public parameters, and the reason
    /// stays local (it is the round's outcome).
    fn decline<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
        served: &[u8; 32],
        reason: DeclineReason,
    ) -> Result<RoundOutcome, AgentError> {
        use ed25519_dalek::Signer;
        let context = self.rules.context_digest(served);
        let body = self
            .identity
            .sign(&api::decline_message(&context, round))
            .to_bytes();
        self.advance_high_water(round)?;
        self.options.retry.run(|| transport.decline(round, &body))?;
        self.upload_summary(transport, round)?;
        Ok(RoundOutcome::Declined(reason))
    }

    pub(crate) fn upload_summary<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
    ) -> Result<(), AgentError> {
        let anchor = self.ledger.anchor();
        let body = LedgerSummary {
            consortium_digest: self.rules.consortium_digest,
            round,
            site: self.site,
            entries: anchor.entries as u64,
            head: anchor.head,
            epsilon: self.ledger.spent()?.get(),
            record: self.record_dp.as_ref().map(|r| r.published_anchor()),
        }
        .sign(&self.identity);
        self.options
            .retry
            .run(|| transport.upload_summary(round, &body))?;
        Ok(())
    }

    /// Before a charge (masking or fallback): the ledger must not be behind any summary this
    /// site signed that the aggregator holds, and no such summary's round may be past this
    /// site's high-water mark of its kind (the fallback mark for a fallback round id). With
    /// record-level DP on, the record ledger must also be the ledger, and not behind the
    /// anchor, that every such summary published for this dataset (record-dp.md §8): the
    /// published copy is out of the operator's reach, the kept one is not.
    pub(crate) fn check_summary<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
    ) -> Result<(), AgentError> {
        // Every summary this site signed must be at or behind its ledger: a restored older
        // ledger is behind at least one of them, whichever the aggregator labels latest.
        let all = self.options.retry.run(|| transport.summaries())?;
        for bytes in all {
            let s = LedgerSummary::verify(&bytes, &self.identity.verifying_key())?;
            if s.consortium_digest != self.rules.consortium_digest || s.site != self.site {
                return Err(AgentError::LedgerBehind(
                    "the aggregator's summary is for another consortium or site".into(),
                ));
            }
            let anchor = Anchor {
                entries: usize::try_from(s.entries)
                    .map_err(|_| AgentError::LedgerBehind("entry count".into()))?,
                head: s.head,
            };
            if let (Some(published), Some(r)) = (s.record.as_ref(), self.record_dp.as_ref()) {
                r.check_published(published)?;
            }
            let fallback = amalgam_net::fallback_api::is_fallback_round(s.round);
            if let Err(e) = self.ledger.check_anchor(&anchor) {
                self.advance_mark_of(s.round)?;
                return Err(AgentError::LedgerBehind(e.to_string()));
            }
            let mark = if fallback {
                self.last_fallback_round()?
            } else {
                self.high_water()?
            };
            if mark.is_none_or(|h| h < s.round) {
                self.advance_mark_of(s.round)?;
                return Err(AgentError::RolledBack { round: s.round });
            }
        }
        Ok(())
    }

    /// Refuses when the aggregator holds a message of `round` from this site that local
    /// state is behind: no local state, or a last upload of an earlier phase or with other
    /// bytes. Moves the high-water mark past the round.
    fn rollback_check<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        round: u64,
        site: Option<&Site>,
    ) -> Result<(), AgentError> {
        let Some(remote) = self.options.retry.run(|| transport.mine_latest(round))? else {
            return Ok(());
        };
        let local = site.and_then(|s| s.resend().map(|o| (s, o)));
        let consistent = match local {
            None => false,
            Some((s, out)) => {
                let mine = out.release(&s.snapshot())?;
                let mine_bytes = mine.to_bytes();
                if mine_bytes == remote {
                    true
                } else {
                    // The aggregator may be one message behind (a lost upload), never ahead.
                    let theirs = ToAggregator::from_bytes(&remote, &self.rules.params)
                        .map_err(|_| AgentError::BadState("aggregator's copy of our message"))?;
                    upload_phase(&theirs) < upload_phase(&mine)
                }
            }
        };
        if consistent {
            return Ok(());
        }
        self.advance_high_water(round)?;
        self.store.delete_round(round)?;
        Err(AgentError::RolledBack { round })
    }
}
