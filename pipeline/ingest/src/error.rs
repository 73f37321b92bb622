//! Why an ingest stops. Bad rows never stop it (they are quarantined); a bad file does, with an
//! error that names the file and, where it can, the line and column.

use std::io;
use std::path::PathBuf;

/// A failure that stops the ingest. No snapshot is written when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A table of the export is not there.
    #[error("{dir}: table {table} is missing (expected {table}.csv or {table}.csv.gz)")]
    MissingTable {
        /// The export folder.
        dir: PathBuf,
        /// The table's file stem.
        table: &'static str,
    },
    /// Both spellings of a table are there, so which one is meant is unclear.
    #[error("{dir}: both {table}.csv and {table}.csv.gz exist; keep one")]
    AmbiguousTable {
        /// The export folder.
        dir: PathBuf,
        /// The table's file stem.
        table: &'static str,
    },
    /// A required column is not in the header (missing or renamed).
    #[error("{file}: column {column:?} is missing from the header (found: {found})")]
    MissingColumn {
        /// The table file.
        file: PathBuf,
        /// The expected column.
        column: &'static str,
        /// The header as found.
        found: String,
    },
    /// The file is empty (no header).
    #[error("{file}: the file is empty; a table needs at least its header line")]
    Empty {
        /// The table file.
        file: PathBuf,
    },
    /// Bytes that are not UTF-8.
    #[error(
        "{file}: line {line}, column {column:?}: bytes that are not UTF-8 (byte {byte} of the line)"
    )]
    Encoding {
        /// The table file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The column the bytes are in.
        column: String,
        /// 1-based byte offset in the line.
        byte: usize,
    },
    /// The file could not be read or decompressed (e.g. a truncated gzip).
    #[error("{file}: cannot read (after line {line}): {source}")]
    Read {
        /// The table file.
        file: PathBuf,
        /// Last complete line read.
        line: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The CSV parser rejected a block of lines.
    #[error("{file}: lines {first_line}-{last_line} cannot be parsed as CSV: {message}")]
    Parse {
        /// The table file.
        file: PathBuf,
        /// First line of the block.
        first_line: u64,
        /// Last line of the block.
        last_line: u64,
        /// The parser's message.
        message: String,
    },
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The ingest options or the export's size are outside what is supported.
    #[error("{0}")]
    Unsupported(String),
    /// A Moodle or xAPI source (or its configuration) that cannot be converted; the message names
    /// the file, the line or the setting.
    #[error("{0}")]
    Source(String),
    /// A dataframe operation failed (a bug, not bad input).
    #[error("internal dataframe error while {context}: {source}")]
    Polars {
        /// What was being done.
        context: String,
        /// The polars error.
        source: polars::prelude::PolarsError,
    },
}

impl IngestError {
    /// A file that cannot be read or written, named.
    pub(crate) fn io(path: &std::path::Path, e: io::Error) -> IngestError {
        IngestError::Source(format!("{}: {e}", path.display()))
    }
}

/// Shorthand for wrapping polars errors with context.
pub(crate) trait PolarsContext<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T, IngestError>;
}

impl<T> PolarsContext<T> for polars::prelude::PolarsResult<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T, IngestError> {
        self.map_err(|source| IngestError::Polars {
            context: context.into(),
            source,
        })
    }
}
