//! `lodestar generate`: a synthetic LMS export in exactly the OULAD schema (same seven files,
//! columns, quoting, CRLF and empty-string nulls), at any scale, deterministic per seed.
//!
//! The process behind the numbers is described in [`crate::student`] and in the README. Output is
//! streamed student by student: memory does not grow with the number of click rows. Every file is
//! written as `<name>.partial` and renamed into place only when all seven are complete, so a failed
//! run leaves no half-written export.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use lodestar_domain::Table;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::csv_out::CsvOut;
use crate::student::{self, PresentationPlan};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Students in all, spread evenly over the presentations.
    pub students: u64,
    /// Module presentations: two per module (`B` then `J` of 2013, then 2014, …).
    pub presentations: u32,
    /// Same seed and sizes, same bytes.
    pub seed: u64,
    /// Write `studentVle.csv.gz` (as the genuine export ships it) instead of `studentVle.csv`.
    pub gzip_clicks: bool,
    /// Write the presentations with the latest presentation code as running on this day: no
    /// outcome, and no click, submission or unregistration dated after it (`None`: every
    /// presentation finished). The rows kept are exactly those [`crate::cut_running`] keeps when
    /// it cuts the finished export of the same seed on this day.
    pub running_day: Option<i32>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            students: 1000,
            presentations: 4,
            seed: 42,
            gzip_clicks: false,
            running_day: None,
        }
    }
}

/// Why generation failed. No output file is left behind in either case.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The configuration cannot produce an export.
    #[error("invalid generator configuration: {0}")]
    Config(&'static str),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// File or folder being written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Where a run is, reported to the caller's progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Students written so far.
    pub students_done: u64,
    /// Students in all.
    pub students_total: u64,
    /// `studentVle` rows written so far.
    pub click_rows: u64,
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Rows written per table (headers not counted).
    pub rows: BTreeMap<Table, u64>,
    /// The seven files, in [`Table::ALL`] order.
    pub files: Vec<PathBuf>,
}

/// Largest number of presentations (two per module, 26² module codes).
pub const MAX_PRESENTATIONS: u32 = 2 * 26 * 26;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a synthetic export into `out` (created if missing), calling `progress` every few
/// hundred students and once at the end.
pub fn generate(
    config: &GeneratorConfig,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<GenerateSummary, GenerateError> {
    if config.students == 0 {
        return Err(GenerateError::Config("--students must be at least 1"));
    }
    if config.presentations == 0 || config.presentations > MAX_PRESENTATIONS {
        return Err(GenerateError::Config(
            "--presentations must be between 1 and 1352",
        ));
    }
    if u64::from(config.presentations) > config.students {
        return Err(GenerateError::Config(
            "--presentations must not exceed --students (every presentation needs a student)",
        ));
    }
    fs::create_dir_all(out).map_err(io_err(out))?;
    // Refuse before writing anything if a target is in the way, so the final renames cannot fail
    // half-way through the seven files.
    for table in Table::ALL {
        for gzip in [false, true] {
            let path = out.join(file_name(table, gzip));
            if path.is_dir() {
                return Err(GenerateError::Io {
                    path,
                    source: io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "a folder is in the way of a table file",
                    ),
                });
            }
        }
    }
    let mut partials = Vec::new();
    let result = write_all(config, out, progress, &mut partials);
    if result.is_err() {
        for p in &partials {
            let _ = fs::remove_file(p);
        }
    }
    result
}

fn file_name(table: Table, gzip: bool) -> String {
    if gzip {
        format!("{}.csv.gz", table.file_stem())
    } else {
        format!("{}.csv", table.file_stem())
    }
}

fn write_all(
    config: &GeneratorConfig,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
    partials: &mut Vec<PathBuf>,
) -> Result<GenerateSummary, GenerateError> {
    let mut open = |table: Table| -> Result<CsvOut, GenerateError> {
        let gzip = config.gzip_clicks && table == Table::StudentVle;
        let path = out.join(file_name(table, gzip));
        let w = CsvOut::create(&path, gzip, table.header()).map_err(io_err(&path))?;
        partials.push(w.partial_path().to_owned());
        Ok(w)
    };
    let mut writers: Vec<CsvOut> = Table::ALL
        .into_iter()
        .map(&mut open)
        .collect::<Result<_, _>>()?;
    let [
        courses,
        assessments,
        vle,
        info,
        registration,
        submissions,
        clicks,
    ] = writers.as_mut_slice()
    else {
        unreachable!("Table::ALL has seven tables")
    };

    let plans: Vec<PresentationPlan> = (0..config.presentations)
        .map(|p| PresentationPlan::new(config.seed, p))
        .collect();
    // The running presentations: those with the latest presentation code.
    let latest = plans.iter().map(PresentationPlan::code).max();
    let as_of =
        |plan: &PresentationPlan| config.running_day.filter(|_| Some(plan.code()) == latest);
    for plan in &plans {
        plan.write_course(courses).map_err(io_err(out))?;
        plan.write_assessments(assessments).map_err(io_err(out))?;
        plan.write_vle(vle).map_err(io_err(out))?;
    }

    let total = config.students;
    let per = total / u64::from(config.presentations);
    let extra = total % u64::from(config.presentations);
    let mut done = 0u64;
    for (p, plan) in plans.iter().enumerate() {
        let count = per + u64::from((p as u64) < extra);
        for _ in 0..count {
            let mut rng = ChaCha8Rng::seed_from_u64(student::mix(config.seed, 0x5eed_57d0, done));
            let id = 100_000 + done * 8 + rng.random_range(0..8);
            let mut sinks = student::Sinks {
                info: &mut *info,
                registration: &mut *registration,
                submissions: &mut *submissions,
                clicks: &mut *clicks,
            };
            student::simulate(plan, as_of(plan), id, &mut rng, &mut sinks).map_err(io_err(out))?;
            done += 1;
            if done.is_multiple_of(256) {
                progress(Progress {
                    students_done: done,
                    students_total: total,
                    click_rows: clicks.rows(),
                });
            }
        }
    }
    progress(Progress {
        students_done: done,
        students_total: total,
        click_rows: clicks.rows(),
    });

    let rows = Table::ALL
        .into_iter()
        .zip(writers.iter().map(CsvOut::rows))
        .collect();
    let mut finished = Vec::new();
    for w in writers {
        let partial = w.partial_path().to_owned();
        finished.push(w.finish().map_err(io_err(&partial))?);
    }
    // Every table is complete: move them into place, and drop the other spelling of the click
    // table so a reader never finds both studentVle.csv and studentVle.csv.gz.
    let stale = out.join(file_name(Table::StudentVle, !config.gzip_clicks));
    match fs::remove_file(&stale) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&stale)(e)),
        _ => {}
    }
    let mut files = Vec::new();
    for (partial, path) in finished {
        fs::rename(&partial, &path).map_err(io_err(&path))?;
        files.push(path);
    }
    Ok(GenerateSummary { rows, files })
}
