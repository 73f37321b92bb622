//! Moodle courses end to end through the binary. A synthetic course exported mid-term: three
//! presentations of a course's log and gradebook exports (written here, deterministic; the long
//! date format and day-first numeric dates), two finished and one under way →
//! `lodestar ingest --format moodle` → `lodestar pipeline run` on the converted export (train on
//! the earliest presentation, evaluate on the next finished one, score the running one at its
//! current week) → an advisor's caseload and a student's page with the reasons for their risk.
//! And the running sample (`data-samples/moodle/course-running.toml`): blank course totals are
//! students in progress, and the course is converted, ingested and scored on its first night.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::Value;

mod common;
use common::*;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

const STUDENTS: u32 = 150;
const LENGTH: i64 = 98;
/// Weeks 0 to 13 of a presentation of [`LENGTH`] days (days 0 to 97).
const WEEKS: u64 = 14;
const ESSAYS: [(&str, i64); 2] = [("Assignment: Essay 1", 27), ("Assignment: Essay 2", 62)];

fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// Writes one presentation's log, gradebook and outcomes; `long_dates` picks the date format.
/// `as_of`: the presentation is under way, exported on that day (no record after it, no result
/// yet: the gradebook's course total is a running total or blank, and the student record system
/// lists only those who have withdrawn, on day 31). Returns how many students never withdrew.
fn presentation(
    dir: &Path,
    code: &str,
    start: NaiveDate,
    first_id: u32,
    long_dates: bool,
    as_of: Option<i64>,
    rng: &mut Rng,
) -> u32 {
    let mut registered = 0;
    let exported = as_of.unwrap_or(LENGTH - 1);
    let mut log = String::from(
        "Time,User full name,Affected user,Event context,Component,Event name,Description,Origin,IP address\r\n",
    );
    let mut book = String::from(
        "First name,Last name,ID number,Email address,Assignment: Essay 1 (Real),Assignment: Essay 2 (Real),Course total (Real)\r\n",
    );
    let mut outcomes = String::from("id_student,course,result,withdrawn_on\n");
    let time = |t: NaiveDateTime| {
        if long_dates {
            t.format("%A, %-d %B %Y, %-I:%M %p").to_string()
        } else {
            t.format("%d/%m/%y, %H:%M").to_string()
        }
    };
    let event = |log: &mut String,
                 t: NaiveDateTime,
                 who: &str,
                 context: &str,
                 component: &str,
                 name: &str| {
        let row = [
            time(t),
            who.to_owned(),
            "-".into(),
            context.into(),
            component.into(),
            name.into(),
            format!("{who} {name}"),
            "web".into(),
            "10.0.0.1".into(),
        ];
        log.push_str(&row.iter().map(|v| quote(v)).collect::<Vec<_>>().join(","));
        log.push_str("\r\n");
    };
    for i in 0..STUDENTS {
        let id = first_id + i;
        let who = format!("Student{id} Surname{id}");
        let engagement = rng.next();
        let withdrawn = engagement < 0.12;
        let last_day = if withdrawn { 30 } else { LENGTH - 1 }.min(exported);
        if !withdrawn {
            registered += 1;
        }
        for day in 0..=last_day {
            if rng.next() > engagement * 0.8 {
                continue;
            }
            let at = (start + Duration::days(day))
                .and_hms_opt(
                    9 + (rng.next() * 10.0) as u32,
                    (rng.next() * 59.0) as u32,
                    0,
                )
                .unwrap();
            let week = day / 7 + 1;
            event(
                &mut log,
                at,
                &who,
                "Course: History 101",
                "System",
                "Course viewed",
            );
            match (rng.next() * 3.0) as u32 {
                0 => event(
                    &mut log,
                    at,
                    &who,
                    &format!("File: Week {week} reading"),
                    "File",
                    "Course module viewed",
                ),
                1 => event(
                    &mut log,
                    at,
                    &who,
                    &format!("Forum: Week {week}"),
                    "Forum",
                    "Discussion viewed",
                ),
                _ => event(
                    &mut log,
                    at,
                    &who,
                    &format!("Quiz: Week {week} quiz"),
                    "Quiz",
                    "Quiz attempt submitted",
                ),
            }
        }
        let mut cells = Vec::new();
        let mut total = 0.0;
        for (essay, due) in ESSAYS {
            // Submitted up to a day late; in a running presentation, only what is in by the
            // as-of day.
            if due <= last_day && rng.next() < engagement + 0.25 {
                let day = due - 2 + (rng.next() * 4.0) as i64;
                if day > exported {
                    cells.push("-".into());
                    continue;
                }
                let at = (start + Duration::days(day))
                    .and_hms_opt(20, 15, 0)
                    .unwrap();
                event(
                    &mut log,
                    at,
                    &who,
                    essay,
                    "Assignment",
                    "A submission has been submitted.",
                );
                let score = (35.0 + 60.0 * engagement + 10.0 * (rng.next() - 0.5)).min(100.0);
                total += score / 2.0;
                cells.push(format!("{score:.2}"));
            } else {
                cells.push("-".into());
            }
        }
        // A teacher's view of the course: not a student, counted as ignored.
        if i % 25 == 0 {
            event(
                &mut log,
                (start + Duration::days(1)).and_hms_opt(8, 0, 0).unwrap(),
                "Tutor Smith",
                "Course: History 101",
                "System",
                "Course viewed",
            );
        }
        // Mid-term, Moodle shows a running total, or "-" before anything is graded.
        let total_cell = if as_of.is_some() && cells.iter().all(|c| c == "-") {
            "-".to_owned()
        } else {
            format!("{total:.2}")
        };
        let _ = write!(
            book,
            "Student{id},Surname{id},{id},s{id}@uni.example,{},{},{total_cell}\r\n",
            cells[0], cells[1]
        );
        if as_of.is_some() {
            // The student record system knows who has withdrawn; nobody else has a result.
            if withdrawn {
                let on = start + Duration::days(31);
                let _ = writeln!(outcomes, "{id},HIS101-{code},Withdrawn,{on}");
            }
            continue;
        }
        let result = if withdrawn {
            "Withdrawn"
        } else if total + 10.0 * rng.next() >= 45.0 {
            "Pass"
        } else {
            "Fail"
        };
        let withdrawn_on = if withdrawn {
            (start + Duration::days(31)).to_string()
        } else {
            String::new()
        };
        let _ = writeln!(outcomes, "{id},HIS101-{code},{result},{withdrawn_on}");
    }
    fs::write(dir.join(format!("log-{code}.csv")), log).unwrap();
    fs::write(dir.join(format!("gradebook-{code}.csv")), book).unwrap();
    fs::write(dir.join(format!("outcomes-{code}.csv")), outcomes).unwrap();
    registered
}

/// The as-of date of [`course`]'s export: day 45 of HIS101-2025B, whose week 5 is then complete
/// (cutoff day 7×5+6 = 41).
const RUNNING_AS_OF: &str = "2025-03-20";
const RUNNING_AS_OF_DAY: i64 = 45;
const RUNNING_WEEK: u64 = 5;

/// History 101 exported on [`RUNNING_AS_OF`]: 2023J and 2024J finished (results from the student
/// record system), 2025B under way (its results to come from the gradebook's course total once
/// it ends). Returns how many 2025B students are still registered.
fn course(dir: &Path) -> u32 {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(2026);
    let mut config = format!("format = \"moodle\"\nas_of = {RUNNING_AS_OF}\n");
    let mut registered = 0;
    for (code, start, first_id, long_dates, as_of) in [
        (
            "2023J",
            NaiveDate::from_ymd_opt(2023, 10, 2).unwrap(),
            50_000,
            true,
            None,
        ),
        (
            "2024J",
            NaiveDate::from_ymd_opt(2024, 9, 30).unwrap(),
            60_000,
            false,
            None,
        ),
        (
            "2025B",
            NaiveDate::from_ymd_opt(2025, 2, 3).unwrap(),
            70_000,
            false,
            Some(RUNNING_AS_OF_DAY),
        ),
    ] {
        assert!(as_of.is_none_or(|d| start + Duration::days(d) == RUNNING_AS_OF.parse().unwrap()));
        let still = presentation(dir, code, start, first_id, long_dates, as_of, &mut rng);
        if as_of.is_some() {
            registered = still;
        }
        let _ = write!(
            config,
            "\n[[presentations]]\nmodule = \"HIS101\"\npresentation = \"{code}\"\nstart = {start}\nlength_days = {LENGTH}\nlog = \"log-{code}.csv\"\ngradebook = \"gradebook-{code}.csv\"\noutcomes = \"outcomes-{code}.csv\"\n"
        );
        if as_of.is_some() {
            config.push_str(
                "result = { column = \"Course total (Real)\", pass_mark = 40, distinction_mark = 70 }\n",
            );
        }
        for (essay, due) in ESSAYS {
            let _ = write!(
                config,
                "\n[[presentations.assessments]]\nitem = \"{essay} (Real)\"\ntype = \"TMA\"\ndue = {}\nweight = 50\n",
                start + Duration::days(due)
            );
        }
    }
    fs::write(dir.join("course.toml"), config).unwrap();
    registered
}

#[test]
fn a_moodle_course_goes_from_its_exports_to_an_advisors_caseload_with_reasons() {
    let env = env("moodle", false).unwrap();
    let registered = course(&env.dir.path().join("moodle"));

    let manifest = env.json(&[
        "ingest",
        "--format",
        "moodle",
        "--export",
        "moodle/course.toml",
        "--json",
    ]);
    assert_eq!(
        manifest["presentations"],
        serde_json::json!(["HIS101-2023J", "HIS101-2024J", "HIS101-2025B"])
    );
    let absent: Vec<&str> = manifest["absent_features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        absent.contains(&"gender") && absent.contains(&"highest_education"),
        "{absent:?}"
    );
    for t in manifest["tables"].as_array().unwrap() {
        assert_eq!(t["quarantined"], 0, "{t}");
    }
    let export = env.dir.path().join("lodestar-data/exports/moodle-course");
    let report: Value =
        serde_json::from_str(&fs::read_to_string(export.join("source.json")).unwrap()).unwrap();
    for f in report["files"].as_array().unwrap() {
        let ignored: u64 = f["ignored"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            f["read"].as_u64().unwrap(),
            f["converted"].as_u64().unwrap() + ignored + f["quarantined"].as_u64().unwrap(),
            "{f}"
        );
        assert_eq!(f["quarantined"], 0, "{f}");
    }

    // The nightly pipeline given the source configuration itself (as `pipeline.export` would
    // be): it converts, trains on 2023J, evaluates on 2024J (the latest finished presentation)
    // and scores 2025B, the term under way, at its current week.
    let out = env.lodestar(
        &[
            "pipeline",
            "run",
            "--export",
            "moodle/course.toml",
            "--json",
        ],
        &[],
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scored = &run["summary"]["score"]["presentations"];
    assert_eq!(
        scored,
        &serde_json::json!([{
            "presentation": "HIS101-2025B",
            "state": "running",
            "week": RUNNING_WEEK,
            "weeks": WEEKS,
            "as_of_day": RUNNING_AS_OF_DAY,
            "as_of_date": RUNNING_AS_OF,
            "students": registered,
        }]),
        "only the running presentation is scored, every student still registered: {run}"
    );
    let shown = env.show(run["run"].as_i64().unwrap());
    let ingest = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "ingest")
        .unwrap()
        .to_string();
    assert!(
        ingest.contains("moodle-course"),
        "the run read the converted folder: {ingest}"
    );
    let model = env.json(&["models", "show", "at-risk", "--json"]);
    assert_eq!(
        model[0]["report"]["train_presentations"],
        serde_json::json!(["HIS101-2023J"]),
        "{model}"
    );
    assert_eq!(
        model[0]["report"]["test_presentations"],
        serde_json::json!(["HIS101-2024J"]),
        "{model}"
    );

    // An advisor with the running 2025B presentation sees this week's caseload and a student's
    // reasons.
    let password = env.advisor("HIS101-2025B");
    let config = env.dir.path().join("lodestar.toml");
    let url = [("LODESTAR_DATABASE_URL", env.database_url.as_str())];
    let (mut dashboard, base) = start(&env, "dashboard", &config, &url);
    let caseload = dashboard_page(&base, "advisor", &password, "/caseload");
    assert!(caseload.starts_with("HTTP/1.1 200"), "{caseload}");
    let heading =
        format!("HIS101-2025B — running, as of 20 Mar 2025, week {RUNNING_WEEK} of {WEEKS}");
    assert!(
        caseload.contains(&heading),
        "no {heading:?} in:\n{caseload}"
    );
    let link = caseload
        .split("href=\"/students/HIS101-2025B/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no student of HIS101-2025B in the caseload:\n{caseload}"));
    let page = dashboard_page(
        &base,
        "advisor",
        &password,
        &format!("/students/HIS101-2025B/{link}"),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(&format!("as of week {RUNNING_WEEK} ")),
        "the student page shows this week's risk:\n{page}"
    );
    let reasons = page
        .split("<h3>Raising the risk</h3><ul>")
        .nth(1)
        .and_then(|rest| rest.split("</ul>").next())
        .unwrap_or_else(|| panic!("no reasons on the student page:\n{page}"));
    assert!(
        reasons.contains("<li>") && !reasons.contains("Nothing stands out"),
        "{reasons}"
    );
    assert!(dashboard.stop());
}

/// The running sample (`data-samples/moodle`), copied to `dir`, with a finished cohort added to
/// its 2023J presentation: the sample's own 2023J holds three students, one of whom passed, too
/// few to learn from (every calibration fold must train on both outcomes). The added students
/// (ids 3001 on) are written as the sample's 2023J files are: the log in the long date format
/// with bare CR line endings, a gradebook without ID numbers (ids through `students.csv`, by
/// e-mail) and results from the student record system. The running 2024J files are the sample's
/// own, untouched.
fn running_sample(dir: &Path) {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-samples/moodle");
    fs::create_dir_all(dir).unwrap();
    for f in fs::read_dir(&sample).unwrap() {
        let f = f.unwrap().path();
        fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let start = NaiveDate::from_ymd_opt(2023, 10, 3).unwrap();
    let essay_due = 19; // 2023-10-22
    let (mut log, mut book, mut outcomes, mut students) =
        (String::new(), String::new(), String::new(), String::new());
    let mut rng = Rng(17);
    for id in 3001..3061 {
        let (first, last) = (format!("Learner{id}"), format!("Hist{id}"));
        let email = format!("learner{id}@uni.example");
        let engagement = rng.next();
        let withdrawn = engagement < 0.15;
        let last_day = if withdrawn { 26 } else { 90 };
        let mut event = |day: i64, hour: u32, name: &str, component: &str, context: &str| {
            let at = (start + Duration::days(day))
                .and_hms_opt(hour, 10, 0)
                .unwrap()
                .format("%A, %-d %B %Y, %-I:%M %p")
                .to_string();
            let row = [
                name,
                &at,
                component,
                context,
                &format!("{first} {last}"),
                "-",
                "The user acted.",
                "web",
                "10.1.0.9",
            ];
            log.push_str(&row.map(quote).join(","));
            log.push('\r');
        };
        for day in 0..=last_day {
            if rng.next() < engagement * 0.7 {
                event(day, 10, "Course viewed", "System", "Course: History 101");
                if rng.next() < 0.5 {
                    event(day, 11, "Discussion viewed", "Forum", "Forum: Week reading");
                }
            }
        }
        let submitted = !withdrawn && rng.next() < engagement + 0.2;
        let grade = if submitted {
            event(
                essay_due - 1,
                20,
                "A submission has been submitted.",
                "Assignment",
                "Assignment: Essay 1",
            );
            let g = (30.0 + 60.0 * engagement + 10.0 * (rng.next() - 0.5)).min(100.0);
            format!("{g:.2}")
        } else {
            "-".into()
        };
        let _ = writeln!(book, "{first},{last},{email},{grade}");
        let _ = write!(students, "{email},{id}\r\n");
        let (result, on) = if withdrawn {
            ("Withdrawn", (start + Duration::days(28)).to_string())
        } else if submitted && engagement + 0.3 * rng.next() > 0.45 {
            ("Pass", String::new())
        } else {
            ("Fail", String::new())
        };
        let _ = writeln!(outcomes, "{id},HIS101-2023J,{result},{on}");
    }
    let append = |file: &str, rows: &str| {
        let path = dir.join(file);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(rows);
        fs::write(path, text).unwrap();
    };
    append("log-2023J.csv", &log);
    append("gradebook-2023J.csv", &book);
    append("outcomes-2023J.csv", &outcomes);
    append("students.csv", &students);
}

#[test]
fn a_blank_course_total_is_in_progress_and_a_running_moodle_course_is_scored() {
    let env = env("moodle-running", false).unwrap();
    running_sample(&env.dir.path().join("moodle"));
    let run = |env: &Env| {
        let out = env.lodestar(
            &[
                "pipeline",
                "run",
                "--export",
                "moodle/course-running.toml",
                "--json",
            ],
            &[],
        );
        let run: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (run, String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // The first night of the 2024J term: only 2023J has finished, so the model trains on it
    // and there is no later finished presentation to test on. The run converts and ingests the
    // course, trains and registers version 1, and the gate refuses it: with no evaluation it has
    // no evidence to promote on, and there is no champion to keep serving.
    let (first, stderr) = run(&env);
    assert_eq!(first["status"], "failed", "{first}\n{stderr}");
    for step in ["ingest", "features", "train", "evaluate", "register"] {
        assert_eq!(
            first["summary"]["steps"][step]["status"], "succeeded",
            "{step}: {first}"
        );
    }
    let refused = first["error"].as_str().unwrap();
    assert!(
        refused.contains("step gate failed")
            && refused.contains("no champion to keep")
            && refused.contains("no evaluation at week 5"),
        "{refused}"
    );
    assert_eq!(first["summary"]["score"], Value::Null, "{first}");

    // The conversion kept every identifiable student of the running term, none with a result:
    // Ben's and Chen's blank course totals and Ana's running total (ignored before the
    // presentation ends, counted as such) all mean "in progress".
    let export = env
        .dir
        .path()
        .join("lodestar-data/exports/moodle-course-running");
    let info = fs::read_to_string(export.join("studentInfo.csv")).unwrap();
    let running: Vec<Vec<&str>> = info
        .lines()
        .map(|l| {
            l.split(',')
                .map(|c| c.trim_matches('"'))
                .collect::<Vec<_>>()
        })
        .filter(|r| r[0] == "HIS101" && r[1] == "2024J")
        .collect();
    assert_eq!(
        running.iter().map(|r| r[2]).collect::<Vec<_>>(),
        ["1001", "1002", "1003"],
        "{info}"
    );
    for r in &running {
        assert_eq!(r.last(), Some(&""), "no final result yet: {r:?}");
    }
    let source: Value =
        serde_json::from_str(&fs::read_to_string(export.join("source.json")).unwrap()).unwrap();
    let cells = source["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "gradebook-2024J-running.csv (grade cells)")
        .unwrap_or_else(|| panic!("{source}"));
    assert_eq!(
        cells["ignored"],
        serde_json::json!({"a course total before the presentation ends (a running total, not a final result)": 1}),
        "{cells}"
    );
    // What the conversion quarantined of the running term: records from after the as-of date, a
    // time in no format and the one gradebook row with no student id (Dana: no ID number and
    // not in the student mapping), never a student for lacking an outcome.
    let quarantine = fs::read_to_string(export.join("source_quarantine.csv")).unwrap();
    let of_running: Vec<&str> = quarantine
        .lines()
        .filter(|l| l.starts_with("\"log-2024J.csv\"") || l.starts_with("\"gradebook-2024J"))
        .collect();
    assert!(!of_running.is_empty(), "{quarantine}");
    for l in &of_running {
        let reason = l.split("\",").nth(2).unwrap_or_default().to_lowercase();
        assert!(
            !["result", "outcome", "total", "in progress"]
                .iter()
                .any(|w| reason.contains(w)),
            "a running student quarantined for lacking an outcome: {l}"
        );
    }
    let rows: Vec<&&str> = of_running
        .iter()
        .filter(|l| l.starts_with("\"gradebook-2024J-running.csv\","))
        .collect();
    assert!(
        rows.len() == 1 && rows[0].contains("no student id") && rows[0].contains("Dana,Ruiz"),
        "{quarantine}"
    );
    // Ingest accepted every converted row, and records the term as running as of the
    // institution's date.
    let snapshot = first["summary"]["snapshot"].as_str().unwrap();
    let manifest: Value = serde_json::from_str(
        &fs::read_to_string(
            env.dir
                .path()
                .join("lodestar-data/snapshots")
                .join(snapshot)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for t in manifest["tables"].as_array().unwrap() {
        assert_eq!(t["quarantined"], 0, "{t}");
    }
    let term = first["summary"]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["presentation"] == "HIS101-2024J")
        .unwrap_or_else(|| panic!("{first}"));
    assert_eq!(term["state"], "running", "{term}");
    assert_eq!(term["as_of_source"], "configured", "{term}");
    assert_eq!(term["as_of_day"], 15, "{term}");
    assert_eq!(term["current_week"], 1, "{term}");
    assert_eq!(term["students"], 3, "{term}");
    assert_eq!(term["outcomes_known"], 0, "{term}");

    // Version 1 trained on the finished presentation only, and its report says it is untested.
    let model = env.json(&["models", "show", "at-risk", "--json"]);
    let report = &model[0]["report"];
    assert_eq!(model[0]["version"], 1, "{model}");
    assert_eq!(
        report["train_presentations"],
        serde_json::json!(["HIS101-2023J"]),
        "{report}"
    );
    assert_eq!(
        report["test_presentations"],
        serde_json::json!([]),
        "{report}"
    );
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("Not evaluated")),
        "{report}"
    );

    // What a data team does on its first night: no later term can test this model until 2024J
    // ends, and advisors need this week's risk now, so someone accountable promotes version 1
    // without the gate, giving the reason (recorded in the registry). The next run keeps it as
    // the champion (the candidate is the same version) and scores the running term.
    env.ok(&[
        "models",
        "promote",
        "at-risk",
        "1",
        "--force",
        "first night of HIS101: no finished presentation after 2023J to test on; reviewed the training report",
    ]);
    assert_eq!(env.registry(), (1, Some(1)));
    let (second, stderr) = run(&env);
    assert_eq!(second["status"], "succeeded", "{second}\n{stderr}");
    assert_eq!(second["summary"]["gate"]["champion"], 1, "{second}");
    let scored = &second["summary"]["score"]["presentations"];
    assert_eq!(
        scored,
        &serde_json::json!([{
            "presentation": "HIS101-2024J",
            "state": "running",
            "week": 1,
            "weeks": 15,
            "as_of_day": 15,
            "as_of_date": "2024-10-16",
            "students": 3,
        }]),
        "every registered student of the running term, at its current week: {second}"
    );
    assert_eq!(second["summary"]["score"]["stored"], 3, "{second}");
    assert_eq!(
        env.json(&["models", "show", "at-risk", "--json"])[0]["report"]["train_presentations"],
        serde_json::json!(["HIS101-2023J"])
    );

    // An advisor with the running presentation sees its students, as of the date in words.
    let password = env.advisor("HIS101-2024J");
    let config = env.dir.path().join("lodestar.toml");
    let url = [("LODESTAR_DATABASE_URL", env.database_url.as_str())];
    let (mut dashboard, base) = start(&env, "dashboard", &config, &url);
    let caseload = dashboard_page(&base, "advisor", &password, "/caseload");
    assert!(caseload.starts_with("HTTP/1.1 200"), "{caseload}");
    assert!(
        caseload.contains("HIS101-2024J — running, as of 16 Oct 2024, week 1 of 15"),
        "{caseload}"
    );
    let mut students: Vec<&str> = caseload
        .split("href=\"/students/HIS101-2024J/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    students.sort_unstable();
    students.dedup();
    assert_eq!(students.len(), 3, "{caseload}");
    let page = dashboard_page(
        &base,
        "advisor",
        &password,
        &format!("/students/HIS101-2024J/{}", students[0]),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("as of week 1 "), "{page}");
    // The finished term is history: nothing of it was scored tonight, and the running term is
    // not listed there.
    let history = dashboard_page(&base, "advisor", &password, "/caseload?term=finished");
    assert!(history.starts_with("HTTP/1.1 200"), "{history}");
    assert!(!history.contains("/students/HIS101-2024J/"), "{history}");
    assert!(dashboard.stop());
}
