//! Loading an OULAD-schema export directory into validated canonical tables: every row read is
//! either accepted or quarantined (with file, line, reason and the raw record), and counted.
//! The click table is streamed block by block and reduced to daily activity per student as it
//! goes, so memory does not grow with the number of click rows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lodestar_domain::activity::KNOWN_ACTIVITY_TYPES;
use lodestar_domain::{ActivityFamily, AsOfSource, PresentationId, PresentationTerm, Table};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{IngestError, PolarsContext};
use crate::read::{Block, LINE, TableReader, locate};
use crate::validate::{
    DateWindow, REASON, Rule, any_bad, canonical_columns, duplicates, final_results, imd_spellings,
    one_of, outside, reason_of, rule_with, split_by_rules, text, type_rules, type_rules_except,
};

/// Rows read, accepted and quarantined for one table: `read = accepted + quarantined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// The table.
    pub table: Table,
    /// Its file name in the export.
    pub file: String,
    /// Data rows read (header not counted).
    pub read: u64,
    /// Rows that passed validation.
    pub accepted: u64,
    /// Rows written to the quarantine.
    pub quarantined: u64,
}

/// The validated canonical tables of one export.
pub struct LoadedExport {
    /// `courses`, with `presentation_index` (its row number), which the other frames carry as an
    /// integer key for their presentation.
    pub courses: DataFrame,
    /// `assessments`, with `due_day` (the exam's empty date filled with the presentation's length).
    pub assessments: DataFrame,
    /// `vle`, with the activity `family`.
    pub vle: DataFrame,
    /// `studentInfo`, `imd_band` in canonical spelling.
    pub students: DataFrame,
    /// `studentRegistration`.
    pub registrations: DataFrame,
    /// `studentAssessment`, with the assessment's presentation, type, due day and weight.
    pub submissions: DataFrame,
    /// Clicks per student and day: `presentation_index`, `id_student`, `date`, `clicks` and
    /// `clicks_<family>` for each activity family. A day whose rows straddle two blocks of the
    /// file comes as two partial rows: sum by day before using it as one row per day.
    pub daily_activity: DataFrame,
    /// Per-table accounting, in [`Table::ALL`] order.
    pub counts: Vec<TableCount>,
    /// studentInfo columns the source does not carry (`source.json` of a converted Moodle or
    /// xAPI export): left unchecked, and the features derived from them left out.
    pub absent: Vec<String>,
    /// Each presentation (in `courses` order): running or finished, and as of which day.
    pub terms: Vec<PresentationTerm>,
}

/// Where quarantined rows go: a CSV of `file,line,reason,record`.
pub struct Quarantine {
    out: BufWriter<File>,
    path: PathBuf,
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Quarantine {
    /// Creates the quarantine file.
    pub fn create(path: &Path) -> Result<Self, IngestError> {
        let file = File::create(path).map_err(|source| IngestError::Write {
            path: path.to_owned(),
            source,
        })?;
        let mut q = Self {
            out: BufWriter::new(file),
            path: path.to_owned(),
        };
        q.write("file,line,reason,record\n")?;
        Ok(q)
    }

    fn write(&mut self, s: &str) -> Result<(), IngestError> {
        self.out
            .write_all(s.as_bytes())
            .map_err(|source| IngestError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes the bad rows (`__line`, `__reason`) of `file`, quoting their raw text from `blocks`.
    fn add(&mut self, file: &str, bad: &DataFrame, blocks: &[Block]) -> Result<(), IngestError> {
        if bad.height() == 0 {
            return Ok(());
        }
        let sorted = bad
            .sort([LINE], Default::default())
            .ctx("sorting quarantine")?;
        let lines: Vec<u64> = sorted
            .column(LINE)
            .ctx("quarantine lines")?
            .cast(&DataType::UInt64)
            .ctx("quarantine lines")?
            .u64()
            .ctx("quarantine lines")?
            .into_no_null_iter()
            .collect();
        let reasons = sorted
            .column(REASON)
            .ctx("quarantine reasons")?
            .str()
            .ctx("quarantine reasons")?
            .clone();
        let mut records = Vec::with_capacity(lines.len());
        for block in blocks {
            let end = block.first_line + block.frame.height() as u64;
            let inside: Vec<u64> = lines
                .iter()
                .copied()
                .filter(|l| (block.first_line..end).contains(l))
                .collect();
            if !inside.is_empty() {
                records.extend(block.raw_lines(&inside));
            }
        }
        for ((line, reason), record) in lines.iter().zip(reasons.iter()).zip(records) {
            let row = format!(
                "{},{},{},{}\n",
                csv_field(file),
                line,
                csv_field(reason.unwrap_or("")),
                csv_field(&record)
            );
            self.write(&row)?;
        }
        Ok(())
    }

    /// Flushes and syncs the file.
    pub fn finish(mut self) -> Result<PathBuf, IngestError> {
        let path = self.path.clone();
        let err = |source| IngestError::Write {
            path: path.clone(),
            source,
        };
        self.out.flush().map_err(err)?;
        self.out.get_ref().sync_all().map_err(err)?;
        Ok(path)
    }
}

fn keys() -> [Expr; 2] {
    [col("code_module"), col("code_presentation")]
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads a whole (keyed) table into one frame, keeping its blocks for quoting bad rows.
fn read_whole(dir: &Path, table: Table) -> Result<(String, Vec<Block>, DataFrame), IngestError> {
    let path = locate(dir, table)?;
    let mut reader = TableReader::open(&path, table)?;
    let mut blocks = Vec::new();
    let mut frame: Option<DataFrame> = None;
    while let Some(block) = reader.next_block()? {
        match &mut frame {
            Some(f) => {
                f.vstack_mut(&block.frame).ctx("stacking blocks")?;
            }
            None => frame = Some(block.frame.clone()),
        }
        blocks.push(block);
    }
    let frame = match frame {
        Some(f) => f,
        None => {
            // A header with no rows: an empty frame with the canonical columns.
            DataFrame::empty_with_schema(&Schema::from_iter(
                table
                    .columns()
                    .iter()
                    .map(|c| Field::new(c.name.into(), DataType::String)),
            ))
            .hstack(&[Column::new_empty(LINE.into(), &IDX_DTYPE)])
            .ctx("empty table")?
        }
    };
    Ok((file_name(&path), blocks, frame))
}

/// Applies `rules` and the duplicate check on `dup_keys`, records the outcome, and returns the
/// accepted rows with canonical column types.
#[allow(clippy::too_many_arguments)]
fn check(
    table: Table,
    file: &str,
    blocks: &[Block],
    frame: LazyFrame,
    rules: Vec<Rule>,
    dup_keys: &[&str],
    quarantine: &mut Quarantine,
    counts: &mut Vec<TableCount>,
) -> Result<DataFrame, IngestError> {
    let (good, mut bad) = split_by_rules(frame, &rules)?;
    let read = (good.height() + bad.height()) as u64;
    let good = if dup_keys.is_empty() {
        good
    } else {
        let (unique, dups) = duplicates(good, dup_keys)?;
        bad.vstack_mut(&dups).ctx("collecting duplicates")?;
        unique
    };
    quarantine.add(file, &bad, blocks)?;
    counts.push(TableCount {
        table,
        file: file.to_owned(),
        read,
        accepted: good.height() as u64,
        quarantined: bad.height() as u64,
    });
    // Canonical types; columns joined in from other tables stay; helper columns go.
    let helpers: Vec<String> = good
        .get_column_names()
        .into_iter()
        .filter(|n| n.starts_with("__"))
        .map(|n| n.to_string())
        .collect();
    good.lazy()
        .with_columns(canonical_columns(table))
        .drop(cols(helpers))
        .collect()
        .ctx(format!("typing {file}"))
}

/// In `courses`: a running presentation's configured as-of day (null when none was given):
/// records dated after it are refused.
pub const AS_OF_COLUMN: &str = "as_of_day";
/// In `courses`: the last week that has feature rows (a running presentation's current week,
/// a finished one's last week; -1 when no week is complete yet).
pub const LAST_WEEK_COLUMN: &str = "last_feature_week";

/// A record dated after its running presentation's configured as-of day is from the future.
fn future_rule(column: &str) -> Rule {
    rule_with(
        col(column).cast(DataType::Int64).gt(col("__as_of")),
        vec![
            lit(format!("{column} ")),
            text(col(column)),
            lit(" is after the export's as-of day "),
            text(col("__as_of")),
            lit(" for this running presentation (a record from the future)"),
        ],
    )
}

/// Adds `__course` (present), `__length` and `__as_of` from the courses table.
fn with_course(frame: LazyFrame, courses: &DataFrame) -> LazyFrame {
    let right = courses.clone().lazy().select([
        col("code_module"),
        col("code_presentation"),
        lit(true).alias("__course"),
        col("module_presentation_length").alias("__length"),
        col(AS_OF_COLUMN).alias("__as_of"),
    ]);
    frame.join(right, keys(), keys(), JoinArgs::new(JoinType::Left))
}

fn course_rule() -> Rule {
    rule_with(
        col("__course").is_null(),
        vec![
            lit("presentation "),
            col("code_module"),
            lit("-"),
            col("code_presentation"),
            lit(" is not in courses"),
        ],
    )
}

fn registered_rule() -> Rule {
    rule_with(
        col("__registered").is_null(),
        vec![
            lit("student "),
            text(col("id_student")),
            lit(" is not registered in this presentation"),
        ],
    )
}

/// Adds `marker` (true, or null when absent): whether the row's student and presentation have a
/// row in `other`.
fn with_student_in(frame: LazyFrame, other: &DataFrame, marker: &str) -> LazyFrame {
    let on = [
        col("code_module"),
        col("code_presentation"),
        col("id_student"),
    ];
    let right = other.clone().lazy().select(
        on.iter()
            .cloned()
            .chain([lit(true).alias(marker)])
            .collect::<Vec<_>>(),
    );
    frame.join(right, on.clone(), on, JoinArgs::new(JoinType::Left))
}

fn with_registration(frame: LazyFrame, registrations: &DataFrame) -> LazyFrame {
    with_student_in(frame, registrations, "__registered")
}

/// Checks module and presentation codes with the domain's rules (few rows: done in Rust).
fn code_rules(frame: &DataFrame) -> Result<DataFrame, IngestError> {
    let modules = frame
        .column("code_module")
        .ctx("codes")?
        .str()
        .ctx("codes")?;
    let presentations = frame
        .column("code_presentation")
        .ctx("codes")?
        .str()
        .ctx("codes")?;
    let reasons: StringChunked = modules
        .iter()
        .zip(presentations.iter())
        .map(|(m, p)| match (m, p) {
            (Some(m), Some(p)) => PresentationId::parse(m, p).err().map(|e| e.to_string()),
            _ => None,
        })
        .collect();
    let mut out = frame.clone();
    out.with_column(reasons.with_name("__code_error".into()).into_column())
        .ctx("codes")?;
    Ok(out)
}

fn window_rule(column: &str, window: DateWindow) -> Rule {
    outside(
        column,
        col(column).cast(DataType::Int64),
        lit(-window.pre_start_days),
        col("__length") + lit(window.post_end_days),
        "the presentation's dates",
    )
}

/// Loads and validates every table of the export in `dir`, writing bad rows to `quarantine`.
pub fn load_export(
    dir: &Path,
    window: DateWindow,
    as_of_day: Option<i32>,
    quarantine: &mut Quarantine,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<LoadedExport, IngestError> {
    // Fail on a missing or ambiguous table before reading anything.
    for table in Table::ALL {
        locate(dir, table)?;
    }
    let source = crate::sources::read_source_report(dir)?;
    let absent = source
        .as_ref()
        .map(|r| r.absent_student_columns.clone())
        .unwrap_or_default();
    // Calendar starts and configured as-of days of a converted Moodle or xAPI source.
    let source_presentations = source.map(|r| r.presentations).unwrap_or_default();
    let carried = |column: &str| !absent.iter().any(|a| a == column);
    let mut counts = Vec::new();
    let q = quarantine;

    // courses
    progress(Table::Courses.file_stem(), 0);
    let (file, blocks, frame) = read_whole(dir, Table::Courses)?;
    let frame = code_rules(&frame)?;
    let mut rules = type_rules(Table::Courses);
    rules.push(rule_with(
        col("__code_error").is_not_null(),
        vec![col("__code_error")],
    ));
    rules.push(outside(
        "module_presentation_length",
        col("module_presentation_length"),
        lit(1),
        lit(1000),
        "days",
    ));
    let courses = check(
        Table::Courses,
        &file,
        &blocks,
        frame.lazy(),
        rules,
        &["code_module", "code_presentation"],
        q,
        &mut counts,
    )?
    .lazy()
    .select([
        col("code_module"),
        col("code_presentation"),
        col("module_presentation_length"),
        lit(NULL).cast(DataType::Int64).alias(AS_OF_COLUMN),
    ])
    .with_row_index("presentation_index", None)
    .collect()
    .ctx("courses")?;

    // assessments
    progress(Table::Assessments.file_stem(), 0);
    let (file, blocks, frame) = read_whole(dir, Table::Assessments)?;
    let mut rules = type_rules(Table::Assessments);
    rules.push(course_rule());
    rules.push(one_of("assessment_type", &["TMA", "CMA", "Exam"]));
    rules.push(window_rule("date", window));
    rules.push(outside(
        "weight",
        col("weight"),
        lit(0.0),
        lit(100.0),
        "percent",
    ));
    let assessments = check(
        Table::Assessments,
        &file,
        &blocks,
        with_course(frame.lazy(), &courses),
        rules,
        &["id_assessment"],
        q,
        &mut counts,
    )?
    .lazy()
    .join(
        courses.clone().lazy(),
        keys(),
        keys(),
        JoinArgs::new(JoinType::Left),
    )
    .with_column(
        col("date")
            .fill_null(col("module_presentation_length"))
            .alias("due_day"),
    )
    .drop(cols(["module_presentation_length"]))
    .collect()
    .ctx("assessments")?;

    // vle
    progress(Table::Vle.file_stem(), 0);
    let (file, blocks, frame) = read_whole(dir, Table::Vle)?;
    let mut rules = type_rules(Table::Vle);
    rules.push(course_rule());
    for week in ["week_from", "week_to"] {
        rules.push(outside(
            week,
            col(week).cast(DataType::Int64),
            lit(0),
            lit(200),
            "weeks",
        ));
    }
    let vle = check(
        Table::Vle,
        &file,
        &blocks,
        with_course(frame.lazy(), &courses),
        rules,
        &["id_site"],
        q,
        &mut counts,
    )?;
    let vle = vle
        .lazy()
        .with_column(family_expr().alias("family"))
        .collect()
        .ctx("vle families")?;

    // studentInfo
    progress(Table::StudentInfo.file_stem(), 0);
    let (file, blocks, frame) = read_whole(dir, Table::StudentInfo)?;
    let mut rules = type_rules_except(Table::StudentInfo, &absent);
    rules.push(course_rule());
    // An empty final_result is a student whose presentation is running: kept, not bad data.
    let results = Series::new("results".into(), final_results().as_slice());
    rules.push(rule_with(
        col("final_result").neq(lit("")).and(
            col("final_result")
                .is_in(lit(results).implode(false), false)
                .not(),
        ),
        vec![
            lit("final_result \""),
            col("final_result"),
            lit(format!(
                "\" is not one of {}, or empty while the presentation is running",
                final_results().join(", ")
            )),
        ],
    ));
    if carried("disability") {
        rules.push(one_of("disability", &["Y", "N"]));
    }
    let imd = imd_spellings();
    let imd_list = Series::new("imd".into(), imd.as_slice());
    rules.push(rule_with(
        col("imd_band").neq(lit("")).and(
            col("imd_band")
                .is_in(lit(imd_list).implode(false), false)
                .not(),
        ),
        vec![
            lit("imd_band \""),
            col("imd_band"),
            lit("\" is not a deprivation band"),
        ],
    ));
    if carried("num_of_prev_attempts") {
        rules.push(outside(
            "num_of_prev_attempts",
            col("num_of_prev_attempts"),
            lit(0),
            lit(100),
            "attempts",
        ));
    }
    if carried("studied_credits") {
        rules.push(outside(
            "studied_credits",
            col("studied_credits"),
            lit(0),
            lit(1000),
            "credits",
        ));
    }
    let students = check(
        Table::StudentInfo,
        &file,
        &blocks,
        with_course(frame.lazy(), &courses),
        rules,
        &["code_module", "code_presentation", "id_student"],
        q,
        &mut counts,
    )?
    .lazy()
    .with_column(
        when(col("imd_band").eq(lit("10-20")))
            .then(lit("10-20%"))
            .otherwise(col("imd_band"))
            .alias("imd_band"),
    )
    .collect()
    .ctx("studentInfo")?;
    // Which presentations are running, and the as-of day the institution gave for them.
    let outcomes = outcome_counts(&courses, &students)?;
    let configured: Vec<Option<i32>> = (0..courses.height())
        .map(|i| {
            let (name, running) = (&outcomes[i].0, outcomes[i].2 < outcomes[i].1);
            let from_source = source_presentations
                .iter()
                .find(|p| p.presentation == *name)
                .and_then(|p| p.as_of_day);
            running.then_some(from_source.or(as_of_day)).flatten()
        })
        .collect();
    let mut courses = courses;
    courses
        .with_column(Column::new(AS_OF_COLUMN.into(), configured.clone()))
        .ctx("courses")?;

    // studentRegistration
    progress(Table::StudentRegistration.file_stem(), 0);
    let (file, blocks, frame) = read_whole(dir, Table::StudentRegistration)?;
    let joined = with_student_in(with_course(frame.lazy(), &courses), &students, "__info");
    let mut rules = type_rules(Table::StudentRegistration);
    rules.push(course_rule());
    rules.push(rule_with(
        col("__info").is_null(),
        vec![
            lit("student "),
            text(col("id_student")),
            lit(" has no studentInfo row for this presentation"),
        ],
    ));
    rules.push(outside(
        "date_registration",
        col("date_registration").cast(DataType::Int64),
        lit(-window.pre_start_days),
        col("__length"),
        "the presentation's dates",
    ));
    rules.push(outside(
        "date_unregistration",
        col("date_unregistration").cast(DataType::Int64),
        lit(-window.pre_start_days),
        lit(100_000),
        "the presentation's dates",
    ));
    rules.push(future_rule("date_unregistration"));
    let registrations = check(
        Table::StudentRegistration,
        &file,
        &blocks,
        joined,
        rules,
        &["code_module", "code_presentation", "id_student"],
        q,
        &mut counts,
    )?
    .lazy()
    .join(
        courses.clone().lazy().select([
            col("code_module"),
            col("code_presentation"),
            col("presentation_index"),
        ]),
        keys(),
        keys(),
        JoinArgs::new(JoinType::Inner),
    )
    .collect()
    .ctx("studentRegistration")?;

    // studentAssessment
    progress(Table::StudentAssessment.file_stem(), 0);
    let (file, blocks, frame) = read_whole(dir, Table::StudentAssessment)?;
    let assessment_info = assessments.clone().lazy().select([
        col("id_assessment"),
        col("code_module"),
        col("code_presentation"),
        col("assessment_type"),
        col("due_day"),
        col("weight"),
        col("presentation_index"),
        lit(true).alias("__assessment"),
    ]);
    let joined = frame.lazy().join(
        assessment_info,
        [col("id_assessment")],
        [col("id_assessment")],
        JoinArgs::new(JoinType::Left),
    );
    let joined = with_registration(with_course(joined, &courses), &registrations);
    let mut rules = type_rules(Table::StudentAssessment);
    rules.push(rule_with(
        col("__assessment").is_null(),
        vec![
            lit("id_assessment "),
            text(col("id_assessment")),
            lit(" is not in assessments"),
        ],
    ));
    rules.push(registered_rule());
    rules.push(window_rule("date_submitted", window));
    rules.push(future_rule("date_submitted"));
    rules.push(outside(
        "is_banked",
        col("is_banked"),
        lit(0),
        lit(1),
        "the flags",
    ));
    rules.push(outside(
        "score",
        col("score").cast(DataType::Float64),
        lit(0.0),
        lit(100.0),
        "the scores",
    ));
    let submissions = check(
        Table::StudentAssessment,
        &file,
        &blocks,
        joined,
        rules,
        &["id_assessment", "id_student"],
        q,
        &mut counts,
    )?;
    let submissions = submissions
        .lazy()
        .select([
            col("id_assessment"),
            col("id_student"),
            col("date_submitted"),
            col("is_banked"),
            col("score"),
            col("code_module"),
            col("code_presentation"),
            col("assessment_type"),
            col("due_day"),
            col("weight"),
            col("presentation_index"),
        ])
        .collect()
        .ctx("studentAssessment")?;
    drop(blocks);

    // studentVle, block by block, reduced to daily activity.
    let daily_activity = load_clicks(
        dir,
        window,
        q,
        &mut counts,
        &courses,
        &vle,
        &registrations,
        progress,
    )?;

    let terms = presentation_terms(
        &courses,
        &outcomes,
        &configured,
        &source_presentations,
        &[
            (&daily_activity, "date"),
            (&submissions, "date_submitted"),
            (&registrations, "date_unregistration"),
        ],
        &registrations,
    )?;
    let last_weeks: Vec<i64> = terms
        .iter()
        .map(|t| t.current_week.map_or(-1, |w| i64::from(w.0)))
        .collect();
    courses
        .with_column(Column::new(LAST_WEEK_COLUMN.into(), last_weeks))
        .ctx("courses")?;

    Ok(LoadedExport {
        courses,
        assessments,
        vle,
        students,
        registrations,
        submissions,
        daily_activity,
        counts,
        absent,
        terms,
    })
}

/// Per presentation, in `courses` order: its name, students, and students with an outcome.
fn outcome_counts(
    courses: &DataFrame,
    students: &DataFrame,
) -> Result<Vec<(String, u64, u64)>, IngestError> {
    let counted = courses
        .clone()
        .lazy()
        .select([col("code_module"), col("code_presentation")])
        .join(
            students.clone().lazy().group_by(keys()).agg([
                len().cast(DataType::UInt64).alias("__n"),
                col("final_result")
                    .is_not_null()
                    .cast(DataType::UInt64)
                    .sum()
                    .alias("__known"),
            ]),
            keys(),
            keys(),
            JoinArgs {
                maintain_order: MaintainOrderJoin::Left,
                ..JoinArgs::new(JoinType::Left)
            },
        )
        .collect()
        .ctx("counting outcomes")?;
    let text = |c: &str| -> Result<Vec<String>, IngestError> {
        Ok(counted
            .column(c)
            .ctx("counting outcomes")?
            .str()
            .ctx("counting outcomes")?
            .iter()
            .map(|v| v.unwrap_or("").to_owned())
            .collect())
    };
    let number = |c: &str| -> Result<Vec<u64>, IngestError> {
        Ok(counted
            .column(c)
            .ctx("counting outcomes")?
            .u64()
            .ctx("counting outcomes")?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    };
    let (modules, codes) = (text("code_module")?, text("code_presentation")?);
    let (n, known) = (number("__n")?, number("__known")?);
    Ok((0..counted.height())
        .map(|i| (format!("{}-{}", modules[i], codes[i]), n[i], known[i]))
        .collect())
}

/// The latest value of `column` per presentation index (among non-null values).
fn latest_by_presentation(
    frame: &DataFrame,
    column: &str,
) -> Result<std::collections::HashMap<u64, i64>, IngestError> {
    let latest = frame
        .clone()
        .lazy()
        .filter(col(column).is_not_null())
        .group_by([col("presentation_index").cast(DataType::UInt64)])
        .agg([col(column).cast(DataType::Int64).max().alias("__latest")])
        .collect()
        .ctx("latest records")?;
    let index = latest
        .column("presentation_index")
        .ctx("latest records")?
        .u64()
        .ctx("latest records")?
        .clone();
    let day = latest
        .column("__latest")
        .ctx("latest records")?
        .i64()
        .ctx("latest records")?
        .clone();
    Ok(index
        .iter()
        .zip(day.iter())
        .filter_map(|(i, d)| Some((i?, d?)))
        .collect())
}

/// Each presentation's term: finished when every student has an outcome; running otherwise,
/// as of the configured day, else the latest day with a recorded click, submission or
/// unregistration, else the latest registration.
fn presentation_terms(
    courses: &DataFrame,
    outcomes: &[(String, u64, u64)],
    configured: &[Option<i32>],
    source: &[crate::sources::SourcePresentation],
    records: &[(&DataFrame, &str)],
    registrations: &DataFrame,
) -> Result<Vec<PresentationTerm>, IngestError> {
    let lengths: Vec<i64> = courses
        .column("module_presentation_length")
        .ctx("course lengths")?
        .cast(&DataType::Int64)
        .ctx("course lengths")?
        .i64()
        .ctx("course lengths")?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect();
    let mut latest_record: std::collections::HashMap<u64, i64> = Default::default();
    for (frame, column) in records {
        for (p, d) in latest_by_presentation(frame, column)? {
            let e = latest_record.entry(p).or_insert(d);
            *e = (*e).max(d);
        }
    }
    let latest_registration = latest_by_presentation(registrations, "date_registration")?;
    Ok(outcomes
        .iter()
        .enumerate()
        .map(|(i, (name, students, known))| {
            let length_days = u16::try_from(lengths[i].clamp(0, i64::from(u16::MAX))).unwrap_or(0);
            let (name, index) = (name.clone(), i as u64);
            let mut term = if known == students {
                PresentationTerm::finished(name, length_days, *students)
            } else {
                let (day, source) = if let Some(day) = configured[i] {
                    (day, AsOfSource::Configured)
                } else if let Some(day) = latest_record.get(&index) {
                    (*day as i32, AsOfSource::LatestActivity)
                } else {
                    let day = latest_registration.get(&index).copied().unwrap_or(-1);
                    (day as i32, AsOfSource::LatestRegistration)
                };
                PresentationTerm::running(name, length_days, day, source, *students, *known)
            };
            term.start_date = source
                .iter()
                .find(|p| p.presentation == term.presentation)
                .map(|p| p.start_date.clone());
            term
        })
        .collect())
}

/// The activity family of each VLE row, from its `activity_type`.
fn family_expr() -> Expr {
    let mut expr = lit(ActivityFamily::Other.as_str());
    for family in ActivityFamily::ALL.into_iter().rev() {
        let types: Vec<&str> = KNOWN_ACTIVITY_TYPES
            .iter()
            .filter(|(_, f)| *f == family)
            .map(|(name, _)| *name)
            .collect();
        if types.is_empty() {
            continue;
        }
        let list = Series::new("types".into(), types.as_slice());
        expr = when(col("activity_type").is_in(lit(list).implode(false), false))
            .then(lit(family.as_str()))
            .otherwise(expr);
    }
    expr
}

/// Span of each part of the packed integer keys (presentation index, day + offset).
const KEY_SPAN: i64 = 4096;
/// Added to a day to make it non-negative inside a packed key.
const DAY_OFFSET: i64 = 2048;
/// Largest student id the packed keys hold.
pub const MAX_STUDENT_ID: i64 = (1 << 39) - 1;

/// Column name of the clicks of one activity family in the daily activity table.
pub fn family_column(family: ActivityFamily) -> String {
    format!("clicks_{family}")
}

#[allow(clippy::too_many_arguments)]
fn load_clicks(
    dir: &Path,
    window: DateWindow,
    q: &mut Quarantine,
    counts: &mut Vec<TableCount>,
    courses: &DataFrame,
    vle: &DataFrame,
    registrations: &DataFrame,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<DataFrame, IngestError> {
    let path = locate(dir, Table::StudentVle)?;
    let file = file_name(&path);
    if courses.height() as i64 >= KEY_SPAN {
        return Err(IngestError::Unsupported(format!(
            "{} presentations in one export; at most {} are supported",
            courses.height(),
            KEY_SPAN - 1
        )));
    }
    let mut reader = TableReader::open(&path, Table::StudentVle)?;

    // The hot path joins on integers only: a click's site gives its presentation (index and
    // length) and activity family; the row's own module and presentation must equal the site's;
    // then (student, presentation) is one packed integer looked up among the registrations.
    let mut family_code = lit(NULL).cast(DataType::Int32);
    for (i, family) in ActivityFamily::ALL.iter().enumerate().rev() {
        family_code = when(col("family").eq(lit(family.as_str())))
            .then(lit(i as i32))
            .otherwise(family_code);
    }
    let sites = vle
        .clone()
        .lazy()
        .join(
            courses.clone().lazy(),
            keys(),
            keys(),
            JoinArgs::new(JoinType::Inner),
        )
        .select([
            col("id_site"),
            col("code_module").alias("__site_module"),
            col("code_presentation").alias("__site_presentation"),
            col("presentation_index")
                .cast(DataType::Int64)
                .alias("__pres"),
            col("module_presentation_length").alias("__length"),
            col(AS_OF_COLUMN).alias("__as_of"),
            family_code.alias("__family"),
        ])
        .collect()
        .ctx("sites")?;
    let student_key = |student: Expr, pres: Expr| (student * lit(KEY_SPAN) + pres).alias("__k");
    let registered = registrations
        .clone()
        .lazy()
        .select([
            student_key(
                col("id_student"),
                col("presentation_index").cast(DataType::Int64),
            ),
            lit(true).alias("__registered"),
        ])
        .collect()
        .ctx("registered students")?;
    let registered_keys = lit(registered
        .column("__k")
        .ctx("registered keys")?
        .as_materialized_series()
        .clone())
    .implode(false);

    let same_presentation = col("code_module")
        .eq(col("__site_module"))
        .and(col("code_presentation").eq(col("__site_presentation")));
    let student_range = outside(
        "id_student",
        col("id_student"),
        lit(0i64),
        lit(MAX_STUDENT_ID),
        "the supported ids",
    );
    let clicks_range = || {
        outside(
            "sum_click",
            col("sum_click"),
            lit(0),
            lit(1_000_000),
            "the click counts",
        )
    };
    // What makes a row bad, cheaply...
    let mut fast = type_rules(Table::StudentVle);
    fast.push(rule_with(col("__family").is_null(), vec![]));
    fast.push(rule_with(same_presentation.not(), vec![]));
    fast.push(outside(
        "id_student",
        col("id_student"),
        lit(0i64),
        lit(MAX_STUDENT_ID),
        "",
    ));
    fast.push(window_rule("date", window));
    fast.push(future_rule("date"));
    fast.push(clicks_range());
    // Registration is checked on the daily totals first (a third of the rows); only a block with
    // an unregistered student is checked row by row.
    let bad_mask = any_bad(&fast);
    fast.push(rule_with(col("__registered").is_null(), vec![]));
    let bad_mask_registered = any_bad(&fast);
    // ...and why, worked out only for the bad rows.
    let mut reasons = type_rules(Table::StudentVle);
    reasons.push(course_rule());
    reasons.push(rule_with(
        col("__family").is_null(),
        vec![lit("id_site "), text(col("id_site")), lit(" is not in vle")],
    ));
    reasons.push(rule_with(
        col("__site_module")
            .neq(col("code_module"))
            .or(col("__site_presentation").neq(col("code_presentation"))),
        vec![
            lit("id_site "),
            text(col("id_site")),
            lit(" belongs to "),
            col("__site_module"),
            lit("-"),
            col("__site_presentation"),
        ],
    ));
    reasons.push(registered_rule());
    reasons.push(student_range);
    reasons.push(window_rule("date", window));
    reasons.push(future_rule("date"));
    reasons.push(clicks_range());
    let reason = reason_of(&reasons);
    let canonical: Vec<Expr> = Table::StudentVle
        .header()
        .map(col)
        .chain([col(LINE)])
        .collect();

    let mut count = TableCount {
        table: Table::StudentVle,
        file: file.clone(),
        read: 0,
        accepted: 0,
        quarantined: 0,
    };
    // Student, presentation and day as one integer: cheap to group by.
    let day_key = ((col("__k") * lit(KEY_SPAN)) + col("date") + lit(DAY_OFFSET)).alias("__kd");
    // Clicks per family as plain columns first, so the group-by only sums columns.
    let family_clicks: Vec<Expr> = ActivityFamily::ALL
        .iter()
        .enumerate()
        .map(|(i, family)| {
            when(col("__family").eq(lit(i as i32)))
                .then(col("sum_click"))
                .otherwise(lit(0i64))
                .alias(family_column(*family))
        })
        .collect();
    let mut sums = vec![col("sum_click").sum().alias("clicks")];
    sums.extend(
        ActivityFamily::ALL
            .iter()
            .map(|f| col(family_column(*f)).sum()),
    );
    let mut daily: Vec<LazyFrame> = Vec::new();
    // Read and parse the next block on another thread while this one is validated.
    let (blocks, received) = std::sync::mpsc::sync_channel::<Result<Block, IngestError>>(1);
    std::thread::scope(|scope| -> Result<(), IngestError> {
        scope.spawn(move || {
            loop {
                let next = reader.next_block().transpose();
                let Some(next) = next else { break };
                let failed = next.is_err();
                if blocks.send(next).is_err() || failed {
                    break;
                }
            }
        });
        for block in received {
            let block = block?;
            let base = block
                .frame
                .clone()
                .lazy()
                .join(
                    sites.clone().lazy(),
                    [col("id_site")],
                    [col("id_site")],
                    JoinArgs::new(JoinType::Left),
                )
                .with_column(student_key(col("id_student"), col("__pres")));
            let mut marked = base.clone().with_column(bad_mask.clone().alias("__bad"));
            // One fused pass: good rows straight into daily totals, with a row count so the bad
            // rows are counted without materialising the block a second time.
            let mut day_sums = sums.clone();
            day_sums.push(len().alias("__rows"));
            let aggregate = |marked: LazyFrame| {
                marked
                    .filter(col("__bad").not())
                    .with_columns(family_clicks.clone())
                    .group_by([day_key.clone()])
                    .agg(day_sums.clone())
                    .collect()
                    .ctx(format!("validating {file}"))
            };
            let mut day = aggregate(marked.clone())?;
            let student_of_day = col("__kd").floor_div(lit(KEY_SPAN));
            let all_registered = day
                .clone()
                .lazy()
                .select([student_of_day
                    .is_in(registered_keys.clone(), false)
                    .all(true)
                    .alias("ok")])
                .collect()
                .ctx("checking registrations")?
                .column("ok")
                .ctx("checking registrations")?
                .bool()
                .ctx("checking registrations")?
                .get(0)
                .unwrap_or(true);
            if !all_registered {
                marked = base
                    .with_column(
                        when(col("__k").is_in(registered_keys.clone(), false))
                            .then(lit(true))
                            .otherwise(lit(NULL).cast(DataType::Boolean))
                            .alias("__registered"),
                    )
                    .with_column(bad_mask_registered.clone().alias("__bad"));
                day = aggregate(marked.clone())?;
            }
            let rows = block.frame.height() as u64;
            let good_rows = day
                .column("__rows")
                .ctx("row counts")?
                .as_materialized_series()
                .sum::<u64>()
                .ctx("row counts")?;
            let bad_rows = rows - good_rows;
            if bad_rows > 0 {
                // Rare: find the bad rows again and say why.
                let bad = marked
                    .filter(col("__bad"))
                    .select(canonical.clone())
                    .collect()
                    .ctx("selecting quarantined rows")?;
                let explained = with_registration(with_course(bad.lazy(), courses), registrations)
                    .join(
                        sites.clone().lazy(),
                        [col("id_site")],
                        [col("id_site")],
                        JoinArgs::new(JoinType::Left),
                    )
                    .select([col(LINE), reason.clone()])
                    .collect()
                    .ctx("explaining quarantined rows")?;
                q.add(&file, &explained, std::slice::from_ref(&block))?;
            }
            count.read += rows;
            count.quarantined += bad_rows;
            count.accepted += good_rows;
            progress(Table::StudentVle.file_stem(), count.read);
            daily.push(day.lazy().drop(cols(["__rows"])));
        }
        Ok(())
    })?;
    counts.push(count);
    let merged = if daily.is_empty() {
        let mut empty = vec![
            Field::new("__kd".into(), DataType::Int64),
            Field::new("clicks".into(), DataType::Int64),
        ];
        empty.extend(
            ActivityFamily::ALL
                .iter()
                .map(|f| Field::new(family_column(*f).into(), DataType::Int64)),
        );
        DataFrame::empty_with_schema(&Schema::from_iter(empty)).lazy()
    } else {
        // A day that straddles two blocks stays as two partial rows: the weekly features sum them
        // and count distinct days, which saves a pass over every day here.
        concat(daily, UnionArgs::default()).ctx("joining blocks")?
    };
    let key = col("__kd").floor_div(lit(KEY_SPAN));
    let mut columns = vec![
        (key.clone() % lit(KEY_SPAN))
            .cast(IDX_DTYPE)
            .alias("presentation_index"),
        key.floor_div(lit(KEY_SPAN)).alias("id_student"),
        ((col("__kd") % lit(KEY_SPAN)) - lit(DAY_OFFSET)).alias("date"),
        col("clicks"),
    ];
    columns.extend(ActivityFamily::ALL.iter().map(|f| col(family_column(*f))));
    merged
        .select(columns)
        .collect()
        .ctx("merging daily activity")
}
