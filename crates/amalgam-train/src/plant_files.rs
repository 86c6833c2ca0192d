//! Writing a split as files: one CSV per plant and one for the global test set, each in the
//! AI4I schema, so every plant of a trial consortium gets its own data file
//! (`amalgam data split`) and the site agent reads it with the same strict reader.
//!
//! A row is written as its original line (the reader accepts exactly the lines it parsed, so a
//! plant file is valid input by construction), with `\n` line ends. A plant's file holds all of
//! its rows (training, validation and held-out): what a plant does with them is its own choice.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::data::{HEADER, Row, parse_csv};
use crate::split::Split;

/// Why the split files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlantFilesError {
    /// The input does not parse (see [`crate::data`]).
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    /// The data lines and parsed rows disagree (cannot happen for text [`parse_csv`] accepted).
    #[error("the data has {lines} lines and {rows} rows")]
    Lines {
        /// Non-empty data lines.
        lines: usize,
        /// Parsed rows.
        rows: usize,
    },
    /// A split refers to a row the data does not have.
    #[error("the split refers to row {0}, beyond the data")]
    Index(usize),
    /// A file could not be written (an existing file is never replaced).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// The data lines of CSV text in the order [`parse_csv`] returns its rows (header dropped,
/// `\r` stripped, empty lines skipped), checked against the rows it parses to.
pub fn data_lines(text: &str) -> Result<(Vec<&str>, Vec<Row>), PlantFilesError> {
    let rows = parse_csv(text)?;
    let lines: Vec<&str> = text
        .split('\n')
        .skip(1)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() != rows.len() {
        return Err(PlantFilesError::Lines {
            lines: lines.len(),
            rows: rows.len(),
        });
    }
    Ok((lines, rows))
}

/// File name of plant `p` (0-based, as in [`Split::plants`]).
pub fn plant_file_name(p: usize) -> String {
    format!("plant-{p}.csv")
}

/// File name of the global test set.
pub const TEST_FILE_NAME: &str = "test.csv";

/// Writes `lines[i]` for each `i` of `rows` (ascending) under the AI4I header to `path`, which
/// must not exist. `amalgam simulate` uses it to give each plant only its training rows and to
/// keep the validation and held-out rows with the harness.
pub fn write_rows(path: &Path, lines: &[&str], rows: &[usize]) -> Result<(), PlantFilesError> {
    let io = |source| PlantFilesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    let mut text = HEADER.join(",");
    text.push('\n');
    for i in sorted {
        let line = lines.get(i).ok_or(PlantFilesError::Index(i))?;
        text.push_str(line);
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Writes the split's plant files and test file into `dir` (created if missing; existing
/// files are refused). Returns the paths written, plants first, the test file last.
pub fn write_split(
    dir: &Path,
    lines: &[&str],
    split: &Split,
) -> Result<Vec<PathBuf>, PlantFilesError> {
    std::fs::create_dir_all(dir).map_err(|source| PlantFilesError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::with_capacity(split.plants.len() + 1);
    for (p, plant) in split.plants.iter().enumerate() {
        let path = dir.join(plant_file_name(p));
        let rows: Vec<usize> = plant.all().collect();
        write_rows(&path, lines, &rows)?;
        out.push(path);
    }
    let path = dir.join(TEST_FILE_NAME);
    write_rows(&path, lines, &split.test)?;
    out.push(path);
    Ok(out)
}
