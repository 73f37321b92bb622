//! A CSV writer that writes the way the genuine OULAD export does: every field quoted, CRLF line
//! ends, empty strings for missing values; with a row counter and an atomic finish.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

enum Sink {
    Plain(BufWriter<File>),
    Gzip(Box<GzEncoder<BufWriter<File>>>),
}

/// One table being written to `<final path>.partial`; renamed into place by [`CsvOut::finish`].
pub(crate) struct CsvOut {
    sink: Sink,
    buf: Vec<u8>,
    first_field: bool,
    rows: u64,
    partial: PathBuf,
    path: PathBuf,
}

const FLUSH_AT: usize = 1 << 16;

impl CsvOut {
    /// Starts `path` (gzip-compressed when `gzip`) and writes the header.
    pub(crate) fn create<'a>(
        path: &Path,
        gzip: bool,
        header: impl IntoIterator<Item = &'a str>,
    ) -> io::Result<Self> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
        let sink = if gzip {
            Sink::Gzip(Box::new(GzEncoder::new(file, Compression::fast())))
        } else {
            Sink::Plain(file)
        };
        let mut out = Self {
            sink,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            first_field: true,
            rows: 0,
            partial,
            path: path.to_owned(),
        };
        for name in header {
            out.text(name);
        }
        out.end_header()?;
        Ok(out)
    }

    fn sep(&mut self) {
        if !self.first_field {
            self.buf.push(b',');
        }
        self.first_field = false;
    }

    /// A text field, quoted (inner quotes doubled).
    pub(crate) fn text(&mut self, value: &str) {
        self.sep();
        self.buf.push(b'"');
        for &b in value.as_bytes() {
            if b == b'"' {
                self.buf.push(b'"');
            }
            self.buf.push(b);
        }
        self.buf.push(b'"');
    }

    /// An integer field, quoted as in OULAD.
    pub(crate) fn int(&mut self, value: i64) {
        self.sep();
        self.buf.push(b'"');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.buf.push(b'"');
    }

    /// An optional integer: empty string when missing.
    pub(crate) fn opt_int(&mut self, value: Option<i64>) {
        match value {
            Some(v) => self.int(v),
            None => self.text(""),
        }
    }

    /// Bytes already formatted as one or more complete fields (e.g. a row's constant prefix,
    /// ending in a comma); the next field follows without another separator.
    pub(crate) fn raw_prefix(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.first_field = true;
    }

    fn end_header(&mut self) -> io::Result<()> {
        self.buf.extend_from_slice(b"\r\n");
        self.first_field = true;
        self.flush_if_full()
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) -> io::Result<()> {
        self.rows += 1;
        self.end_header()
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(w) => w.write_all(&self.buf)?,
            Sink::Gzip(w) => w.write_all(&self.buf)?,
        }
        self.buf.clear();
        Ok(())
    }

    /// Rows written so far (the header not counted).
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and syncs the partial file; returns the (partial, final) paths for the caller to
    /// rename once every table is complete.
    pub(crate) fn finish(mut self) -> io::Result<(PathBuf, PathBuf)> {
        self.flush_buf()?;
        let file = match self.sink {
            Sink::Plain(w) => w.into_inner().map_err(|e| e.into_error())?,
            Sink::Gzip(w) => w.finish()?.into_inner().map_err(|e| e.into_error())?,
        };
        file.sync_all()?;
        Ok((self.partial, self.path))
    }

    /// The partial file's path, for clean-up after a failure.
    pub(crate) fn partial_path(&self) -> &Path {
        &self.partial
    }
}
