//! One ledger entry and its canonical byte encoding (the bytes that are hashed and signed).
//!
//! Layout, all integers little-endian, f64 as their IEEE-754 bit patterns:
//! `version u8 | seq u64 | prev_hash [32] | round_id u64 | decision u8 | unit u8 |
//! adjacency u8 | n_min u32 | n_cohort u32 | clip f64 | gamma f64 | bits u32 | local_sigma f64 |
//! dim u64 | beta f64 | sampler u8 | sampler_distance f64 | delta f64 | epsilon_cap f64 |
//! rho_round f64 | rho_total f64 | epsilon_total f64 | versions_len u16 | versions utf-8`.
//! Decoding is strict: exact length, known codes, every number re-validated by its newtype.

use serde::{Deserialize, Serialize};

use crate::error::ParamError;
use crate::params::{
    Adjacency, BitWidth, ClipNorm, Delta, Dimension, Distance, Epsilon, Gamma, Rho, RoundingBias,
    Sigma, SiteCount,
};
use crate::sampler::SamplerKind;

/// Encoding version of [`EntryBody`].
pub const ENTRY_VERSION: u8 = 1;

/// Longest library-versions string accepted.
pub const MAX_VERSIONS_LEN: usize = 256;

/// The library versions this build records in every entry.
pub fn library_versions() -> String {
    format!(
        "amalgam-dp {}; opendp {}",
        env!("CARGO_PKG_VERSION"),
        crate::OPENDP_VERSION
    )
}

/// Whether the round was allowed to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Within the cap: recorded before any noise was drawn, then allowed.
    Accepted,
    /// Would have exceeded the cap: refused, nothing spent.
    Refused,
}

/// What one unit of privacy protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivacyUnit {
    /// One plant's whole model update in one round (site-level DP).
    SiteUpdatePerRound,
}

/// The parameters of a round the site is asked to join; every entry records the one it decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundRequest {
    /// The consortium's round identifier.
    pub round_id: u64,
    /// The neighbouring relation the guarantee is stated for.
    pub adjacency: Adjacency,
    /// Fewest survivors the round can finish with (their noise is what the guarantee counts).
    pub n_min: SiteCount,
    /// Most plants that may contribute noise (bounds the sampler-distance term).
    pub n_cohort: SiteCount,
    /// L2 clip norm C.
    pub clip: ClipNorm,
    /// Scale factor γ.
    pub gamma: Gamma,
    /// Bit width b.
    pub bits: BitWidth,
    /// Local noise standard deviation in update units, σ/√n_min (the scaled one is γ times it).
    pub local_sigma: Sigma,
    /// Update length d (the noised length is d padded to a power of two).
    pub dim: Dimension,
    /// Conditional rounding bias β.
    pub beta: RoundingBias,
    /// Which sampler draws the noise.
    pub sampler: SamplerKind,
    /// That sampler's per-sample distance (total-variation) bound.
    pub sampler_distance: Distance,
}

/// The signed content of one ledger entry: everything an auditor needs to recompute ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryBody {
    /// Position in the ledger, from 0.
    pub seq: u64,
    /// SHA-256 of the previous entry's body and signature (the genesis hash for seq 0).
    pub prev_hash: [u8; 32],
    /// The round the entry decides, exactly as it was requested.
    #[serde(flatten)]
    pub request: RoundRequest,
    /// Accepted or refused.
    pub decision: Decision,
    /// The privacy unit.
    pub unit: PrivacyUnit,
    /// δ at which ε is reported.
    pub delta: Delta,
    /// The budget cap on ε.
    pub epsilon_cap: Epsilon,
    /// ρ of this round (0 when refused).
    pub rho_round: Rho,
    /// ρ of all accepted rounds so far, this one included.
    pub rho_total: Rho,
    /// ε of all accepted rounds so far at `delta`, sampler share included.
    pub epsilon_total: Epsilon,
    /// Library versions that produced the entry.
    pub versions: String,
}

/// Why an entry's bytes were rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryDecodeError {
    /// The bytes end before the layout does, or continue after it.
    #[error("entry body has the wrong length")]
    Length,
    /// Unknown encoding version.
    #[error("unknown entry version {0}")]
    Version(u8),
    /// An enum code is not one this version defines.
    #[error("unknown {field} code {code}")]
    Code {
        /// Which field.
        field: &'static str,
        /// The code found.
        code: u8,
    },
    /// The versions string is not UTF-8 or too long.
    #[error("versions string is not valid UTF-8 of at most 256 bytes")]
    Versions,
    /// A number fails its newtype's validation.
    #[error(transparent)]
    Param(#[from] ParamError),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        if self.bytes.len() < n {
            return Err(EntryDecodeError::Length);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, EntryDecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, EntryDecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, EntryDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, EntryDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, EntryDecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
}

impl EntryBody {
    /// The canonical bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let r = &self.request;
        let mut out = Vec::with_capacity(200 + self.versions.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&r.round_id.to_le_bytes());
        out.push(match self.decision {
            Decision::Accepted => 0,
            Decision::Refused => 1,
        });
        out.push(match self.unit {
            PrivacyUnit::SiteUpdatePerRound => 0,
        });
        out.push(r.adjacency.code());
        out.extend_from_slice(&r.n_min.get().to_le_bytes());
        out.extend_from_slice(&r.n_cohort.get().to_le_bytes());
        for v in [r.clip.get(), r.gamma.get()] {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        out.extend_from_slice(&r.bits.get().to_le_bytes());
        out.extend_from_slice(&r.local_sigma.get().to_bits().to_le_bytes());
        out.extend_from_slice(&r.dim.get().to_le_bytes());
        out.extend_from_slice(&r.beta.get().to_bits().to_le_bytes());
        out.push(r.sampler.code());
        for v in [
            r.sampler_distance.get(),
            self.delta.get(),
            self.epsilon_cap.get(),
            self.rho_round.get(),
            self.rho_total.get(),
            self.epsilon_total.get(),
        ] {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        // `versions` is bounded when built (new entries) or when decoded.
        let versions = &self.versions.as_bytes()[..self.versions.len().min(MAX_VERSIONS_LEN)];
        out.extend_from_slice(&(versions.len() as u16).to_le_bytes());
        out.extend_from_slice(versions);
        out
    }

    /// Strictly decodes canonical bytes; any deviation is an error naming the problem.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryDecodeError> {
        let mut r = Reader { bytes };
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(EntryDecodeError::Version(version));
        }
        let seq = r.u64()?;
        let prev_hash = r.array::<32>()?;
        let round_id = r.u64()?;
        let decision = match r.u8()? {
            0 => Decision::Accepted,
            1 => Decision::Refused,
            code => {
                return Err(EntryDecodeError::Code {
                    field: "decision",
                    code,
                });
            }
        };
        let unit = match r.u8()? {
            0 => PrivacyUnit::SiteUpdatePerRound,
            code => {
                return Err(EntryDecodeError::Code {
                    field: "privacy unit",
                    code,
                });
            }
        };
        let code = r.u8()?;
        let adjacency = Adjacency::from_code(code).ok_or(EntryDecodeError::Code {
            field: "adjacency",
            code,
        })?;
        let n_min = SiteCount::new(r.u32()?)?;
        let n_cohort = SiteCount::new(r.u32()?)?;
        let clip = ClipNorm::new(r.f64()?)?;
        let gamma = Gamma::new(r.f64()?)?;
        let bits = BitWidth::new(r.u32()?)?;
        let local_sigma = Sigma::new(r.f64()?)?;
        let dim = Dimension::new(r.u64()?)?;
        let beta = RoundingBias::new(r.f64()?)?;
        let code = r.u8()?;
        let sampler = SamplerKind::from_code(code).ok_or(EntryDecodeError::Code {
            field: "sampler",
            code,
        })?;
        let sampler_distance = Distance::new(r.f64()?)?;
        let delta = Delta::new(r.f64()?)?;
        let epsilon_cap = Epsilon::new(r.f64()?)?;
        let rho_round = Rho::new(r.f64()?)?;
        let rho_total = Rho::new(r.f64()?)?;
        let epsilon_total = Epsilon::new(r.f64()?)?;
        let len = usize::from(r.u16()?);
        if len > MAX_VERSIONS_LEN {
            return Err(EntryDecodeError::Versions);
        }
        let versions =
            String::from_utf8(r.take(len)?.to_vec()).map_err(|_| EntryDecodeError::Versions)?;
        if !r.bytes.is_empty() {
            return Err(EntryDecodeError::Length);
        }
        Ok(Self {
            seq,
            prev_hash,
            request: RoundRequest {
                round_id,
                adjacency,
                n_min,
                n_cohort,
                clip,
                gamma,
                bits,
                local_sigma,
                dim,
                beta,
                sampler,
                sampler_distance,
            },
            decision,
            unit,
            delta,
            epsilon_cap,
            rho_round,
            rho_total,
            epsilon_total,
            versions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EntryBody {
        EntryBody {
            seq: 3,
            prev_hash: [0xab; 32],
            request: RoundRequest {
                round_id: 77,
                adjacency: Adjacency::ReplaceOne,
                n_min: SiteCount::new(6).unwrap(),
                n_cohort: SiteCount::new(9).unwrap(),
                clip: ClipNorm::new(0.75).unwrap(),
                gamma: Gamma::new(1234.5).unwrap(),
                bits: BitWidth::new(18).unwrap(),
                local_sigma: Sigma::new(0.3).unwrap(),
                dim: Dimension::new(1000).unwrap(),
                beta: RoundingBias::recommended(),
                sampler: SamplerKind::Exact,
                sampler_distance: Distance::new(1e-35).unwrap(),
            },
            decision: Decision::Refused,
            unit: PrivacyUnit::SiteUpdatePerRound,
            delta: Delta::new(1e-7).unwrap(),
            epsilon_cap: Epsilon::new(8.0).unwrap(),
            rho_round: Rho::new(0.01).unwrap(),
            rho_total: Rho::new(0.2).unwrap(),
            epsilon_total: Epsilon::new(3.5).unwrap(),
            versions: library_versions(),
        }
    }

    #[test]
    fn canonical_bytes_round_trip_and_every_truncation_or_extension_is_refused() {
        let body = sample();
        let bytes = body.to_bytes();
        assert_eq!(EntryBody::from_bytes(&bytes), Ok(body));
        for cut in 0..bytes.len() {
            assert!(
                EntryBody::from_bytes(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            EntryBody::from_bytes(&longer),
            Err(EntryDecodeError::Length)
        );
    }

    #[test]
    fn unknown_codes_and_invalid_numbers_are_named() {
        let bytes = sample().to_bytes();
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(EntryBody::from_bytes(&v), Err(EntryDecodeError::Version(2)));
        // decision is at 1 + 8 + 32 + 8 = 49.
        let mut v = bytes.clone();
        v[49] = 7;
        assert_eq!(
            EntryBody::from_bytes(&v),
            Err(EntryDecodeError::Code {
                field: "decision",
                code: 7
            })
        );
        // clip norm (f64) starts at 49 + 3 + 4 + 4 = 60: a negative clip is refused.
        let mut v = bytes.clone();
        v[60..68].copy_from_slice(&(-1.0f64).to_bits().to_le_bytes());
        assert!(matches!(
            EntryBody::from_bytes(&v),
            Err(EntryDecodeError::Param(ParamError::OutOfRange {
                name: "clip norm C",
                ..
            }))
        ));
        assert!(library_versions().contains(crate::OPENDP_VERSION));
    }
}
