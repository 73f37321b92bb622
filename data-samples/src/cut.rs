//! Cutting a finished OULAD-schema export as a running term: for the named presentations the
//! outcomes are removed and every click, submission and unregistration dated after the as-of
//! day is dropped, so the result looks like an export taken in the middle of those terms.
//!
//! Rows are copied byte for byte (quoting, line ends and compression as in the source); a
//! changed row differs from its source only in the emptied field. The seven tables are written
//! into a staging folder beside the destination and renamed into place when all are complete, so
//! a failed cut leaves no half-written export. The removed outcomes can go to a separate file,
//! never inside the cut export, to measure later how well live scores predicted them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use lodestar_domain::Table;

use crate::csv_out::CsvOut;

/// Header of the outcomes file [`cut_running`] writes.
pub const OUTCOMES_HEADER: [&str; 5] = [
    "code_module",
    "code_presentation",
    "id_student",
    "final_result",
    "date_unregistration",
];

/// Why a cut failed. Nothing is left at the destination or the outcomes path in any case.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line of a table cannot be cut.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The table file.
        path: PathBuf,
        /// 1-based line number in the (decompressed) file; the header is line 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A named presentation is not in the export.
    #[error("{unknown} is not in the export; it has {known}")]
    UnknownPresentation {
        /// The names not found, comma separated.
        unknown: String,
        /// The presentations the export has (courses and studentInfo), comma separated.
        known: String,
    },
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
}

/// What a cut did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCut {
    /// The file written in the destination.
    pub file: PathBuf,
    /// Rows read (the header not counted).
    pub rows_read: u64,
    /// Rows dropped because they were dated after the as-of day.
    pub rows_dropped: u64,
    /// Fields emptied (`final_result`, `date_unregistration`) in rows that were kept.
    pub fields_emptied: u64,
}

/// What [`cut_running`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSummary {
    /// The presentations cut, as `MODULE-PRESENTATION`, sorted.
    pub presentations: Vec<String>,
    /// The day after which nothing of them is kept.
    pub as_of_day: i32,
    /// Students (studentInfo rows) of the cut presentations.
    pub students: u64,
    /// Of them, those whose `final_result` was not already empty.
    pub outcomes_removed: u64,
    /// Per table, in [`Table::ALL`] order.
    pub tables: BTreeMap<Table, TableCut>,
    /// The outcomes file and its rows (header not counted), when one was asked for.
    pub outcomes: Option<(PathBuf, u64)>,
}

impl CutSummary {
    /// Rows dropped from `table`.
    pub fn dropped(&self, table: Table) -> u64 {
        self.tables.get(&table).map_or(0, |t| t.rows_dropped)
    }

    /// Fields emptied in `table`.
    pub fn emptied(&self, table: Table) -> u64 {
        self.tables.get(&table).map_or(0, |t| t.fields_emptied)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CutError + '_ {
    move |source| CutError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies the export in `src` to `dst` (which must not exist or be an empty folder) with the
/// presentations named in `presentations` (`MODULE-PRESENTATION`) cut as running on `as_of_day`:
///
/// - their `final_result` in studentInfo is emptied;
/// - their studentVle rows with `date > as_of_day` are dropped;
/// - their studentAssessment rows (assessments mapped to presentations through assessments.csv)
///   with `date_submitted > as_of_day` are dropped;
/// - their `date_unregistration` is emptied where it is after `as_of_day`.
///
/// Everything else (other presentations, courses, assessments, vle) is copied unchanged. When
/// `outcomes_out` is given, every student of the cut presentations is written there with the
/// source's `final_result` and `date_unregistration` ([`OUTCOMES_HEADER`]); it must not lie inside
/// `dst`.
pub fn cut_running(
    src: &Path,
    dst: &Path,
    presentations: &[String],
    as_of_day: i32,
    outcomes_out: Option<&Path>,
) -> Result<CutSummary, CutError> {
    let wanted = parse_presentations(presentations)?;
    let files = Table::ALL
        .into_iter()
        .map(|t| locate(src, t).map(|p| (t, p)))
        .collect::<Result<Vec<_>, _>>()?;
    check_destination(dst)?;
    if let Some(out) = outcomes_out {
        let abs = |p: &Path| std::path::absolute(p).map_err(io_err(p));
        if abs(out)?.starts_with(abs(dst)?) {
            return Err(CutError::Invalid(format!(
                "the outcomes file {} must not be inside the cut export {}",
                out.display(),
                dst.display()
            )));
        }
        if out.is_dir() {
            return Err(CutError::Invalid(format!(
                "the outcomes path {} is a folder",
                out.display()
            )));
        }
    }

    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let staging = make_staging(&parent, dst)?;
    let mut outcomes_partial = None;
    let result = cut_into(
        &files,
        &staging,
        dst,
        &wanted,
        as_of_day,
        outcomes_out,
        &mut outcomes_partial,
    );
    match result {
        Ok(summary) => Ok(summary),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            if let Some(p) = outcomes_partial {
                let _ = fs::remove_file(p);
            }
            Err(e)
        }
    }
}

/// One presentation as the two key columns' unquoted bytes.
struct Wanted {
    module: Vec<u8>,
    presentation: Vec<u8>,
    name: String,
}

fn parse_presentations(names: &[String]) -> Result<Vec<Wanted>, CutError> {
    if names.is_empty() {
        return Err(CutError::Invalid(
            "name at least one presentation to cut, as MODULE-PRESENTATION (e.g. GGG-2013J)".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut wanted = Vec::new();
    for name in names {
        let name = name.trim();
        let Some((module, presentation)) = name.rsplit_once('-') else {
            return Err(CutError::Invalid(format!(
                "{name:?} is not MODULE-PRESENTATION (e.g. GGG-2013J)"
            )));
        };
        if module.is_empty() || presentation.is_empty() {
            return Err(CutError::Invalid(format!(
                "{name:?} is not MODULE-PRESENTATION (e.g. GGG-2013J)"
            )));
        }
        if seen.insert(name.to_owned()) {
            wanted.push(Wanted {
                module: module.as_bytes().to_vec(),
                presentation: presentation.as_bytes().to_vec(),
                name: name.to_owned(),
            });
        }
    }
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(wanted)
}

/// `stem.csv` or `stem.csv.gz` in `dir`, exactly one of them.
fn locate(dir: &Path, table: Table) -> Result<PathBuf, CutError> {
    let stem = table.file_stem();
    let plain = dir.join(format!("{stem}.csv"));
    let gz = dir.join(format!("{stem}.csv.gz"));
    match (plain.is_file(), gz.is_file()) {
        (true, false) => Ok(plain),
        (false, true) => Ok(gz),
        (true, true) => Err(CutError::Invalid(format!(
            "{} has both {stem}.csv and {stem}.csv.gz; keep one",
            dir.display()
        ))),
        (false, false) => Err(CutError::Invalid(format!(
            "{} has no {stem}.csv or {stem}.csv.gz",
            dir.display()
        ))),
    }
}

fn check_destination(dst: &Path) -> Result<(), CutError> {
    if !dst.exists() {
        return Ok(());
    }
    if !dst.is_dir() {
        return Err(CutError::Invalid(format!(
            "{} exists and is not a folder",
            dst.display()
        )));
    }
    let mut entries = fs::read_dir(dst).map_err(io_err(dst))?;
    if entries.next().is_some() {
        return Err(CutError::Invalid(format!(
            "{} is not empty; choose a new folder for the cut export",
            dst.display()
        )));
    }
    Ok(())
}

fn make_staging(parent: &Path, dst: &Path) -> Result<PathBuf, CutError> {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cut".to_owned());
    let pid = std::process::id();
    for n in 0u32.. {
        let path = parent.join(format!(".{name}.cut-{pid}-{n}"));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    unreachable!("some staging name is free")
}

/// A student of a presentation: module, presentation and student id as written.
type StudentKey = (Vec<u8>, Vec<u8>, Vec<u8>);

/// One outcome removed, kept for the outcomes file.
struct Outcome {
    module: Vec<u8>,
    presentation: Vec<u8>,
    student: Vec<u8>,
    final_result: Vec<u8>,
    date_unregistration: Vec<u8>,
}

fn cut_into(
    files: &[(Table, PathBuf)],
    staging: &Path,
    dst: &Path,
    wanted: &[Wanted],
    as_of_day: i32,
    outcomes_out: Option<&Path>,
    outcomes_partial: &mut Option<PathBuf>,
) -> Result<CutSummary, CutError> {
    let mut tables = BTreeMap::new();
    let mut known: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    let mut cut_assessments: HashSet<Vec<u8>> = HashSet::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut outcome_index: HashMap<StudentKey, usize> = HashMap::new();
    let mut students = 0u64;
    let mut outcomes_removed = 0u64;
    let is_wanted = |module: &[u8], presentation: &[u8]| {
        wanted
            .iter()
            .any(|w| w.module == module && w.presentation == presentation)
    };

    for (table, src) in files {
        let table = *table;
        let name = src.file_name().expect("a table file has a name");
        let out_path = staging.join(name);
        let mut t = TableFile::open(src, &out_path)?;
        let counts = match table {
            Table::Courses => {
                let [m, p] = t.columns(&["code_module", "code_presentation"])?;
                t.each(|row| {
                    known.insert((row.value(m).into_owned(), row.value(p).into_owned()));
                    Ok(Action::Keep)
                })?
            }
            Table::Assessments => {
                let [m, p, id] =
                    t.columns(&["code_module", "code_presentation", "id_assessment"])?;
                t.each(|row| {
                    if is_wanted(&row.value(m), &row.value(p)) {
                        cut_assessments.insert(row.value(id).into_owned());
                    }
                    Ok(Action::Keep)
                })?
            }
            Table::Vle => t.each(|_| Ok(Action::Keep))?,
            Table::StudentInfo => {
                let [m, p, s, r] = t.columns(&[
                    "code_module",
                    "code_presentation",
                    "id_student",
                    "final_result",
                ])?;
                let counts = t.each(|row| {
                    let (module, presentation) = (row.value(m), row.value(p));
                    if !is_wanted(&module, &presentation) {
                        known.insert((module.into_owned(), presentation.into_owned()));
                        return Ok(Action::Keep);
                    }
                    students += 1;
                    let result = row.value(r);
                    let key = (
                        module.into_owned(),
                        presentation.into_owned(),
                        row.value(s).into_owned(),
                    );
                    known.insert((key.0.clone(), key.1.clone()));
                    if outcomes_out.is_some() {
                        outcome_index.insert(key.clone(), outcomes.len());
                        outcomes.push(Outcome {
                            module: key.0,
                            presentation: key.1,
                            student: key.2,
                            final_result: result.to_vec(),
                            date_unregistration: Vec::new(),
                        });
                    }
                    if result.is_empty() {
                        Ok(Action::Keep)
                    } else {
                        outcomes_removed += 1;
                        Ok(Action::Empty(r))
                    }
                })?;
                check_known(wanted, &known)?;
                counts
            }
            Table::StudentRegistration => {
                let [m, p, s, u] = t.columns(&[
                    "code_module",
                    "code_presentation",
                    "id_student",
                    "date_unregistration",
                ])?;
                t.each(|row| {
                    let (module, presentation) = (row.value(m), row.value(p));
                    if !is_wanted(&module, &presentation) {
                        return Ok(Action::Keep);
                    }
                    let unregistered = row.value(u);
                    if outcomes_out.is_some() {
                        let key = (
                            module.into_owned(),
                            presentation.into_owned(),
                            row.value(s).into_owned(),
                        );
                        if let Some(&i) = outcome_index.get(&key) {
                            outcomes[i].date_unregistration = unregistered.to_vec();
                        }
                    }
                    match row.day(u, "date_unregistration")? {
                        Some(day) if day > as_of_day => Ok(Action::Empty(u)),
                        _ => Ok(Action::Keep),
                    }
                })?
            }
            Table::StudentAssessment => {
                let [id, d] = t.columns(&["id_assessment", "date_submitted"])?;
                t.each(|row| {
                    if !cut_assessments.contains(row.value(id).as_ref()) {
                        return Ok(Action::Keep);
                    }
                    match row.day(d, "date_submitted")? {
                        Some(day) if day > as_of_day => Ok(Action::Drop),
                        _ => Ok(Action::Keep),
                    }
                })?
            }
            Table::StudentVle => {
                let [m, p, d] = t.columns(&["code_module", "code_presentation", "date"])?;
                t.each(|row| {
                    if !is_wanted(&row.value(m), &row.value(p)) {
                        return Ok(Action::Keep);
                    }
                    match row.day(d, "date")? {
                        Some(day) if day > as_of_day => Ok(Action::Drop),
                        _ => Ok(Action::Keep),
                    }
                })?
            }
        };
        t.finish()?;
        tables.insert(
            table,
            TableCut {
                file: dst.join(name),
                ..counts
            },
        );
    }

    let outcomes = match outcomes_out {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let mut w = CsvOut::create(path, false, OUTCOMES_HEADER).map_err(io_err(path))?;
            *outcomes_partial = Some(w.partial_path().to_owned());
            for o in &outcomes {
                for field in [
                    &o.module,
                    &o.presentation,
                    &o.student,
                    &o.final_result,
                    &o.date_unregistration,
                ] {
                    w.text(&String::from_utf8_lossy(field));
                }
                w.end_row().map_err(io_err(path))?;
            }
            let rows = w.rows();
            let (partial, path) = w.finish().map_err(io_err(path))?;
            Some((partial, path, rows))
        }
        None => None,
    };

    // Every table is complete: move the export into place, then the outcomes beside it.
    check_destination(dst)?;
    if dst.is_dir() {
        fs::remove_dir(dst).map_err(io_err(dst))?;
    }
    fs::rename(staging, dst).map_err(io_err(dst))?;
    let outcomes = match outcomes {
        Some((partial, path, rows)) => {
            fs::rename(&partial, &path).map_err(io_err(&path))?;
            *outcomes_partial = None;
            Some((path, rows))
        }
        None => None,
    };
    Ok(CutSummary {
        presentations: wanted.iter().map(|w| w.name.clone()).collect(),
        as_of_day,
        students,
        outcomes_removed,
        tables,
        outcomes,
    })
}

fn check_known(wanted: &[Wanted], known: &BTreeSet<(Vec<u8>, Vec<u8>)>) -> Result<(), CutError> {
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|w| !known.contains(&(w.module.clone(), w.presentation.clone())))
        .map(|w| w.name.as_str())
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = known
        .iter()
        .map(|(m, p)| {
            format!(
                "{}-{}",
                String::from_utf8_lossy(m),
                String::from_utf8_lossy(p)
            )
        })
        .collect();
    Err(CutError::UnknownPresentation {
        unknown: unknown.join(", "),
        known: if known.is_empty() {
            "no presentations".to_owned()
        } else {
            known.join(", ")
        },
    })
}

/// What to do with one row.
enum Action {
    Keep,
    Drop,
    /// Keep it with this field emptied.
    Empty(usize),
}

enum Sink {
    Plain(BufWriter<File>),
    Gzip(Box<GzEncoder<BufWriter<File>>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(buf),
            Sink::Gzip(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

/// One table being copied from its source file to the staging folder.
struct TableFile {
    src: PathBuf,
    out: PathBuf,
    reader: Box<dyn BufRead>,
    sink: Sink,
    /// The header's field names (unquoted, a leading byte-order mark removed).
    header: Vec<String>,
    /// Lines read so far.
    line: u64,
    record: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

/// One record's fields.
struct Row<'a> {
    record: &'a [u8],
    spans: &'a [(usize, usize)],
    path: &'a Path,
    line: u64,
}

impl Row<'_> {
    /// Field `i` without its quotes (doubled quotes undone).
    fn value(&self, i: usize) -> Cow<'_, [u8]> {
        let (s, e) = self.spans[i];
        unquote(&self.record[s..e])
    }

    /// Field `i` as a day number; `None` when empty.
    fn day(&self, i: usize, column: &str) -> Result<Option<i32>, CutError> {
        let value = self.value(i);
        let text = std::str::from_utf8(&value).map(str::trim);
        if text.is_ok_and(str::is_empty) {
            return Ok(None);
        }
        text.ok()
            .and_then(|t| t.parse().ok())
            .map(Some)
            .ok_or_else(|| CutError::Parse {
                path: self.path.to_owned(),
                line: self.line,
                reason: format!(
                    "{column} {:?} is not a whole day number",
                    String::from_utf8_lossy(&value)
                ),
            })
    }
}

fn unquote(raw: &[u8]) -> Cow<'_, [u8]> {
    match raw {
        [b'"', inner @ .., b'"'] => {
            if inner.contains(&b'"') {
                let mut out = Vec::with_capacity(inner.len());
                let mut i = 0;
                while i < inner.len() {
                    out.push(inner[i]);
                    i += if inner[i] == b'"' { 2 } else { 1 };
                }
                Cow::Owned(out)
            } else {
                Cow::Borrowed(inner)
            }
        }
        _ => Cow::Borrowed(raw),
    }
}

/// The record without its line end.
fn content(record: &[u8]) -> &[u8] {
    let r = record.strip_suffix(b"\n").unwrap_or(record);
    r.strip_suffix(b"\r").unwrap_or(r)
}

/// Splits one record into the byte spans of its raw fields (quotes included).
fn split(record: &[u8], spans: &mut Vec<(usize, usize)>) -> Result<(), String> {
    spans.clear();
    let mut pos = 0;
    loop {
        let end = if record.get(pos) == Some(&b'"') {
            let mut i = pos + 1;
            loop {
                match record[i..].iter().position(|&b| b == b'"') {
                    None => return Err(format!("field {} has no closing quote", spans.len() + 1)),
                    Some(q) if record.get(i + q + 1) == Some(&b'"') => i += q + 2,
                    Some(q) => break i + q + 1,
                }
            }
        } else {
            record[pos..]
                .iter()
                .position(|&b| b == b',')
                .map_or(record.len(), |c| pos + c)
        };
        if end < record.len() && record[end] != b',' {
            return Err(format!(
                "field {} has text after its closing quote",
                spans.len() + 1
            ));
        }
        spans.push((pos, end));
        if end == record.len() {
            return Ok(());
        }
        pos = end + 1;
    }
}

impl TableFile {
    fn open(src: &Path, out: &Path) -> Result<Self, CutError> {
        let file = File::open(src).map_err(io_err(src))?;
        let gzip = src.extension().is_some_and(|e| e == "gz");
        let reader: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::with_capacity(
                1 << 20,
                MultiGzDecoder::new(BufReader::new(file)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, file))
        };
        let file = BufWriter::with_capacity(1 << 20, File::create(out).map_err(io_err(out))?);
        let sink = if gzip {
            Sink::Gzip(Box::new(GzEncoder::new(file, Compression::fast())))
        } else {
            Sink::Plain(file)
        };
        let mut t = Self {
            src: src.to_owned(),
            out: out.to_owned(),
            reader,
            sink,
            header: Vec::new(),
            line: 0,
            record: Vec::new(),
            spans: Vec::new(),
        };
        if !t.read_record()? {
            return Err(t.parse_error(1, "the file is empty: no header".into()));
        }
        let mut record = std::mem::take(&mut t.record);
        let body = content(&record);
        let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
        split(body, &mut t.spans).map_err(|r| t.parse_error(1, r))?;
        t.header = t
            .spans
            .iter()
            .map(|&(s, e)| String::from_utf8_lossy(&unquote(&body[s..e])).into_owned())
            .collect();
        t.sink.write_all(&record).map_err(io_err(out))?;
        record.clear();
        t.record = record;
        Ok(t)
    }

    fn parse_error(&self, line: u64, reason: String) -> CutError {
        CutError::Parse {
            path: self.src.clone(),
            line,
            reason,
        }
    }

    /// The positions of the named columns in the header.
    fn columns<const N: usize>(&self, names: &[&str]) -> Result<[usize; N], CutError> {
        let mut out = [0; N];
        for (slot, name) in out.iter_mut().zip(names) {
            *slot =
                self.header.iter().position(|h| h == name).ok_or_else(|| {
                    self.parse_error(1, format!("the header has no {name} column"))
                })?;
        }
        Ok(out)
    }

    /// Reads the next record (a line, or several while a quoted field is open) into `record`.
    fn read_record(&mut self) -> Result<bool, CutError> {
        self.record.clear();
        let mut quotes = 0usize;
        loop {
            let from = self.record.len();
            let n = self
                .reader
                .read_until(b'\n', &mut self.record)
                .map_err(io_err(&self.src))?;
            if n == 0 {
                break;
            }
            self.line += 1;
            quotes += self.record[from..].iter().filter(|&&b| b == b'"').count();
            if quotes.is_multiple_of(2) {
                break;
            }
        }
        Ok(!self.record.is_empty())
    }

    /// Runs `decide` on every row after the header and writes what it says.
    fn each(
        &mut self,
        mut decide: impl FnMut(&Row<'_>) -> Result<Action, CutError>,
    ) -> Result<TableCut, CutError> {
        let mut counts = TableCut {
            file: PathBuf::new(),
            rows_read: 0,
            rows_dropped: 0,
            fields_emptied: 0,
        };
        let fields = self.header.len();
        loop {
            let line = self.line + 1;
            if !self.read_record()? {
                break;
            }
            let body = content(&self.record);
            if body.is_empty() {
                // A blank line: not a row; copied as it is.
                self.sink
                    .write_all(&self.record)
                    .map_err(io_err(&self.out))?;
                continue;
            }
            counts.rows_read += 1;
            split(body, &mut self.spans).map_err(|r| self.parse_error(line, r))?;
            if self.spans.len() != fields {
                return Err(self.parse_error(
                    line,
                    format!("{} fields where the header has {fields}", self.spans.len()),
                ));
            }
            let row = Row {
                record: body,
                spans: &self.spans,
                path: &self.src,
                line,
            };
            match decide(&row)? {
                Action::Keep => self.sink.write_all(&self.record),
                Action::Drop => {
                    counts.rows_dropped += 1;
                    Ok(())
                }
                Action::Empty(i) => {
                    counts.fields_emptied += 1;
                    let (s, e) = self.spans[i];
                    let empty: &[u8] = if body.get(s) == Some(&b'"') {
                        b"\"\""
                    } else {
                        b""
                    };
                    let sink = &mut self.sink;
                    sink.write_all(&self.record[..s])
                        .and_then(|()| sink.write_all(empty))
                        .and_then(|()| sink.write_all(&self.record[e..]))
                }
            }
            .map_err(io_err(&self.out))?;
        }
        Ok(counts)
    }

    /// Flushes and syncs the written file.
    fn finish(self) -> Result<(), CutError> {
        let out = self.out;
        let file = match self.sink {
            Sink::Plain(w) => w.into_inner().map_err(|e| e.into_error()),
            Sink::Gzip(w) => w
                .finish()
                .and_then(|w| w.into_inner().map_err(|e| e.into_error())),
        }
        .map_err(io_err(&out))?;
        file.sync_all().map_err(io_err(&out))
    }
}
