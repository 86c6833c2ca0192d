//! A report.json that is malformed, oversized, of another schema or missing is refused with
//! its specific error, and nothing is written (an earlier rendering stays as it was).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use amalgam_report::schema::MAX_REPORT_BYTES;
use amalgam_report::{ReportError, render_dir};
use common::{sample, write};

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir, dir);
    v.sort();
    v
}

fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(root, &p));
        } else {
            out.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
    out
}

fn bad_reports() -> Vec<(&'static str, Vec<u8>)> {
    let good = sample().to_json();
    vec![
        ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
        ("not json", b"<html>not a report</html>".to_vec()),
        (
            "unknown field",
            good.replacen("\"campaign\"", "\"extra\": 1, \"campaign\"", 1)
                .into_bytes(),
        ),
        (
            "wrong type",
            good.replacen("\"bits\": 16", "\"bits\": \"16\"", 1)
                .into_bytes(),
        ),
        (
            "other schema",
            good.replace("amalgam-simulate-report/1", "amalgam-simulate-report/2")
                .into_bytes(),
        ),
        ("not utf-8", vec![0xff, 0xfe, b'{']),
    ]
}

fn check(name: &str, e: &ReportError) {
    match name {
        "other schema" => assert!(
            matches!(e, ReportError::Schema { found, .. } if found == "amalgam-simulate-report/2"),
            "{name}: {e}"
        ),
        _ => assert!(matches!(e, ReportError::Malformed { .. }), "{name}: {e}"),
    }
    assert!(e.to_string().contains("report.json"), "{e}: names the file");
}

#[test]
fn refused_reports_write_nothing() {
    for (name, bytes) in bad_reports() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.json"), &bytes).unwrap();
        let e = render_dir(dir.path()).unwrap_err();
        check(name, &e);
        assert_eq!(listing(dir.path()), ["report.json"], "{name}");
    }
}

#[test]
fn a_refused_report_leaves_the_earlier_rendering_untouched() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sample());
    render_dir(dir.path()).unwrap();
    let before: Vec<(String, Vec<u8>)> = listing(dir.path())
        .into_iter()
        .filter(|f| f != "report.json")
        .map(|f| (f.clone(), std::fs::read(dir.path().join(&f)).unwrap()))
        .collect();
    assert_eq!(before.len(), 5, "index.html and four plots");
    for (name, bytes) in bad_reports() {
        std::fs::write(dir.path().join("report.json"), &bytes).unwrap();
        check(name, &render_dir(dir.path()).unwrap_err());
        for (f, content) in &before {
            assert_eq!(
                &std::fs::read(dir.path().join(f)).unwrap(),
                content,
                "{name}: {f}"
            );
        }
        assert_eq!(
            listing(dir.path()).len(),
            6,
            "{name}: no new or temporary file"
        );
    }
}

#[test]
fn oversized_and_missing_reports_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join("report.json")).unwrap();
    // Sparse: the size check must refuse it without reading 64 MiB.
    f.set_len(MAX_REPORT_BYTES + 1).unwrap();
    let e = render_dir(dir.path()).unwrap_err();
    assert!(
        matches!(e, ReportError::TooLarge { len, max, .. } if len == MAX_REPORT_BYTES + 1 && max == MAX_REPORT_BYTES),
        "{e}"
    );
    assert_eq!(listing(dir.path()), ["report.json"]);

    let empty = tempfile::tempdir().unwrap();
    let e = render_dir(empty.path()).unwrap_err();
    assert!(
        matches!(&e, ReportError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    assert!(listing(empty.path()).is_empty());
}

#[test]
fn render_reports_what_it_wrote_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sample());
    let written = render_dir(dir.path()).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "plots/rounds.svg",
            "plots/epsilon.svg",
            "plots/recall.svg",
            "plots/curve.svg",
            "index.html"
        ]
    );
    let mut all = names.clone();
    all.push("report.json".into());
    all.sort();
    assert_eq!(listing(dir.path()), all);
}
