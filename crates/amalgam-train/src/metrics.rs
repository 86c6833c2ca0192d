//! Evaluation metrics for a binary failure predictor.
//!
//! Primary: binary F1 at a decision threshold and AUPRC (average precision, the area under the
//! step precision-recall curve, ties treated as one threshold). Secondary: AUROC (Mann-Whitney,
//! ties counted one half) and, per failure mode, recall on the rows carrying that mode and the
//! AUROC of those rows against the non-failures. A row with several modes counts in each. RNF
//! (random failure) is reported as n/a: it is independent of the features by construction.

use serde::Serialize;

use crate::data::{Mode, Row};

/// Precision, recall and F1 at `threshold` (a score ≥ threshold predicts failure).
pub fn f1_at(labels: &[bool], scores: &[f32], threshold: f32) -> (f64, f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (&y, &s) in labels.iter().zip(scores) {
        match (y, s >= threshold) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fneg += 1,
            (false, false) => {}
        }
    }
    let p = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let r = if tp + fneg == 0 {
        0.0
    } else {
        tp as f64 / (tp + fneg) as f64
    };
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Indices sorted by descending score (NaN last).
fn by_score_desc(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Average precision: Σ over distinct thresholds of (ΔRecall × Precision). 0 without positives.
pub fn auprc(labels: &[bool], scores: &[f32]) -> f64 {
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 {
        return 0.0;
    }
    let order = by_score_desc(scores);
    let (mut tp, mut fp, mut last_recall, mut ap) = (0usize, 0usize, 0.0, 0.0);
    let mut k = 0;
    while k < order.len() {
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            if labels[order[k]] {
                tp += 1
            } else {
                fp += 1
            }
            k += 1;
        }
        let recall = tp as f64 / positives as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
    }
    ap
}

/// AUROC of `pos` scores against `neg` scores; `None` when either side is empty.
pub fn auroc_of(pos: &[f32], neg: &[f32]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut n: Vec<f32> = neg.to_vec();
    n.sort_by(f32::total_cmp);
    let mut wins = 0.0;
    for &p in pos {
        let below = n.partition_point(|&x| x < p);
        let not_above = n.partition_point(|&x| x <= p);
        wins += below as f64 + 0.5 * (not_above - below) as f64;
    }
    Some(wins / (pos.len() as f64 * neg.len() as f64))
}

/// AUROC of failures against non-failures.
pub fn auroc(labels: &[bool], scores: &[f32]) -> Option<f64> {
    let pos: Vec<f32> = labels
        .iter()
        .zip(scores)
        .filter(|(y, _)| **y)
        .map(|(_, s)| *s)
        .collect();
    let neg: Vec<f32> = labels
        .iter()
        .zip(scores)
        .filter(|(y, _)| !**y)
        .map(|(_, s)| *s)
        .collect();
    auroc_of(&pos, &neg)
}

/// The threshold (one of the scores) that maximizes F1; 0.5 when there is no positive.
pub fn best_threshold(labels: &[bool], scores: &[f32]) -> f32 {
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 {
        return 0.5;
    }
    let order = by_score_desc(scores);
    let (mut tp, mut fp, mut best, mut best_t) = (0usize, 0usize, -1.0, 0.5);
    let mut k = 0;
    while k < order.len() {
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            if labels[order[k]] {
                tp += 1
            } else {
                fp += 1
            }
            k += 1;
        }
        let f = 2.0 * tp as f64 / (2 * tp + fp + (positives - tp)) as f64;
        if f > best {
            best = f;
            best_t = s;
        }
    }
    best_t
}

/// Metrics of one failure mode.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModeMetrics {
    /// Mode name.
    pub mode: &'static str,
    /// Rows carrying the mode.
    pub rows: usize,
    /// Share of those rows predicted as failures (`None`: n/a or no row).
    pub recall: Option<f64>,
    /// AUROC of those rows against the non-failures (`None`: n/a or no row).
    pub auroc: Option<f64>,
}

/// All metrics of a scored data set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Rows scored.
    pub rows: usize,
    /// Failures among them.
    pub failures: usize,
    /// Decision threshold on the predicted probability.
    pub threshold: f32,
    /// Binary precision at the threshold.
    pub precision: f64,
    /// Binary recall at the threshold.
    pub recall: f64,
    /// Binary F1 at the threshold.
    pub f1: f64,
    /// Average precision.
    pub auprc: f64,
    /// AUROC (`None` without both classes).
    pub auroc: Option<f64>,
    /// Per failure mode, in file column order.
    pub modes: Vec<ModeMetrics>,
}

impl Report {
    /// Scores `rows` with predicted failure probabilities `scores` at `threshold`.
    pub fn new(rows: &[&Row], scores: &[f32], threshold: f32) -> Report {
        let labels: Vec<bool> = rows.iter().map(|r| r.failure).collect();
        let (precision, recall, f1) = f1_at(&labels, scores, threshold);
        let neg: Vec<f32> = rows
            .iter()
            .zip(scores)
            .filter(|(r, _)| !r.failure)
            .map(|(_, s)| *s)
            .collect();
        let modes = Mode::ALL
            .iter()
            .map(|&m| {
                let pos: Vec<f32> = rows
                    .iter()
                    .zip(scores)
                    .filter(|(r, _)| r.has(m))
                    .map(|(_, s)| *s)
                    .collect();
                let na = m == Mode::Rnf || pos.is_empty();
                ModeMetrics {
                    mode: m.name(),
                    rows: pos.len(),
                    recall: (!na).then(|| {
                        pos.iter().filter(|&&s| s >= threshold).count() as f64 / pos.len() as f64
                    }),
                    auroc: if na { None } else { auroc_of(&pos, &neg) },
                }
            })
            .collect();
        Report {
            rows: rows.len(),
            failures: labels.iter().filter(|&&y| y).count(),
            threshold,
            precision,
            recall,
            f1,
            auprc: auprc(&labels, scores),
            auroc: auroc(&labels, scores),
            modes,
        }
    }

    /// Recall of `mode` (`None` when n/a).
    pub fn mode_recall(&self, mode: Mode) -> Option<f64> {
        self.modes
            .iter()
            .find(|m| m.mode == mode.name())
            .and_then(|m| m.recall)
    }

    /// Human-readable lines.
    pub fn to_text(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4}"));
        let mut s = format!(
            "rows {}  failures {}  threshold {:.4}\nF1 {:.4}  precision {:.4}  recall {:.4}\nAUPRC {:.4}  AUROC {}\n",
            self.rows,
            self.failures,
            self.threshold,
            self.f1,
            self.precision,
            self.recall,
            self.auprc,
            opt(self.auroc)
        );
        for m in &self.modes {
            s += &format!(
                "{:<4} rows {:>4}  recall {}  AUROC vs non-failures {}\n",
                m.mode,
                m.rows,
                opt(m.recall),
                opt(m.auroc)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y: [bool; 4] = [true, false, true, false];
    const S: [f32; 4] = [0.9, 0.8, 0.7, 0.1];

    #[test]
    fn hand_computed_f1_auprc_auroc() {
        let (p, r, f) = f1_at(&Y, &S, 0.5);
        assert!(
            (p - 2.0 / 3.0).abs() < 1e-12 && (r - 1.0).abs() < 1e-12 && (f - 0.8).abs() < 1e-12
        );
        // Thresholds 0.9 (P 1, R .5), 0.8 (P .5, R .5), 0.7 (P 2/3, R 1): AP = .5 + .5 * 2/3.
        assert!((auprc(&Y, &S) - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        // Pairs (0.9,0.8) (0.9,0.1) (0.7,0.1) won, (0.7,0.8) lost.
        assert_eq!(auroc(&Y, &S), Some(0.75));
        assert_eq!(best_threshold(&Y, &S), 0.7);
        assert_eq!(f1_at(&Y, &S, 0.95).2, 0.0);
    }

    #[test]
    fn ties_count_half_and_one_step() {
        let y = [true, false];
        let s = [0.5, 0.5];
        assert_eq!(auroc(&y, &s), Some(0.5));
        assert!((auprc(&y, &s) - 0.5).abs() < 1e-12);
        assert_eq!(auroc(&[true, true], &s), None);
        assert_eq!(auprc(&[false, false], &s), 0.0);
    }

    fn row(failure: bool, modes: u8) -> Row {
        Row {
            udi: 0,
            product_type: crate::data::ProductType::L,
            air_temp_k: 300.0,
            process_temp_k: 310.0,
            speed_rpm: 1500.0,
            torque_nm: 40.0,
            wear_min: 0.0,
            failure,
            modes,
        }
    }

    #[test]
    fn per_mode_recall_counts_multi_mode_rows_in_each_and_rnf_is_na() {
        let rows = [
            row(true, Mode::Hdf.bit() | Mode::Osf.bit()),
            row(true, Mode::Hdf.bit()),
            row(true, Mode::Rnf.bit()),
            row(false, 0),
            row(false, 0),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let scores = [0.9, 0.2, 0.6, 0.3, 0.1];
        let r = Report::new(&refs, &scores, 0.5);
        let hdf = &r.modes[1];
        assert_eq!((hdf.rows, hdf.recall), (2, Some(0.5)));
        // HDF rows 0.9, 0.2 against non-failures 0.3, 0.1: wins 2 + 1 of 4.
        assert_eq!(hdf.auroc, Some(0.75));
        let osf = &r.modes[3];
        assert_eq!((osf.rows, osf.recall, osf.auroc), (1, Some(1.0), Some(1.0)));
        let rnf = &r.modes[4];
        assert_eq!((rnf.rows, rnf.recall, rnf.auroc), (1, None, None));
        assert_eq!(r.modes[0].recall, None);
        assert!(r.to_text().contains("RNF  rows    1  recall n/a"));
        // TP 2, FP 0, FN 1: precision 1, recall 2/3, F1 0.8.
        assert_eq!(r.failures, 3);
        assert!((r.f1 - 0.8).abs() < 1e-12);
    }
}
