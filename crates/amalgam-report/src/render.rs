//! `render_dir`: re-renders a report directory from its `report.json`.
//!
//! The report is read and validated, and every file rendered in memory, before anything is
//! written: a refused report leaves the directory exactly as it was. Each file is written to a
//! temporary name in its final directory, synced, then renamed over the old one, so a reader
//! never sees half a page.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::html::page;
use crate::plots::{PLOT_FILES, plots};
use crate::schema::{ReportError, SimulationReport};

/// The report file inside a report directory.
pub const REPORT_FILE: &str = "report.json";
/// The page written next to it.
pub const PAGE_FILE: &str = "index.html";
/// The directory of the plots.
pub const PLOTS_DIR: &str = "plots";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<(), ReportError> {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads `dir/report.json` and writes `dir/index.html` and `dir/plots/*.svg` from it alone;
/// returns the files written (plots first, the page last). A plot this report has no data for
/// (the ε-versus-F1 curve) is removed if an earlier rendering left one.
pub fn render_dir(dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let report = SimulationReport::read(&dir.join(REPORT_FILE))?;
    let rendered = plots(&report);
    let html = page(&report, &rendered);
    let plot_dir = dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&plot_dir).map_err(io(&plot_dir))?;
    let mut written = Vec::with_capacity(rendered.len() + 1);
    for p in &rendered {
        let path = plot_dir.join(p.file);
        write_atomic(&path, p.svg.as_bytes())?;
        written.push(path);
    }
    for stale in PLOT_FILES
        .iter()
        .filter(|f| !rendered.iter().any(|p| p.file == **f))
    {
        let path = plot_dir.join(stale);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    let path = dir.join(PAGE_FILE);
    write_atomic(&path, html.as_bytes())?;
    written.push(path);
    Ok(written)
}
