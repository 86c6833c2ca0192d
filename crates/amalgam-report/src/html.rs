//! The report page: the privacy line first, then the model comparison, ε per plant, protocol
//! parameters, time shares, campaign and exports. No JavaScript and no external resource (a
//! Content-Security-Policy says so to the browser as well); the plots are local SVG files.
//!
//! Every figure is printed inside an element carrying `data-json`, the JSON pointer of the
//! value it shows in `report.json` (and `data-over` for a ratio's denominator), so a reader —
//! or [`crate::inspect::page_figures`] — can check each one against the file. The page is also
//! well-formed XML, so any XML parser can check what it contains.

use std::fmt::Write;

use crate::plots::{MODES, Plot, kind_name};
use crate::schema::{ModelFigures, ModelKind, PrivacySetting, SimulationReport};
use crate::text::{cell, esc, fig, num};

/// Above this cumulative ε a site-level guarantee is reported as "not private".
pub const NOT_PRIVATE_ABOVE: f64 = 10.0;

fn plain(text: &str) -> String {
    format!("<td>{}</td>", esc(text))
}

/// The largest final ε over plants and its JSON pointer (`None` inside: ∞). Both the ledger
/// rows and the last round's figures count; the larger wins.
fn worst_epsilon(r: &SimulationReport) -> Option<(String, Option<f64>)> {
    let mut worst: Option<(String, Option<f64>)> = None;
    let mut consider = |p: String, v: Option<f64>| {
        let worse = match (&worst, v) {
            (None, _) => true,
            (Some((_, None)), _) => false,
            (Some(_), None) => true,
            (Some((_, Some(w))), Some(e)) => e > *w,
        };
        if worse {
            worst = Some((p, v));
        }
    };
    for (i, row) in r.epsilon.iter().enumerate() {
        consider(format!("/epsilon/{i}/spent"), row.spent);
    }
    if let Some(last) = r.rounds.len().checked_sub(1) {
        for (p, e) in r.rounds[last].epsilon.iter().enumerate() {
            consider(format!("/rounds/{last}/epsilon/{p}"), *e);
        }
    }
    worst
}

/// The lines above everything else: the privacy verdict, then the single-operator warning.
fn lines(r: &SimulationReport) -> Vec<String> {
    let mut out = Vec::new();
    match &r.privacy {
        // Under record-level DP-SGD alone the site level is still ∞: say which level is.
        PrivacySetting::None if !r.record_level.is_empty() => {
            out.push("no site-level differential privacy (site-level ε = ∞)".to_string());
        }
        PrivacySetting::None => out.push("no differential privacy (ε = ∞)".to_string()),
        PrivacySetting::SiteLevel { .. } => match worst_epsilon(r) {
            None => out.push("site-level: ε not recorded (no ledger figures): not private".into()),
            Some((p, None)) => out.push(format!("site-level: not private (ε = {})", fig(&p, "∞"))),
            Some((p, Some(e))) if e > NOT_PRIVATE_ABOVE => out.push(format!(
                "site-level: not private (ε = {})",
                fig(&p, &num(e))
            )),
            Some((p, Some(e))) => out.push(format!(
                "site-level differential privacy: ε ≤ {} per plant at δ = {} (unit: one plant's whole update per round; not record-level)",
                fig(&p, &num(e)),
                fig("/privacy/delta", &delta(r))
            )),
        },
    }
    if let Some(l) = crate::record::line(r) {
        out.push(l);
    }
    if r.campaign.single_operator {
        out.push("single-operator simulation: no separation of duties".into());
    }
    out
}

fn delta(r: &SimulationReport) -> String {
    match &r.privacy {
        PrivacySetting::SiteLevel { delta, .. } => num(*delta),
        PrivacySetting::None => "n/a".into(),
    }
}

/// Index of the centralized model a row is compared with: same test set and plant, else the
/// centralized model on the global test set.
fn reference(r: &SimulationReport, m: &ModelFigures) -> Option<usize> {
    let central = |pred: &dyn Fn(&ModelFigures) -> bool| {
        r.models
            .iter()
            .position(|c| c.kind == ModelKind::Centralized && pred(c))
    };
    central(&|c| c.test_set == m.test_set && c.plant == m.plant)
        .or_else(|| central(&|c| c.test_set == "global"))
}

fn ratio(r: &SimulationReport, i: usize, field: &str, v: Option<f64>) -> String {
    let m = &r.models[i];
    let refv = reference(r, m).and_then(|j| {
        let c = &r.models[j];
        let rv = match field {
            "f1" => Some(c.f1),
            "auprc" => Some(c.auprc),
            _ => c.auroc,
        };
        rv.map(|rv| (j, rv))
    });
    match (v, refv) {
        (Some(v), Some((j, rv))) if rv != 0.0 => format!(
            r#"<td class="fig ratio" data-json="/models/{i}/{field}" data-over="/models/{j}/{field}">{}</td>"#,
            esc(&num(v / rv))
        ),
        _ => plain("—"),
    }
}

fn models_table(r: &SimulationReport, out: &mut String) {
    out.push_str("<h2>Model comparison</h2>\n<p>Binary F1 and AUPRC are primary; ratios are to the centralized model on the same test set. RNF is not judged (random failures).</p>\n<table class=\"models\"><thead><tr><th>model</th><th>plant</th><th>test set</th><th>rows</th><th>failures</th><th>threshold</th><th>F1</th><th>F1 / centralized</th><th>AUPRC</th><th>AUPRC / centralized</th><th>AUROC</th><th>AUROC / centralized</th><th>precision</th><th>recall</th>");
    for m in MODES {
        let _ = write!(out, "<th>recall {m}</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    for (i, m) in r.models.iter().enumerate() {
        let p = |f: &str| format!("/models/{i}/{f}");
        out.push_str("<tr>");
        out.push_str(&plain(kind_name(m.kind)));
        out.push_str(&match m.plant {
            Some(pl) => cell(&p("plant"), &pl.to_string()),
            None => plain("all"),
        });
        out.push_str(&plain(&m.test_set));
        out.push_str(&cell(&p("rows"), &m.rows.to_string()));
        out.push_str(&cell(&p("failures"), &m.failures.to_string()));
        out.push_str(&cell(&p("threshold"), &num(m.threshold)));
        out.push_str(&cell(&p("f1"), &num(m.f1)));
        out.push_str(&ratio(r, i, "f1", Some(m.f1)));
        out.push_str(&cell(&p("auprc"), &num(m.auprc)));
        out.push_str(&ratio(r, i, "auprc", Some(m.auprc)));
        out.push_str(&match m.auroc {
            Some(v) => cell(&p("auroc"), &num(v)),
            None => plain("n/a"),
        });
        out.push_str(&ratio(r, i, "auroc", m.auroc));
        out.push_str(&cell(&p("precision"), &num(m.precision)));
        out.push_str(&cell(&p("recall"), &num(m.recall)));
        for mode in MODES {
            let found = m.modes.iter().position(|f| f.mode == mode);
            out.push_str(&match found.map(|j| (j, m.modes[j].recall)) {
                _ if mode == "RNF" => plain("n/a"),
                Some((j, Some(v))) => cell(&format!("/models/{i}/modes/{j}/recall"), &num(v)),
                Some((_, None)) => plain("n/a"),
                None => plain("—"),
            });
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn epsilon_table(r: &SimulationReport, out: &mut String) {
    out.push_str("<h2>Privacy budget per plant</h2>\n<table class=\"epsilon\"><thead><tr><th>plant</th><th>unit</th><th>ε spent</th><th>cap</th><th>δ</th><th>ledger entries</th><th>ledger head</th></tr></thead><tbody>\n");
    for (i, e) in r.epsilon.iter().enumerate() {
        let p = |f: &str| format!("/epsilon/{i}/{f}");
        out.push_str("<tr>");
        out.push_str(&cell(&p("plant"), &e.plant.to_string()));
        out.push_str(&plain(&e.unit));
        out.push_str(&match e.spent {
            Some(v) => cell(&p("spent"), &num(v)),
            None => cell(&p("spent"), "∞"),
        });
        out.push_str(&match e.cap {
            Some(v) => cell(&p("cap"), &num(v)),
            None => plain("none"),
        });
        out.push_str(&match e.delta {
            Some(v) => cell(&p("delta"), &num(v)),
            None => plain("—"),
        });
        out.push_str(&cell(&p("entries"), &e.entries.to_string()));
        let _ = write!(out, "<td><code>{}</code></td>", esc(&e.ledger_head));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn parameters(r: &SimulationReport, out: &mut String) {
    let pr = &r.protocol;
    let _ = write!(
        out,
        "<h2>Protocol</h2>\n<table class=\"protocol\"><tbody><tr><th>threshold t</th>{}</tr><tr><th>colluders c</th>{}</tr><tr><th>dropouts m</th>{}</tr><tr><th>minimum cohort n_min</th>{}</tr></tbody></table>\n",
        cell("/protocol/threshold", &pr.threshold.to_string()),
        cell("/protocol/colluders", &pr.colluders.to_string()),
        cell("/protocol/dropouts", &pr.dropouts.to_string()),
        cell("/protocol/min_cohort", &pr.min_cohort.to_string()),
    );
    out.push_str("<h2>Time shares of a round</h2>\n");
    match &r.time_share {
        Some(t) => {
            let _ = write!(
                out,
                "<table class=\"time\"><tbody><tr><th>local training</th>{}</tr><tr><th>DP encoding and decoding</th>{}</tr><tr><th>masking computation</th>{}</tr><tr><th>sealed state, written before sending</th>{}</tr><tr><th>HTTP and waiting</th>{}</tr></tbody></table>",
                cell("/time_share/training", &num(t.training)),
                cell("/time_share/dp_encoding", &num(t.dp_encoding)),
                cell("/time_share/masking", &num(t.masking)),
                cell("/time_share/persistence", &num(t.persistence)),
                cell("/time_share/http", &num(t.http)),
            );
            out.push('\n');
        }
        None => out.push_str("<p>not measured</p>\n"),
    }
    let c = &r.campaign;
    out.push_str("<h2>Campaign</h2>\n<table class=\"campaign\"><tbody>");
    let rows: [(&str, String); 13] = [
        (
            "config digest (SHA-256)",
            format!("<td><code>{}</code></td>", esc(&c.config_digest)),
        ),
        (
            "consortium digest",
            format!("<td><code>{}</code></td>", esc(&c.consortium_digest)),
        ),
        ("model", plain(&c.model)),
        (
            "parameters",
            cell("/campaign/parameters", &c.parameters.to_string()),
        ),
        ("plants", cell("/campaign/plants", &c.plants.to_string())),
        ("split", plain(&c.split)),
        (
            "split seed",
            cell("/campaign/split_seed", &c.split_seed.to_string()),
        ),
        (
            "initialisation seed",
            cell("/campaign/init_seed", &c.init_seed.to_string()),
        ),
        ("rounds", cell("/campaign/rounds", &c.rounds.to_string())),
        (
            "planned dropout rate",
            cell("/campaign/dropout_rate", &num(c.dropout_rate)),
        ),
        (
            "bits per value b",
            cell("/campaign/bits", &c.bits.to_string()),
        ),
        ("aggregation weights", plain(&c.weights)),
        (
            "wall time [s]",
            cell("/campaign/wall_seconds", &num(c.wall_seconds)),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{k}</th>{v}</tr>");
    }
    match &r.privacy {
        PrivacySetting::None => out.push_str("<tr><th>privacy</th><td>none</td></tr>"),
        PrivacySetting::SiteLevel {
            clip,
            sigma,
            delta,
            epsilon_cap,
            accountant,
        } => {
            let _ = write!(
                out,
                "<tr><th>privacy</th><td>site-level</td></tr><tr><th>clip norm C</th>{}</tr><tr><th>noise σ</th>{}</tr><tr><th>δ</th>{}</tr><tr><th>ε cap per plant</th>{}</tr><tr><th>accountant</th>{}</tr>",
                cell("/privacy/clip", &num(*clip)),
                cell("/privacy/sigma", &num(*sigma)),
                cell("/privacy/delta", &num(*delta)),
                cell("/privacy/epsilon_cap", &num(*epsilon_cap)),
                plain(accountant),
            );
        }
    }
    out.push_str("</tbody></table>\n");
}

fn curve_table(r: &SimulationReport, out: &mut String) {
    if r.curve.is_empty() {
        return;
    }
    out.push_str("<h2>ε versus F1</h2>\n<table class=\"curve\"><thead><tr><th>σ</th><th>ε</th><th>F1</th><th>± 95 %</th><th>AUPRC</th><th>seeds</th><th>processes</th></tr></thead><tbody>\n");
    for (i, p) in r.curve.iter().enumerate() {
        let q = |f: &str| format!("/curve/{i}/{f}");
        let _ = write!(
            out,
            "<tr>{}{}{}{}{}{}{}</tr>",
            cell(&q("sigma"), &num(p.sigma)),
            cell(&q("epsilon"), &p.epsilon.map_or("∞".into(), num)),
            cell(&q("f1"), &num(p.f1)),
            cell(&q("f1_ci95"), &num(p.f1_ci95)),
            cell(&q("auprc"), &num(p.auprc)),
            cell(&q("seeds"), &p.seeds.to_string()),
            plain(if p.real_processes {
                "real"
            } else {
                "in-process"
            }),
        );
        out.push('\n');
    }
    out.push_str("</tbody></table>\n");
}

/// A name that may be linked: relative, no parent step, no scheme, plain characters.
fn linkable(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn exports(r: &SimulationReport, out: &mut String) {
    out.push_str("<h2>Exports</h2>\n");
    if r.exports.is_empty() {
        out.push_str("<p>none</p>\n");
        return;
    }
    out.push_str("<ul class=\"exports\">");
    for e in &r.exports {
        let n = esc(e);
        if linkable(e) {
            let _ = write!(out, r#"<li><a href="{n}">{n}</a></li>"#);
        } else {
            let _ = write!(out, "<li>{n}</li>");
        }
    }
    out.push_str("</ul>\n");
}

/// The page of `r`, referring to `plots` under `plots/`.
pub fn page(r: &SimulationReport, plots: &[Plot]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'\"/>\n<title>Amalgam simulation report</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}th{background:#f2f2f2}.line{font-weight:bold;font-size:1.2em;color:#900}code{font-size:.85em}</style>\n</head><body>\n",
    );
    for l in lines(r) {
        let _ = writeln!(out, r#"<p class="line">{l}</p>"#);
    }
    let _ = writeln!(
        out,
        "<h1>Amalgam simulation report</h1>\n<p>{} rounds of {} on {} plants ({} split). Every figure below is read from <code>report.json</code>.</p>",
        fig("/campaign/rounds", &r.campaign.rounds.to_string()),
        esc(&r.campaign.model),
        fig("/campaign/plants", &r.campaign.plants.to_string()),
        esc(&r.campaign.split),
    );
    models_table(r, &mut out);
    crate::unseen::section(r, &mut out);
    epsilon_table(r, &mut out);
    crate::record::section(r, &mut out);
    parameters(r, &mut out);
    curve_table(r, &mut out);
    if let Some(c) = &r.record_curve {
        crate::record_curve::table(c, &mut out);
    }
    out.push_str("<h2>Plots</h2>\n");
    for p in plots {
        let _ = writeln!(
            out,
            r#"<figure><img src="plots/{}" alt="{t}"/><figcaption>{t}</figcaption></figure>"#,
            p.file,
            t = esc(&p.title)
        );
    }
    exports(r, &mut out);
    out.push_str("</body></html>\n");
    out
}
