//! Every rule a manifest must satisfy before anyone signs or uses it (spec consortium.md §4),
//! and the round parameters derived from it. Nothing here depends on the aggregator: every
//! value that must be equal at all sites is in the manifest or derived from it.

use amalgam_proto::{
    AggregatorTrust, Colluders, Dropouts, InputBits, MinCohort, NeighbourGraph, ParamsRequest,
    SiteCount, SumBits, SumMode, Threshold, VectorLen,
};

use crate::canonical::{MAX_MEMBERS, MAX_STR};
use crate::error::ManifestError;
use crate::model::*;

/// Largest committee (amalgam-he's limit).
pub const MAX_DECRYPTORS: usize = 8;
/// Longest phase deadline bound, seconds (a week).
pub const MAX_PHASE_SECS: u32 = 7 * 24 * 3600;
/// Most rounds in a campaign.
pub const MAX_ROUNDS: u32 = 1_000_000;

/// Largest declared aggregation weight (a billion records): every weight and every sum of at
/// most [`MAX_MEMBERS`] of them is exact in an `f64`.
pub const MAX_DECLARED_WEIGHT: u32 = 1_000_000_000;

/// Largest ratio of the heaviest to the lightest declared weight. The site-level noise is
/// calibrated to one site's clip norm C while a site's signal is scaled by w_i / max w, so the
/// noise in the step is up to this factor larger than under uniform weights when only the
/// lightest sites contribute (and a site that skipped its scale would weigh up to this factor
/// more than declared); 100 bounds both.
pub const MAX_DECLARED_WEIGHT_RATIO: u32 = 100;

/// The parameters derived from a valid manifest.
#[derive(Debug, Clone, Copy)]
pub struct Derived {
    /// Masking round parameters.
    pub proto: amalgam_proto::RoundParams,
    /// DP round parameters.
    pub dp: amalgam_dp::ledger::RoundParams,
}

/// Every label (consortium and campaign ids, member names, organisations, model names) is
/// printable ASCII plus space (0x20..=0x7e), without surrounding spaces. Unicode is refused
/// outright: bidirectional overrides (U+202E) reorder the line a member reads before signing,
/// zero-width and look-alike characters make two different names print the same.
fn check_text(what: &str, s: &str, max: usize) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > max {
        return Err(ManifestError::invalid(format!(
            "{what} must be 1 to {max} bytes, got {}",
            s.len()
        )));
    }
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) || s.trim() != s {
        return Err(ManifestError::invalid(format!(
            "{what} {:?} must be printable ASCII and spaces, without surrounding spaces",
            s.escape_default().to_string()
        )));
    }
    Ok(())
}

/// Finite, in range, and not −0.0 (which would give a second encoding of the value 0).
fn finite(what: &str, v: f64, ok: bool) -> Result<(), ManifestError> {
    if v.is_finite() && ok && !(v == 0.0 && v.is_sign_negative()) {
        Ok(())
    } else {
        Err(ManifestError::invalid(format!(
            "{what} = {v} is out of range"
        )))
    }
}

/// Checks every rule and derives the round parameters.
pub fn validate(body: &ManifestBody) -> Result<Derived, ManifestError> {
    check_text("consortium id", &body.consortium, MAX_STR)?;
    if body.epoch == 0 {
        return Err(ManifestError::invalid("epochs start at 1"));
    }
    if (body.epoch == 1) != body.prev_digest.is_none() {
        return Err(ManifestError::invalid(
            "epoch 1 has no previous digest and every later epoch has one",
        ));
    }
    check_members(body)?;
    check_committee(body)?;
    check_campaign(body)?;
    let d = &body.deadlines;
    if d.min_secs == 0 || d.min_secs > d.max_secs || d.max_secs > MAX_PHASE_SECS {
        return Err(ManifestError::invalid(format!(
            "phase deadline bounds must satisfy 1 <= min ({}) <= max ({}) <= {MAX_PHASE_SECS}",
            d.min_secs, d.max_secs
        )));
    }
    check_rotations(body)?;
    derive(body)
}

fn check_members(body: &ManifestBody) -> Result<(), ManifestError> {
    let members = &body.members;
    if members.len() > MAX_MEMBERS {
        return Err(ManifestError::invalid(format!(
            "{} members, at most {MAX_MEMBERS}",
            members.len()
        )));
    }
    for (i, m) in members.iter().enumerate() {
        check_text("member name", &m.name, 64)?;
        check_text("organisation", &m.organisation, MAX_STR)?;
        if m.roles.is_empty() || m.roles.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ManifestError::invalid(format!(
                "member {}: roles must be non-empty, ascending and distinct",
                m.name
            )));
        }
        if m.has(Role::Aggregator) && m.has(Role::Site) {
            return Err(ManifestError::invalid(format!(
                "member {}: the aggregator cannot also be a site",
                m.name
            )));
        }
        if m.key.is_weak() {
            return Err(ManifestError::invalid(format!(
                "member {}: weak identity key",
                m.name
            )));
        }
        if let Some(prev) = i.checked_sub(1).and_then(|j| members.get(j))
            && prev.key.as_bytes() >= m.key.as_bytes()
        {
            return Err(ManifestError::invalid(format!(
                "members must be in ascending key order without duplicates (at {})",
                m.name
            )));
        }
        if members[..i].iter().any(|o| o.name == m.name) {
            return Err(ManifestError::invalid(format!(
                "member name {} appears twice",
                m.name
            )));
        }
    }
    let aggregators = members.iter().filter(|m| m.has(Role::Aggregator)).count();
    if aggregators != 1 {
        return Err(ManifestError::invalid(format!(
            "exactly one aggregator is required, found {aggregators}"
        )));
    }
    Ok(())
}

fn check_committee(body: &ManifestBody) -> Result<(), ManifestError> {
    let size = body
        .members
        .iter()
        .filter(|m| m.has(Role::Decryptor))
        .count();
    match body.committee {
        None if size > 0 || body.fallback.allowed => Err(ManifestError::invalid(
            "decryptors or an allowed fallback need a [committee] section",
        )),
        None => Ok(()),
        Some(c) => {
            let (t, q, cd) = (
                usize::from(c.threshold),
                usize::from(c.quorum),
                usize::from(c.corrupt),
            );
            let rule = if !(1..=MAX_DECRYPTORS).contains(&size) {
                Some("the committee needs 1 to 8 decryptors")
            } else if !(1..=size).contains(&t) {
                Some("t_c must be 1..=committee size")
            } else if t < 2 && size > 1 {
                Some("t_c >= 2 is required when the committee has more than one member")
            } else if !(1..=size).contains(&q) {
                Some("Q must be 1..=committee size")
            } else if cd >= t {
                Some("c_d < t_c is required: c_d members would hold every piece")
            } else if 2 * q <= size + cd {
                Some("2Q - size > c_d is required: two quorums could sign two cohorts")
            } else if !(1..=MAX_KEY_PERIOD_ROUNDS).contains(&c.key_period_rounds) {
                Some("key_period_rounds must be 1..=1048576")
            } else {
                None
            };
            match rule {
                Some(rule) => Err(ManifestError::invalid(format!(
                    "committee of {size} with t_c = {t}, Q = {q}, c_d = {cd}: {rule}"
                ))),
                None => Ok(()),
            }
        }
    }
}

fn check_campaign(body: &ManifestBody) -> Result<(), ManifestError> {
    let c = &body.campaign;
    check_text("campaign id", &c.id, MAX_STR)?;
    if let ModelRef::Builtin { name } = &c.model {
        check_text("built-in model name", name, MAX_STR)?;
    }
    let t = &c.training;
    if t.local_epochs == 0 || t.batch_size == 0 || t.rounds == 0 || t.rounds > MAX_ROUNDS {
        return Err(ManifestError::invalid(format!(
            "local epochs, batch size and rounds must be >= 1 (rounds <= {MAX_ROUNDS})"
        )));
    }
    finite("learning rate", t.learning_rate, t.learning_rate > 0.0)?;
    finite("mu", t.mu, t.mu >= 0.0)?;
    finite("server learning rate", t.server_lr, t.server_lr > 0.0)?;
    finite(
        "server momentum",
        t.server_momentum,
        (0.0..1.0).contains(&t.server_momentum),
    )?;
    check_declared_weights(body)?;
    check_noised_weights(body)
}

/// Under `noised`, the ranges of [`crate::noised_policy::check_noised_policy`] (σ counts only
/// under differential privacy); under the other modes, no such numbers.
fn check_noised_weights(body: &ManifestBody) -> Result<(), ManifestError> {
    use crate::noised_policy::{NoisedContext, check_noised_policy};
    let c = &body.campaign;
    let Some(n) = &c.noised_weights else {
        if c.weight_mode == WeightMode::Noised {
            return Err(ManifestError::invalid(
                "the noised weight mode needs noised_weights (n_cap, kappa, floor)",
            ));
        }
        return Ok(());
    };
    if c.weight_mode != WeightMode::Noised {
        return Err(ManifestError::invalid(
            "noised_weights are given but the weight mode is not noised",
        ));
    }
    let sites = body.members.iter().filter(|m| m.has(Role::Site)).count();
    let ctx = NoisedContext {
        clip: body.dp.clip.get(),
        min_cohort: body.protocol.min_cohort,
        colluders: body.protocol.colluders,
        sites: u16::try_from(sites).unwrap_or(u16::MAX),
        sigma: (body.dp.budget != DpBudget::None).then(|| body.dp.sigma.get()),
    };
    check_noised_policy(n, &ctx).map_err(|e| ManifestError::invalid(e.to_string()))
}

/// The DP dimension of a campaign's update: its parameters, plus the weight coordinate
/// κ·w_i under the noised weight mode.
pub fn update_dimension(c: &Campaign) -> Result<amalgam_dp::params::Dimension, ManifestError> {
    let extra = u64::from(c.weight_mode == WeightMode::Noised);
    c.parameter_count
        .get()
        .checked_add(extra)
        .and_then(|d| amalgam_dp::params::Dimension::new(d).ok())
        .ok_or_else(|| ManifestError::invalid("parameter count too large"))
}

/// Under `declared`, exactly one weight per site (by member name), each in
/// 1..=[`MAX_DECLARED_WEIGHT`], and none for another member; under the other modes, none.
fn check_declared_weights(body: &ManifestBody) -> Result<(), ManifestError> {
    let c = &body.campaign;
    if c.weight_mode != WeightMode::Declared {
        if c.declared_weights.is_empty() {
            return Ok(());
        }
        return Err(ManifestError::invalid(
            "declared weights are given but the weight mode is not declared",
        ));
    }
    for (name, &w) in &c.declared_weights {
        check_text("declared weight's member name", name, 64)?;
        match body.members.iter().find(|m| m.name == *name) {
            Some(m) if m.has(Role::Site) => {}
            Some(_) => {
                return Err(ManifestError::invalid(format!(
                    "declared weight for {name}, which is not a site"
                )));
            }
            None => {
                return Err(ManifestError::invalid(format!(
                    "declared weight for {name}, which is not a member"
                )));
            }
        }
        if w == 0 || w > MAX_DECLARED_WEIGHT {
            return Err(ManifestError::invalid(format!(
                "declared weight of {name} is {w}, it must be 1 to {MAX_DECLARED_WEIGHT}"
            )));
        }
    }
    if let Some(m) = body
        .members
        .iter()
        .find(|m| m.has(Role::Site) && !c.declared_weights.contains_key(&m.name))
    {
        return Err(ManifestError::invalid(format!(
            "site {} has no declared weight (the declared mode needs one per site)",
            m.name
        )));
    }
    let max = c.declared_weights.values().copied().max().unwrap_or(1);
    let min = c.declared_weights.values().copied().min().unwrap_or(1);
    if u64::from(max) > u64::from(min) * u64::from(MAX_DECLARED_WEIGHT_RATIO) {
        return Err(ManifestError::invalid(format!(
            "declared weights range from {min} to {max}: the heaviest may be at most \
             {MAX_DECLARED_WEIGHT_RATIO} times the lightest (the step's noise grows with the ratio)"
        )));
    }
    Ok(())
}

fn check_rotations(body: &ManifestBody) -> Result<(), ManifestError> {
    for (i, r) in body.rotations.iter().enumerate() {
        let fail = |reason| ManifestError::Rotation {
            name: r.name.clone(),
            reason,
        };
        // Canonical order (spec §3): strictly ascending new key, so one set of rotations has
        // exactly one encoding and one digest.
        if let Some(prev) = i.checked_sub(1).and_then(|j| body.rotations.get(j))
            && prev.new_key.as_bytes() >= r.new_key.as_bytes()
        {
            return Err(fail("rotations must be in ascending new-key order"));
        }
        if r.epoch != body.epoch {
            return Err(fail("the statement names another epoch"));
        }
        if !body
            .members
            .iter()
            .any(|m| m.name == r.name && m.key == r.new_key)
        {
            return Err(fail("the new key is not this member's key in the manifest"));
        }
        if body.members.iter().any(|m| m.key == r.old_key) {
            return Err(fail("the old key is still a member"));
        }
        if body.rotations[..i].iter().any(|o| o.name == r.name) {
            return Err(fail("two rotations for one member"));
        }
        if !r.verify(&body.consortium) {
            return Err(fail("not signed by the old key"));
        }
    }
    Ok(())
}

fn derive(body: &ManifestBody) -> Result<Derived, ManifestError> {
    let sites = body.members.iter().filter(|m| m.has(Role::Site)).count();
    let n = u16::try_from(sites).map_err(|_| ManifestError::invalid("too many sites"))?;
    let p = &body.protocol;
    let dp = &body.dp;
    let bits = u8::try_from(dp.bits.get()).map_err(|_| ManifestError::invalid("bit width"))?;
    let dim = update_dimension(&body.campaign)?;
    let padded = u32::try_from(dim.padded())
        .map_err(|_| ManifestError::invalid("parameter count too large for a masking round"))?;
    let proto = amalgam_proto::RoundParams::new(ParamsRequest {
        sites: SiteCount::new(n)?,
        threshold: Threshold::new(p.threshold)?,
        min_cohort: MinCohort::new(p.min_cohort)?,
        input_bits: InputBits::new(bits)?,
        sum_bits: SumBits::new(bits)?,
        sum_mode: SumMode::Modular,
        vector_len: VectorLen::new(padded)?,
        graph: match p.graph {
            Graph::Complete => NeighbourGraph::Complete,
            Graph::Harary { k } => NeighbourGraph::Harary { k },
        },
        colluders: Colluders::new(p.colluders)?,
        dropouts: Dropouts::new(p.dropouts),
        trust: match p.trust {
            Trust::Curious => AggregatorTrust::Curious,
            Trust::Malicious => AggregatorTrust::Malicious,
        },
    })?;
    let min_cohort = amalgam_dp::params::SiteCount::new(u32::from(p.min_cohort))?;
    let n_min = amalgam_dp::params::n_min_for(min_cohort, u32::from(p.colluders))?;
    // Division and square root are correctly rounded (IEEE 754): every site derives the same bits.
    let local_sigma =
        amalgam_dp::params::Sigma::new(dp.sigma.get() / f64::from(n_min.get()).sqrt())?;
    let dp_params = amalgam_dp::ledger::RoundParams {
        min_cohort,
        colluders: u32::from(p.colluders),
        n_cohort: amalgam_dp::params::SiteCount::new(u32::from(n))?,
        clip: dp.clip,
        gamma: dp.gamma,
        bits: dp.bits,
        local_sigma,
        dim,
        beta: dp.beta,
    };
    dp_params.validate()?;
    Ok(Derived {
        proto,
        dp: dp_params,
    })
}
