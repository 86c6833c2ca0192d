//! The record-level section of the page (`simulate --record-dp`): one row per plant from its
//! audited record ledger, printed under its own heading beside the site-level table, with the
//! unit, accountant, clip norm and verification of each statement spelled out, so the two
//! ε figures are never read as one another.
//!
//! The sentences are shared with `amalgam report privacy` (one wording for both outputs).

use std::fmt::Write;

use crate::schema::SimulationReport;
use crate::text::{cell, esc, fig, num};

/// The record-level privacy unit, as both reports state it.
pub const UNIT: &str = "one training record of the plant's own dataset (add/remove one record); \
                        δ is relative to that plant's record count N_i; ε covers every run \
                        charged to the dataset, over the whole campaign";

/// The site-level privacy unit, for contrast.
pub const SITE_UNIT: &str = "one plant's whole update in each round; δ is the campaign's";

/// The record-level accountant.
pub const ACCOUNTANT: &str = "RDP of the Poisson-subsampled Gaussian at integer orders (exact \
                              for the discrete Gaussian on a grid), composed over every run on \
                              the dataset in every campaign, converted to (epsilon, delta) by \
                              CKS20 Prop. 12";

/// What neither statement covers.
pub const NOT_COVERED: &str = "a fine-tuned local model a plant shares outside the aggregate; a \
                               changed data file (another dataset id, another ledger); the \
                               record count N_i itself; the plant's round timing, which grows \
                               with each step's sample size (it reveals the sum of the sample \
                               sizes to whoever times the site, the aggregator included)";

/// How each statement is checked.
pub const VERIFY: &str = "record-level: `amalgam ledger verify` of the plant's \
                          record-in-dataset.ledger under its identity key, at the head shown; \
                          site-level: `amalgam ledger verify` of its site ledger at the head in \
                          the table above";

/// The record-level verdict line (largest ε over plants, with its pointer), `None` without
/// record-level DP.
pub fn line(r: &SimulationReport) -> Option<String> {
    let (i, worst) = r
        .record_level
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.epsilon_spent.total_cmp(&b.1.epsilon_spent))?;
    Some(format!(
        "record-level differential privacy: ε ≤ {} per plant at δ = {} relative to each plant's \
         record count (unit: one training record of a plant's own dataset; not site-level)",
        fig(
            &format!("/record_level/{i}/epsilon_spent"),
            &num(worst.epsilon_spent)
        ),
        fig(&format!("/record_level/{i}/delta"), &num(worst.delta))
    ))
}

/// Appends the record-level section (nothing without record-level DP).
pub fn section(r: &SimulationReport, out: &mut String) {
    if r.record_level.is_empty() {
        return;
    }
    out.push_str("<h2>Record-level privacy per plant (DP-SGD inside each plant)</h2>\n");
    let _ = writeln!(
        out,
        "<p>A separate statement from the site-level one above, in another unit. Record-level \
         unit: {}. Site-level unit: {}.</p>",
        esc(UNIT),
        esc(SITE_UNIT)
    );
    out.push_str("<table class=\"record\"><thead><tr><th>plant</th><th>records N_i</th><th>record-level ε spent</th><th>cap</th><th>δ</th><th>q</th><th>C_rec</th><th>z = σ/Δ</th><th>runs</th><th>noisy steps</th><th>ledger head</th></tr></thead><tbody>\n");
    for (i, e) in r.record_level.iter().enumerate() {
        let p = |f: &str| format!("/record_level/{i}/{f}");
        out.push_str("<tr>");
        out.push_str(&cell(&p("plant"), &e.plant.to_string()));
        out.push_str(&cell(&p("records"), &e.records.to_string()));
        out.push_str(&cell(&p("epsilon_spent"), &num(e.epsilon_spent)));
        out.push_str(&cell(&p("epsilon_cap"), &num(e.epsilon_cap)));
        out.push_str(&cell(&p("delta"), &num(e.delta)));
        out.push_str(&cell(&p("q"), &num(e.q)));
        out.push_str(&cell(&p("clip"), &num(e.clip)));
        let z: Vec<String> = e
            .noise_multipliers
            .iter()
            .enumerate()
            .map(|(k, z)| fig(&p(&format!("noise_multipliers/{k}")), &num(*z)))
            .collect();
        let _ = write!(out, "<td>{}</td>", z.join(", "));
        out.push_str(&cell(&p("runs"), &e.runs.to_string()));
        out.push_str(&cell(&p("steps"), &e.steps.to_string()));
        let _ = write!(out, "<td><code>{}</code></td>", esc(&e.ledger_head));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    let site_clip = match &r.privacy {
        crate::schema::PrivacySetting::SiteLevel { clip, .. } => num(*clip),
        _ => "— (no site-level DP)".into(),
    };
    let _ = writeln!(
        out,
        "<ul><li>Clip norms: record-level C_rec bounds one record's gradient in each local step; \
         site-level C = {} bounds the plant's whole update in each round.</li>\n<li>Record-level \
         accountant: {}. Site-level accountant: the one named in the parameters.</li>\n<li>How to \
         verify: {}.</li>\n<li>Not covered: {}.</li></ul>",
        esc(&site_clip),
        esc(ACCOUNTANT),
        esc(VERIFY),
        esc(NOT_COVERED)
    );
}
