//! Ingest end to end: feature values checked against hand-computed examples (genuine OULAD
//! students and a tiny hand-written export), corrupted exports that must stop with a named error
//! or quarantine the bad row, the accounting read = accepted + quarantined, and snapshot reuse.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use lodestar_domain::Table;
use lodestar_ingest::snapshot::{FEATURES_FILE, QUARANTINE_FILE};
use lodestar_ingest::{IngestError, IngestOptions, IngestOutcome, ingest};
use lodestar_samples::oulad_slice_dir;
use polars::prelude::*;

const TINY: [(&str, &str); 7] = [
    (
        "courses",
        "\"code_module\",\"code_presentation\",\"module_presentation_length\"\n\"AAA\",\"2013J\",\"268\"\n",
    ),
    (
        "assessments",
        "\"code_module\",\"code_presentation\",\"id_assessment\",\"assessment_type\",\"date\",\"weight\"\n\
         \"AAA\",\"2013J\",\"1\",\"TMA\",\"19\",\"50\"\n\
         \"AAA\",\"2013J\",\"2\",\"Exam\",\"\",\"100\"\n",
    ),
    (
        "vle",
        "\"id_site\",\"code_module\",\"code_presentation\",\"activity_type\",\"week_from\",\"week_to\"\n\
         \"10\",\"AAA\",\"2013J\",\"homepage\",\"\",\"\"\n\
         \"11\",\"AAA\",\"2013J\",\"forumng\",\"\",\"\"\n",
    ),
    (
        "studentInfo",
        "\"code_module\",\"code_presentation\",\"id_student\",\"gender\",\"region\",\"highest_education\",\"imd_band\",\"age_band\",\"num_of_prev_attempts\",\"studied_credits\",\"disability\",\"final_result\"\n\
         \"AAA\",\"2013J\",\"100\",\"M\",\"Scotland\",\"HE Qualification\",\"10-20\",\"0-35\",\"0\",\"60\",\"N\",\"Pass\"\n\
         \"AAA\",\"2013J\",\"200\",\"F\",\"Wales\",\"Lower Than A Level\",\"\",\"35-55\",\"1\",\"120\",\"Y\",\"Withdrawn\"\n",
    ),
    (
        "studentRegistration",
        "\"code_module\",\"code_presentation\",\"id_student\",\"date_registration\",\"date_unregistration\"\n\
         \"AAA\",\"2013J\",\"100\",\"-10\",\"\"\n\
         \"AAA\",\"2013J\",\"200\",\"-5\",\"20\"\n",
    ),
    (
        "studentAssessment",
        "\"id_assessment\",\"id_student\",\"date_submitted\",\"is_banked\",\"score\"\n\
         \"1\",\"100\",\"18\",\"0\",\"70\"\n\
         \"1\",\"200\",\"25\",\"0\",\"\"\n",
    ),
    (
        "studentVle",
        "\"code_module\",\"code_presentation\",\"id_student\",\"id_site\",\"date\",\"sum_click\"\n\
         \"AAA\",\"2013J\",\"100\",\"10\",\"-3\",\"2\"\n\
         \"AAA\",\"2013J\",\"100\",\"11\",\"0\",\"5\"\n\
         \"AAA\",\"2013J\",\"100\",\"10\",\"8\",\"1\"\n\
         \"AAA\",\"2013J\",\"200\",\"10\",\"2\",\"4\"\n",
    ),
];

/// Writes the tiny export with CRLF line ends, as the genuine files have.
fn tiny_export(dir: &Path) {
    for (stem, text) in TINY {
        fs::write(dir.join(format!("{stem}.csv")), text.replace('\n', "\r\n")).unwrap();
    }
}

fn append(dir: &Path, stem: &str, line: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(format!("{stem}.csv")))
        .unwrap();
    f.write_all(line).unwrap();
    f.write_all(b"\r\n").unwrap();
}

fn run(export: &Path, snapshots: &Path) -> Result<IngestOutcome, IngestError> {
    ingest(
        export,
        snapshots,
        &IngestOptions::default(),
        false,
        &mut |_, _| {},
    )
}

fn features(outcome: &IngestOutcome) -> DataFrame {
    let file = fs::File::open(outcome.dir.join(FEATURES_FILE)).unwrap();
    ParquetReader::new(file).finish().unwrap()
}

/// The value of `column` for one student and week.
fn value(df: &DataFrame, student: i64, week: i64, column: &str) -> AnyValue<'static> {
    let row = df
        .clone()
        .lazy()
        .filter(
            col("id_student")
                .eq(lit(student))
                .and(col("as_of_week").eq(lit(week))),
        )
        .select([col(column)])
        .collect()
        .unwrap();
    assert_eq!(row.height(), 1, "student {student} week {week}");
    row.column(column).unwrap().get(0).unwrap().into_static()
}

fn int(df: &DataFrame, student: i64, week: i64, column: &str) -> i64 {
    value(df, student, week, column)
        .extract::<i64>()
        .unwrap_or_else(|| panic!("{column} is null"))
}

fn float(df: &DataFrame, student: i64, week: i64, column: &str) -> Option<f64> {
    value(df, student, week, column).extract::<f64>()
}

fn accounted(outcome: &IngestOutcome) {
    for t in &outcome.manifest.tables {
        assert_eq!(
            t.read,
            t.accepted + t.quarantined,
            "{}: read != accepted + quarantined",
            t.file
        );
    }
}

#[test]
fn tiny_export_features_match_hand_computation() {
    let export = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    tiny_export(export.path());
    let outcome = run(export.path(), snaps.path()).unwrap();
    accounted(&outcome);
    assert_eq!(outcome.manifest.quarantined_rows, 0);
    let df = features(&outcome);
    // 268 days: weeks 0..=38 for each of the two students.
    assert_eq!(df.height(), 2 * 39);

    // Student 100, week 0 (days up to 6): the pre-start click (2, homepage) and day 0 (5, forum).
    assert_eq!(int(&df, 100, 0, "clicks_total"), 7);
    assert_eq!(int(&df, 100, 0, "clicks_this_week"), 5);
    assert_eq!(
        int(&df, 100, 0, "clicks_last_week"),
        2,
        "week 0's last week is everything before the start"
    );
    assert_eq!(int(&df, 100, 0, "clicks_homepage_total"), 2);
    assert_eq!(int(&df, 100, 0, "clicks_forum_total"), 5);
    assert_eq!(int(&df, 100, 0, "active_days_total"), 2);
    assert_eq!(float(&df, 100, 0, "days_since_last_activity"), Some(6.0));
    assert_eq!(
        float(&df, 100, 0, "days_registered_before_start"),
        Some(10.0)
    );
    // Week 1 (days 7-13): one click on day 8.
    assert_eq!(int(&df, 100, 1, "clicks_total"), 8);
    assert_eq!(int(&df, 100, 1, "clicks_last_week"), 5);
    assert_eq!(float(&df, 100, 1, "days_since_last_activity"), Some(5.0));
    // Week 2 (cutoff 20): the TMA due on day 19 was submitted on day 18 with 70.
    assert_eq!(int(&df, 100, 1, "assessments_due"), 0);
    assert_eq!(int(&df, 100, 2, "assessments_due"), 1);
    assert_eq!(int(&df, 100, 2, "assessments_submitted"), 1);
    assert_eq!(int(&df, 100, 2, "assessments_late"), 0);
    assert_eq!(float(&df, 100, 2, "score_mean"), Some(70.0));
    assert_eq!(float(&df, 100, 2, "score_weighted"), Some(70.0));
    // Attributes: "10-20" is the second decile, HE qualification is level 3.
    assert_eq!(int(&df, 100, 0, "imd_band"), 1);
    assert_eq!(int(&df, 100, 0, "highest_education"), 3);
    assert_eq!(int(&df, 100, 0, "label_at_risk"), 0);

    // Student 200 unregistered on day 20: still registered at week 1 (cutoff 13), not at week 2.
    assert_eq!(int(&df, 200, 1, "is_active"), 1);
    assert_eq!(int(&df, 200, 2, "is_active"), 0);
    assert_eq!(
        int(&df, 200, 2, "assessments_missing"),
        1,
        "due day 19, not yet submitted by day 20"
    );
    // Week 3 (cutoff 27): submitted late on day 25, unmarked: no mean, and it weighs 0.
    assert_eq!(int(&df, 200, 3, "assessments_submitted"), 1);
    assert_eq!(int(&df, 200, 3, "assessments_late"), 1);
    assert_eq!(float(&df, 200, 3, "score_mean"), None);
    assert_eq!(float(&df, 200, 3, "score_weighted"), Some(0.0));
    assert_eq!(value(&df, 200, 0, "imd_band"), AnyValue::Null);
    assert_eq!(int(&df, 200, 0, "disability"), 1);
    assert_eq!(int(&df, 200, 0, "label_at_risk"), 1);
    // Cohort trend at week 0: recent = mean of this and last week = 3.5 and 2.0; median 2.75.
    let trend = float(&df, 100, 0, "trend_vs_cohort").unwrap();
    assert!((trend - 4.5 / 3.75).abs() < 1e-12, "{trend}");
    assert_eq!(
        float(&df, 100, 1, "trend_vs_own"),
        None,
        "no earlier weeks yet"
    );
}

/// A copy of the genuine slice with only `students`' rows (all of BBB-2013B's plan and VLE).
fn genuine_subset(dir: &Path, students: &[&str]) {
    let slice = oulad_slice_dir();
    for table in Table::ALL {
        let stem = table.file_stem();
        let gz = slice.join(format!("{stem}.csv.gz"));
        let mut text = String::new();
        if gz.exists() {
            GzDecoder::new(fs::File::open(&gz).unwrap())
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = fs::read_to_string(slice.join(format!("{stem}.csv"))).unwrap();
        }
        let student_col = table.header().position(|h| h == "id_student");
        let mut out = Vec::new();
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let fields: Vec<&str> = line
                .trim_end()
                .split(',')
                .map(|f| f.trim_matches('"'))
                .collect();
            let keep = i == 0
                || match student_col {
                    Some(c) => students.contains(&fields[c]),
                    None => true,
                };
            if keep {
                out.extend_from_slice(line.as_bytes());
            }
        }
        let path = dir.join(format!("{stem}.csv.gz"));
        let mut enc = GzEncoder::new(fs::File::create(path).unwrap(), Compression::fast());
        enc.write_all(&out).unwrap();
        enc.finish().unwrap();
    }
}

#[test]
fn genuine_students_match_hand_computation() {
    // BBB-2013B, from the genuine rows (see data-samples/oulad):
    // 33666 registered on day -23, withdrew on day 139; submissions: TMA 14984 (due 19) on day 18
    //   scored 58; TMA 14985 (due 47) on 47 scored 78; CMA 14991 (due 54) on 60 scored 100;
    //   TMA 14986 (due 89) on 117 with no score.
    // 186780 registered on day -117, withdrew on day 213; TMAs 14984 and 14985 both submitted
    //   on day 77 with no score.
    let export = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    genuine_subset(export.path(), &["33666", "186780"]);
    let outcome = run(export.path(), snaps.path()).unwrap();
    accounted(&outcome);
    let df = features(&outcome);

    // 33666 at week 3 (cutoff day 27): clicks summed from the raw rows by hand.
    assert_eq!(int(&df, 33666, 3, "clicks_total"), 390);
    assert_eq!(int(&df, 33666, 3, "clicks_this_week"), 58);
    assert_eq!(int(&df, 33666, 3, "clicks_last_week"), 197);
    assert_eq!(int(&df, 33666, 3, "active_days_total"), 17);
    assert_eq!(float(&df, 33666, 3, "score_mean"), Some(58.0));
    // Week 10 (cutoff 76): three due (14984, 14985, 14991), all submitted, the CMA late.
    assert_eq!(int(&df, 33666, 10, "clicks_total"), 1029);
    assert_eq!(int(&df, 33666, 10, "assessments_due"), 3);
    assert_eq!(int(&df, 33666, 10, "assessments_missing"), 0);
    assert_eq!(int(&df, 33666, 10, "assessments_late"), 1);
    let mean = float(&df, 33666, 10, "score_mean").unwrap();
    assert!((mean - (58.0 + 78.0 + 100.0) / 3.0).abs() < 1e-9);
    // Weighted by 5, 18 and 1: (5*58 + 18*78 + 1*100) / 24.
    assert_eq!(float(&df, 33666, 10, "score_weighted"), Some(74.75));
    // Withdrew on day 139: still registered at week 18 (cutoff 132), not at week 19 (cutoff 139).
    assert_eq!(int(&df, 33666, 18, "is_active"), 1);
    assert_eq!(int(&df, 33666, 19, "is_active"), 0);
    assert_eq!(int(&df, 33666, 19, "label_at_risk"), 1);

    // 186780: two clicks days, the last on day 9; nothing submitted by week 10.
    assert_eq!(int(&df, 186780, 3, "clicks_total"), 30);
    assert_eq!(
        float(&df, 186780, 3, "days_since_last_activity"),
        Some(18.0)
    );
    assert_eq!(
        float(&df, 186780, 10, "days_since_last_activity"),
        Some(67.0)
    );
    assert_eq!(int(&df, 186780, 10, "assessments_missing"), 3);
    assert_eq!(float(&df, 186780, 10, "score_weighted"), Some(0.0));
    // Week 11 (cutoff 83): both TMAs arrived on day 77, late and unmarked.
    assert_eq!(int(&df, 186780, 11, "assessments_submitted"), 2);
    assert_eq!(int(&df, 186780, 11, "assessments_late"), 2);
    assert_eq!(float(&df, 186780, 11, "score_mean"), None);
}

fn quarantine_text(outcome: &IngestOutcome) -> String {
    fs::read_to_string(outcome.dir.join(QUARANTINE_FILE)).unwrap()
}

fn count(outcome: &IngestOutcome, table: Table) -> (u64, u64, u64) {
    let t = outcome
        .manifest
        .tables
        .iter()
        .find(|t| t.table == table)
        .unwrap();
    (t.read, t.accepted, t.quarantined)
}

#[test]
fn bad_rows_are_quarantined_with_file_line_and_reason() {
    let export = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    tiny_export(export.path());
    // Lines 6, 7, 8 of studentVle.csv; line 4 of studentAssessment.csv.
    append(
        export.path(),
        "studentVle",
        b"\"AAA\",\"2013J\",\"100\",\"10\",\"3\",\"-3\"",
    );
    append(
        export.path(),
        "studentVle",
        b"\"AAA\",\"2013J\",\"100\",\"999\",\"3\",\"1\"",
    );
    append(
        export.path(),
        "studentVle",
        b"\"AAA\",\"2013J\",\"300\",\"10\",\"3\",\"1\"",
    );
    append(
        export.path(),
        "studentAssessment",
        b"\"1\",\"100\",\"19\",\"0\",\"71\"",
    );
    let outcome = run(export.path(), snaps.path()).unwrap();
    accounted(&outcome);
    assert_eq!(count(&outcome, Table::StudentVle), (7, 4, 3));
    assert_eq!(count(&outcome, Table::StudentAssessment), (3, 2, 1));
    let q = quarantine_text(&outcome);
    for expected in [
        "\"studentVle.csv\",6,\"sum_click -3 is outside the click counts [0, 1000000]\"",
        "\"studentVle.csv\",7,\"id_site 999 is not in vle\"",
        "\"studentVle.csv\",8,\"student 300 is not registered in this presentation\"",
        "\"studentAssessment.csv\",4,\"duplicate of line 2 (same id_assessment, id_student)\"",
    ] {
        assert!(q.contains(expected), "missing {expected} in\n{q}");
    }
    // The raw record is kept, so nothing is lost.
    assert!(
        q.contains("\"\"AAA\"\",\"\"2013J\"\",\"\"100\"\",\"\"999\"\""),
        "{q}"
    );
    // The good rows are unaffected: student 100 still has 8 clicks by week 1.
    assert_eq!(int(&features(&outcome), 100, 1, "clicks_total"), 8);
}

#[test]
fn typed_and_range_errors_name_the_column() {
    let export = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    tiny_export(export.path());
    append(
        export.path(),
        "studentAssessment",
        b"\"2\",\"100\",\"260\",\"0\",\"abc\"",
    );
    append(
        export.path(),
        "studentAssessment",
        b"\"2\",\"200\",\"x\",\"0\",\"50\"",
    );
    append(export.path(), "studentInfo", b"\"AAA\",\"2013J\",\"300\",\"M\",\"Wales\",\"HE Qualification\",\"\",\"0-35\",\"0\",\"60\",\"N\",\"Passed\"");
    append(
        export.path(),
        "studentVle",
        b"\"AAA\",\"2013J\",\"100\",\"10\",\"900\",\"1\"",
    );
    let outcome = run(export.path(), snaps.path()).unwrap();
    accounted(&outcome);
    let q = quarantine_text(&outcome);
    for expected in [
        "score \"\"abc\"\" is not a number",
        "date_submitted is missing or not an integer",
        "final_result \"\"Passed\"\" is not one of Distinction, Pass, Fail, Withdrawn",
        "date 900 is outside the presentation's dates [-365, 298]",
    ] {
        assert!(q.contains(expected), "missing {expected} in\n{q}");
    }
}

#[test]
fn bad_files_stop_the_run_with_a_named_error_and_leave_no_snapshot() {
    let snaps = tempfile::tempdir().unwrap();
    let expect_err = |prepare: &dyn Fn(&Path), needles: &[&str]| {
        let export = tempfile::tempdir().unwrap();
        tiny_export(export.path());
        prepare(export.path());
        let err = run(export.path(), snaps.path()).unwrap_err().to_string();
        for n in needles {
            assert!(err.contains(n), "{err:?} lacks {n:?}");
        }
        let left: Vec<_> = fs::read_dir(snaps.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "a failed ingest left {left:?}");
    };
    // A renamed column.
    expect_err(
        &|d| {
            let p = d.join("studentVle.csv");
            fs::write(
                &p,
                fs::read_to_string(&p)
                    .unwrap()
                    .replace("\"sum_click\"", "\"clicks\""),
            )
            .unwrap();
        },
        &["studentVle.csv", "\"sum_click\"", "missing"],
    );
    // A missing table.
    expect_err(
        &|d| fs::remove_file(d.join("vle.csv")).unwrap(),
        &["vle", "missing"],
    );
    // A non-UTF-8 byte in line 3, in the region column.
    expect_err(
        &|d| {
            append(d, "studentInfo", b"\"AAA\",\"2013J\",\"300\",\"M\",\"W\xe9les\",\"HE Qualification\",\"\",\"0-35\",\"0\",\"60\",\"N\",\"Pass\"")
        },
        &["studentInfo.csv", "line 4", "\"region\"", "not UTF-8"],
    );
    // A truncated gzip: the genuine way of shipping the click table, cut in the middle.
    expect_err(
        &|d| {
            let text = fs::read(d.join("studentVle.csv")).unwrap();
            let header_end = text.iter().position(|b| *b == b'\n').unwrap() + 1;
            let mut enc = GzEncoder::new(Vec::new(), Compression::default());
            enc.write_all(&text[..header_end]).unwrap();
            for _ in 0..20_000 {
                enc.write_all(&text[header_end..]).unwrap();
            }
            let gz = enc.finish().unwrap();
            fs::remove_file(d.join("studentVle.csv")).unwrap();
            fs::write(d.join("studentVle.csv.gz"), &gz[..gz.len() / 2]).unwrap();
        },
        &["studentVle.csv.gz", "cannot read"],
    );
}

#[test]
fn an_unchanged_export_reuses_its_snapshot() {
    let export = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    tiny_export(export.path());
    let first = run(export.path(), snaps.path()).unwrap();
    assert!(!first.reused);
    let second = run(export.path(), snaps.path()).unwrap();
    assert!(second.reused);
    assert_eq!(first.manifest.snapshot_id, second.manifest.snapshot_id);
    append(
        export.path(),
        "studentVle",
        b"\"AAA\",\"2013J\",\"100\",\"10\",\"9\",\"1\"",
    );
    let third = run(export.path(), snaps.path()).unwrap();
    assert!(!third.reused);
    assert_ne!(third.manifest.snapshot_id, first.manifest.snapshot_id);
    let latest = fs::read_to_string(snaps.path().join("LATEST")).unwrap();
    assert_eq!(latest.trim(), third.manifest.snapshot_id);
}
