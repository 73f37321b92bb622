//! Ingest of an export taken in the middle of a term: the genuine sample with GGG-2013J cut on
//! day 76. Its students have no outcome and are kept; its features stop at its current week;
//! records dated after a configured as-of day are refused as from the future.

use std::fs;
use std::path::Path;

use lodestar_domain::{AsOfSource, AsOfWeek, TermState};
use lodestar_ingest::snapshot::{FEATURES_FILE, QUARANTINE_FILE};
use lodestar_ingest::{IngestOptions, IngestOutcome, ingest};
use lodestar_samples::cut::cut_running;
use lodestar_samples::oulad_slice_dir;
use polars::prelude::*;

fn cut(dir: &Path, day: i32) -> std::path::PathBuf {
    let out = dir.join(format!("export-{day}"));
    cut_running(
        &oulad_slice_dir(),
        &out,
        &["GGG-2013J".to_owned()],
        day,
        None,
    )
    .unwrap();
    out
}

fn run(export: &Path, snapshots: &Path, as_of_day: Option<i32>) -> IngestOutcome {
    ingest(
        export,
        snapshots,
        &IngestOptions {
            as_of_day,
            ..IngestOptions::default()
        },
        false,
        &mut |_, _| {},
    )
    .unwrap()
}

fn features(outcome: &IngestOutcome) -> DataFrame {
    let file = fs::File::open(outcome.dir.join(FEATURES_FILE)).unwrap();
    ParquetReader::new(file).finish().unwrap()
}

#[test]
fn a_mixed_export_keeps_every_running_student_and_stops_at_the_current_week() {
    let dir = tempfile::tempdir().unwrap();
    let export = cut(dir.path(), 76);
    let outcome = run(&export, &dir.path().join("snapshots"), None);
    let m = &outcome.manifest;
    assert_eq!(m.quarantined_rows, 0, "nothing quarantined: {:?}", m.tables);
    let term = |name: &str| m.terms.iter().find(|t| t.presentation == name).unwrap();
    let running = term("GGG-2013J");
    assert_eq!(running.state, TermState::Running);
    assert_eq!(running.as_of_source, AsOfSource::LatestActivity);
    assert!(running.as_of_day <= 76, "{running:?}");
    assert_eq!(running.outcomes_known, 0);
    assert_eq!(running.students, 952);
    let week = running.current_week.unwrap();
    assert_eq!(Some(week), AsOfWeek::completed_by(running.as_of_day));
    for finished in ["BBB-2013B", "BBB-2013J"] {
        let t = term(finished);
        assert_eq!(t.state, TermState::Finished, "{t:?}");
        assert_eq!(t.current_week, Some(AsOfWeek::last_of(t.length_days)));
    }

    let df = features(&outcome);
    let ggg = df
        .clone()
        .lazy()
        .filter(col("code_module").eq(lit("GGG")))
        .collect()
        .unwrap();
    let weeks = ggg
        .column("as_of_week")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap();
    let weeks = weeks.i64().unwrap();
    assert_eq!(
        weeks.max(),
        Some(i64::from(week.0)),
        "no row beyond the current week"
    );
    assert_eq!(weeks.min(), Some(0));
    // Every student of the running presentation has a row for each week, without a label.
    let students = ggg
        .column("id_student")
        .unwrap()
        .as_materialized_series()
        .n_unique()
        .unwrap();
    assert_eq!(students, 952);
    assert_eq!(ggg.height(), 952 * (usize::from(week.0) + 1));
    assert_eq!(
        ggg.column("label_at_risk").unwrap().null_count(),
        ggg.height()
    );
    assert_eq!(
        ggg.column("final_result").unwrap().null_count(),
        ggg.height()
    );
    // The finished presentations keep their labels and every week.
    let bbb = df
        .lazy()
        .filter(col("code_module").eq(lit("BBB")))
        .collect()
        .unwrap();
    assert_eq!(bbb.column("label_at_risk").unwrap().null_count(), 0);
    let bbb_weeks = bbb
        .column("as_of_week")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap();
    assert_eq!(bbb_weeks.i64().unwrap().max(), Some(38));
}

#[test]
fn records_after_a_configured_as_of_day_are_refused_as_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    // Activity up to day 76, but the institution says the export is as of day 60.
    let export = cut(dir.path(), 76);
    let outcome = run(&export, &dir.path().join("snapshots"), Some(60));
    let m = &outcome.manifest;
    let running = m
        .terms
        .iter()
        .find(|t| t.presentation == "GGG-2013J")
        .unwrap();
    assert_eq!(running.as_of_source, AsOfSource::Configured);
    assert_eq!(running.as_of_day, 60);
    assert_eq!(
        running.current_week,
        Some(AsOfWeek(7)),
        "cutoff 55 <= 60 < 62"
    );
    let quarantine = fs::read_to_string(outcome.dir.join(QUARANTINE_FILE)).unwrap();
    assert!(m.quarantined_rows > 0);
    let future = quarantine
        .lines()
        .filter(|l| l.contains("is after the export's as-of day 60"))
        .count() as u64;
    assert_eq!(
        future, m.quarantined_rows,
        "every refusal is a future record"
    );
    assert!(quarantine.contains("studentVle.csv.gz"), "clicks refused");
    assert!(
        quarantine.contains("date_submitted"),
        "submissions refused too"
    );
    // The finished presentations are not cut by a running term's as-of day.
    let bbb = m.tables.iter().map(|t| t.quarantined).sum::<u64>();
    assert_eq!(bbb, m.quarantined_rows);
    let df = features(&outcome);
    let ggg_max = df
        .lazy()
        .filter(col("code_module").eq(lit("GGG")))
        .select([col("as_of_week").cast(DataType::Int64).max()])
        .collect()
        .unwrap();
    assert_eq!(
        ggg_max.column("as_of_week").unwrap().i64().unwrap().get(0),
        Some(7)
    );
}

#[test]
fn a_term_exported_before_its_first_week_is_complete_has_no_feature_rows_yet() {
    let dir = tempfile::tempdir().unwrap();
    let export = cut(dir.path(), 3);
    let outcome = run(&export, &dir.path().join("snapshots"), None);
    let running = outcome
        .manifest
        .terms
        .iter()
        .find(|t| t.presentation == "GGG-2013J")
        .unwrap()
        .clone();
    assert_eq!(running.state, TermState::Running);
    assert_eq!(running.current_week, None, "{running:?}");
    assert!(running.describe().contains("week 0 is complete on day 6"));
    let df = features(&outcome);
    let ggg = df
        .lazy()
        .filter(col("code_module").eq(lit("GGG")))
        .collect()
        .unwrap();
    assert_eq!(ggg.height(), 0);
}
