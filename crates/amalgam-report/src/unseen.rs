//! The modes a plant never saw (`--split mode`, `mode-exclusive`): for each plant, the rule
//! modes (HDF, PWF, OSF) it does not own, and each model's mean recall on those modes' rows of
//! the global test set. This is what backs a "the federated model detects failures the plant
//! never saw" claim: the plant's local-only model stands beside it (expected near 0), and the
//! centralized model on the same modes is the reference the ratio is taken to.
//!
//! A plant owns the modes whose failures the split deals to it. A failure with several modes
//! goes to the owners of its primary mode (HDF > PWF > OSF > TWF), so a plant can hold a few
//! rows carrying a mode it does not own as a secondary one.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::schema::{ModelFigures, ModelKind, SimulationReport};
use crate::text::{cell, esc, num};

/// The rule modes (exact generator rules; TWF and RNF are essentially unpredictable).
pub const RULE_MODES: [&str; 3] = ["HDF", "PWF", "OSF"];

/// One plant's never-seen rule modes and each model's mean recall on them (global test rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnseenModes {
    /// The plant.
    pub plant: u16,
    /// The rule modes it does not own, with test rows.
    pub modes: Vec<String>,
    /// The federated model's mean recall on them.
    pub federated: f64,
    /// The plant's fine-tuned model's.
    pub fine_tuned: f64,
    /// The plant's local-only model's.
    pub local_only: f64,
    /// The centralized model's (the reference).
    pub centralized: f64,
}

/// Mean recall of `m` over `modes` (`None` if any of them has no recall on its rows).
fn mean_recall(m: &ModelFigures, modes: &[String]) -> Option<f64> {
    let mut sum = 0.0;
    for mode in modes {
        sum += m.modes.iter().find(|f| &f.mode == mode)?.recall?;
    }
    Some(sum / modes.len() as f64)
}

/// The rows for plants `owned` (each plant's owned modes, index = plant), from the global
/// test figures in `models`. A plant that owns every rule mode, or none of whose unseen modes
/// has test rows, has no row; so has every plant of a split without owners (`type`).
pub fn rows(owned: &[Vec<String>], models: &[ModelFigures]) -> Vec<UnseenModes> {
    let global = |kind: ModelKind, plant: Option<u16>| {
        models
            .iter()
            .find(|m| m.kind == kind && m.plant == plant && m.test_set == "global")
    };
    let (Some(fed), Some(cen)) = (
        global(ModelKind::Federated, None),
        global(ModelKind::Centralized, None),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, own) in owned.iter().enumerate() {
        let Ok(plant) = u16::try_from(k) else { break };
        if own.is_empty() {
            continue;
        }
        let (Some(ft), Some(lo)) = (
            global(ModelKind::FineTuned, Some(plant)),
            global(ModelKind::LocalOnly, Some(plant)),
        ) else {
            continue;
        };
        let modes: Vec<String> = RULE_MODES
            .iter()
            .filter(|m| !own.iter().any(|o| o == *m))
            .filter(|m| {
                cen.modes
                    .iter()
                    .any(|f| f.mode == **m && f.rows > 0 && f.recall.is_some())
            })
            .map(|m| (*m).to_string())
            .collect();
        if modes.is_empty() {
            continue;
        }
        let (Some(federated), Some(fine_tuned), Some(local_only), Some(centralized)) = (
            mean_recall(fed, &modes),
            mean_recall(ft, &modes),
            mean_recall(lo, &modes),
            mean_recall(cen, &modes),
        ) else {
            continue;
        };
        out.push(UnseenModes {
            plant,
            modes,
            federated,
            fine_tuned,
            local_only,
            centralized,
        });
    }
    out
}

/// The page's section (nothing without rows).
pub fn section(r: &SimulationReport, out: &mut String) {
    if r.unseen_modes.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Failure modes a plant never saw</h2>\n<p>Each plant's rule modes (HDF, PWF, OSF) \
         that it owns no failure of, and each model's mean recall on those modes' rows of the \
         global test set.</p>\n<table class=\"unseen\"><thead><tr><th>plant</th><th>modes \
         never seen</th><th>federated</th><th>fine-tuned</th><th>local-only</th>\
         <th>centralized</th></tr></thead><tbody>\n",
    );
    for (i, u) in r.unseen_modes.iter().enumerate() {
        let p = |f: &str| format!("/unseen_modes/{i}/{f}");
        out.push_str("<tr>");
        out.push_str(&cell(&p("plant"), &u.plant.to_string()));
        let _ = write!(out, "<td>{}</td>", esc(&u.modes.join(", ")));
        for (f, v) in [
            ("federated", u.federated),
            ("fine_tuned", u.fine_tuned),
            ("local_only", u.local_only),
            ("centralized", u.centralized),
        ] {
            out.push_str(&cell(&p(f), &num(v)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ModeFigure;

    fn model(kind: ModelKind, plant: Option<u16>, recalls: [f64; 3]) -> ModelFigures {
        ModelFigures {
            kind,
            plant,
            test_set: "global".into(),
            rows: 100,
            failures: 10,
            threshold: 0.5,
            f1: 0.5,
            auprc: 0.5,
            auroc: None,
            precision: 0.5,
            recall: 0.5,
            modes: RULE_MODES
                .iter()
                .zip(recalls)
                .map(|(m, r)| ModeFigure {
                    mode: (*m).into(),
                    rows: 5,
                    recall: Some(r),
                    auroc: None,
                })
                .collect(),
        }
    }

    #[test]
    fn each_plant_is_judged_on_exactly_the_rule_modes_it_does_not_own() {
        let models = vec![
            model(ModelKind::Federated, None, [0.9, 0.6, 0.3]),
            model(ModelKind::Centralized, None, [1.0, 0.8, 0.6]),
            model(ModelKind::FineTuned, Some(0), [0.5, 0.5, 0.5]),
            model(ModelKind::LocalOnly, Some(0), [0.9, 0.0, 0.0]),
            model(ModelKind::FineTuned, Some(1), [0.4, 0.4, 0.4]),
            model(ModelKind::LocalOnly, Some(1), [0.0, 0.2, 0.1]),
            model(ModelKind::FineTuned, Some(2), [0.4, 0.4, 0.4]),
            model(ModelKind::LocalOnly, Some(2), [0.0, 0.2, 0.1]),
        ];
        let owned = vec![
            vec!["HDF".to_string()],
            vec!["PWF".into(), "TWF".into()],
            vec!["HDF".into(), "PWF".into(), "OSF".into()],
            vec![],
        ];
        let r = rows(&owned, &models);
        assert_eq!(
            r.len(),
            2,
            "plant 2 owns every rule mode, plant 3 has no models"
        );
        assert_eq!(
            (r[0].plant, r[0].modes.clone()),
            (0, vec!["PWF".into(), "OSF".into()])
        );
        assert!((r[0].federated - 0.45).abs() < 1e-12);
        assert!((r[0].centralized - 0.7).abs() < 1e-12);
        assert!(r[0].local_only.abs() < 1e-12);
        assert_eq!(r[1].modes, ["HDF", "OSF"]);
        assert!((r[1].federated - 0.6).abs() < 1e-12);
        assert!((r[1].local_only - 0.05).abs() < 1e-12);
        // A split without owners has no rows.
        assert!(rows(&[vec![], vec![]], &models).is_empty());
    }
}
