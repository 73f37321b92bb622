//! Moodle and xAPI sources through `sources::convert` into canonical tables: the synthetic
//! fixtures in `data-samples/moodle` (two presentations: standard and shuffled columns, CRLF and
//! bare CR, day-first numeric dates, dates without a year, 12-hour times, a mapping file, results
//! from a gradebook column and from an outcomes CSV) and `data-samples/xapi` (mbox and account
//! actors, a voided statement, scaled and raw scores), with the expected rows written out here;
//! every source record accounted for; each malformed input a quarantine entry or a clear error;
//! and the converted export through the ordinary ingest, its features without the attributes the
//! LMS does not carry. Running terms: students with no outcome yet (a blank course total, no
//! outcome row, a blank result) kept with an empty final result; the as-of date (configuration or
//! `convert_as_of`'s flag) refusing later records with their reason; `source.json` naming each
//! presentation's start date and as-of day (`data-samples/moodle/course-running.toml`).

use std::fs;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use lodestar_ingest::sources::{
    SOURCE_QUARANTINE_FILE, SourceCount, SourcePresentation, convert, convert_as_of,
    read_source_report,
};
use lodestar_ingest::{IngestOptions, ingest};

fn samples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data-samples")
        .join(name)
}

/// The rows of a canonical CSV the converter wrote, without the header.
fn rows(dir: &Path, stem: &str) -> Vec<String> {
    let text = fs::read_to_string(dir.join(format!("{stem}.csv"))).unwrap();
    text.lines().skip(1).map(|l| l.replace('"', "")).collect()
}

fn count<'a>(files: &'a [SourceCount], name: &str) -> &'a SourceCount {
    files
        .iter()
        .find(|f| f.file == name)
        .unwrap_or_else(|| panic!("no count for {name}: {files:#?}"))
}

fn ignored(c: &SourceCount) -> u64 {
    c.ignored.values().sum()
}

#[test]
fn a_moodle_course_becomes_the_expected_canonical_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moodle");
    let done = convert(&samples("moodle/course.toml"), &out).unwrap();
    let dir = &done.dir;
    assert_eq!(
        rows(dir, "courses"),
        ["HIS101,2023J,100", "HIS101,2024J,100"]
    );
    assert_eq!(
        rows(dir, "assessments"),
        [
            "HIS101,2023J,1,TMA,19,100",
            "HIS101,2024J,2,TMA,19,50",
            "HIS101,2024J,3,CMA,14,50",
        ]
    );
    // Sites in order of first sight; the component gives the type ("Virtual Lab" by the
    // configuration's override).
    assert_eq!(
        rows(dir, "vle"),
        [
            "1,HIS101,2023J,homepage,,",
            "2,HIS101,2023J,forumng,,",
            "3,HIS101,2023J,assignment,,",
            "4,HIS101,2023J,htmlactivity,,",
            "5,HIS101,2024J,assignment,,",
            "6,HIS101,2024J,quiz,,",
            "7,HIS101,2024J,homepage,,",
            "8,HIS101,2024J,resource,,",
            "9,HIS101,2024J,forumng,,",
        ]
    );
    // Events per student, site and day (2023J: "Tuesday, 3 October 2023, 9:15 AM" is day 0,
    // "22 Oct, 11:59 PM" day 19; 2024J: 02/10/24 is day 1, read day first because 19/10/24 can
    // only be).
    assert_eq!(
        rows(dir, "studentVle"),
        [
            "HIS101,2023J,2001,1,0,1",
            "HIS101,2023J,2001,2,1,1",
            "HIS101,2023J,2001,3,19,1",
            "HIS101,2023J,2002,4,2,1",
            "HIS101,2024J,1001,5,18,1",
            "HIS101,2024J,1001,6,13,2",
            "HIS101,2024J,1001,7,1,1",
            "HIS101,2024J,1001,8,1,1",
            "HIS101,2024J,1002,6,14,1",
            "HIS101,2024J,1002,9,2,1",
            "HIS101,2024J,1003,5,20,1",
            "HIS101,2024J,1003,7,4,2",
        ]
    );
    // The first submission event dates it; the gradebook scores it (the quiz out of 10).
    assert_eq!(
        rows(dir, "studentAssessment"),
        [
            "1,2001,19,0,64.00",
            "2,1001,18,0,72.00",
            "3,1001,13,0,80.00",
            "3,1002,14,0,40.00",
            "2,1003,20,0,55.00",
        ]
    );
    // Results: 2023J from the outcomes (2003 left before the gradebook export), 2024J from the
    // course total (75.4 ≥ 70 Distinction, 30 < 40 Fail, 55 Pass); attributes empty.
    assert_eq!(
        rows(dir, "studentInfo"),
        [
            "HIS101,2023J,2001,,,,,,,,,Pass",
            "HIS101,2023J,2002,,,,,,,,,Withdrawn",
            "HIS101,2023J,2003,,,,,,,,,Fail",
            "HIS101,2024J,1001,,,,,,,,,Distinction",
            "HIS101,2024J,1002,,,,,,,,,Fail",
            "HIS101,2024J,1003,,,,,,,,,Pass",
        ]
    );
    assert_eq!(
        rows(dir, "studentRegistration"),
        [
            "HIS101,2023J,2001,,",
            "HIS101,2023J,2002,,29",
            "HIS101,2023J,2003,,",
            "HIS101,2024J,1001,,",
            "HIS101,2024J,1002,,",
            "HIS101,2024J,1003,,",
        ]
    );

    // Every source record accounted for, with the reasons.
    let files = &done.report.files;
    assert!(files.iter().all(SourceCount::balanced), "{files:#?}");
    let log23 = count(files, "log-2023J.csv");
    assert_eq!((log23.read, log23.converted, log23.quarantined), (5, 4, 1));
    let log24 = count(files, "log-2024J.csv");
    assert_eq!(
        (
            log24.read,
            log24.converted,
            ignored(log24),
            log24.quarantined
        ),
        (13, 10, 2, 1)
    );
    let book24 = count(files, "gradebook-2024J.csv");
    assert_eq!(
        (book24.read, book24.converted, book24.quarantined),
        (4, 3, 1)
    );
    let cells23 = count(files, "gradebook-2023J.csv (grade cells)");
    assert_eq!(
        (cells23.read, cells23.converted, cells23.quarantined),
        (2, 1, 1)
    );
    let outcomes = count(files, "outcomes-2023J.csv");
    assert_eq!(
        (
            outcomes.read,
            outcomes.converted,
            ignored(outcomes),
            outcomes.quarantined
        ),
        (5, 3, 1, 1)
    );
    let quarantine = fs::read_to_string(dir.join(SOURCE_QUARANTINE_FILE)).unwrap();
    for reason in [
        "\"log-2023J.csv\",6,\"3 fields where the header has 9\"",
        "\"log-2024J.csv\",13,\"time \"\"yesterday, 10:00\"\" is in no known format\"",
        "\"gradebook-2024J.csv\",5,\"no student id",
        "graded, but the log holds no submission of \"\"Assignment: Essay 1\"\" by student 2002",
        "\"outcomes-2023J.csv\",6,\"result \"\"Excellent\"\" is not Pass, Fail, Withdrawn or Distinction\"",
    ] {
        assert!(quarantine.contains(reason), "{reason} not in\n{quarantine}");
    }
    assert_eq!(quarantine.lines().count() as u64, 1 + done.quarantined);
    assert_eq!(done.quarantined, 5);
    assert!(
        done.report
            .absent_student_columns
            .contains(&"gender".to_owned())
    );
}

#[test]
fn xapi_statements_become_the_expected_canonical_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&samples("xapi/course.toml"), &tmp.path().join("x")).unwrap();
    let dir = &done.dir;
    assert_eq!(rows(dir, "courses"), ["BIO200,2024B,120"]);
    assert_eq!(rows(dir, "assessments"), ["BIO200,2024B,1,CMA,7,100"]);
    assert_eq!(
        rows(dir, "vle"),
        [
            "1,BIO200,2024B,homepage,,",
            "2,BIO200,2024B,quiz,,",
            "3,BIO200,2024B,quiz,,",
        ]
    );
    // 10:00+01:00 on 12 February is 09:00 UTC: day 7. Ben's voided attempt (day 8) is gone.
    assert_eq!(
        rows(dir, "studentVle"),
        [
            "BIO200,2024B,3001,1,0,1",
            "BIO200,2024B,3001,2,1,1",
            "BIO200,2024B,3001,3,7,1",
            "BIO200,2024B,3002,3,9,1",
        ]
    );
    assert_eq!(
        rows(dir, "studentAssessment"),
        ["1,3001,7,0,85.00", "1,3002,9,0,70.00"]
    );
    assert_eq!(
        rows(dir, "studentInfo"),
        [
            "BIO200,2024B,3001,,,,,,,,,Pass",
            "BIO200,2024B,3002,,,,,,,,,Fail",
        ]
    );
    let s = count(&done.report.files, "statements.jsonl");
    assert_eq!(
        (s.read, s.converted, ignored(s), s.quarantined),
        (11, 4, 4, 3)
    );
    for reason in ["voided", "voids another statement", "another course"] {
        assert_eq!(s.ignored.get(reason), Some(&1), "{:?}", s.ignored);
    }
    let quarantine = fs::read_to_string(dir.join(SOURCE_QUARANTINE_FILE)).unwrap();
    for reason in [
        "\"statements.jsonl\",7,\"statement without actor",
        "\"statements.jsonl\",10,\"timestamp missing or not RFC 3339\"",
        "\"statements.jsonl\",11,\"not JSON",
    ] {
        assert!(quarantine.contains(reason), "{reason} not in\n{quarantine}");
    }

    // The same statements as one JSON array read the same (the line that is not JSON aside).
    let array_dir = tmp.path().join("array");
    fs::create_dir_all(&array_dir).unwrap();
    let source = samples("xapi");
    let statements: Vec<serde_json::Value> = fs::read_to_string(source.join("statements.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    fs::write(
        array_dir.join("statements.json"),
        serde_json::to_string_pretty(&statements).unwrap(),
    )
    .unwrap();
    for f in ["students.csv", "outcomes.csv"] {
        fs::copy(source.join(f), array_dir.join(f)).unwrap();
    }
    fs::write(
        array_dir.join("course.toml"),
        fs::read_to_string(source.join("course.toml"))
            .unwrap()
            .replace("statements.jsonl", "statements.json"),
    )
    .unwrap();
    let again = convert(&array_dir.join("course.toml"), &tmp.path().join("y")).unwrap();
    assert_eq!(
        rows(&again.dir, "studentAssessment"),
        rows(dir, "studentAssessment")
    );
    assert_eq!(rows(&again.dir, "studentVle"), rows(dir, "studentVle"));
    let s = count(&again.report.files, "statements.json");
    assert_eq!(
        (s.read, s.converted, ignored(s), s.quarantined),
        (10, 4, 4, 2)
    );
}

/// A copy of the Moodle sample with one file changed, converted: the error, if any.
fn moodle_with(file: &str, change: impl Fn(String) -> String) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let source = samples("moodle");
    for entry in fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let path = tmp.path().join(file);
    fs::write(&path, change(fs::read_to_string(&path).unwrap())).unwrap();
    let result = convert(&tmp.path().join("course.toml"), &tmp.path().join("out"))
        .map(|_| ())
        .map_err(|e| e.to_string());
    // A failed conversion leaves nothing half-written.
    assert!(!tmp.path().join("out.partial").exists());
    assert_eq!(result.is_ok(), tmp.path().join("out").exists());
    result
}

#[test]
fn malformed_moodle_input_is_a_clear_error() {
    // An unknown column set: not a log export.
    let e = moodle_with("log-2024J.csv", |t| {
        t.replacen("Event context", "Context", 1)
    })
    .unwrap_err();
    assert!(
        e.contains("log-2024J.csv")
            && e.contains("not a Moodle log export")
            && e.contains("\"Event context\""),
        "{e}"
    );
    // Numeric dates that read both ways, with nothing in the file or the configuration to say.
    let e = moodle_with("log-2024J.csv", |t| {
        t.replace("19/10/24", "09/10/24")
            .replace("14/10/24", "04/10/24")
            .replace("15/10/24", "05/10/24")
            .replace("21/10/24", "11/10/24")
    })
    .unwrap_err();
    assert!(e.contains("date_order = \"dmy\""), "{e}");
    // ... which the option resolves.
    moodle_with("course.toml", |t| {
        t.replacen(
            "format = \"moodle\"",
            "format = \"moodle\"\ndate_order = \"dmy\"",
            1,
        )
    })
    .unwrap();
    // A grade item the gradebook does not have.
    let e = moodle_with("course.toml", |t| {
        t.replace("Quiz: Week 2 quiz (Real)", "Quiz: Week 3 quiz (Real)")
    })
    .unwrap_err();
    assert!(
        e.contains("gradebook-2024J.csv") && e.contains("Quiz: Week 3 quiz (Real)"),
        "{e}"
    );
    // A configuration mistake names the file and the field.
    let e = moodle_with("course.toml", |t| {
        t.replace("type = \"CMA\"", "type = \"MCQ\"")
    })
    .unwrap_err();
    assert!(
        e.contains("course.toml") && e.contains("type must be TMA, CMA or Exam"),
        "{e}"
    );
    let e = moodle_with("course.toml", |t| {
        t.replace("length_days = 100", "length = 100")
    })
    .unwrap_err();
    assert!(e.contains("course.toml") && e.contains("length"), "{e}");
}

#[test]
fn a_converted_moodle_export_ingests_without_the_attributes_moodle_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&samples("moodle/course.toml"), &tmp.path().join("export")).unwrap();
    let options = IngestOptions::default();
    let outcome = ingest(
        &done.dir,
        &tmp.path().join("snapshots"),
        &options,
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let m = &outcome.manifest;
    // Every canonical row the converter wrote is accepted by the ordinary validation.
    for t in &m.tables {
        assert_eq!(t.quarantined, 0, "{t:?}");
    }
    assert_eq!(m.presentations, ["HIS101-2023J", "HIS101-2024J"]);
    let names: Vec<&str> = m.columns.features.names().collect();
    for absent in [
        "gender",
        "region",
        "highest_education",
        "imd_band",
        "age_band",
        "disability",
        "studied_credits",
        "num_of_prev_attempts",
    ] {
        assert!(!names.contains(&absent), "{absent} in {names:?}");
        assert!(m.absent_features.iter().any(|a| a == absent));
    }
    for present in [
        "clicks_total",
        "assessments_submitted",
        "score_mean",
        "days_since_last_activity",
    ] {
        assert!(names.contains(&present), "{present} not in {names:?}");
    }
    assert_eq!(m.student_presentations, 6);
}

#[test]
fn every_moodle_time_format_lands_on_its_day() {
    // One student, one event on 11 May 2018 (day 10 of a course starting 1 May), in each format.
    for (time, date_order, line_ending) in [
        ("11/05/18, 09:44", "date_order = \"dmy\"\n", "\r\n"),
        ("05/11/18, 09:44", "date_order = \"mdy\"\n", "\n"),
        ("11/05/2018, 21:44", "date_order = \"dmy\"\n", "\r"),
        ("11 May 2018, 09:44", "", "\n"),
        ("Friday, 11 May 2018, 9:44 AM", "", "\r\n"),
        ("11 May, 09:44", "", "\r"),
        ("11 Sept, 09:44", "", "\n"),
        ("2018-05-11 09:44:05", "", "\n"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let start = if time.contains("Sept") {
            "2018-09-01"
        } else {
            "2018-05-01"
        };
        fs::write(
            d.join("course.toml"),
            format!(
                "format = \"moodle\"\n{date_order}\n[[presentations]]\nmodule = \"TST100\"\npresentation = \"2018B\"\nstart = {start}\nlength_days = 60\nlog = \"log.csv\"\ngradebook = \"book.csv\"\nresult = {{ column = \"Course total (Real)\", pass_mark = 40 }}\n"
            ),
        )
        .unwrap();
        let header = "Time,User full name,Affected user,Event context,Component,Event name,Description,Origin,IP address";
        let row =
            format!("\"{time}\",Ana Silva,-,Course: Test,System,Course viewed,viewed,web,10.0.0.1");
        fs::write(
            d.join("log.csv"),
            format!("{header}{line_ending}{row}{line_ending}"),
        )
        .unwrap();
        fs::write(
            d.join("book.csv"),
            "First name,Last name,ID number,Course total (Real)\nAna,Silva,7,50.00\n",
        )
        .unwrap();
        let done = convert(&d.join("course.toml"), &d.join("out"))
            .unwrap_or_else(|e| panic!("{time}: {e}"));
        assert_eq!(
            rows(&done.dir, "studentVle"),
            ["TST100,2018B,7,1,10,1"],
            "{time}"
        );
        assert_eq!(done.quarantined, 0, "{time}");
    }
}

/// A copy of a sample folder with files changed; the changes are (file, old, new) replacements.
fn sample_copy(name: &str, changes: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(samples(name)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    for (file, old, new) in changes {
        let path = tmp.path().join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(old), "{old:?} not in {file}");
        fs::write(&path, text.replacen(old, new, 1)).unwrap();
    }
    tmp
}

fn quarantine_of(dir: &Path) -> String {
    fs::read_to_string(dir.join(SOURCE_QUARANTINE_FILE)).unwrap()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

#[test]
fn a_blank_course_total_is_in_progress_and_only_a_number_below_the_mark_fails() {
    // No as-of date: the course total is read as a final result, where it is a number.
    let tmp = sample_copy(
        "moodle",
        &[
            ("gradebook-2024J.csv", "4.00,30.00,", "4.00,-,"),
            ("gradebook-2024J.csv", "-,55.00,", "-,n/a,"),
        ],
    );
    let done = convert(&tmp.path().join("course.toml"), &tmp.path().join("out")).unwrap();
    let dir = &done.dir;
    let running: Vec<String> = rows(dir, "studentInfo")
        .into_iter()
        .filter(|r| r.contains("2024J"))
        .collect();
    assert_eq!(
        running,
        [
            "HIS101,2024J,1001,,,,,,,,,Distinction",
            "HIS101,2024J,1002,,,,,,,,,",
            "HIS101,2024J,1003,,,,,,,,,",
        ]
    );
    // Kept and registered, with their activity and submissions.
    assert!(rows(dir, "studentRegistration").contains(&"HIS101,2024J,1002,,".to_owned()));
    assert!(rows(dir, "studentVle").contains(&"HIS101,2024J,1002,9,2,1".to_owned()));
    assert!(rows(dir, "studentAssessment").contains(&"2,1003,20,0,55.00".to_owned()));
    // A total that is not a number is quarantined as a grade cell; its student stays.
    let quarantine = quarantine_of(dir);
    assert!(
        quarantine.contains(
            "\"gradebook-2024J.csv (grade cells)\",4,\"Course total (Real): grade \"\"n/a\"\" is not a number\""
        ),
        "{quarantine}"
    );
    assert!(!quarantine.contains("student 1002"), "{quarantine}");
    let book = count(&done.report.files, "gradebook-2024J.csv");
    assert_eq!((book.read, book.converted, book.quarantined), (4, 3, 1));
    assert!(done.report.files.iter().all(SourceCount::balanced));
    // No as-of date: each presentation's start, no as-of day.
    assert_eq!(done.report.as_of, None);
    assert_eq!(
        done.report.presentations,
        [
            SourcePresentation {
                presentation: "HIS101-2023J".into(),
                start_date: "2023-10-03".into(),
                as_of_day: None,
            },
            SourcePresentation {
                presentation: "HIS101-2024J".into(),
                start_date: "2024-10-01".into(),
                as_of_day: None,
            },
        ]
    );
}

#[test]
fn a_student_without_an_outcome_row_or_result_is_in_progress() {
    // 2023J's results come from the outcomes CSV: Eva (2001) has no row, Finn (2002) a blank
    // result with his withdrawal date.
    let tmp = sample_copy(
        "moodle",
        &[
            ("outcomes-2023J.csv", "2001,HIS101-2023J,Pass,\n", ""),
            (
                "outcomes-2023J.csv",
                "2002,HIS101-2023J,Withdrawn,",
                "2002,HIS101-2023J,,",
            ),
        ],
    );
    let done = convert(&tmp.path().join("course.toml"), &tmp.path().join("out")).unwrap();
    let dir = &done.dir;
    let info = rows(dir, "studentInfo");
    assert_eq!(
        info[..3],
        [
            "HIS101,2023J,2001,,,,,,,,,",
            "HIS101,2023J,2002,,,,,,,,,",
            "HIS101,2023J,2003,,,,,,,,,Fail",
        ]
    );
    let registrations = rows(dir, "studentRegistration");
    assert_eq!(
        registrations[..3],
        [
            "HIS101,2023J,2001,,",
            "HIS101,2023J,2002,,29",
            "HIS101,2023J,2003,,"
        ]
    );
    assert!(rows(dir, "studentVle").contains(&"HIS101,2023J,2001,1,0,1".to_owned()));
    assert!(rows(dir, "studentAssessment").contains(&"1,2001,19,0,64.00".to_owned()));
    // Nothing set aside for a missing outcome: the gradebook's students all convert.
    let book = count(&done.report.files, "gradebook-2023J.csv");
    assert_eq!((book.read, book.converted, book.quarantined), (2, 2, 0));
    let outcomes = count(&done.report.files, "outcomes-2023J.csv");
    assert_eq!((outcomes.read, outcomes.converted), (4, 2));
    assert!(!quarantine_of(dir).contains("no final result"));
}

#[test]
fn a_running_moodle_course_converts_as_of_its_date() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(
        &samples("moodle/course-running.toml"),
        &tmp.path().join("out"),
    )
    .unwrap();
    let dir = &done.dir;
    // 2023J ended before the as-of date: unchanged. 2024J is under way: every student in
    // progress, Ana's running total (80) and the blank totals alike.
    assert_eq!(
        rows(dir, "studentInfo"),
        [
            "HIS101,2023J,2001,,,,,,,,,Pass",
            "HIS101,2023J,2002,,,,,,,,,Withdrawn",
            "HIS101,2023J,2003,,,,,,,,,Fail",
            "HIS101,2024J,1001,,,,,,,,,",
            "HIS101,2024J,1002,,,,,,,,,",
            "HIS101,2024J,1003,,,,,,,,,",
        ]
    );
    assert_eq!(
        rows(dir, "studentRegistration")[3..],
        [
            "HIS101,2024J,1001,,",
            "HIS101,2024J,1002,,",
            "HIS101,2024J,1003,,"
        ]
    );
    // Activity up to 16 October (day 15) only: the essay submissions of 19 and 21 October are
    // refused, and no assignment site is made for them.
    assert_eq!(
        rows(dir, "vle")[4..],
        [
            "5,HIS101,2024J,quiz,,",
            "6,HIS101,2024J,homepage,,",
            "7,HIS101,2024J,resource,,",
            "8,HIS101,2024J,forumng,,",
        ]
    );
    assert_eq!(
        rows(dir, "studentVle")[4..],
        [
            "HIS101,2024J,1001,5,13,2",
            "HIS101,2024J,1001,6,1,1",
            "HIS101,2024J,1001,7,1,1",
            "HIS101,2024J,1002,5,14,1",
            "HIS101,2024J,1002,8,2,1",
            "HIS101,2024J,1003,6,4,2",
        ]
    );
    assert_eq!(
        rows(dir, "studentAssessment"),
        [
            "1,2001,19,0,64.00",
            "3,1001,13,0,80.00",
            "3,1002,14,0,40.00"
        ]
    );
    let quarantine = quarantine_of(dir);
    for reason in [
        "\"log-2024J.csv\",2,\"dated 2024-10-19, after the export's as-of date 2024-10-16\"",
        "\"log-2024J.csv\",9,\"dated 2024-10-21, after the export's as-of date 2024-10-16\"",
        "\"gradebook-2024J-running.csv (grade cells)\",2,\"Assignment: Essay 1 (Real): graded, but the submission of \"\"Assignment: Essay 1\"\" by student 1001 is dated 2024-10-19, after the export's as-of date 2024-10-16\"",
    ] {
        assert!(quarantine.contains(reason), "{reason} not in\n{quarantine}");
    }
    assert!(!quarantine.contains("final result"), "{quarantine}");
    let files = &done.report.files;
    assert!(files.iter().all(SourceCount::balanced), "{files:#?}");
    let log = count(files, "log-2024J.csv");
    assert_eq!(
        (log.read, log.converted, ignored(log), log.quarantined),
        (13, 8, 2, 3)
    );
    let book = count(files, "gradebook-2024J-running.csv");
    assert_eq!((book.read, book.converted, book.quarantined), (4, 3, 1));
    // Grade cells: Ana's essay (refused), two quizzes, Ana's running total (not a result).
    let cells = count(files, "gradebook-2024J-running.csv (grade cells)");
    assert_eq!(
        (
            cells.read,
            cells.converted,
            ignored(cells),
            cells.quarantined
        ),
        (4, 2, 1, 1)
    );
    assert_eq!(done.quarantined, 8);
    assert_eq!(quarantine.lines().count() as u64, 1 + done.quarantined);

    // source.json: each presentation's calendar start and as-of day (2024-10-16 is day 379 of
    // 2023J, which ended on day 99, and day 15 of 2024J).
    let report = read_source_report(dir).unwrap().unwrap();
    assert_eq!(report, done.report);
    assert_eq!(report.as_of.as_deref(), Some("2024-10-16"));
    assert_eq!(
        report.presentations,
        [
            SourcePresentation {
                presentation: "HIS101-2023J".into(),
                start_date: "2023-10-03".into(),
                as_of_day: Some(379),
            },
            SourcePresentation {
                presentation: "HIS101-2024J".into(),
                start_date: "2024-10-01".into(),
                as_of_day: Some(15),
            },
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("source.json")).unwrap()).unwrap();
    assert_eq!(json["presentations"][1]["start_date"], "2024-10-01");
    assert_eq!(json["presentations"][1]["as_of_day"], 15);
}

#[test]
fn the_as_of_flag_wins_over_the_configuration_and_refuses_later_withdrawals() {
    // As of 20 October 2023 (day 17 of 2023J): Finn's withdrawal on 1 November and Eva's essay
    // of 22 October lie after it; 2023J is running, and 2024J has not started.
    let out = tempfile::tempdir().unwrap();
    let done = convert_as_of(
        &samples("moodle/course-running.toml"),
        &out.path().join("out"),
        Some(day("2023-10-20")),
    )
    .unwrap();
    let dir = &done.dir;
    let quarantine = quarantine_of(dir);
    for reason in [
        "\"outcomes-2023J.csv\",3,\"withdrawn_on dated 2023-11-01, after the export's as-of date 2023-10-20\"",
        "\"log-2023J.csv\",4,\"dated 2023-10-22, after the export's as-of date 2023-10-20\"",
        "\"log-2024J.csv\",5,\"dated 2024-10-02, after the export's as-of date 2023-10-20\"",
    ] {
        assert!(quarantine.contains(reason), "{reason} not in\n{quarantine}");
    }
    // Finn's outcome row is refused whole: he is in progress, still registered.
    assert_eq!(
        rows(dir, "studentInfo")[..3],
        [
            "HIS101,2023J,2001,,,,,,,,,Pass",
            "HIS101,2023J,2002,,,,,,,,,",
            "HIS101,2023J,2003,,,,,,,,,Fail",
        ]
    );
    assert!(rows(dir, "studentRegistration").contains(&"HIS101,2023J,2002,,".to_owned()));
    assert!(rows(dir, "studentVle").iter().all(|r| r.contains("2023J")));
    assert_eq!(done.report.as_of.as_deref(), Some("2023-10-20"));
    let days: Vec<Option<i32>> = done
        .report
        .presentations
        .iter()
        .map(|p| p.as_of_day)
        .collect();
    assert_eq!(days, [Some(17), Some(-347)]);
    assert!(done.report.files.iter().all(SourceCount::balanced));
}

#[test]
fn a_running_xapi_course_without_outcomes_keeps_every_student() {
    let as_of = "2024-02-13";
    // An outcomes CSV with no rows yet, and the as-of date in the configuration (as a string).
    let header_only = sample_copy(
        "xapi",
        &[
            (
                "outcomes.csv",
                "3001,BIO200-2024B,Pass\n3002,BIO200-2024B,Fail\n",
                "",
            ),
            (
                "course.toml",
                "format = \"xapi\"\n",
                "format = \"xapi\"\nas_of = \"2024-02-13\"\n",
            ),
        ],
    );
    let a = convert(
        &header_only.path().join("course.toml"),
        &header_only.path().join("out"),
    )
    .unwrap();
    // No outcomes file at all, a later as-of date in the configuration, and the flag's date.
    let no_file = sample_copy(
        "xapi",
        &[
            ("course.toml", "outcomes = \"outcomes.csv\"\n", ""),
            (
                "course.toml",
                "format = \"xapi\"\n",
                "format = \"xapi\"\nas_of = 2024-06-01\n",
            ),
        ],
    );
    let b = convert_as_of(
        &no_file.path().join("course.toml"),
        &no_file.path().join("out"),
        Some(day(as_of)),
    )
    .unwrap();
    for done in [&a, &b] {
        let dir = &done.dir;
        assert_eq!(
            rows(dir, "studentInfo"),
            ["BIO200,2024B,3001,,,,,,,,,", "BIO200,2024B,3002,,,,,,,,,"]
        );
        assert_eq!(
            rows(dir, "studentRegistration"),
            ["BIO200,2024B,3001,,", "BIO200,2024B,3002,,"]
        );
        // Ben's quiz of 14 February is after the as-of date: refused, with its line.
        assert_eq!(
            rows(dir, "studentVle"),
            [
                "BIO200,2024B,3001,1,0,1",
                "BIO200,2024B,3001,2,1,1",
                "BIO200,2024B,3001,3,7,1",
            ]
        );
        assert_eq!(rows(dir, "studentAssessment"), ["1,3001,7,0,85.00"]);
        let quarantine = quarantine_of(dir);
        let reason =
            "\"statements.jsonl\",6,\"dated 2024-02-14, after the export's as-of date 2024-02-13\"";
        assert!(quarantine.contains(reason), "{reason} not in\n{quarantine}");
        let s = count(&done.report.files, "statements.jsonl");
        assert_eq!(
            (s.read, s.converted, ignored(s), s.quarantined),
            (11, 3, 4, 4)
        );
        assert!(done.report.files.iter().all(SourceCount::balanced));
        assert_eq!(done.report.as_of.as_deref(), Some(as_of));
        assert_eq!(
            done.report.presentations,
            [SourcePresentation {
                presentation: "BIO200-2024B".into(),
                start_date: "2024-02-05".into(),
                as_of_day: Some(8),
            }]
        );
    }
    assert!(a.report.files.iter().any(|f| f.file == "outcomes.csv"));
    assert!(!b.report.files.iter().any(|f| f.file == "outcomes.csv"));
}

#[test]
fn a_running_moodle_export_ingests_with_no_student_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(
        &samples("moodle/course-running.toml"),
        &tmp.path().join("export"),
    )
    .unwrap();
    let options = IngestOptions::default();
    let outcome = ingest(
        &done.dir,
        &tmp.path().join("snapshots"),
        &options,
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let m = &outcome.manifest;
    for t in &m.tables {
        assert_eq!(t.quarantined, 0, "{t:?}");
    }
    assert_eq!(m.presentations, ["HIS101-2023J", "HIS101-2024J"]);
    assert_eq!(m.student_presentations, 6);
}
