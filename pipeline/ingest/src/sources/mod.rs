//! Readers for what universities actually run, turned into the canonical tables: Moodle's log
//! and gradebook exports (`moodle`), xAPI statements from a learning record store (`xapi`), with
//! final results from a gradebook column or the student record system's outcomes CSV.
//!
//! [`convert`] reads a source configuration (TOML, paths relative to it) and writes an
//! OULAD-schema export folder that the ordinary loader, validation and feature engine take: the
//! seven canonical CSVs, `source.json` (what each source file held: read = converted + ignored +
//! quarantined, with the reasons; each presentation's calendar start and as-of day) and
//! `source_quarantine.csv` (file, line, reason, record). Student attributes a source cannot supply
//! (gender, region, education, ...) are written empty and named in `source.json`; the loader
//! leaves them unchecked and the features derived from them are absent from the snapshot's
//! schema, never filled with made-up values.
//!
//! A running presentation is the ordinary case: a student with no outcome yet (a blank course
//! total, no outcome row, a blank result) is written with an empty `final_result` and kept,
//! registered, with their activity. The export's as-of date (`as_of` in the configuration, or
//! [`convert_as_of`]'s argument from `--as-of`) is the day the records stop: a log event,
//! submission, statement or withdrawal dated after it is refused into the source quarantine.

pub mod moodle;
pub mod time;
pub mod xapi;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use lodestar_domain::Table;
use serde::{Deserialize, Serialize};

use crate::IngestError;
pub use time::DateOrder;

/// The file in an export folder that says where its tables came from.
pub const SOURCE_FILE: &str = "source.json";
/// The source rows that could not be converted, with file, line and reason.
pub const SOURCE_QUARANTINE_FILE: &str = "source_quarantine.csv";

/// The studentInfo columns neither Moodle nor xAPI carry.
pub const ATTRIBUTES_NOT_IN_LMS: [&str; 8] = [
    "gender",
    "region",
    "highest_education",
    "imd_band",
    "age_band",
    "num_of_prev_attempts",
    "studied_credits",
    "disability",
];

/// What an export folder was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// OULAD-schema CSVs, read as they are.
    Oulad,
    /// Moodle's log and gradebook exports.
    Moodle,
    /// xAPI statements (JSON lines or a JSON array).
    Xapi,
}

impl std::str::FromStr for SourceFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oulad" => Ok(SourceFormat::Oulad),
            "moodle" => Ok(SourceFormat::Moodle),
            "xapi" => Ok(SourceFormat::Xapi),
            _ => Err(format!(
                "unknown format {s:?}: expected oulad, moodle or xapi"
            )),
        }
    }
}

/// A source configuration file (`lodestar ingest --format moodle --export course.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `moodle` or `xapi`.
    pub format: SourceFormat,
    /// How numeric log dates read (`dmy` or `mdy`); needed only when a file cannot tell.
    #[serde(default)]
    pub date_order: Option<DateOrder>,
    /// The export's as-of date (a TOML date or a `YYYY-MM-DD` string): records dated after it
    /// are refused, and a presentation that has not ended by it is running (its gradebook's
    /// course total is a running total, not a final result). `--as-of` overrides it.
    #[serde(default, deserialize_with = "optional_date")]
    pub as_of: Option<NaiveDate>,
    /// The institution's mapping to student ids: a CSV with a header `key,id_student`, where key
    /// is a full name, an e-mail address, an xAPI mbox (`mailto:…`) or account name.
    #[serde(default)]
    pub students: Option<PathBuf>,
    /// Activity types by Moodle component or xAPI activity type IRI, over the built-in ones.
    #[serde(default)]
    pub activity_types: BTreeMap<String, String>,
    /// One entry per course presentation.
    pub presentations: Vec<PresentationSource>,
}

/// One course presentation and its files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentationSource {
    /// Module code, e.g. `HIS101` (letters and digits).
    pub module: String,
    /// Presentation code: the start year and a month letter, e.g. `2024J`.
    pub presentation: String,
    /// Day 0 of the presentation (a TOML date, `2024-10-01`, or the same as a string).
    #[serde(deserialize_with = "date")]
    pub start: NaiveDate,
    /// Length in days.
    pub length_days: u16,
    /// Moodle: the course's log export (CSV).
    #[serde(default)]
    pub log: Option<PathBuf>,
    /// Moodle: the gradebook export (CSV): one row per student, one column per grade item.
    #[serde(default)]
    pub gradebook: Option<PathBuf>,
    /// xAPI: the statements (JSON lines, or one JSON array).
    #[serde(default)]
    pub statements: Option<PathBuf>,
    /// xAPI: the course's activity IRI; statements in its context (parent or grouping) or about
    /// it belong to this presentation.
    #[serde(default)]
    pub course: Option<String>,
    /// The student record system's outcomes: CSV `id_student,course,result` (result Pass,
    /// Fail, Withdrawn or Distinction, or blank for a student still in progress; course
    /// `MODULE-PRESENTATION` or blank), optional `withdrawn_on` (date). A student with no row is
    /// in progress (empty `final_result`), never set aside. Optional for xAPI: without it every
    /// student is in progress (a term under way).
    #[serde(default)]
    pub outcomes: Option<PathBuf>,
    /// Moodle: the final result from a gradebook column instead.
    #[serde(default)]
    pub result: Option<ResultRule>,
    /// The assessments.
    #[serde(default)]
    pub assessments: Vec<AssessmentSource>,
}

/// A final result derived from a gradebook column. Only a number is a result: a blank cell
/// (empty or `-`) is a student with no outcome yet (empty `final_result`), a cell that is not a
/// number is quarantined (and the student kept, in progress). While the presentation has not
/// ended by the export's as-of date, the column is a running total and gives no result at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRule {
    /// Gradebook column, e.g. `Course total (Real)`.
    pub column: String,
    /// At or above: Pass; a number below: Fail; blank: in progress (empty).
    pub pass_mark: f64,
    /// At or above: Distinction.
    #[serde(default)]
    pub distinction_mark: Option<f64>,
}

/// One assessment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessmentSource {
    /// Moodle: the gradebook column (`Assignment: Essay 1 (Real)`); xAPI: the activity IRI.
    pub item: String,
    /// Moodle: the log's event context for it (default: the column without its ` (Real)`-style
    /// suffix).
    #[serde(default)]
    pub activity: Option<String>,
    /// `TMA` (tutor-marked), `CMA` (computer-marked) or `Exam`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Due date.
    #[serde(deserialize_with = "date")]
    pub due: NaiveDate,
    /// Weight in percent.
    pub weight: f64,
    /// The most points it gives (scores become percentages); default 100.
    #[serde(default = "hundred")]
    pub max: f64,
}

/// A date written as a TOML date or as a `YYYY-MM-DD` string.
fn date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Toml(toml::value::Datetime),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Toml(t) => t.to_string(),
        Raw::Text(s) => s,
    };
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a date (YYYY-MM-DD): {e}")))
}

/// An optional date in the forms [`date`] takes (absent: `None`, with `#[serde(default)]`).
fn optional_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    date(d).map(Some)
}

/// The reason a record dated `date` is refused, when it lies after the export's as-of date.
pub(crate) fn after_as_of(date: NaiveDate, as_of: Option<NaiveDate>) -> Option<String> {
    let as_of = as_of?;
    (date > as_of).then(|| format!("dated {date}, after the export's as-of date {as_of}"))
}

fn hundred() -> f64 {
    100.0
}

/// Rows of one source file: read = converted + ignored + quarantined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceCount {
    /// The file, relative to the configuration.
    pub file: String,
    /// Records read (a header not counted).
    pub read: u64,
    /// Records that became canonical rows.
    pub converted: u64,
    /// Records that are not a student's learning (a teacher's action, a voided statement, ...),
    /// by reason.
    pub ignored: BTreeMap<String, u64>,
    /// Records written to the source quarantine.
    pub quarantined: u64,
}

impl SourceCount {
    fn new(file: &str) -> Self {
        SourceCount {
            file: file.to_owned(),
            ..SourceCount::default()
        }
    }

    fn ignore(&mut self, reason: &str) {
        *self.ignored.entry(reason.to_owned()).or_default() += 1;
    }

    /// Whether every record is accounted for.
    pub fn balanced(&self) -> bool {
        self.read == self.converted + self.ignored.values().sum::<u64>() + self.quarantined
    }
}

/// `source.json`: what an export folder was converted from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// The format read.
    pub format: SourceFormat,
    /// The configuration file.
    pub config: PathBuf,
    /// Per source file.
    pub files: Vec<SourceCount>,
    /// studentInfo columns the source does not carry: written empty, left unchecked, and the
    /// features derived from them absent from the snapshot.
    pub absent_student_columns: Vec<String>,
    /// The export's as-of date (`YYYY-MM-DD`) when given (`--as-of` or `as_of`).
    #[serde(default)]
    pub as_of: Option<String>,
    /// One per configured presentation: its calendar start and as-of day.
    #[serde(default)]
    pub presentations: Vec<SourcePresentation>,
}

/// A presentation of a converted source as the loader needs it: day 0's calendar date, and the
/// as-of day when the institution gave an as-of date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePresentation {
    /// `MODULE-PRESENTATION`.
    pub presentation: String,
    /// Day 0 (`YYYY-MM-DD`).
    pub start_date: String,
    /// The day number of the as-of date relative to `start_date` (day 0), when given; it may lie
    /// past the presentation's last day (a finished term) or before day 0 (not started).
    pub as_of_day: Option<i32>,
}

/// Reads `source.json` of an export folder; `None` for a plain OULAD-schema export.
pub fn read_source_report(dir: &Path) -> Result<Option<SourceReport>, IngestError> {
    let path = dir.join(SOURCE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(|e| IngestError::io(&path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| IngestError::Source(format!("{}: {e}", path.display())))
}

/// The canonical rows being built, as text fields in canonical column order.
#[derive(Debug, Default)]
pub(crate) struct Canonical {
    pub(crate) rows: BTreeMap<Table, Vec<Vec<String>>>,
    next_site: u64,
    /// (module, presentation, activity) → site id.
    sites: BTreeMap<(String, String, String), u64>,
    /// (module, presentation, student, site, day) → clicks.
    clicks: BTreeMap<(String, String, i64, u64, i32), u64>,
}

impl Canonical {
    pub(crate) fn push(&mut self, table: Table, row: Vec<String>) {
        debug_assert_eq!(row.len(), table.columns().len());
        self.rows.entry(table).or_default().push(row);
    }

    /// The site id of an activity of a presentation, made on first sight (with its `vle` row).
    pub(crate) fn site(
        &mut self,
        p: &PresentationSource,
        activity: &str,
        activity_type: &str,
    ) -> u64 {
        let key = (
            p.module.clone(),
            p.presentation.clone(),
            activity.to_owned(),
        );
        if let Some(id) = self.sites.get(&key) {
            return *id;
        }
        self.next_site += 1;
        let id = self.next_site;
        self.sites.insert(key, id);
        self.push(
            Table::Vle,
            vec![
                id.to_string(),
                p.module.clone(),
                p.presentation.clone(),
                activity_type.to_owned(),
                String::new(),
                String::new(),
            ],
        );
        id
    }

    /// One click (an event) by a student on a site on a day.
    pub(crate) fn click(&mut self, p: &PresentationSource, student: i64, site: u64, day: i32) {
        *self
            .clicks
            .entry((p.module.clone(), p.presentation.clone(), student, site, day))
            .or_default() += 1;
    }

    fn finish_clicks(&mut self) {
        let clicks = std::mem::take(&mut self.clicks);
        for ((module, code, student, site, day), n) in clicks {
            self.push(
                Table::StudentVle,
                vec![
                    module,
                    code,
                    student.to_string(),
                    site.to_string(),
                    day.to_string(),
                    n.to_string(),
                ],
            );
        }
    }
}

pub(crate) fn key_of(p: &PresentationSource) -> String {
    format!("{}-{}", p.module, p.presentation)
}

/// Where unconvertible source records go: `file,line,reason,record`.
pub(crate) struct SourceQuarantine {
    out: BufWriter<fs::File>,
    path: PathBuf,
    pub(crate) rows: u64,
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl SourceQuarantine {
    fn create(path: &Path) -> Result<Self, IngestError> {
        let file = fs::File::create(path).map_err(|e| IngestError::io(path, e))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "file,line,reason,record").map_err(|e| IngestError::io(path, e))?;
        Ok(SourceQuarantine {
            out,
            path: path.to_owned(),
            rows: 0,
        })
    }

    pub(crate) fn put(
        &mut self,
        count: &mut SourceCount,
        line: u64,
        reason: &str,
        record: &str,
    ) -> Result<(), IngestError> {
        count.quarantined += 1;
        self.rows += 1;
        writeln!(
            self.out,
            "{},{line},{},{}",
            quoted(&count.file),
            quoted(reason),
            quoted(record)
        )
        .map_err(|e| IngestError::io(&self.path, e))
    }

    fn finish(mut self) -> Result<(), IngestError> {
        self.out.flush().map_err(|e| IngestError::io(&self.path, e))
    }
}

/// The institution's key → student id mapping (keys compared case-insensitively, trimmed).
#[derive(Debug, Default)]
pub(crate) struct StudentMap(BTreeMap<String, i64>);

impl StudentMap {
    pub(crate) fn read(path: &Path) -> Result<StudentMap, IngestError> {
        let mut map = BTreeMap::new();
        let (mut reader, headers) = open_csv(path)?;
        let key = find(&headers, "key");
        let id = find(&headers, "id_student");
        let (Some(key), Some(id)) = (key, id) else {
            return Err(header_error(
                path,
                "the student mapping needs the columns key and id_student",
                &headers,
            ));
        };
        for (i, record) in reader.records().enumerate() {
            let line = i as u64 + 2;
            let record = record.map_err(|e| source_err(path, line, e))?;
            let k = record.get(key).unwrap_or("").trim().to_lowercase();
            let v: i64 = record.get(id).unwrap_or("").trim().parse().map_err(|_| {
                IngestError::Source(format!(
                    "{} line {line}: id_student {:?} is not a whole number",
                    path.display(),
                    record.get(id).unwrap_or("")
                ))
            })?;
            if map.insert(k.clone(), v).is_some_and(|old| old != v) {
                return Err(IngestError::Source(format!(
                    "{} line {line}: {k:?} is mapped twice, to different students",
                    path.display()
                )));
            }
        }
        Ok(StudentMap(map))
    }

    pub(crate) fn get(&self, key: &str) -> Option<i64> {
        self.0.get(&key.trim().to_lowercase()).copied()
    }
}

/// A CSV file opened with its header read.
pub(crate) fn open_csv(
    path: &Path,
) -> Result<(csv::Reader<fs::File>, csv::StringRecord), IngestError> {
    let file = fs::File::open(path).map_err(|e| IngestError::io(path, e))?;
    // The default terminator takes LF, CRLF and a bare CR alike.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(file);
    let headers = reader
        .headers()
        .map_err(|e| source_err(path, 1, e))?
        .clone();
    Ok((reader, headers))
}

/// Every record of an open CSV with its line (the header is line 1), each counted as read; a
/// record the parser rejects (bad UTF-8, an unclosed quote) is quarantined.
pub(crate) fn read_records(
    reader: &mut csv::Reader<fs::File>,
    count: &mut SourceCount,
    q: &mut SourceQuarantine,
) -> Result<Vec<(u64, csv::StringRecord)>, IngestError> {
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        count.read += 1;
        match record {
            Ok(r) => out.push((line, r)),
            Err(e) => q.put(count, line, &format!("unreadable: {e}"), "")?,
        }
    }
    Ok(out)
}

/// A file whose header lacks what is needed: says what, and lists what it has.
pub(crate) fn header_error(path: &Path, what: &str, headers: &csv::StringRecord) -> IngestError {
    IngestError::Source(format!(
        "{}: {what} (found {:?})",
        path.display(),
        headers.iter().collect::<Vec<_>>()
    ))
}

/// The reason for a record whose field count is not the header's.
pub(crate) fn width_reason(record: &csv::StringRecord, headers: &csv::StringRecord) -> String {
    format!(
        "{} fields where the header has {}",
        record.len(),
        headers.len()
    )
}

/// Each presentation with the id of its first assessment, its course and assessment rows written.
pub(crate) fn presentations<'a>(
    cfg: &'a SourceConfig,
    c: &mut Canonical,
) -> Vec<(&'a PresentationSource, u64)> {
    let mut next = 1u64;
    cfg.presentations
        .iter()
        .map(|p| {
            let first = next;
            next += p.assessments.len() as u64;
            course_rows(c, p, first);
            (p, first)
        })
        .collect()
}

pub(crate) fn source_err(path: &Path, line: u64, e: impl std::fmt::Display) -> IngestError {
    IngestError::Source(format!("{} line {line}: {e}", path.display()))
}

/// The index of a header, compared case-insensitively and trimmed.
pub(crate) fn find(headers: &csv::StringRecord, name: &str) -> Option<usize> {
    headers.iter().position(|h| {
        h.trim()
            .trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case(name)
    })
}

pub(crate) fn record_text(record: &csv::StringRecord) -> String {
    record.iter().collect::<Vec<_>>().join(",")
}

/// Outcomes from the student record system: id → (result, withdrawal date); the result is empty
/// for a student whose row leaves it blank (in progress). A withdrawal dated after the export's
/// as-of date is refused with its row.
pub(crate) fn read_outcomes(
    path: &Path,
    p: &PresentationSource,
    as_of: Option<NaiveDate>,
    count: &mut SourceCount,
    q: &mut SourceQuarantine,
) -> Result<BTreeMap<i64, (String, Option<NaiveDate>)>, IngestError> {
    let mut out = BTreeMap::new();
    let (mut reader, headers) = open_csv(path)?;
    let (Some(id), Some(result)) = (find(&headers, "id_student"), find(&headers, "result")) else {
        return Err(header_error(
            path,
            "outcomes need the columns id_student and result (course and withdrawn_on optional)",
            &headers,
        ));
    };
    let course = find(&headers, "course");
    let withdrawn = find(&headers, "withdrawn_on");
    let key = key_of(p);
    for (line, record) in read_records(&mut reader, count, q)? {
        if let Some(c) = course.and_then(|c| record.get(c)).map(str::trim)
            && !c.is_empty()
            && !c.eq_ignore_ascii_case(&key)
        {
            count.ignore("another course");
            continue;
        }
        let Ok(student) = record.get(id).unwrap_or("").trim().parse::<i64>() else {
            q.put(
                count,
                line,
                "id_student is not a whole number",
                &record_text(&record),
            )?;
            continue;
        };
        let r = record.get(result).unwrap_or("").trim();
        // Blank: no outcome yet (the student is in progress).
        let Some(canonical) = ["Pass", "Fail", "Withdrawn", "Distinction", ""]
            .into_iter()
            .find(|w| w.eq_ignore_ascii_case(r))
        else {
            q.put(
                count,
                line,
                &format!("result {r:?} is not Pass, Fail, Withdrawn or Distinction"),
                &record_text(&record),
            )?;
            continue;
        };
        let w = withdrawn
            .and_then(|w| record.get(w))
            .map(str::trim)
            .unwrap_or("");
        let date = if w.is_empty() {
            None
        } else if let Ok(d) = NaiveDate::parse_from_str(w, "%Y-%m-%d") {
            Some(d)
        } else {
            q.put(
                count,
                line,
                &format!("withdrawn_on {w:?} is not a date (YYYY-MM-DD)"),
                &record_text(&record),
            )?;
            continue;
        };
        if let Some(reason) = date.and_then(|d| after_as_of(d, as_of)) {
            q.put(
                count,
                line,
                &format!("withdrawn_on {reason}"),
                &record_text(&record),
            )?;
            continue;
        }
        if out.insert(student, (canonical.to_owned(), date)).is_some() {
            q.put(
                count,
                line,
                "a second outcome for this student",
                &record_text(&record),
            )?;
            continue;
        }
        count.converted += 1;
    }
    Ok(out)
}

/// The canonical rows of a presentation that every format writes the same way: the course, its
/// assessments (ids `first_id + i`), and each student's studentInfo and registration.
pub(crate) fn course_rows(c: &mut Canonical, p: &PresentationSource, first_id: u64) {
    c.push(
        Table::Courses,
        vec![
            p.module.clone(),
            p.presentation.clone(),
            p.length_days.to_string(),
        ],
    );
    for (i, a) in p.assessments.iter().enumerate() {
        c.push(
            Table::Assessments,
            vec![
                p.module.clone(),
                p.presentation.clone(),
                (first_id + i as u64).to_string(),
                a.kind.clone(),
                day_of(p, a.due).to_string(),
                a.weight.to_string(),
            ],
        );
    }
}

/// A student's studentInfo and studentRegistration rows; attributes the LMS lacks stay empty.
pub(crate) fn student_rows(
    c: &mut Canonical,
    p: &PresentationSource,
    student: i64,
    result: &str,
    withdrawn_day: Option<i32>,
) {
    let mut info = vec![
        p.module.clone(),
        p.presentation.clone(),
        student.to_string(),
    ];
    info.extend(std::iter::repeat_n(String::new(), 8));
    info.push(result.to_owned());
    // Canonical order: code_module, code_presentation, id_student, gender, region,
    // highest_education, imd_band, age_band, num_of_prev_attempts, studied_credits, disability,
    // final_result.
    c.push(Table::StudentInfo, info);
    c.push(
        Table::StudentRegistration,
        vec![
            p.module.clone(),
            p.presentation.clone(),
            student.to_string(),
            String::new(),
            withdrawn_day.map(|d| d.to_string()).unwrap_or_default(),
        ],
    );
}

/// Day of the presentation a date falls on (day 0 is `start`).
pub(crate) fn day_of(p: &PresentationSource, date: NaiveDate) -> i32 {
    (date - p.start).num_days() as i32
}

fn write_table(dir: &Path, table: Table, rows: &[Vec<String>]) -> Result<(), IngestError> {
    let path = dir.join(format!("{}.csv", table.file_stem()));
    let file = fs::File::create(&path).map_err(|e| IngestError::io(&path, e))?;
    let mut out = BufWriter::new(file);
    let header: Vec<String> = table.header().map(|h| format!("\"{h}\"")).collect();
    let mut text = header.join(",");
    text.push('\n');
    for row in rows {
        text.push_str(&row.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| IngestError::io(&path, e))
}

/// Where the source configuration at `config` is converted to under `exports`:
/// `<exports>/<format>-<config file stem>` (`lodestar ingest` and the pipeline agree on it).
pub fn converted_dir(exports: &Path, config: &Path) -> Result<PathBuf, IngestError> {
    let format = match source_format(config)? {
        SourceFormat::Oulad => "oulad",
        SourceFormat::Moodle => "moodle",
        SourceFormat::Xapi => "xapi",
    };
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".into());
    Ok(exports.join(format!("{format}-{stem}")))
}

/// The `format` a source configuration declares.
pub fn source_format(config: &Path) -> Result<SourceFormat, IngestError> {
    #[derive(Deserialize)]
    struct FormatOnly {
        format: SourceFormat,
    }
    let text = fs::read_to_string(config).map_err(|e| IngestError::io(config, e))?;
    toml::from_str::<FormatOnly>(&text)
        .map(|f| f.format)
        .map_err(|e| IngestError::Source(format!("{}: {e}", config.display())))
}

/// What [`convert`] and [`convert_as_of`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The export folder (canonical CSVs, `source.json`, `source_quarantine.csv`).
    pub dir: PathBuf,
    /// The report written to `source.json`.
    pub report: SourceReport,
    /// Records in the source quarantine.
    pub quarantined: u64,
}

/// Reads the source configuration at `config` and writes its canonical export into `out`
/// (created; replaced as a whole, never left half-written: the tables go to a sibling folder
/// renamed into place when complete), as of the configuration's `as_of` date if it has one.
pub fn convert(config: &Path, out: &Path) -> Result<Converted, IngestError> {
    convert_as_of(config, out, None)
}

/// [`convert`], with the export's as-of date given (`--as-of`): it wins over the
/// configuration's `as_of`; `None` leaves the configuration's.
pub fn convert_as_of(
    config: &Path,
    out: &Path,
    as_of: Option<NaiveDate>,
) -> Result<Converted, IngestError> {
    let text = fs::read_to_string(config).map_err(|e| IngestError::io(config, e))?;
    let mut cfg: SourceConfig = toml::from_str(&text)
        .map_err(|e| IngestError::Source(format!("{}: {e}", config.display())))?;
    if as_of.is_some() {
        cfg.as_of = as_of;
    }
    let base = config.parent().unwrap_or(Path::new("."));
    validate_config(&cfg, config)?;
    let partial = out.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| IngestError::io(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| IngestError::io(&partial, e))?;
    let written = write_partial(&cfg, config, base, &partial);
    if written.is_err() {
        // A failed conversion leaves nothing half-written behind.
        let _ = fs::remove_dir_all(&partial);
    }
    let (report, quarantined) = written?;
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| IngestError::io(out, e))?;
    }
    fs::rename(&partial, out).map_err(|e| IngestError::io(out, e))?;
    Ok(Converted {
        dir: out.to_owned(),
        report,
        quarantined,
    })
}

/// Converts into the folder `partial`: the tables, the quarantine and `source.json`.
fn write_partial(
    cfg: &SourceConfig,
    config: &Path,
    base: &Path,
    partial: &Path,
) -> Result<(SourceReport, u64), IngestError> {
    let mut q = SourceQuarantine::create(&partial.join(SOURCE_QUARANTINE_FILE))?;
    let mut canonical = Canonical::default();
    let students = cfg
        .students
        .as_ref()
        .map(|p| StudentMap::read(&base.join(p)))
        .transpose()?;
    let files = match cfg.format {
        SourceFormat::Xapi => xapi::convert(cfg, base, students.as_ref(), &mut canonical, &mut q)?,
        // validate_config refuses oulad.
        SourceFormat::Moodle | SourceFormat::Oulad => {
            moodle::convert(cfg, base, students.as_ref(), &mut canonical, &mut q)?
        }
    };
    canonical.finish_clicks();
    for table in Table::ALL {
        write_table(
            partial,
            table,
            canonical.rows.get(&table).map_or(&[][..], Vec::as_slice),
        )?;
    }
    let quarantined = q.rows;
    q.finish()?;
    let report = SourceReport {
        format: cfg.format,
        config: config.to_owned(),
        files,
        absent_student_columns: ATTRIBUTES_NOT_IN_LMS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        as_of: cfg.as_of.map(|d| d.format("%Y-%m-%d").to_string()),
        presentations: cfg
            .presentations
            .iter()
            .map(|p| SourcePresentation {
                presentation: key_of(p),
                start_date: p.start.format("%Y-%m-%d").to_string(),
                as_of_day: cfg.as_of.map(|d| day_of(p, d)),
            })
            .collect(),
    };
    debug_assert!(report.files.iter().all(SourceCount::balanced));
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| IngestError::Source(e.to_string()))?;
    fs::write(partial.join(SOURCE_FILE), json).map_err(|e| IngestError::io(partial, e))?;
    Ok((report, quarantined))
}

fn validate_config(cfg: &SourceConfig, path: &Path) -> Result<(), IngestError> {
    let bad = |what: String| Err(IngestError::Source(format!("{}: {what}", path.display())));
    if cfg.format == SourceFormat::Oulad {
        return bad(
            "format \"oulad\" exports are read as they are; give the folder to --export".into(),
        );
    }
    if cfg.presentations.is_empty() {
        return bad("no [[presentations]]".into());
    }
    let mut seen = BTreeSet::new();
    for p in &cfg.presentations {
        let key = key_of(p);
        if !seen.insert(key.clone()) {
            return bad(format!("presentation {key} is listed twice"));
        }
        if p.length_days == 0 {
            return bad(format!("{key}: length_days must be at least 1"));
        }
        for a in &p.assessments {
            if !["TMA", "CMA", "Exam"].contains(&a.kind.as_str()) {
                return bad(format!(
                    "{key}: assessment {:?}: type must be TMA, CMA or Exam",
                    a.item
                ));
            }
            if a.max.is_nan() || a.max <= 0.0 {
                return bad(format!(
                    "{key}: assessment {:?}: max must be positive",
                    a.item
                ));
            }
        }
        match cfg.format {
            SourceFormat::Moodle => {
                if p.log.is_none() || p.gradebook.is_none() {
                    return bad(format!(
                        "{key}: a Moodle presentation needs log and gradebook"
                    ));
                }
                if p.result.is_none() && p.outcomes.is_none() {
                    return bad(format!(
                        "{key}: give the final result as [presentations.result] (a gradebook column and pass mark) or outcomes (a CSV)"
                    ));
                }
            }
            SourceFormat::Xapi => {
                if p.statements.is_none() || p.course.is_none() {
                    return bad(format!(
                        "{key}: an xAPI presentation needs statements and course (outcomes when known)"
                    ));
                }
            }
            SourceFormat::Oulad => {}
        }
    }
    Ok(())
}
