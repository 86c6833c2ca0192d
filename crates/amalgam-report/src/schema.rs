//! The JSON schema of `report.json` (version [`SCHEMA`]). Field order is the order the page
//! shows. Every field is public data about the campaign: no update, noise value, seed of a
//! secret or key ever enters a report.

use serde::{Deserialize, Serialize};

/// Schema identifier written into every report; a reader refuses any other.
pub const SCHEMA: &str = "amalgam-simulate-report/1";

/// Largest `report.json` a reader accepts (a campaign of 10^4 rounds × 255 plants fits).
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

/// Why a report could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_REPORT_BYTES`].
    #[error("{path}: {len} bytes, over the {max}-byte limit of a report")]
    TooLarge {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Not valid JSON of this schema.
    #[error("{path}: not a simulation report: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// The decoder's message (line and column).
        reason: String,
    },
    /// Another schema version.
    #[error("{path}: schema {found:?}, this build reads {SCHEMA:?}")]
    Schema {
        /// The file.
        path: String,
        /// The schema it names.
        found: String,
    },
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// What was run.
    pub campaign: Campaign,
    /// The privacy setting in force (the page's first line is derived from it).
    pub privacy: PrivacySetting,
    /// Protocol parameters printed on the page: t, c, m, n_min.
    pub protocol: ProtocolFigures,
    /// One row per campaign round, in order.
    pub rounds: Vec<RoundRow>,
    /// Test-set figures of every compared model.
    pub models: Vec<ModelFigures>,
    /// ε spent per plant and privacy unit at the end of the campaign (from verified ledgers).
    pub epsilon: Vec<EpsilonRow>,
    /// Where a round's time went.
    pub time_share: Option<TimeShare>,
    /// The ε-versus-F1 curve (each point a full campaign), when measured.
    pub curve: Vec<CurvePoint>,
    /// Files written next to the report (relative names), e.g. the TorchScript export.
    pub exports: Vec<String>,
    /// Record-level DP-SGD inside each plant (`simulate --record-dp`), from each plant's
    /// audited record ledger: another privacy unit than `epsilon`'s, kept in its own rows so
    /// neither figure is read as the other. Empty without record-level DP.
    #[serde(default)]
    pub record_level: Vec<RecordRow>,
    /// The record-level ε-versus-F1 curve of an `amalgam sweep --record-epsilons` file, when
    /// one was given (`--record-curve`).
    #[serde(default)]
    pub record_curve: Option<crate::record_curve::RecordCurve>,
    /// Under a mode split, each plant's never-seen rule modes and every model's recall on
    /// them (`crate::unseen`); empty under the type split.
    #[serde(default)]
    pub unseen_modes: Vec<crate::unseen::UnseenModes>,
}

/// One plant's record-level guarantee at the end of the campaign: the privacy unit is one
/// training record of that plant's own dataset (add/remove), δ is relative to its record
/// count, and ε covers every run charged to the dataset's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRow {
    /// Plant index.
    pub plant: u16,
    /// Dataset id (SHA-256 of the plant's data file), hex.
    pub dataset: String,
    /// N_i, the plant's declared record count (public).
    pub records: u64,
    /// δ of the statement.
    pub delta: f64,
    /// ε cap of the dataset.
    pub epsilon_cap: f64,
    /// ε spent, re-accounted from the verified ledger.
    pub epsilon_spent: f64,
    /// Poisson sampling rate q of each step.
    pub q: f64,
    /// Per-example clip norm C_rec.
    pub clip: f64,
    /// Noise multipliers z = σ/Δ of the charged runs (one per distinct run mechanism).
    pub noise_multipliers: Vec<f64>,
    /// Local runs charged.
    pub runs: usize,
    /// Noisy steps over those runs.
    pub steps: u64,
    /// Head of the record ledger (hex), the anchor an auditor checks.
    pub ledger_head: String,
}

/// What was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// SHA-256 (hex) of the exact campaign configuration file the run used.
    pub config_digest: String,
    /// Consortium digest (hex) of the signed manifest.
    pub consortium_digest: String,
    /// The model, e.g. `builtin:mlp-ai4i`.
    pub model: String,
    /// Number of trained parameters.
    pub parameters: u64,
    /// Number of plants.
    pub plants: u16,
    /// The split kind (`type`, `mode`, `mode-exclusive`).
    pub split: String,
    /// Public split seed (data dealing only).
    pub split_seed: u64,
    /// Weight-initialisation seed.
    pub init_seed: u64,
    /// Rounds run.
    pub rounds: u32,
    /// Planned dropout rate per round (share of plants that skip a round).
    pub dropout_rate: f64,
    /// Bits per value of the upload (b).
    pub bits: u32,
    /// The aggregation weights, as a sentence (`uniform ...` or `noised ...`, with the public
    /// n_cap, κ and floor). Reports written before the field existed were uniform.
    #[serde(default = "uniform_weights")]
    pub weights: String,
    /// `true` for `amalgam simulate`: one operator ran every party, so the report carries
    /// "single-operator simulation: no separation of duties".
    pub single_operator: bool,
    /// Wall time of the whole campaign, seconds.
    pub wall_seconds: f64,
}

fn uniform_weights() -> String {
    "uniform (every contributing plant counts once)".into()
}

/// The privacy setting of the campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PrivacySetting {
    /// `privacy = none`: every round recorded with ε = ∞.
    None,
    /// Site-level DP (one plant's whole update per round).
    SiteLevel {
        /// L2 clip norm C of a site's update.
        clip: f64,
        /// Central noise standard deviation σ.
        sigma: f64,
        /// δ.
        delta: f64,
        /// Cap on cumulative ε per plant.
        epsilon_cap: f64,
        /// The accountant that produced the ε figures.
        accountant: String,
    },
}

/// Protocol parameters of the rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolFigures {
    /// Shamir threshold t.
    pub threshold: u16,
    /// Tolerated colluders c.
    pub colluders: u16,
    /// Tolerated dropouts m.
    pub dropouts: u16,
    /// Minimum cohort n_min.
    pub min_cohort: u16,
}

/// One campaign round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRow {
    /// Round id.
    pub round: u64,
    /// Plants whose input entered the sum.
    pub survivors: u16,
    /// Cumulative ε per plant after the round (index = plant; `null` = ∞, no DP).
    pub epsilon: Vec<Option<f64>>,
    /// Training loss of the global model after the round on the pooled validation rows
    /// (computed by the harness; production sites never send loss to the aggregator).
    pub loss: Option<f64>,
    /// Validation F1 of the global model after the round (harness-computed).
    pub val_f1: Option<f64>,
    /// Wall time of the round, seconds.
    pub seconds: f64,
}

/// The kind of a compared model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// The campaign's global model.
    Federated,
    /// The global model fine-tuned at one plant.
    FineTuned,
    /// A plant's model trained on its own rows only.
    LocalOnly,
    /// Same architecture and recipe on the pooled training rows.
    Centralized,
}

/// Test-set figures of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFigures {
    /// What it is.
    pub kind: ModelKind,
    /// The plant, for per-plant models.
    pub plant: Option<u16>,
    /// Which test set: `global` (the consortium's held-out test rows) or `plant` (the plant's
    /// own held-out rows).
    pub test_set: String,
    /// Rows scored.
    pub rows: usize,
    /// Failures among them.
    pub failures: usize,
    /// Decision threshold chosen on validation rows.
    pub threshold: f64,
    /// Binary F1 at the threshold (primary).
    pub f1: f64,
    /// AUPRC (primary).
    pub auprc: f64,
    /// AUROC.
    pub auroc: Option<f64>,
    /// Binary precision.
    pub precision: f64,
    /// Binary recall.
    pub recall: f64,
    /// Per failure mode.
    pub modes: Vec<ModeFigure>,
}

/// One failure mode's figures (RNF is always `null`: not judged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeFigure {
    /// TWF, HDF, PWF, OSF, RNF.
    pub mode: String,
    /// Rows carrying the mode.
    pub rows: usize,
    /// Recall on those rows.
    pub recall: Option<f64>,
    /// AUROC of those rows against the non-failures.
    pub auroc: Option<f64>,
}

/// ε of one plant and privacy unit at the end of the campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpsilonRow {
    /// Plant index.
    pub plant: u16,
    /// Privacy unit, e.g. `site-update-per-round`.
    pub unit: String,
    /// ε spent (`null` = ∞: no DP).
    pub spent: Option<f64>,
    /// Cap (`null`: none).
    pub cap: Option<f64>,
    /// δ.
    pub delta: Option<f64>,
    /// Ledger entries.
    pub entries: u64,
    /// Ledger head (hex), the anchor an auditor checks.
    pub ledger_head: String,
}

/// Shares of a round's wall time (each in [0, 1]; they need not sum to 1: the rest is waiting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeShare {
    /// Local training.
    pub training: f64,
    /// DP encoding (clip, noise, rotate, scale, round).
    pub dp_encoding: f64,
    /// Masking (key agreement, PRG, Shamir).
    pub masking: f64,
    /// Sealing and writing state before anything leaves (reports written before the field
    /// existed counted it under `http`).
    #[serde(default)]
    pub persistence: f64,
    /// HTTP and waiting for other parties.
    pub http: f64,
}

/// One point of the ε-versus-F1 curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// Central noise σ (0 = no DP).
    pub sigma: f64,
    /// Site-level ε at the end of the campaign (`null` = ∞).
    pub epsilon: Option<f64>,
    /// Mean binary F1 of the federated model over seeds.
    pub f1: f64,
    /// 95 % half-width.
    pub f1_ci95: f64,
    /// Mean AUPRC.
    pub auprc: f64,
    /// Seeds.
    pub seeds: u32,
    /// `true` when this point ran through real processes (others ran in-process).
    pub real_processes: bool,
}

impl SimulationReport {
    /// Reads and validates `path` (size bound, strict decoding, schema version).
    pub fn read(path: &std::path::Path) -> Result<Self, ReportError> {
        let name = path.display().to_string();
        let io = |source| ReportError::Io {
            path: name.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                path: name,
                len,
                max: MAX_REPORT_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_json(&bytes).map_err(|e| match e {
            ReportError::Malformed { reason, .. } => ReportError::Malformed { path: name, reason },
            ReportError::Schema { found, .. } => ReportError::Schema { path: name, found },
            other => other,
        })
    }

    /// Decodes a report from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        #[derive(Deserialize)]
        struct Head {
            schema: String,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| ReportError::Malformed {
            path: String::new(),
            reason: e.to_string(),
        })?;
        if head.schema != SCHEMA {
            return Err(ReportError::Schema {
                path: String::new(),
                found: head.schema,
            });
        }
        let r: Self = serde_json::from_slice(bytes).map_err(|e| ReportError::Malformed {
            path: String::new(),
            reason: e.to_string(),
        })?;
        // The page draws the curve: its values are checked as strictly as the sweep file's.
        if let Some(c) = &r.record_curve {
            c.check().map_err(|e| ReportError::Malformed {
                path: String::new(),
                reason: format!("record_curve: {e}"),
            })?;
        }
        Ok(r)
    }

    /// Pretty JSON (what `report.json` holds).
    pub fn to_json(&self) -> String {
        // Serializing plain data structs with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
