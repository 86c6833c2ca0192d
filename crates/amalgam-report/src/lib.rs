//! The report of an `amalgam simulate` campaign.
//!
//! `report.json` is the single source of every figure: `amalgam simulate` writes it, and the
//! HTML page and its SVG plots are rendered from it alone (never from the run's memory), so a
//! page can always be re-rendered and checked against the JSON ([`render_dir`],
//! [`inspect::page_figures`]). This crate has no libtorch dependency: a report renders on a
//! machine without the trainer.

pub mod html;
pub mod inspect;
pub mod plots;
pub mod record;
pub mod record_curve;
pub mod render;
pub mod schema;
pub mod svg;
pub mod text;
pub mod unseen;

pub use inspect::{Figure, page_figures, page_lines};
pub use render::{PAGE_FILE, PLOTS_DIR, REPORT_FILE, render_dir};
pub use schema::{
    Campaign, CurvePoint, EpsilonRow, ModeFigure, ModelFigures, ModelKind, PrivacySetting,
    ProtocolFigures, RecordRow, ReportError, RoundRow, SCHEMA, SimulationReport, TimeShare,
};
