//! The consortium gates of the record-level ε-versus-F1 curve (protocol-spec/record-dp.md,
//! "The record-level curve").
//!
//! Gate 2 is the consortium's value claim, per plant, paired on the same split and seed: the
//! federated DP model beats the plant's **non-private** local-only model on the rule modes the
//! plant never saw (recall on the global test set, at the threshold each chose on validation)
//! and is not below it in binary F1 on the global test set. Gate 3: the curve is monotone
//! within its 95 % intervals — no point at a larger ε lies entirely below a point at a smaller
//! one. Both are plain arithmetic on scored reports, so they are tested on hand-made figures.

use serde::Serialize;

use crate::campaign::Recipe;
use crate::data::{Mode, Row};
use crate::experiment::{Prepared, centralized, local_only};
use crate::metrics::Report;
use crate::model::{Model, ModelError};
use crate::split::Split;
use crate::summary::interval;

/// Mean test recall of `report` over the rule modes ([`Mode::RULE`]) outside `owned`
/// (`None` when the plant owns no mode — not a mode split — or no unseen mode has a positive
/// in the test set).
pub fn unseen_recall(report: &Report, owned: &[Mode]) -> Option<f64> {
    if owned.is_empty() {
        return None;
    }
    let v: Vec<f64> = Mode::RULE
        .iter()
        .filter(|m| !owned.contains(m))
        .filter_map(|&m| report.mode_recall(m))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// One plant's figures on the global test set, for one seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlantFigures {
    /// Binary F1.
    pub f1: f64,
    /// Recall on the modes the plant never saw.
    pub unseen_mode_recall: Option<f64>,
}

/// Every plant's non-private local-only model of `split`, scored on the global test set:
/// the recipe on the plant's own rows, selected and thresholded on its own validation rows.
pub fn local_baselines(
    rows: &[Row],
    split: &Split,
    recipe: &Recipe,
    seed: u64,
) -> Result<Vec<PlantFigures>, ModelError> {
    tch::set_num_threads(1);
    let p = Prepared::new(rows, split, recipe);
    let mut model = Model::new(&recipe.model)?;
    let init = model.init_seeded(seed)?;
    (0..split.plants.len())
        .map(|k| {
            let s = local_only(&p, &mut model, &init, k, recipe, seed)?;
            Ok(PlantFigures {
                f1: s.test.f1,
                unseen_mode_recall: unseen_recall(&s.test, &split.plants[k].owned_modes),
            })
        })
        .collect()
}

/// The non-private centralized model of `split`: the same recipe as the local-only baselines
/// on the pooled training rows of every plant, selected and thresholded on the pooled
/// validation rows, scored on the global test set: the reference of the stretch goal
/// ("0.90x centralized F1 at ε = 3"). Only this baseline sees pooled rows.
pub fn centralized_baseline(
    rows: &[Row],
    split: &Split,
    recipe: &Recipe,
    seed: u64,
) -> Result<Report, ModelError> {
    tch::set_num_threads(1);
    let p = Prepared::new(rows, split, recipe);
    let mut model = Model::new(&recipe.model)?;
    let init = model.init_seeded(seed)?;
    Ok(centralized(&p, &mut model, &init, recipe, seed)?.test)
}

/// The shared federated model's figures for every plant of `split` (one F1; each plant's
/// own unseen modes).
pub fn federated_figures(report: &Report, split: &Split) -> Vec<PlantFigures> {
    split
        .plants
        .iter()
        .map(|p| PlantFigures {
            f1: report.f1,
            unseen_mode_recall: unseen_recall(report, &p.owned_modes),
        })
        .collect()
}

/// Paired figures of one plant over seeds: `federated[s]` and `local[s]` from seed s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate2Plant {
    /// The plant.
    pub plant: usize,
    /// Mean federated DP unseen-mode recall over seeds.
    pub federated_unseen_recall: Option<f64>,
    /// Mean local-only unseen-mode recall over seeds.
    pub local_unseen_recall: Option<f64>,
    /// Mean paired difference (federated − local) of unseen-mode recall, and its 95 % half-width.
    pub unseen_recall_diff: Option<f64>,
    /// Half-width of the 95 % interval of that difference.
    pub unseen_recall_diff_ci95: Option<f64>,
    /// Mean federated DP F1.
    pub federated_f1: f64,
    /// Mean local-only F1.
    pub local_f1: f64,
    /// Mean paired difference (federated − local) of F1.
    pub f1_diff: f64,
    /// Half-width of the 95 % interval of that difference.
    pub f1_diff_ci95: f64,
    /// Recall difference > 0 and F1 difference ≥ 0 (means of the paired differences).
    pub pass: bool,
}

/// Gate 2 of every plant: `federated[s][k]` and `local[s][k]` are plant k's figures from
/// seed s. A plant with no unseen-mode figure in some seed is judged on the seeds that have
/// one; with none at all it fails (the claim cannot be shown).
pub fn gate2(federated: &[Vec<PlantFigures>], local: &[Vec<PlantFigures>]) -> Vec<Gate2Plant> {
    let plants = federated.iter().map(Vec::len).min().unwrap_or(0);
    let seeds = federated.len().min(local.len());
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    (0..plants)
        .map(|k| {
            let pairs: Vec<(PlantFigures, PlantFigures)> = (0..seeds)
                .filter_map(|s| Some((*federated[s].get(k)?, *local[s].get(k)?)))
                .collect();
            let f1_d: Vec<f64> = pairs.iter().map(|(f, l)| f.f1 - l.f1).collect();
            let rec: Vec<(f64, f64)> = pairs
                .iter()
                .filter_map(|(f, l)| Some((f.unseen_mode_recall?, l.unseen_mode_recall?)))
                .collect();
            let rec_d: Vec<f64> = rec.iter().map(|(f, l)| f - l).collect();
            let f1i = interval(&f1_d);
            let reci = interval(&rec_d);
            let f1_diff = f1i.map_or(f64::NAN, |i| i.mean);
            let pass = reci.is_some_and(|i| i.mean > 0.0) && f1_diff >= 0.0;
            Gate2Plant {
                plant: k,
                federated_unseen_recall: mean(&rec.iter().map(|r| r.0).collect::<Vec<_>>()),
                local_unseen_recall: mean(&rec.iter().map(|r| r.1).collect::<Vec<_>>()),
                unseen_recall_diff: reci.map(|i| i.mean),
                unseen_recall_diff_ci95: reci.map(|i| i.ci95),
                federated_f1: mean(&pairs.iter().map(|p| p.0.f1).collect::<Vec<_>>())
                    .unwrap_or(f64::NAN),
                local_f1: mean(&pairs.iter().map(|p| p.1.f1).collect::<Vec<_>>())
                    .unwrap_or(f64::NAN),
                f1_diff,
                f1_diff_ci95: f1i.map_or(f64::NAN, |i| i.ci95),
                pass,
            }
        })
        .collect()
}

/// Whether `points` — (mean, 95 % half-width) in increasing order of ε, the non-private
/// point last — are monotone within their intervals: for every pair i < j the upper end of
/// j is at least the lower end of i. Returns the first violating pair otherwise.
pub fn monotone_within_ci(points: &[(f64, f64)]) -> Result<(), (usize, usize)> {
    for i in 0..points.len() {
        for j in i + 1..points.len() {
            let (mi, ci) = points[i];
            let (mj, cj) = points[j];
            // A NaN figure is a violation too.
            let holds = (mj + cj)
                .partial_cmp(&(mi - ci))
                .is_some_and(|o| o != std::cmp::Ordering::Less);
            if !holds {
                return Err((i, j));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ModeMetrics;

    /// A report whose only content is the per-mode recall.
    fn with_recall(recall: &[(Mode, f64)]) -> Report {
        Report {
            rows: 0,
            failures: 0,
            threshold: 0.5,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            auprc: 0.0,
            auroc: None,
            modes: recall
                .iter()
                .map(|&(m, r)| ModeMetrics {
                    mode: m.name(),
                    rows: 10,
                    recall: Some(r),
                    auroc: None,
                })
                .collect(),
        }
    }

    #[test]
    fn unseen_recall_judges_only_the_rule_modes_a_plant_does_not_own() {
        let r = with_recall(&[
            (Mode::Hdf, 0.9),
            (Mode::Pwf, 0.6),
            (Mode::Osf, 0.3),
            (Mode::Twf, 0.0),
        ]);
        // An HDF plant: PWF and OSF; TWF (unpredictable) never counts.
        let hdf = unseen_recall(&r, &[Mode::Hdf]).unwrap();
        assert!((hdf - 0.45).abs() < 1e-12, "{hdf}");
        // A TWF plant never saw any rule mode: all three.
        let twf = unseen_recall(&r, &[Mode::Twf]).unwrap();
        assert!((twf - 0.6).abs() < 1e-12, "{twf}");
        // Not a mode split: no figure.
        assert_eq!(unseen_recall(&r, &[]), None);
    }

    fn fig(f1: f64, r: Option<f64>) -> PlantFigures {
        PlantFigures {
            f1,
            unseen_mode_recall: r,
        }
    }

    #[test]
    fn gate2_passes_only_when_recall_beats_and_f1_is_not_below() {
        // Plant 0: recall +0.2, F1 +0.05 → pass. Plant 1: recall +0.1, F1 −0.02 → fail.
        // Plant 2: recall −0.1, F1 +0.1 → fail. Plant 3: no unseen figure → fail.
        let fed = vec![
            vec![
                fig(0.6, Some(0.5)),
                fig(0.5, Some(0.4)),
                fig(0.6, Some(0.2)),
                fig(0.6, None),
            ],
            vec![
                fig(0.7, Some(0.6)),
                fig(0.5, Some(0.5)),
                fig(0.7, Some(0.3)),
                fig(0.7, None),
            ],
        ];
        let loc = vec![
            vec![
                fig(0.55, Some(0.3)),
                fig(0.52, Some(0.3)),
                fig(0.5, Some(0.3)),
                fig(0.1, None),
            ],
            vec![
                fig(0.65, Some(0.4)),
                fig(0.52, Some(0.4)),
                fig(0.6, Some(0.4)),
                fig(0.1, None),
            ],
        ];
        let g = gate2(&fed, &loc);
        assert_eq!(g.len(), 4);
        assert!(g[0].pass);
        assert!((g[0].unseen_recall_diff.unwrap() - 0.2).abs() < 1e-12);
        assert!((g[0].f1_diff - 0.05).abs() < 1e-12);
        assert!(!g[1].pass, "F1 below the local model");
        assert!(!g[2].pass, "unseen recall below the local model");
        assert!(!g[3].pass, "no unseen-mode figure");
        assert_eq!(g[3].unseen_recall_diff, None);
    }

    #[test]
    fn equal_recall_does_not_beat() {
        let g = gate2(&[vec![fig(0.5, Some(0.4))]], &[vec![fig(0.5, Some(0.4))]]);
        assert!(!g[0].pass);
    }

    #[test]
    fn monotone_within_ci_finds_a_significant_drop() {
        assert_eq!(
            monotone_within_ci(&[(0.1, 0.05), (0.3, 0.1), (0.25, 0.05), (0.6, 0.02)]),
            Ok(())
        );
        // 0.6 ± 0.02 at small ε, 0.3 ± 0.1 at larger ε: 0.4 < 0.58.
        assert_eq!(monotone_within_ci(&[(0.6, 0.02), (0.3, 0.1)]), Err((0, 1)));
        assert_eq!(
            monotone_within_ci(&[(0.2, 0.0), (0.5, 0.0), (0.4, 0.0)]),
            Err((1, 2))
        );
    }
}
