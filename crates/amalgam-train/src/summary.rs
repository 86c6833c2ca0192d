//! Means and 95% confidence intervals over seeds, and the targets a recipe must meet.

use serde::Serialize;

use crate::data::Mode;
use crate::experiment::MethodResult;
use crate::metrics::Report;

/// Two-sided 95% Student t quantiles for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// Mean and 95% half-width of a sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Interval {
    /// Mean.
    pub mean: f64,
    /// Half-width of the 95% t interval (0 for one value).
    pub ci95: f64,
    /// Sample size.
    pub n: usize,
}

/// Mean and 95% t interval; `None` for an empty sample.
pub fn interval(v: &[f64]) -> Option<Interval> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Interval { mean, ci95: 0.0, n });
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T95.get(n - 2).copied().unwrap_or(1.96);
    Some(Interval {
        mean,
        ci95: t * (var / n as f64).sqrt(),
        n,
    })
}

/// Macro recall over the learnable modes HDF, PWF and OSF.
pub fn macro_recall(r: &Report) -> Option<f64> {
    let v: Vec<f64> = Mode::RULE
        .iter()
        .filter_map(|&m| r.mode_recall(m))
        .collect();
    (v.len() == 3).then(|| v.iter().sum::<f64>() / 3.0)
}

/// One method's figures over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct MethodSummary {
    /// Method name.
    pub method: String,
    /// Binary F1.
    pub f1: Option<Interval>,
    /// AUPRC.
    pub auprc: Option<Interval>,
    /// AUROC.
    pub auroc: Option<Interval>,
    /// HDF/PWF/OSF macro recall.
    pub macro_recall: Option<Interval>,
    /// Recall per mode (TWF, HDF, PWF, OSF).
    pub mode_recall: Vec<(String, Option<Interval>)>,
    /// Recall on modes a plant never saw (mode splits).
    pub unseen_mode_recall: Option<Interval>,
    /// Selected round (federated) or epoch block, mean.
    pub best_round: Option<Interval>,
}

/// Summaries of each method over seeds (`runs[seed][method]`).
pub fn summarize(runs: &[Vec<MethodResult>]) -> Vec<MethodSummary> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|k| {
            let per = |f: &dyn Fn(&MethodResult) -> Option<f64>| {
                let v: Vec<f64> = runs.iter().filter_map(|r| r.get(k)).filter_map(f).collect();
                interval(&v)
            };
            MethodSummary {
                method: first[k].method.to_string(),
                f1: per(&|m| m.mean(|r| Some(r.f1))),
                auprc: per(&|m| m.mean(|r| Some(r.auprc))),
                auroc: per(&|m| m.mean(|r| r.auroc)),
                macro_recall: per(&|m| m.mean(macro_recall)),
                mode_recall: Mode::PRIORITY
                    .iter()
                    .map(|&md| {
                        (
                            md.name().to_string(),
                            per(&|m| m.mean(|r| r.mode_recall(md))),
                        )
                    })
                    .collect(),
                unseen_mode_recall: per(&|m| m.unseen_mode_recall),
                best_round: per(&|m| {
                    Some(
                        m.models.iter().map(|s| s.best_round as f64).sum::<f64>()
                            / m.models.len().max(1) as f64,
                    )
                }),
            }
        })
        .collect()
}

/// Text table of summaries, with each method's ratio to centralized.
pub fn table(s: &[MethodSummary]) -> String {
    let f = |i: &Option<Interval>| {
        i.map_or("    n/a       ".to_string(), |i| {
            format!("{:.3} ± {:.3}", i.mean, i.ci95)
        })
    };
    let central = s.iter().find(|m| m.method == "centralized");
    let ratio = |a: &Option<Interval>, b: Option<&Option<Interval>>| match (a, b.and_then(|b| *b)) {
        (Some(a), Some(b)) if b.mean > 0.0 => format!("{:.3}", a.mean / b.mean),
        _ => "n/a".into(),
    };
    let mut out = String::from(
        "method            F1              AUPRC           AUROC           HDF/PWF/OSF rec  unseen-mode rec  round   F1/c   AUPRC/c macro/c unseen/c\n",
    );
    for m in s {
        out += &format!(
            "{:<16}  {}  {}  {}  {}   {}   {:>5.0}   {:<6} {:<7} {:<7} {}\n",
            m.method,
            f(&m.f1),
            f(&m.auprc),
            f(&m.auroc),
            f(&m.macro_recall),
            f(&m.unseen_mode_recall),
            m.best_round.map_or(0.0, |i| i.mean),
            ratio(&m.f1, central.map(|c| &c.f1)),
            ratio(&m.auprc, central.map(|c| &c.auprc)),
            ratio(&m.macro_recall, central.map(|c| &c.macro_recall)),
            ratio(
                &m.unseen_mode_recall,
                central.map(|c| &c.unseen_mode_recall)
            ),
        );
    }
    for m in s {
        out += &format!("{:<16}  per-mode recall:", m.method);
        for (name, i) in &m.mode_recall {
            out += &format!("  {name} {}", f(i));
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_a_hand_computed_t_interval() {
        // Mean 2, sample variance 1, n 3: half-width 4.303 * sqrt(1/3).
        let i = interval(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(i.mean, 2.0);
        assert!((i.ci95 - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(interval(&[]), None);
        assert_eq!(interval(&[5.0]).unwrap().ci95, 0.0);
    }
}
