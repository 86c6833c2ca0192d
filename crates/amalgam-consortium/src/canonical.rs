//! The canonical encoding of a manifest (spec consortium.md §3): what members sign and what
//! `consortium_digest` hashes. It is a deterministic binary encoding of the parsed manifest,
//! never the TOML text, so whitespace, comments, key order or number spelling in a draft cannot
//! change the digest, and a second implementation reproduces it from the spec alone.
//!
//! Integers are big-endian; a string is a u32 byte length then UTF-8; an `f64` is its IEEE-754
//! binary64 bit pattern as a big-endian u64; an option is a 0/1 byte then the value; a list is
//! a u32 count then the items. Decoding is strict: bounded counts, no trailing bytes, every
//! value revalidated, and the decoded manifest must re-encode to the identical bytes.

use std::collections::BTreeMap;

use amalgam_dp::params::{
    BitWidth, ClipNorm, Delta, Dimension, Epsilon, Gamma, RoundingBias, Sigma,
};
use amalgam_proto::DecodeError;
use amalgam_proto::codec::{Reader, Writer};
use ed25519_dalek::VerifyingKey;

use crate::error::ManifestError;
use crate::labels;
use crate::model::*;
use crate::rotation::RotationStatement;

/// Largest canonical manifest accepted (a full 255-site consortium is far below).
pub const MAX_BODY_LEN: usize = 256 * 1024;
/// Longest string field, bytes.
pub const MAX_STR: usize = 128;
/// Most members.
pub const MAX_MEMBERS: usize = 300;

/// The canonical bytes of `body` (no validation: see [`crate::validate`]).
pub fn encode(body: &ManifestBody) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(labels::BODY_MAGIC);
    string(&mut w, &body.consortium);
    w.u64(body.epoch);
    match &body.prev_digest {
        Some(d) => {
            w.u8(1);
            w.bytes(d);
        }
        None => w.u8(0),
    }
    let p = &body.protocol;
    w.u16(p.threshold);
    w.u16(p.colluders);
    w.u16(p.dropouts);
    w.u16(p.min_cohort);
    match p.graph {
        Graph::Complete => {
            w.u8(0);
            w.u16(0);
        }
        Graph::Harary { k } => {
            w.u8(1);
            w.u16(k);
        }
    }
    w.u8(match p.trust {
        Trust::Curious => 0,
        Trust::Malicious => 1,
    });
    match &body.committee {
        Some(c) => {
            w.u8(1);
            w.u16(c.threshold);
            w.u16(c.quorum);
            w.u16(c.corrupt);
            w.u32(c.key_period_rounds);
        }
        None => w.u8(0),
    }
    let dp = &body.dp;
    w.u8(match dp.unit {
        PrivacyUnit::SiteUpdatePerRound => 0,
    });
    match dp.budget {
        DpBudget::Capped { epsilon_cap, delta } => {
            w.u8(0);
            float(&mut w, epsilon_cap.get());
            float(&mut w, delta.get());
        }
        DpBudget::None => w.u8(1),
    }
    float(&mut w, dp.clip.get());
    float(&mut w, dp.sigma.get());
    match dp.target_epsilon {
        Some(e) => {
            w.u8(1);
            float(&mut w, e.get());
        }
        None => w.u8(0),
    }
    w.u8(dp.bits.get() as u8);
    float(&mut w, dp.gamma.get());
    float(&mut w, dp.beta.get());
    w.bool(body.fallback.allowed);
    w.u32(body.deadlines.min_secs);
    w.u32(body.deadlines.max_secs);
    w.u32(body.max_aborted_rounds);
    let c = &body.campaign;
    string(&mut w, &c.id);
    match &c.model {
        ModelRef::Builtin { name } => {
            w.u8(0);
            string(&mut w, name);
        }
        ModelRef::Torchscript { digest } => {
            w.u8(1);
            w.bytes(digest);
        }
    }
    w.bytes(&c.parameter_list_digest);
    w.u64(c.parameter_count.get());
    w.bytes(&c.initial_weights_digest);
    let t = &c.training;
    w.u32(t.local_epochs);
    w.u32(t.batch_size);
    w.u8(match t.optimizer {
        Optimizer::Sgd => 0,
        Optimizer::Adam => 1,
    });
    float(&mut w, t.learning_rate);
    float(&mut w, t.mu);
    float(&mut w, t.server_lr);
    float(&mut w, t.server_momentum);
    w.u32(t.rounds);
    // Only a declared campaign carries weights and only a noised one its n_cap, κ and floor,
    // so the bytes of every other campaign are unchanged. Numbers that do not belong to the
    // mode (never valid) are written after the tag 0xff, which no decoder accepts, with a
    // presence byte: they are never silently dropped from what members sign, and their bytes
    // cannot re-parse as another body.
    let declared = c.weight_mode == WeightMode::Declared;
    let noised = c.weight_mode == WeightMode::Noised;
    let stray =
        (!declared && !c.declared_weights.is_empty()) || (noised != c.noised_weights.is_some());
    w.u8(match c.weight_mode {
        _ if stray => 0xff,
        WeightMode::Uniform => 0,
        WeightMode::Declared => 1,
        WeightMode::Noised => 2,
    });
    if stray {
        w.u8(match c.weight_mode {
            WeightMode::Uniform => 0,
            WeightMode::Declared => 1,
            WeightMode::Noised => 2,
        });
        w.u8(u8::from(!c.declared_weights.is_empty()) | (u8::from(c.noised_weights.is_some()) << 1));
    }
    if declared || !c.declared_weights.is_empty() {
        w.count(c.declared_weights.len().min(u32::MAX as usize));
        for (name, weight) in &c.declared_weights {
            string(&mut w, name);
            w.u32(*weight);
        }
    }
    if let Some(n) = &c.noised_weights {
        w.u32(n.n_cap);
        float(&mut w, n.kappa);
        float(&mut w, n.floor);
    }
    w.count(body.members.len().min(u32::MAX as usize));
    for m in &body.members {
        string(&mut w, &m.name);
        string(&mut w, &m.organisation);
        w.u8(m.roles.len().min(255) as u8);
        for r in &m.roles {
            w.u8(r.code());
        }
        w.bytes(m.key.as_bytes());
    }
    w.count(body.rotations.len().min(u32::MAX as usize));
    for r in &body.rotations {
        string(&mut w, &r.name);
        w.u64(r.epoch);
        w.bytes(r.old_key.as_bytes());
        w.bytes(r.new_key.as_bytes());
        w.bytes(&r.signature);
    }
    w.into_bytes()
}

fn string(w: &mut Writer, s: &str) {
    w.bytes_prefixed(s.as_bytes());
}

fn float(w: &mut Writer, v: f64) {
    w.u64(v.to_bits());
}

fn malformed(e: impl std::fmt::Display) -> ManifestError {
    ManifestError::Malformed {
        what: "canonical manifest",
        reason: e.to_string(),
    }
}

fn bad(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::InvalidValue { field, reason }
}

fn read_str(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let b = r.bytes_prefixed(field, 0, MAX_STR)?;
    String::from_utf8(b.to_vec()).map_err(|_| bad(field, "not UTF-8"))
}

fn read_f64(r: &mut Reader<'_>, field: &'static str) -> Result<f64, DecodeError> {
    Ok(f64::from_bits(r.u64(field)?))
}

fn read_key(r: &mut Reader<'_>, field: &'static str) -> Result<VerifyingKey, DecodeError> {
    let b = r.array::<32>(field)?;
    VerifyingKey::from_bytes(&b).map_err(|_| bad(field, "not an Ed25519 point"))
}

fn read_opt(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad(field, "option tag must be 0 or 1")),
    }
}

macro_rules! newtype {
    ($t:ty, $v:expr, $field:literal) => {
        <$t>::new($v).map_err(|_| bad($field, "out of range"))?
    };
}

/// Decodes canonical bytes (strict; see the module doc). The result still needs
/// [`crate::validate::validate`].
pub fn decode(bytes: &[u8]) -> Result<ManifestBody, ManifestError> {
    if bytes.len() > MAX_BODY_LEN {
        return Err(malformed(format!("longer than {MAX_BODY_LEN} bytes")));
    }
    let body = decode_inner(bytes).map_err(malformed)?;
    if encode(&body) != bytes {
        return Err(malformed("not in canonical form"));
    }
    Ok(body)
}

fn decode_inner(bytes: &[u8]) -> Result<ManifestBody, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.bytes(labels::BODY_MAGIC.len(), "magic")? != labels::BODY_MAGIC {
        return Err(bad("magic", "not an Amalgam manifest v1 body"));
    }
    let consortium = read_str(&mut r, "consortium")?;
    let epoch = r.u64("epoch")?;
    let prev_digest = if read_opt(&mut r, "prev_digest")? {
        Some(r.array::<32>("prev_digest")?)
    } else {
        None
    };
    let threshold = r.u16("protocol.threshold")?;
    let colluders = r.u16("protocol.colluders")?;
    let dropouts = r.u16("protocol.dropouts")?;
    let min_cohort = r.u16("protocol.min_cohort")?;
    let graph = match (r.u8("protocol.graph")?, r.u16("protocol.k")?) {
        (0, 0) => Graph::Complete,
        (1, k) => Graph::Harary { k },
        _ => return Err(bad("protocol.graph", "unknown graph or nonzero k")),
    };
    let trust = match r.u8("protocol.trust")? {
        0 => Trust::Curious,
        1 => Trust::Malicious,
        _ => return Err(bad("protocol.trust", "must be 0 or 1")),
    };
    let committee = if read_opt(&mut r, "committee")? {
        Some(CommitteePolicy {
            threshold: r.u16("committee.threshold")?,
            quorum: r.u16("committee.quorum")?,
            corrupt: r.u16("committee.corrupt")?,
            key_period_rounds: r.u32("committee.key_period_rounds")?,
        })
    } else {
        None
    };
    let unit = match r.u8("dp.unit")? {
        0 => PrivacyUnit::SiteUpdatePerRound,
        _ => return Err(bad("dp.unit", "unknown privacy unit")),
    };
    let budget = match r.u8("dp.budget")? {
        0 => DpBudget::Capped {
            epsilon_cap: newtype!(
                Epsilon,
                read_f64(&mut r, "dp.epsilon_cap")?,
                "dp.epsilon_cap"
            ),
            delta: newtype!(Delta, read_f64(&mut r, "dp.delta")?, "dp.delta"),
        },
        1 => DpBudget::None,
        _ => return Err(bad("dp.budget", "must be 0 or 1")),
    };
    let clip = newtype!(ClipNorm, read_f64(&mut r, "dp.clip")?, "dp.clip");
    let sigma = newtype!(Sigma, read_f64(&mut r, "dp.sigma")?, "dp.sigma");
    let target_epsilon = if read_opt(&mut r, "dp.target_epsilon")? {
        Some(newtype!(
            Epsilon,
            read_f64(&mut r, "dp.target_epsilon")?,
            "dp.target_epsilon"
        ))
    } else {
        None
    };
    let bits = newtype!(BitWidth, u32::from(r.u8("dp.bits")?), "dp.bits");
    let gamma = newtype!(Gamma, read_f64(&mut r, "dp.gamma")?, "dp.gamma");
    let beta = newtype!(RoundingBias, read_f64(&mut r, "dp.beta")?, "dp.beta");
    let fallback = FallbackPolicy {
        allowed: r.bool("fallback.allowed")?,
    };
    let deadlines = DeadlineBounds {
        min_secs: r.u32("deadlines.min_secs")?,
        max_secs: r.u32("deadlines.max_secs")?,
    };
    let max_aborted_rounds = r.u32("max_aborted_rounds")?;
    let id = read_str(&mut r, "campaign.id")?;
    let model = match r.u8("campaign.model")? {
        0 => ModelRef::Builtin {
            name: read_str(&mut r, "campaign.model.name")?,
        },
        1 => ModelRef::Torchscript {
            digest: r.array::<32>("campaign.model.digest")?,
        },
        _ => return Err(bad("campaign.model", "must be 0 or 1")),
    };
    let parameter_list_digest = r.array::<32>("campaign.parameter_list_digest")?;
    let parameter_count = newtype!(
        Dimension,
        r.u64("campaign.parameter_count")?,
        "campaign.parameter_count"
    );
    let initial_weights_digest = r.array::<32>("campaign.initial_weights_digest")?;
    let training = TrainingConfig {
        local_epochs: r.u32("training.local_epochs")?,
        batch_size: r.u32("training.batch_size")?,
        optimizer: match r.u8("training.optimizer")? {
            0 => Optimizer::Sgd,
            1 => Optimizer::Adam,
            _ => return Err(bad("training.optimizer", "must be 0 or 1")),
        },
        learning_rate: read_f64(&mut r, "training.learning_rate")?,
        mu: read_f64(&mut r, "training.mu")?,
        server_lr: read_f64(&mut r, "training.server_lr")?,
        server_momentum: read_f64(&mut r, "training.server_momentum")?,
        rounds: r.u32("training.rounds")?,
    };
    let weight_mode = match r.u8("campaign.weight_mode")? {
        0 => WeightMode::Uniform,
        1 => WeightMode::Declared,
        2 => WeightMode::Noised,
        _ => return Err(bad("campaign.weight_mode", "must be 0, 1 or 2")),
    };
    let mut declared_weights = BTreeMap::new();
    if weight_mode == WeightMode::Declared {
        let n = r.count("campaign.declared_weights", 0, MAX_MEMBERS)?;
        let mut last: Option<String> = None;
        for _ in 0..n {
            let name = read_str(&mut r, "declared_weights.name")?;
            let weight = r.u32("declared_weights.weight")?;
            // Strictly ascending names: the map's order, so one map has one encoding.
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(bad(
                    "declared_weights.name",
                    "names must be strictly ascending",
                ));
            }
            last = Some(name.clone());
            declared_weights.insert(name, weight);
        }
    }
    let noised_weights = if weight_mode == WeightMode::Noised {
        Some(NoisedWeightPolicy {
            n_cap: r.u32("noised_weights.n_cap")?,
            kappa: read_f64(&mut r, "noised_weights.kappa")?,
            floor: read_f64(&mut r, "noised_weights.floor")?,
        })
    } else {
        None
    };
    let n = r.count("members", 0, MAX_MEMBERS)?;
    let mut members = Vec::with_capacity(r.capacity(n, 45));
    for _ in 0..n {
        let name = read_str(&mut r, "member.name")?;
        let organisation = read_str(&mut r, "member.organisation")?;
        let count = r.u8("member.roles")?;
        if !(1..=3).contains(&count) {
            return Err(bad("member.roles", "1 to 3 roles"));
        }
        let mut roles = Vec::with_capacity(3);
        for _ in 0..count {
            roles.push(
                Role::from_code(r.u8("member.role")?).ok_or(bad("member.role", "unknown role"))?,
            );
        }
        let key = read_key(&mut r, "member.key")?;
        members.push(Member {
            name,
            organisation,
            roles,
            key,
        });
    }
    let n = r.count("rotations", 0, MAX_MEMBERS)?;
    let mut rotations = Vec::with_capacity(r.capacity(n, 140));
    for _ in 0..n {
        rotations.push(RotationStatement {
            name: read_str(&mut r, "rotation.name")?,
            epoch: r.u64("rotation.epoch")?,
            old_key: read_key(&mut r, "rotation.old_key")?,
            new_key: read_key(&mut r, "rotation.new_key")?,
            signature: r.array::<64>("rotation.signature")?,
        });
    }
    r.finish("manifest")?;
    Ok(ManifestBody {
        consortium,
        epoch,
        prev_digest,
        protocol: ProtocolPolicy {
            threshold,
            colluders,
            dropouts,
            min_cohort,
            graph,
            trust,
        },
        committee,
        dp: DpPolicy {
            unit,
            budget,
            clip,
            sigma,
            target_epsilon,
            bits,
            gamma,
            beta,
        },
        fallback,
        deadlines,
        max_aborted_rounds,
        campaign: Campaign {
            id,
            model,
            parameter_list_digest,
            parameter_count,
            initial_weights_digest,
            training,
            weight_mode,
            declared_weights,
            noised_weights,
        },
        members,
        rotations,
    })
}
