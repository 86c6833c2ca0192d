//! What a next-epoch draft changes against the previous signed epoch, field by field, so a
//! member signing a "join" draft sees — and must accept by name — every other change in it
//! (t, m, the trust model, the fallback, σ, the DP budget, …) (spec consortium.md §6).

use serde_json::Value;

use crate::error::ManifestError;
use crate::highwater::EpochHighWater;
use crate::key::fingerprint;
use crate::model::{ManifestBody, Member};
use crate::verified::VerifiedManifest;

/// One changed field: its dotted name (e.g. `protocol.threshold`, `dp.budget.epsilon_cap`,
/// `member.plant-lyon.key`), and the values before and after (`-` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted field name, as `--accept-changes` takes it.
    pub field: String,
    /// Value in the previous epoch.
    pub before: String,
    /// Value in the draft.
    pub after: String,
}

/// Checks that `next` is the direct successor of `prev` as seen by the member `me` who is about
/// to sign it (same consortium, epoch + 1, chained to `prev`'s digest, key changes carrying
/// the old key's statement, `me` listed), then lists every changed field.
pub fn changes_since(
    prev: &VerifiedManifest,
    next: &ManifestBody,
    me: &ed25519_dalek::VerifyingKey,
) -> Result<Vec<Change>, ManifestError> {
    if next.epoch != prev.epoch().saturating_add(1) {
        return Err(ManifestError::invalid(format!(
            "the draft is epoch {}, not the successor of the previous epoch {}",
            next.epoch,
            prev.epoch()
        )));
    }
    // Epoch + 1: the digest argument is only compared for an equal epoch.
    EpochHighWater::of(prev).check_successor(next, &[0; 32], me)?;
    Ok(diff(prev.body(), next))
}

/// Every field of `next` that differs from `prev`, policy first, then members by name. The
/// epoch number, previous digest and rotation statements are not listed: they are checked
/// (chain, rotation statements) rather than accepted.
pub fn diff(prev: &ManifestBody, next: &ManifestBody) -> Vec<Change> {
    let mut out = Vec::new();
    let (a, b) = (policy_value(prev), policy_value(next));
    flatten_diff("", &a, &b, &mut out);
    for m in &prev.members {
        match next.members.iter().find(|n| n.name == m.name) {
            None => out.push(Change {
                field: format!("member.{}", m.name),
                before: describe(m),
                after: "-".into(),
            }),
            Some(n) => {
                let fields = [
                    (
                        "organisation",
                        m.organisation.clone(),
                        n.organisation.clone(),
                    ),
                    ("roles", roles(m), roles(n)),
                    ("key", fingerprint(&m.key), fingerprint(&n.key)),
                ];
                for (f, before, after) in fields {
                    if before != after {
                        out.push(Change {
                            field: format!("member.{}.{f}", m.name),
                            before,
                            after,
                        });
                    }
                }
            }
        }
    }
    for n in &next.members {
        if !prev.members.iter().any(|m| m.name == n.name) {
            out.push(Change {
                field: format!("member.{}", n.name),
                before: "-".into(),
                after: describe(n),
            });
        }
    }
    out
}

fn roles(m: &Member) -> String {
    let r: Vec<&str> = m.roles.iter().map(|r| r.name()).collect();
    r.join(",")
}

fn describe(m: &Member) -> String {
    format!("{} [{}] {}", m.organisation, roles(m), fingerprint(&m.key))
}

fn policy_value(body: &ManifestBody) -> Value {
    let mut v = serde_json::to_value(body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for k in ["epoch", "prev_digest", "member", "rotation"] {
            map.remove(k);
        }
    }
    v
}

fn flatten_diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let null = Value::Null;
                flatten_diff(
                    &join(k),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push(Change {
            field: prefix.to_string(),
            before: show(a),
            after: show(b),
        }),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
