//! One record-ledger entry and its canonical bytes (hashed and signed).
//!
//! Layout, integers little-endian, f64 as IEEE-754 bits:
//! `version u8 (= 0x83) | seq u64 | prev_hash [32] | kind u8 | kind body | versions_len u16 |
//! versions utf-8`, with the kind bodies
//!
//! * 0 genesis: `key [32] | dataset [32] | max_records u64 | epsilon_cap f64 | delta f64 |
//!   nonce [32]`;
//! * 1 run: `run_id [32] | data_file [32] | records u64 | decision u8 (0 accepted, 1 refused) | q f64 | noise_multiplier f64 |
//!   steps u32 | clip f64 | gamma f64 | sigma f64 | dim u32 | sampler u8 | epsilon_run f64 |
//!   epsilon_total f64 | order u32`;
//! * 2 recovery: `dropped_bytes u64 | dropped_sha256 [32]`.
//!
//! The version byte is never a site-level entry version (those count up from 1), and the
//! signing context differs too, so neither ledger's entries verify in the other. Decoding is
//! strict: exact length, known codes, numbers re-validated. Versions 0x81 (run entries without
//! the mechanism: C, γ, σ, d and the sampler) and 0x82 (a genesis bound to one data file's
//! hash and its record count, runs without the data they trained on) are refused as unknown
//! versions: the first cannot be audited against the noise a run drew, the second keyed the
//! budget by the file's bytes, so a file with one record appended started a fresh budget.

use crate::ledger::entry::{
    Decision, EntryDecodeError, MAX_VERSIONS_LEN, Reader, library_versions, put_f64,
};
use crate::params::{Delta, Epsilon, Sigma};
use crate::sampler::{SamplerKind, distance_bound};

/// Encoding version of a record-ledger entry.
pub const RECORD_ENTRY_VERSION: u8 = 0x83;

/// The record-level policy a ledger is bound to by its genesis: one dataset (by the id of the
/// name the site declares, never by its file's bytes), the most records it may ever hold, the
/// cap on ε and the δ it is computed at.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RecordPolicy {
    /// The dataset's identity: [`super::dataset_id`] of its declared name. Every version of
    /// the data file (records appended, removed or corrected) stays in the same ledger, so a
    /// record added later is charged the ledger's whole total.
    #[serde(with = "hex_bytes")]
    pub dataset: [u8; 32],
    /// N_max, the most records any version of the dataset may hold (public): the δ rule is
    /// checked against it, so it holds for every version, and a run on more records is
    /// refused.
    pub max_records: u64,
    /// Largest ε any record of the dataset will ever be exposed to, over every run.
    pub epsilon_cap: Epsilon,
    /// δ at which ε is computed; at most 1/(10·N_i).
    pub delta: Delta,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

/// One local run's parameters, as charged: the fixed number of noisy steps of the
/// Poisson-subsampled (rate q) Gaussian of multiplier z = σ/Δ.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RecordRunRequest {
    /// The run's identity (the site derives it from the campaign and the round); a run id is
    /// charged at most once.
    #[serde(with = "hex_bytes")]
    pub run_id: [u8; 32],
    /// Poisson sampling rate q in (0, 1].
    pub q: f64,
    /// z = σ/Δ.
    pub noise_multiplier: f64,
    /// Noisy steps of the run (≥ 1).
    pub steps: u32,
    /// The data the run trains on (file digest and N, at most the policy's N_max).
    pub data: DataVersion,
    /// What each step does with its sum: bound into the charge so that an auditor can check
    /// that the charged z is not above the noise the run drew (z ≤ σ/Δ) and recompute the
    /// sampler's share of δ.
    pub mechanism: RecordMechanism,
}

/// The version of the dataset one run trained on: the SHA-256 of the data file's bytes and its
/// record count N (public, like N_max). Recorded so that an auditor sees when the data
/// changed; the budget is the dataset's, whatever the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DataVersion {
    /// SHA-256 of the data file (what `sha256sum` prints).
    #[serde(with = "hex_bytes")]
    pub file: [u8; 32],
    /// N, the records of this version.
    pub records: u64,
}

/// A run's mechanism: per-example clip C, grid γ, noise σ per coordinate (gradient units),
/// d coordinates and the sampler that drew N_Z(0, (σ/γ)²) (record-dp.md §2).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RecordMechanism {
    /// Per-example L2 clip norm C_rec.
    pub clip: f64,
    /// Rounding grid γ.
    pub gamma: f64,
    /// Noise standard deviation σ per coordinate, in gradient units.
    pub sigma: f64,
    /// d, the coordinates of each step's sum (the model's trainable parameters).
    pub dim: u32,
    /// The discrete Gaussian sampler of the noise.
    #[serde(serialize_with = "sampler_name")]
    pub sampler: SamplerKind,
}

fn sampler_name<S: serde::Serializer>(k: &SamplerKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match k {
        SamplerKind::Fast => "fast (table, distance charged to delta)",
        SamplerKind::Exact => "exact (opendp)",
    })
}

/// Why a mechanism cannot be what a run did.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MechanismError {
    /// C, γ or σ not finite and positive, or d = 0.
    #[error("record-level mechanism {0} is not finite and positive")]
    Range(&'static str),
    /// The charged z is above σ/Δ: the ledger would charge less ε than the noise gives.
    #[error(
        "charged noise multiplier z = {charged} is above sigma/Delta = {actual} of the mechanism"
    )]
    Undercharged {
        /// z charged.
        charged: f64,
        /// σ/Δ.
        actual: f64,
    },
    /// The sampler does not exist at σ/γ.
    #[error("no {kind:?} sampler at sigma/gamma = {scale}: {reason}")]
    Sampler {
        /// The sampler.
        kind: SamplerKind,
        /// σ/γ.
        scale: f64,
        /// Its refusal.
        reason: String,
    },
}

/// Relative slack on z ≤ σ/Δ (f64 rounding of the division; the site sets σ a hair above the
/// calibrated z·Δ, 10⁻¹², so an honest run is far inside it).
const Z_SLACK: f64 = 1e-12;

impl RecordMechanism {
    /// The mechanism of clip C, grid γ and d coordinates whose noise gives exactly the noise
    /// multiplier z: σ = z·Δ.
    pub fn with_multiplier(clip: f64, gamma: f64, dim: u32, sampler: SamplerKind, z: f64) -> Self {
        let mut m = Self {
            clip,
            gamma,
            sigma: 0.0,
            dim,
            sampler,
        };
        m.sigma = z * m.sensitivity();
        m
    }

    /// Δ = C + γ·√d/2, the L2 sensitivity of one rounded example.
    pub fn sensitivity(&self) -> f64 {
        self.clip + self.gamma * f64::from(self.dim).sqrt() / 2.0
    }

    /// The noise multiplier the noise actually gives, σ/Δ.
    pub fn noise_multiplier(&self) -> f64 {
        self.sigma / self.sensitivity()
    }

    /// Checks the ranges and that `charged_z` does not exceed σ/Δ.
    pub fn check(&self, charged_z: f64) -> Result<(), MechanismError> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        for (name, v) in [
            ("clip C", self.clip),
            ("grid gamma", self.gamma),
            ("sigma", self.sigma),
        ] {
            if !pos(v) {
                return Err(MechanismError::Range(name));
            }
        }
        if self.dim == 0 {
            return Err(MechanismError::Range("dimension d"));
        }
        let actual = self.noise_multiplier();
        // NaN (either side) is refused with the rest.
        if charged_z.is_nan() || actual.is_nan() || charged_z > actual * (1.0 + Z_SLACK) {
            return Err(MechanismError::Undercharged {
                charged: charged_z,
                actual,
            });
        }
        Ok(())
    }

    /// The sampler's total-variation distance over a run of `steps` steps, steps·d times the
    /// per-sample bound the crate computes for the sampler at σ/γ (never a declared figure):
    /// it is added to δ (record-dp.md §2).
    pub fn run_distance(&self, steps: u32) -> Result<f64, MechanismError> {
        let scale = self.sigma / self.gamma;
        let sampler_err = |reason: String| MechanismError::Sampler {
            kind: self.sampler,
            scale,
            reason,
        };
        let sigma = Sigma::new(scale).map_err(|e| sampler_err(e.to_string()))?;
        let per_sample =
            distance_bound(self.sampler, sigma).map_err(|e| sampler_err(e.to_string()))?;
        Ok(per_sample.get() * f64::from(steps) * f64::from(self.dim))
    }
}

/// A run's decision and what it was accounted as.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RunCharge {
    /// The run's parameters.
    pub request: RecordRunRequest,
    /// Accepted or refused.
    pub decision: Decision,
    /// ε of this run alone at the policy's δ (+∞ where no order bounds it).
    pub epsilon_run: f64,
    /// ε of every accepted run so far at the policy's δ (this one included when accepted).
    pub epsilon_total: f64,
    /// The Rényi order that attained `epsilon_total` (0 before any accepted run).
    pub order: u32,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordEntryKind {
    /// The first entry: the key and the policy, with a fresh nonce.
    Genesis {
        /// The Ed25519 key that signs every entry.
        key: [u8; 32],
        /// The policy.
        policy: RecordPolicy,
        /// Fresh randomness: two ledgers of one dataset and key still differ.
        nonce: [u8; 32],
    },
    /// A local run, accepted (charged) or refused.
    Run(RunCharge),
    /// A torn final write was cut off at open.
    Recovery {
        /// Bytes cut.
        dropped_bytes: u64,
        /// Their SHA-256.
        dropped_sha256: [u8; 32],
    },
}

/// An entry's body (what is signed).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordEntryBody {
    /// Position from 0.
    pub seq: u64,
    /// Hash of the previous entry (the genesis hash of the key for the first).
    pub prev_hash: [u8; 32],
    /// What it records.
    pub kind: RecordEntryKind,
    /// The library versions that wrote it.
    pub versions: String,
}

impl RecordEntryBody {
    /// A body written by this build.
    pub fn new(seq: u64, prev_hash: [u8; 32], kind: RecordEntryKind) -> Self {
        Self {
            seq,
            prev_hash,
            kind,
            versions: library_versions(),
        }
    }

    /// The canonical bytes (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200 + self.versions.len());
        out.push(RECORD_ENTRY_VERSION);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.prev_hash);
        match &self.kind {
            RecordEntryKind::Genesis { key, policy, nonce } => {
                out.push(0);
                out.extend_from_slice(key);
                out.extend_from_slice(&policy.dataset);
                out.extend_from_slice(&policy.max_records.to_le_bytes());
                put_f64(&mut out, policy.epsilon_cap.get());
                put_f64(&mut out, policy.delta.get());
                out.extend_from_slice(nonce);
            }
            RecordEntryKind::Run(c) => {
                out.push(1);
                out.extend_from_slice(&c.request.run_id);
                out.extend_from_slice(&c.request.data.file);
                out.extend_from_slice(&c.request.data.records.to_le_bytes());
                out.push(match c.decision {
                    Decision::Accepted => 0,
                    Decision::Refused => 1,
                });
                put_f64(&mut out, c.request.q);
                put_f64(&mut out, c.request.noise_multiplier);
                out.extend_from_slice(&c.request.steps.to_le_bytes());
                let m = &c.request.mechanism;
                put_f64(&mut out, m.clip);
                put_f64(&mut out, m.gamma);
                put_f64(&mut out, m.sigma);
                out.extend_from_slice(&m.dim.to_le_bytes());
                out.push(m.sampler.code());
                put_f64(&mut out, c.epsilon_run);
                put_f64(&mut out, c.epsilon_total);
                out.extend_from_slice(&c.order.to_le_bytes());
            }
            RecordEntryKind::Recovery {
                dropped_bytes,
                dropped_sha256,
            } => {
                out.push(2);
                out.extend_from_slice(&dropped_bytes.to_le_bytes());
                out.extend_from_slice(dropped_sha256);
            }
        }
        let v = self.versions.as_bytes();
        let len = v.len().min(MAX_VERSIONS_LEN);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&v[..len]);
        out
    }

    /// Strict decoding of [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryDecodeError> {
        let mut r = Reader { bytes };
        let version = r.u8()?;
        if version != RECORD_ENTRY_VERSION {
            return Err(EntryDecodeError::Version(version));
        }
        let seq = r.u64()?;
        let prev_hash = r.array()?;
        let kind = match r.u8()? {
            0 => {
                let key = r.array()?;
                let dataset = r.array()?;
                let max_records = r.u64()?;
                let epsilon_cap = Epsilon::new(r.f64()?)?;
                let delta = Delta::new(r.f64()?)?;
                let nonce = r.array()?;
                RecordEntryKind::Genesis {
                    key,
                    policy: RecordPolicy {
                        dataset,
                        max_records,
                        epsilon_cap,
                        delta,
                    },
                    nonce,
                }
            }
            1 => {
                let run_id = r.array()?;
                let data = DataVersion {
                    file: r.array()?,
                    records: r.u64()?,
                };
                let decision = r.code("decision", |c| match c {
                    0 => Some(Decision::Accepted),
                    1 => Some(Decision::Refused),
                    _ => None,
                })?;
                let q = r.f64()?;
                let noise_multiplier = r.f64()?;
                let steps = r.u32()?;
                let (clip, gamma, sigma) = (r.f64()?, r.f64()?, r.f64()?);
                let dim = r.u32()?;
                let sampler = r.code("sampler", SamplerKind::from_code)?;
                let epsilon_run = r.f64()?;
                let epsilon_total = r.f64()?;
                let order = r.u32()?;
                if epsilon_run.is_nan() || epsilon_total.is_nan() {
                    return Err(EntryDecodeError::Code {
                        field: "epsilon (NaN)",
                        code: 0,
                    });
                }
                RecordEntryKind::Run(RunCharge {
                    request: RecordRunRequest {
                        run_id,
                        q,
                        noise_multiplier,
                        steps,
                        data,
                        mechanism: RecordMechanism {
                            clip,
                            gamma,
                            sigma,
                            dim,
                            sampler,
                        },
                    },
                    decision,
                    epsilon_run,
                    epsilon_total,
                    order,
                })
            }
            2 => RecordEntryKind::Recovery {
                dropped_bytes: r.u64()?,
                dropped_sha256: r.array()?,
            },
            code => {
                return Err(EntryDecodeError::Code {
                    field: "kind",
                    code,
                });
            }
        };
        let len = usize::from(r.u16()?);
        if len > MAX_VERSIONS_LEN {
            return Err(EntryDecodeError::Versions);
        }
        let versions = std::str::from_utf8(r.take(len)?)
            .map_err(|_| EntryDecodeError::Versions)?
            .to_owned();
        if !r.bytes.is_empty() {
            return Err(EntryDecodeError::Length);
        }
        Ok(Self {
            seq,
            prev_hash,
            kind,
            versions,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn run_body() -> RecordEntryBody {
        RecordEntryBody::new(
            3,
            [5; 32],
            RecordEntryKind::Run(RunCharge {
                request: RecordRunRequest {
                    run_id: [1; 32],
                    q: 0.1,
                    noise_multiplier: 1.5,
                    steps: 40,
                    data: DataVersion {
                        file: [2; 32],
                        records: 1234,
                    },
                    mechanism: RecordMechanism::with_multiplier(
                        1.0,
                        1e-4,
                        10,
                        SamplerKind::Fast,
                        1.5,
                    ),
                },
                decision: Decision::Accepted,
                epsilon_run: 0.5,
                epsilon_total: 0.5,
                order: 12,
            }),
        )
    }

    #[test]
    fn a_run_entry_round_trips_with_its_data_version() {
        let body = run_body();
        assert_eq!(RecordEntryBody::from_bytes(&body.to_bytes()).unwrap(), body);
    }

    /// Entries of the earlier encodings (0x81 without the mechanism, 0x82 keyed by the data
    /// file's bytes) are refused by version, and a byte short or long by length.
    #[test]
    fn earlier_versions_and_wrong_lengths_are_refused() {
        let bytes = run_body().to_bytes();
        for old in [0x81u8, 0x82] {
            let mut b = bytes.clone();
            b[0] = old;
            assert!(matches!(
                RecordEntryBody::from_bytes(&b),
                Err(EntryDecodeError::Version(v)) if v == old
            ));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(RecordEntryBody::from_bytes(&long).is_err());
        assert!(RecordEntryBody::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
}
