//! The report of an `amalgam simulate` campaign.
//!
//! `report.json` is the single source of every figure: `amalgam simulate` writes it, and the
//! HTML page and its SVG plots are rendered from it alone (never from the run's memory), so a
//! page can always be re-rendered and checked against the JSON. This crate has no libtorch
//! dependency: a report renders on a machine without the trainer.

pub mod schema;

pub use schema::{
    Campaign, CurvePoint, EpsilonRow, ModeFigure, ModelFigures, ModelKind, PrivacySetting,
    ProtocolFigures, ReportError, RoundRow, SCHEMA, SimulationReport, TimeShare,
};
