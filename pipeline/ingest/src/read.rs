//! Reading one table file of an export: `.csv` or `.csv.gz`, streamed in blocks of whole lines,
//! each block checked for UTF-8 and parsed by polars with the column types of the canonical
//! schema, every row tagged with its line number in the file.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use lodestar_domain::{ColumnType, Table};
use polars::prelude::*;

use crate::error::IngestError;

/// Name of the column holding each row's 1-based line number in its file.
pub const LINE: &str = "__line";

/// Bytes per block handed to the CSV parser.
const BLOCK: usize = 32 << 20;

/// Finds the file of `table` in `dir`: `stem.csv` or `stem.csv.gz`, exactly one of them.
pub fn locate(dir: &Path, table: Table) -> Result<PathBuf, IngestError> {
    let stem = table.file_stem();
    let plain = dir.join(format!("{stem}.csv"));
    let gz = dir.join(format!("{stem}.csv.gz"));
    match (plain.is_file(), gz.is_file()) {
        (true, false) => Ok(plain),
        (false, true) => Ok(gz),
        (true, true) => Err(IngestError::AmbiguousTable {
            dir: dir.to_owned(),
            table: stem,
        }),
        (false, false) => Err(IngestError::MissingTable {
            dir: dir.to_owned(),
            table: stem,
        }),
    }
}

/// How a canonical column is parsed. Non-nullable numbers are parsed as numbers directly (a
/// value that does not parse becomes null and the row is quarantined); nullable numbers are read
/// as text and cast later, so an empty value can be told apart from a bad one.
fn read_dtype(ty: ColumnType, nullable: bool) -> DataType {
    match (ty, nullable) {
        (ColumnType::Integer, false) => DataType::Int64,
        (ColumnType::Decimal, false) => DataType::Float64,
        _ => DataType::String,
    }
}

/// The parsed form of a canonical column once validated.
pub fn canonical_dtype(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Integer => DataType::Int64,
        ColumnType::Decimal => DataType::Float64,
        ColumnType::Text => DataType::String,
    }
}

/// A block of whole lines.
pub struct Block {
    /// The rows, parsed, with [`LINE`].
    pub frame: DataFrame,
    /// The raw bytes, for quoting bad rows in the quarantine.
    pub bytes: Vec<u8>,
    /// Line number of the first line of `bytes`.
    pub first_line: u64,
}

impl Block {
    /// The raw text of the given lines (1-based file line numbers) of this block, in order.
    pub fn raw_lines(&self, lines: &[u64]) -> Vec<String> {
        let mut wanted = lines.iter().copied().peekable();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in self.bytes.split(|b| *b == b'\n').enumerate() {
            let number = self.first_line + i as u64;
            while wanted.peek().is_some_and(|w| *w < number) {
                wanted.next();
            }
            if wanted.peek() == Some(&number) {
                let text = String::from_utf8_lossy(line);
                out.push(text.trim_end_matches('\r').to_owned());
                wanted.next();
            }
        }
        out
    }
}

/// A table file being read block by block.
pub struct TableReader {
    file: PathBuf,
    source: Box<dyn Read + Send>,
    header: Vec<String>,
    schema: SchemaRef,
    /// Line number of the next unread line.
    next_line: u64,
    carry: Vec<u8>,
    done: bool,
    block_size: usize,
}

fn split_header(line: &str) -> Vec<String> {
    line.trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n'])
        .split(',')
        .map(|f| f.trim().trim_matches('"').to_owned())
        .collect()
}

impl TableReader {
    /// Opens `file` as `table`, reads and checks its header.
    pub fn open(file: &Path, table: Table) -> Result<Self, IngestError> {
        Self::open_with_block_size(file, table, BLOCK)
    }

    /// As [`TableReader::open`], reading about `block_size` bytes per block.
    pub fn open_with_block_size(
        file: &Path,
        table: Table,
        block_size: usize,
    ) -> Result<Self, IngestError> {
        let read_err = |line: u64| {
            let file = file.to_owned();
            move |source| IngestError::Read { file, line, source }
        };
        let raw = File::open(file).map_err(read_err(0))?;
        let raw = BufReader::with_capacity(1 << 20, raw);
        let source: Box<dyn Read + Send> = if file.extension().is_some_and(|e| e == "gz") {
            Box::new(MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        let mut reader = Self {
            file: file.to_owned(),
            source,
            header: Vec::new(),
            schema: Arc::new(Schema::default()),
            next_line: 1,
            carry: Vec::new(),
            done: false,
            block_size: block_size.max(1),
        };
        // Read until the first line end to get the header.
        let mut buf = [0u8; 8192];
        while !reader.carry.contains(&b'\n') {
            let n = reader.source.read(&mut buf).map_err(read_err(0))?;
            if n == 0 {
                break;
            }
            reader.carry.extend_from_slice(&buf[..n]);
        }
        if reader.carry.is_empty() {
            return Err(IngestError::Empty {
                file: file.to_owned(),
            });
        }
        let end = reader
            .carry
            .iter()
            .position(|b| *b == b'\n')
            .map_or(reader.carry.len(), |i| i + 1);
        let header_bytes: Vec<u8> = reader.carry.drain(..end).collect();
        let header_text =
            std::str::from_utf8(&header_bytes).map_err(|e| IngestError::Encoding {
                file: file.to_owned(),
                line: 1,
                column: "header".into(),
                byte: e.valid_up_to() + 1,
            })?;
        reader.header = split_header(header_text);
        for column in table.columns() {
            if !reader.header.iter().any(|h| h == column.name) {
                return Err(IngestError::MissingColumn {
                    file: file.to_owned(),
                    column: column.name,
                    found: reader.header.join(","),
                });
            }
        }
        let schema: Schema = reader
            .header
            .iter()
            .map(|name| {
                let dtype = table
                    .columns()
                    .iter()
                    .find(|c| c.name == name)
                    .map_or(DataType::String, |c| read_dtype(c.ty, c.nullable));
                Field::new(name.as_str().into(), dtype)
            })
            .collect();
        reader.schema = Arc::new(schema);
        reader.next_line = 2;
        Ok(reader)
    }

    /// The next block of rows, or `None` at the end of the file.
    pub fn next_block(&mut self) -> Result<Option<Block>, IngestError> {
        if self.done {
            return Ok(None);
        }
        let mut bytes = std::mem::take(&mut self.carry);
        let mut filled = bytes.len();
        bytes.resize(filled + self.block_size, 0);
        let mut eof = false;
        while filled < bytes.len() {
            match self.source.read(&mut bytes[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(IngestError::Read {
                        file: self.file.clone(),
                        line: self.next_line - 1,
                        source,
                    });
                }
            }
        }
        bytes.truncate(filled);
        if eof {
            self.done = true;
        } else {
            // Keep the partial last line for the next block.
            let cut = memchr::memrchr(b'\n', &bytes).map_or(0, |i| i + 1);
            self.carry = bytes.split_off(cut);
        }
        // Drop trailing empty lines at the end of the file; they are not rows.
        while eof && matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return if self.done {
                Ok(None)
            } else {
                self.next_block()
            };
        }
        self.check_utf8(&bytes)?;
        let first_line = self.next_line;
        let breaks = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        // A block ends with a line break except at the end of the file.
        let lines = breaks + u64::from(bytes.last() != Some(&b'\n'));
        self.next_line += lines;
        let frame = self.parse(&bytes, first_line, first_line + lines - 1)?;
        Ok(Some(Block {
            frame,
            bytes,
            first_line,
        }))
    }

    fn check_utf8(&self, bytes: &[u8]) -> Result<(), IngestError> {
        let Err(e) = std::str::from_utf8(bytes) else {
            return Ok(());
        };
        let at = e.valid_up_to();
        let line_start = bytes[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line =
            self.next_line + bytes[..line_start].iter().filter(|b| **b == b'\n').count() as u64;
        let field = bytes[line_start..at].iter().filter(|b| **b == b',').count();
        Err(IngestError::Encoding {
            file: self.file.clone(),
            line,
            column: self
                .header
                .get(field)
                .cloned()
                .unwrap_or_else(|| format!("field {}", field + 1)),
            byte: at - line_start + 1,
        })
    }

    fn parse(
        &self,
        bytes: &[u8],
        first_line: u64,
        last_line: u64,
    ) -> Result<DataFrame, IngestError> {
        let parse_err = |e: PolarsError| IngestError::Parse {
            file: self.file.clone(),
            first_line,
            last_line,
            message: e.to_string(),
        };
        let options = CsvReadOptions::default()
            .with_has_header(false)
            .with_schema(Some(self.schema.clone()))
            .with_ignore_errors(true)
            .with_rechunk(false)
            .with_row_index(Some(RowIndex {
                name: LINE.into(),
                offset: first_line as IdxSize,
            }))
            .with_parse_options(CsvParseOptions::default().with_missing_is_null(true));
        let frame = options
            .into_reader_with_file_handle(io::Cursor::new(bytes))
            .finish()
            .map_err(parse_err)?;
        let rows = frame.height() as u64;
        if rows != last_line - first_line + 1 {
            return Err(IngestError::Parse {
                file: self.file.clone(),
                first_line,
                last_line,
                message: format!(
                    "{rows} records in {} lines: blank lines or line breaks inside quoted fields are not supported",
                    last_line - first_line + 1
                ),
            });
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_line_numbers_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("studentVle.csv");
        let mut text = String::from(
            "\"code_module\",\"code_presentation\",\"id_student\",\"id_site\",\"date\",\"sum_click\"\r\n",
        );
        for i in 0..1000 {
            text.push_str(&format!(
                "\"AAA\",\"2013J\",\"{i}\",\"1\",\"{}\",\"1\"\r\n",
                i % 50
            ));
        }
        std::fs::write(&path, &text).unwrap();
        let mut reader = TableReader::open_with_block_size(&path, Table::StudentVle, 1000).unwrap();
        let mut expected_line = 2u64;
        let mut blocks = 0;
        while let Some(block) = reader.next_block().unwrap() {
            blocks += 1;
            assert_eq!(block.first_line, expected_line);
            let lines: Vec<u64> = block
                .frame
                .column(LINE)
                .unwrap()
                .u32()
                .unwrap()
                .into_no_null_iter()
                .map(u64::from)
                .collect();
            let students: Vec<i64> = block
                .frame
                .column("id_student")
                .unwrap()
                .i64()
                .unwrap()
                .into_no_null_iter()
                .collect();
            for (line, student) in lines.iter().zip(&students) {
                assert_eq!(*line, expected_line);
                assert_eq!(*student as u64, line - 2, "row on line {line}");
                expected_line += 1;
            }
            let raw = block.raw_lines(&[lines[0]]);
            assert_eq!(
                raw[0],
                format!(
                    "\"AAA\",\"2013J\",\"{}\",\"1\",\"{}\",\"1\"",
                    students[0],
                    students[0] % 50
                )
            );
        }
        assert_eq!(expected_line, 1002);
        assert!(blocks > 20, "only {blocks} blocks");
    }
}
