//! A synthetic Moodle course, end to end through the binary: two presentations of a course's
//! log and gradebook exports (written here, deterministic; one in the long date format, one in
//! day-first numeric dates) → `lodestar ingest --format moodle` → `lodestar pipeline run` on the
//! converted export (train on the earlier presentation, evaluate and score the later) → an
//! advisor's caseload and a student's page with the reasons for their risk.

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
const ESSAYS: [(&str, i64); 2] = [("Assignment: Essay 1", 27), ("Assignment: Essay 2", 62)];

fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// Writes one presentation's log, gradebook and outcomes; `long_dates` picks the date format.
fn presentation(
    dir: &Path,
    code: &str,
    start: NaiveDate,
    first_id: u32,
    long_dates: bool,
    rng: &mut Rng,
) {
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
        let last_day = if withdrawn { 30 } else { LENGTH - 1 };
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
            if due <= last_day && rng.next() < engagement + 0.25 {
                let day = due - 2 + (rng.next() * 4.0) as i64;
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
        let _ = write!(
            book,
            "Student{id},Surname{id},{id},s{id}@uni.example,{},{},{total:.2}\r\n",
            cells[0], cells[1]
        );
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
}

fn course(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(2026);
    let mut config = String::from("format = \"moodle\"\n");
    for (code, start, first_id, long_dates) in [
        (
            "2023J",
            NaiveDate::from_ymd_opt(2023, 10, 2).unwrap(),
            50_000,
            true,
        ),
        (
            "2024J",
            NaiveDate::from_ymd_opt(2024, 9, 30).unwrap(),
            60_000,
            false,
        ),
    ] {
        presentation(dir, code, start, first_id, long_dates, &mut rng);
        let _ = write!(
            config,
            "\n[[presentations]]\nmodule = \"HIS101\"\npresentation = \"{code}\"\nstart = {start}\nlength_days = {LENGTH}\nlog = \"log-{code}.csv\"\ngradebook = \"gradebook-{code}.csv\"\noutcomes = \"outcomes-{code}.csv\"\n"
        );
        for (essay, due) in ESSAYS {
            let _ = write!(
                config,
                "\n[[presentations.assessments]]\nitem = \"{essay} (Real)\"\ntype = \"TMA\"\ndue = {}\nweight = 50\n",
                start + Duration::days(due)
            );
        }
    }
    fs::write(dir.join("course.toml"), config).unwrap();
}

#[test]
fn a_moodle_course_goes_from_its_exports_to_an_advisors_caseload_with_reasons() {
    let env = env("moodle", false).unwrap();
    course(&env.dir.path().join("moodle"));

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
        serde_json::json!(["HIS101-2023J", "HIS101-2024J"])
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
    }

    // The nightly pipeline given the source configuration itself (as `pipeline.export` would
    // be): it converts, then trains on 2023J and scores 2024J.
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
    assert!(run["summary"].to_string().contains("HIS101-2024J"), "{run}");
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

    // An advisor with the 2024J presentation sees their caseload and a student's reasons.
    let password = env.advisor("HIS101-2024J");
    let config = env.dir.path().join("lodestar.toml");
    let url = [("LODESTAR_DATABASE_URL", env.database_url.as_str())];
    let (mut dashboard, base) = start(&env, "dashboard", &config, &url);
    let caseload = dashboard_page(&base, "advisor", &password, "/caseload");
    assert!(caseload.starts_with("HTTP/1.1 200"), "{caseload}");
    let link = caseload
        .split("href=\"/students/HIS101-2024J/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no student of HIS101-2024J in the caseload:\n{caseload}"));
    let page = dashboard_page(
        &base,
        "advisor",
        &password,
        &format!("/students/HIS101-2024J/{link}"),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
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
