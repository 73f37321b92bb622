//! Sample data for Lodestar: the genuine OULAD slice shipped in `data-samples/oulad`, and a
//! generator of synthetic exports in exactly the OULAD schema at any scale, and the cut that
//! turns a finished export into a running term.

mod csv_out;
pub mod cut;
pub mod generate;
mod student;

use std::path::PathBuf;

pub use cut::{CutError, CutSummary, TableCut, cut_running};
pub use generate::{GenerateError, GenerateSummary, GeneratorConfig, Progress, generate};

/// The folder holding the genuine OULAD slice (see its README for what it keeps and the licence).
pub fn oulad_slice_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oulad")
}
