//! LMS export ingest on polars: readers for OULAD-schema exports (`.csv` or `.csv.gz`), Moodle
//! log and gradebook exports and xAPI statements (converted into the same canonical tables,
//! `sources`), row-by-row validation with a quarantine that loses nothing, the weekly feature
//! table, and content-addressed Parquet snapshots with a JSON manifest.

pub mod error;
pub mod features;
pub mod load;
pub mod read;
pub mod validate;

pub use error::IngestError;
pub use load::{LoadedExport, Quarantine, TableCount, load_export};
pub use validate::DateWindow;
pub mod snapshot;
pub mod sources;

pub use snapshot::{IngestOptions, IngestOutcome, Manifest, ingest};
