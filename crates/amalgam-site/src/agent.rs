//! The site agent's persistent part: its state directory, its ledger, its record (round log,
//! aborted-round count, model chain) and the sealed round state. The round itself is driven
//! in [`crate::round`].
//!
//! State directory layout (0700): `state.key` (0600, the state key), `sealed/` (0700:
//! `amalgam_store::SealedStore`, every file sealed with the state key and bound to the
//! consortium, site, round, phase and format version; `round-<r>/` holds round r's secrets and
//! is deleted when the round ends), `agent/` (0700: a second `SealedStore` under the same key
//! holding agent-wide state, the record and the model, outside any round's namespace, so that
//! no round id the aggregator names can delete it), `round.highwater` (one past the highest round id this site ever claimed
//! or saw itself in; `amalgam_store::HighWater`) and the ε ledger
//! ([`amalgam_dp::ledger::ledger_file_name`]).

use std::path::{Path, PathBuf};

use amalgam_dp::ledger::{Ledger, ledger_file_name};
use amalgam_proto::site::{RoundLog, SiteSnapshot};
use amalgam_proto::{Site, SiteRestore};
use ed25519_dalek::SigningKey;

use amalgam_store::{HighWater, SealedStore, StateAad, StateKey};

use crate::error::AgentError;
use crate::model::model_digest;
use crate::record::{KEPT_DATASET, RecordDp, decode_kept, encode_kept, kept_anchor_name};
use crate::retry::RetryPolicy;
use crate::rules::ConsortiumRules;

/// Name of the state key file inside a state directory.
pub const STATE_KEY_FILE: &str = "state.key";
/// The round of agent-wide state in its own store (`agent/`, never a round's store).
const AGENT_ROUND: u64 = 0;
/// Name of a round's protocol state (its phase is in the sealed header and the AAD).
const STATE: &str = "state";
/// Name of a round's sealed encoded update.
pub(crate) const UPDATE: &str = "update";

/// Format version of the agent's sealed files.
const VERSION: u8 = 1;
/// Name of the agent record.
const RECORD: &str = "agent.record";
/// The model file of agent-wide state before models were named by their digest: read when
/// no named file exists, removed once a named one is written.
const LEGACY_MODEL: &str = "agent.model";

/// The name of the agent-wide model file holding the model with digest `digest`: a new model
/// never overwrites the file the persisted record names, so a crash between the two writes
/// reopens on the model the record names.
fn model_name(digest: &[u8; 32]) -> String {
    format!("agent.model-{}", hex::encode(&digest[..16]))
}

/// Highest snapshot step (proto spec §8 state tags 1..=7).
const MAX_STEP: u8 = 7;

/// Tunables of the agent (not protocol parameters).
#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    /// Retries of each request.
    pub retry: RetryPolicy,
    /// Long-poll wait of each download request.
    pub poll_wait: std::time::Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            poll_wait: std::time::Duration::from_secs(30),
        }
    }
}

/// A callback given (round, encoded update values) before masking.
pub type EncodedObserver = Box<dyn FnMut(u64, &[u64]) + Send>;

/// The persisted record: everything but the ledger and a round's own state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) round_log: RoundLog,
    /// Rounds this site was charged for that did not complete.
    pub(crate) aborted: u32,
    /// Set when the aggregator served a model that is not the one this site computed.
    pub(crate) model_mismatch: bool,
    /// Digest of the current global model.
    pub(crate) model_digest: [u8; 32],
    /// The round the current model is model_r of: one past the round whose published result
    /// produced it (or that aborted without one); 0 for the initial weights. Only when it is
    /// the round being joined does a different bound model prove the aggregator wrong.
    pub(crate) model_round: u64,
    /// The last masking round this site was charged for that aborted (no published result):
    /// the only round whose fallback re-run a site holding model_{r+1} = model_r may join. A
    /// completed round is never re-run: its re-run would be a second release of the plant's
    /// data for that round and would move the model chain off the other sites'.
    pub(crate) last_aborted: Option<u64>,
}

impl Record {
    fn to_bytes(&self) -> Vec<u8> {
        let log = self.round_log.to_bytes();
        let mut b = Vec::with_capacity(log.len() + 49);
        b.extend_from_slice(&(log.len() as u32).to_be_bytes());
        b.extend_from_slice(&log);
        b.extend_from_slice(&self.aborted.to_be_bytes());
        b.push(u8::from(self.model_mismatch));
        b.extend_from_slice(&self.model_digest);
        b.extend_from_slice(&self.model_round.to_be_bytes());
        match self.last_aborted {
            None => b.extend_from_slice(&[0; 9]),
            Some(r) => {
                b.push(1);
                b.extend_from_slice(&r.to_be_bytes());
            }
        }
        b
    }

    fn from_bytes(b: &[u8]) -> Result<Self, AgentError> {
        let bad = || AgentError::BadState("agent record");
        let len =
            u32::from_be_bytes(b.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        let log_end = 4usize.checked_add(len).ok_or_else(bad)?;
        // Records written before `last_aborted` existed end after the model round.
        let base = log_end + 4 + 1 + 32 + 8;
        if b.len() != base && b.len() != base + 9 {
            return Err(bad());
        }
        let round_log = RoundLog::from_bytes(&b[4..log_end])?;
        let aborted = u32::from_be_bytes(b[log_end..log_end + 4].try_into().map_err(|_| bad())?);
        let model_mismatch = match b[log_end + 4] {
            0 => false,
            1 => true,
            _ => return Err(bad()),
        };
        let model_digest = b[log_end + 5..log_end + 37].try_into().map_err(|_| bad())?;
        let model_round = u64::from_be_bytes(b[log_end + 37..base].try_into().map_err(|_| bad())?);
        let last_aborted = match b.get(base..) {
            None | Some([]) => None,
            Some([0, rest @ ..]) if rest.iter().all(|&x| x == 0) => None,
            Some([1, rest @ ..]) => Some(u64::from_be_bytes(rest.try_into().map_err(|_| bad())?)),
            Some(_) => return Err(bad()),
        };
        Ok(Self {
            round_log,
            aborted,
            model_mismatch,
            model_digest,
            model_round,
            last_aborted,
        })
    }
}

/// One site's agent: identity, consortium rules, state directory, ledger.
pub struct SiteAgent {
    pub(crate) rules: ConsortiumRules,
    pub(crate) identity: SigningKey,
    pub(crate) site: u16,
    pub(crate) dir: PathBuf,
    pub(crate) store: SealedStore,
    /// Agent-wide state (record, model), apart from every round's namespace.
    pub(crate) agent_store: SealedStore,
    pub(crate) ledger: Ledger,
    pub(crate) record: Record,
    pub(crate) model: Vec<f32>,
    pub(crate) options: AgentOptions,
    pub(crate) observer: Option<EncodedObserver>,
    /// Record-level DP of every local run, when enabled ([`SiteAgent::enable_record_dp`]).
    pub(crate) record_dp: Option<RecordDp>,
    /// Where the current (or last) round's time went ([`SiteAgent::round_timing`]).
    pub(crate) timing: crate::timing::RoundTiming,
    /// Digest of the model whose named file the agent store holds (last written or loaded):
    /// [`SiteAgent::save`] writes the model only when it changed, since the state is saved
    /// before every upload but the model changes once per round.
    pub(crate) stored_model: Option<[u8; 32]>,
}

impl core::fmt::Debug for SiteAgent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SiteAgent")
            .field("site", &self.site)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SiteAgent {
    /// Opens (or initialises, with `initial_model` as the campaign's initial weights) the
    /// agent whose state lives in `dir`. The ledger records the manifest's epoch if it is not
    /// the one in force.
    pub fn open(
        dir: &Path,
        identity: SigningKey,
        rules: ConsortiumRules,
        initial_model: &[f32],
        options: AgentOptions,
    ) -> Result<Self, AgentError> {
        rules.check()?;
        if initial_model.len() != rules.model_len {
            return Err(AgentError::BadState("initial model length"));
        }
        let site = rules
            .manifest
            .index_of(&identity.verifying_key())
            .ok_or(AgentError::BadState(
                "identity key is not a site of the manifest",
            ))?
            .0;
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(amalgam_store::StoreError::from)?;
        }
        amalgam_store::refuse_network_fs(dir)?;
        let key = StateKey::load_or_generate(&dir.join(STATE_KEY_FILE))?;
        let store = SealedStore::open(&dir.join("sealed"), key)?;
        let agent_store = SealedStore::open(
            &dir.join("agent"),
            StateKey::load(&dir.join(STATE_KEY_FILE))?,
        )?;
        let (mut ledger, _report) = Ledger::open(
            &dir.join(ledger_file_name(rules.policy.unit)),
            identity.clone(),
            rules.policy,
        )?;
        let in_force = ledger.epoch_in_force();
        let same = matches!(in_force, Some((d, e, p))
            if d == rules.consortium_digest && e == rules.epoch && p == rules.dp);
        if !same {
            ledger.record_epoch(rules.consortium_digest, rules.epoch, rules.dp)?;
        }
        let mut agent = Self {
            rules,
            identity,
            site,
            dir: dir.to_owned(),
            store,
            agent_store,
            ledger,
            record: Record {
                round_log: RoundLog::new(),
                aborted: 0,
                model_mismatch: false,
                model_digest: model_digest(initial_model),
                model_round: 0,
                last_aborted: None,
            },
            model: initial_model.to_vec(),
            options,
            observer: None,
            record_dp: None,
            timing: Default::default(),
            stored_model: None,
        };
        let aad = agent.aad(AGENT_ROUND, 0);
        match agent.agent_store.get(RECORD, &aad)? {
            Some(bytes) => {
                agent.record = Record::from_bytes(&bytes)?;
                let named = agent
                    .agent_store
                    .get(&model_name(&agent.record.model_digest), &aad)?;
                let is_named = named.is_some();
                let model = match named {
                    Some(m) => m,
                    None => agent
                        .agent_store
                        .get(LEGACY_MODEL, &aad)?
                        .ok_or(AgentError::BadState("model missing"))?,
                };
                agent.model = decode_model(&model)?;
                if model_digest(&agent.model) != agent.record.model_digest {
                    return Err(AgentError::BadState("model digest"));
                }
                agent.stored_model = is_named.then_some(agent.record.model_digest);
                if is_named {
                    agent.remove_other_models()?;
                }
            }
            None => {
                if let Some(d) = agent.rules.initial_weights_digest
                    && d != agent.record.model_digest
                {
                    return Err(AgentError::BadState(
                        "initial model is not the campaign's initial weights",
                    ));
                }
                agent.save()?
            }
        }
        agent.shred_expired_fallback_rounds()?;
        Ok(agent)
    }

    /// Sees every encoded (noised) update this site masks, before it is masked: for an
    /// operator's own audit and for tests. Nothing leaves the site through it.
    pub fn set_encoded_observer(&mut self, f: EncodedObserver) {
        self.observer = Some(f);
    }

    /// Charges every local run from now on to `record`'s dataset ledger (site-agent.md §3.1).
    /// Refused when the ledger is behind the anchor this site kept after its last record
    /// charge, or is another ledger of the same dataset.
    pub fn enable_record_dp(&mut self, record: RecordDp) -> Result<(), AgentError> {
        self.check_kept_anchor(&record.ledger)?;
        self.record_dp = Some(record);
        Ok(())
    }

    /// The record ledger, when record-level DP is enabled.
    pub fn record_ledger(&self) -> Option<&amalgam_dp::ledger::record::RecordLedger> {
        self.record_dp.as_ref().map(|r| &r.ledger)
    }

    /// Refuses `ledger` when it is behind the kept anchor of its dataset or is not the ledger
    /// that anchor was kept for, and when this state already charged another record dataset:
    /// the same records under a second dataset name would start a second budget.
    pub(crate) fn check_kept_anchor(
        &self,
        ledger: &amalgam_dp::ledger::record::RecordLedger,
    ) -> Result<(), AgentError> {
        let kept = self
            .agent_store
            .get(KEPT_DATASET, &self.aad(AGENT_ROUND, 0))?;
        if let Some(kept) = kept
            && kept.as_slice() != ledger.policy().dataset.as_slice()
        {
            return Err(AgentError::RecordRun(format!(
                "this site charged record dataset {} before; one site charges one record \
                 dataset in a consortium (another --record-dataset name for the same records \
                 would start a second budget)",
                hex::encode(&kept)
            )));
        }
        let name = kept_anchor_name(&ledger.policy().dataset);
        if let Some(bytes) = self.agent_store.get(&name, &self.aad(AGENT_ROUND, 0))? {
            let (id, anchor) = decode_kept(&bytes)?;
            if id != ledger.ledger_id() {
                return Err(AgentError::RecordRun(
                    "this dataset's record ledger is not the one this site charged before \
                     (was it deleted and started afresh?)"
                        .into(),
                ));
            }
            ledger.check_anchor(&anchor)?;
        }
        Ok(())
    }

    /// Keeps the record ledger's anchor after a charge (sealed, atomic).
    pub(crate) fn keep_record_anchor(
        &self,
        dataset: &[u8; 32],
        ledger_id: &[u8; 32],
        anchor: &amalgam_dp::ledger::audit::Anchor,
    ) -> Result<(), AgentError> {
        let aad = self.aad(AGENT_ROUND, 0);
        if self.agent_store.get(KEPT_DATASET, &aad)?.is_none() {
            self.agent_store.put(KEPT_DATASET, &aad, dataset)?;
        }
        self.agent_store.put(
            &kept_anchor_name(dataset),
            &self.aad(AGENT_ROUND, 0),
            &encode_kept(ledger_id, anchor),
        )?;
        Ok(())
    }

    /// The site's index in the manifest.
    pub fn site(&self) -> u16 {
        self.site
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Where the last round [`SiteAgent::run_round`] ran (or the current one) spent its time
    /// in the agent's own stages; reset when a round starts.
    pub fn round_timing(&self) -> crate::timing::RoundTiming {
        self.timing
    }

    /// The current global model and its digest.
    pub fn model(&self) -> (&[f32], [u8; 32]) {
        (&self.model, self.record.model_digest)
    }

    /// The highest round id this site claimed or saw itself in (its next round must be above).
    pub fn last_round(&self) -> Result<Option<u64>, AgentError> {
        self.high_water()
    }

    /// The latest round this site holds persisted masking state of: it was charged for it and
    /// stopped (a crash, a kill) before the round's epilogue deleted that state. `run_round`
    /// resumes such a round from that state (or refuses it when the aggregator's copy shows
    /// the state is older than what it sent); a restarted agent runs it before any new round.
    pub fn unfinished_round(&self) -> Result<Option<u64>, AgentError> {
        for round in self.store.rounds()?.into_iter().rev() {
            if self.store.stored_aad(STATE, round)?.is_some() {
                return Ok(Some(round));
            }
        }
        Ok(None)
    }

    /// Rounds this site was charged for that did not complete.
    pub fn aborted_rounds(&self) -> u32 {
        self.record.aborted
    }

    /// The associated data of a sealed file of `round` at `phase`.
    pub(crate) fn aad(&self, round: u64, phase: u8) -> StateAad {
        StateAad {
            consortium_digest: self.rules.consortium_digest,
            site: self.site,
            round,
            phase,
            version: VERSION,
        }
    }

    /// Deletes every model file but the one the record names: a kill between a record and
    /// the deletion of the model before it, or after a model no record came to name, leaves
    /// one behind.
    fn remove_other_models(&self) -> Result<(), AgentError> {
        let keep = model_name(&self.record.model_digest);
        for name in self.agent_store.names(AGENT_ROUND)? {
            if name != keep && (name == LEGACY_MODEL || name.starts_with("agent.model-")) {
                self.agent_store.delete(&name, AGENT_ROUND)?;
            }
        }
        Ok(())
    }

    /// Persists the record and the model (sealed, atomic). A changed model goes to its own
    /// file first, then the record that names it; the file of the model before is removed
    /// only after that, so every crash point reopens on a record and the model it names.
    pub(crate) fn save(&mut self) -> Result<(), AgentError> {
        let aad = self.aad(AGENT_ROUND, 0);
        let digest = self.record.model_digest;
        let replaced = match self.stored_model {
            Some(d) if d == digest => None,
            before => {
                // The model is hashed only when it is written: it goes under the name the
                // record gives it, so one the record does not name is never written.
                if model_digest(&self.model) != digest {
                    return Err(AgentError::BadState("the record names another model"));
                }
                self.agent_store
                    .put(&model_name(&digest), &aad, &encode_model(&self.model))?;
                self.stored_model = Some(digest);
                Some(before)
            }
        };
        self.agent_store
            .put(RECORD, &aad, &self.record.to_bytes())?;
        match replaced {
            Some(Some(old)) => self.agent_store.delete(&model_name(&old), AGENT_ROUND)?,
            Some(None) => self.agent_store.delete(LEGACY_MODEL, AGENT_ROUND)?,
            None => {}
        }
        Ok(())
    }

    /// The high-water file.
    pub(crate) fn high_water_path(&self) -> PathBuf {
        self.dir.join("round.highwater")
    }

    /// The highest round id this site claimed or saw itself in (the file holds it plus one,
    /// so that round 0 can be claimed).
    pub(crate) fn high_water(&self) -> Result<Option<u64>, AgentError> {
        Ok(HighWater::load(&self.high_water_path())?
            .value()
            .checked_sub(1))
    }

    /// Raises the high-water mark to `round` (never lowers it).
    pub(crate) fn advance_high_water(&self, round: u64) -> Result<(), AgentError> {
        let mut hw = HighWater::load(&self.high_water_path())?;
        let value = round.saturating_add(1);
        if value > hw.value() {
            hw.advance(value)?;
        }
        Ok(())
    }

    /// Persists `snap` (the state a transition produced) durably, then records it in the
    /// round log and persists the record: only then may its upload be released.
    pub(crate) fn persist_snapshot(&mut self, snap: &SiteSnapshot) -> Result<(), AgentError> {
        let t = std::time::Instant::now();
        let out = self.persist_snapshot_untimed(snap);
        self.timing.add(crate::timing::Stage::Persistence, t);
        out
    }

    fn persist_snapshot_untimed(&mut self, snap: &SiteSnapshot) -> Result<(), AgentError> {
        let round = snap.round();
        let step = snap.step();
        self.store
            .put(STATE, &self.aad(round, step), snap.bytes())?;
        self.record.round_log.record(snap)?;
        self.save()?;
        Ok(())
    }

    /// The latest persisted state of `round`, restored (`None` when there is none).
    pub(crate) fn restore_round(
        &mut self,
        round: u64,
        now: u64,
    ) -> Result<Option<Site>, AgentError> {
        let ctx = SiteRestore {
            identity: self.identity.clone(),
            manifest: self.rules.manifest.clone(),
        };
        restore_latest(
            &self.store,
            &self.rules,
            self.site,
            round,
            &ctx,
            now,
            &mut self.record.round_log,
        )
    }
}

/// Restores the persisted state of `round` in `store`: the header names its step, the AEAD
/// checks that and everything else.
fn restore_latest(
    store: &SealedStore,
    rules: &ConsortiumRules,
    site: u16,
    round: u64,
    ctx: &SiteRestore,
    now: u64,
    log: &mut RoundLog,
) -> Result<Option<Site>, AgentError> {
    let Some(header) = store.stored_aad(STATE, round)? else {
        return Ok(None);
    };
    if !(1..=MAX_STEP).contains(&header.phase) {
        return Err(AgentError::BadState("state step"));
    }
    let aad = StateAad {
        consortium_digest: rules.consortium_digest,
        site,
        round,
        phase: header.phase,
        version: VERSION,
    };
    let bytes = store
        .get(STATE, &aad)?
        .ok_or(AgentError::BadState("state vanished"))?;
    let site = Site::restore(&bytes, ctx, amalgam_proto::site::Timestamp(now), log)?;
    Ok(Some(site))
}

/// The upload the persisted state of `round` would (re-)send, read from disk: what a
/// persist-before-send check compares each upload with.
pub fn persisted_upload(
    state_dir: &Path,
    rules: &ConsortiumRules,
    identity: &SigningKey,
    round: u64,
) -> Result<Option<Vec<u8>>, AgentError> {
    use amalgam_proto::codec::Encode;
    let key = StateKey::load(&state_dir.join(STATE_KEY_FILE))?;
    let store = SealedStore::open(&state_dir.join("sealed"), key)?;
    let site = rules
        .manifest
        .index_of(&identity.verifying_key())
        .ok_or(AgentError::BadState(
            "identity key is not a site of the manifest",
        ))?
        .0;
    let ctx = SiteRestore {
        identity: identity.clone(),
        manifest: rules.manifest.clone(),
    };
    let mut log = RoundLog::new();
    let Some(site) = restore_latest(&store, rules, site, round, &ctx, 0, &mut log)? else {
        return Ok(None);
    };
    let Some(out) = site.resend() else {
        return Ok(None);
    };
    Ok(Some(out.release(&site.snapshot())?.to_bytes()))
}

fn encode_model(values: &[f32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 4 * values.len());
    b.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn decode_model(b: &[u8]) -> Result<Vec<f32>, AgentError> {
    let bad = || AgentError::BadState("model");
    let n = u64::from_le_bytes(b.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let body = &b[8..];
    if n.checked_mul(4) != Some(body.len() as u64) {
        return Err(bad());
    }
    Ok(body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
