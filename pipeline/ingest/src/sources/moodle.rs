//! Moodle: the course log export (the Logs report downloaded as CSV, columns `Time`, `User full
//! name`, `Affected user`, `Event context`, `Component`, `Event name`, `Description`, `Origin`,
//! `IP address` in any order) and the gradebook export (one row per student: `First name`, `Last
//! name`, `ID number`, `Email address`, then one column per grade item).
//!
//! Every log event of a student becomes one click on its activity (the event context) on its day;
//! the component says the activity type (and so its family). A submission event dates an
//! assignment or quiz attempt; the gradebook gives its score. Students are identified by the
//! gradebook's `ID number`, or by the institution's mapping of names or e-mail addresses to ids.
//!
//! Every gradebook student is registered. Their final result comes from the outcomes CSV or the
//! course total (only a number is a result); a student with neither is in progress: an empty
//! `final_result`, kept with their activity. Events dated after the export's as-of date are
//! refused, and with them the submissions they would date.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::NaiveDate;
use lodestar_domain::Table;

use super::time::{Parsed, decide_order, parse_moodle_time, resolve};
use super::{
    Canonical, PresentationSource, ResultRule, SourceConfig, SourceCount, SourceQuarantine,
    StudentMap, after_as_of, day_of, find, header_error, open_csv, presentations, read_outcomes,
    read_records, record_text, student_rows, width_reason,
};
use crate::IngestError;

/// The log columns a conversion needs.
pub const LOG_COLUMNS: [&str; 5] = [
    "Time",
    "User full name",
    "Event context",
    "Component",
    "Event name",
];

/// Events that hand in work: they date a submission.
const SUBMISSION_EVENTS: [&str; 5] = [
    "a submission has been submitted.",
    "submission created.",
    "quiz attempt submitted",
    "attempt submitted",
    "submission submitted",
];

/// The built-in activity types by Moodle component (as the log report names it).
pub fn activity_type(component: &str, event: &str, overrides: &BTreeMap<String, String>) -> String {
    if let Some(t) = overrides
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(component.trim()))
    {
        return t.1.clone();
    }
    let c = component.trim().to_lowercase();
    match c.as_str() {
        "system" if event.trim().eq_ignore_ascii_case("course viewed") => "homepage",
        "file" | "resource" => "resource",
        "page" | "label" | "text and media area" => "page",
        "url" => "url",
        "folder" => "folder",
        "book" => "oucontent",
        "lesson" | "h5p" | "interactive content" | "scorm package" => "htmlactivity",
        "glossary" => "glossary",
        "forum" => "forumng",
        "wiki" => "ouwiki",
        "chat" | "bigbluebutton" => "oucollaborate",
        "quiz" => "quiz",
        "feedback" | "questionnaire" | "choice" | "survey" => "questionnaire",
        other => return other.replace(' ', ""),
    }
    .to_owned()
}

/// The log's event context for a gradebook item: `Assignment: Essay 1 (Real)` → `Assignment: Essay 1`.
fn activity_of_item(item: &str) -> String {
    let t = item.trim();
    match t.rfind(" (") {
        Some(i) if t.ends_with(')') => t[..i].to_owned(),
        _ => t.to_owned(),
    }
}

struct Gradebook {
    /// Student id by lower-case full name; names two students share map to None.
    by_name: BTreeMap<String, Option<i64>>,
    /// Student id by lower-case e-mail address.
    by_email: BTreeMap<String, i64>,
    /// Students in file order, with their grade cells per assessment (raw text).
    students: Vec<(i64, u64, Vec<String>, Option<String>)>,
}

fn read_gradebook(
    path: &Path,
    p: &PresentationSource,
    map: Option<&StudentMap>,
    count: &mut SourceCount,
    q: &mut SourceQuarantine,
) -> Result<Gradebook, IngestError> {
    let (mut reader, headers) = open_csv(path)?;
    let first = find(&headers, "First name");
    let last = find(&headers, "Last name");
    let id_number = find(&headers, "ID number");
    let email = find(&headers, "Email address");
    let (Some(first), Some(last)) = (first, last) else {
        return Err(header_error(
            path,
            "not a Moodle gradebook export: no \"First name\" and \"Last name\" columns",
            &headers,
        ));
    };
    let mut items = Vec::new();
    for a in &p.assessments {
        items.push(find(&headers, &a.item).ok_or_else(|| {
            header_error(
                path,
                &format!("no grade item column {:?}", a.item),
                &headers,
            )
        })?);
    }
    let result_col = match &p.result {
        Some(r) => Some(find(&headers, &r.column).ok_or_else(|| {
            header_error(
                path,
                &format!("no column {:?} for the final result", r.column),
                &headers,
            )
        })?),
        None => None,
    };
    let mut book = Gradebook {
        by_name: BTreeMap::new(),
        by_email: BTreeMap::new(),
        students: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for (line, record) in read_records(&mut reader, count, q)? {
        if record.len() != headers.len() {
            q.put(
                count,
                line,
                &width_reason(&record, &headers),
                &record_text(&record),
            )?;
            continue;
        }
        let name = format!("{} {}", record[first].trim(), record[last].trim());
        let mail = email
            .map(|e| record[e].trim().to_lowercase())
            .unwrap_or_default();
        let mapped = map.and_then(|m| m.get(&mail).or_else(|| m.get(&name)));
        let id = match mapped {
            Some(id) => id,
            None => match id_number
                .map(|c| record[c].trim())
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(id) => id,
                None => {
                    q.put(
                        count,
                        line,
                        "no student id: the ID number is empty or not a number and the student mapping does not name this student",
                        &record_text(&record),
                    )?;
                    continue;
                }
            },
        };
        if !seen.insert(id) {
            q.put(
                count,
                line,
                &format!("student {id} appears twice"),
                &record_text(&record),
            )?;
            continue;
        }
        let lower = name.to_lowercase();
        book.by_name
            .entry(lower)
            .and_modify(|v| *v = None)
            .or_insert(Some(id));
        if !mail.is_empty() {
            book.by_email.insert(mail, id);
        }
        let cells = items.iter().map(|c| record[*c].trim().to_owned()).collect();
        let result = result_col.map(|c| record[c].trim().to_owned());
        book.students.push((id, line, cells, result));
        count.converted += 1;
    }
    Ok(book)
}

/// A grade cell as a percentage: `None` for no grade (`-` or empty), `Err` for what is not a number.
fn grade(cell: &str, max: f64) -> Result<Option<f64>, String> {
    let c = cell.trim().trim_end_matches('%').trim();
    if c.is_empty() || c == "-" {
        return Ok(None);
    }
    let v: f64 = c
        .replace(',', ".")
        .parse()
        .map_err(|_| format!("grade {cell:?} is not a number"))?;
    Ok(Some(v / max * 100.0))
}

/// A final result from a course-total cell: `Ok(None)` for a blank cell (no outcome yet).
fn result_of(rule: &ResultRule, cell: &str) -> Result<Option<&'static str>, String> {
    Ok(grade(cell, 100.0)?.map(|v| {
        if rule.distinction_mark.is_some_and(|d| v >= d) {
            "Distinction"
        } else if v >= rule.pass_mark {
            "Pass"
        } else {
            "Fail"
        }
    }))
}

struct LogRow {
    line: u64,
    record: csv::StringRecord,
    time: Option<Parsed>,
}

/// Converts every presentation of a Moodle source.
pub(crate) fn convert(
    cfg: &SourceConfig,
    base: &Path,
    map: Option<&StudentMap>,
    c: &mut Canonical,
    q: &mut SourceQuarantine,
) -> Result<Vec<SourceCount>, IngestError> {
    let mut counts = Vec::new();
    let as_of = cfg.as_of;
    for (p, first_assessment) in presentations(cfg, c) {
        // Before the presentation's end the course total is a running total, not a result.
        let totals_final = as_of.is_none_or(|d| day_of(p, d) >= i32::from(p.length_days));
        let rel = |f: &Option<std::path::PathBuf>| f.clone().unwrap_or_default();
        let (gb_rel, log_rel) = (rel(&p.gradebook), rel(&p.log));
        let gb_path = base.join(&gb_rel);
        let mut gb_count = SourceCount::new(&gb_rel.display().to_string());
        let book = read_gradebook(&gb_path, p, map, &mut gb_count, q)?;
        let outcomes = match &p.outcomes {
            Some(f) => {
                let mut oc = SourceCount::new(&f.display().to_string());
                let o = read_outcomes(&base.join(f), p, as_of, &mut oc, q)?;
                counts.push(oc);
                Some(o)
            }
            None => None,
        };

        // The log: every row read first, so the file's own dates can decide their order.
        let log_path = base.join(&log_rel);
        let log_name = log_rel.display().to_string();
        let mut log_count = SourceCount::new(&log_name);
        let (mut reader, headers) = open_csv(&log_path)?;
        let missing: Vec<&str> = LOG_COLUMNS
            .iter()
            .copied()
            .filter(|name| find(&headers, name).is_none())
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|m| format!("{m:?}")).collect();
            return Err(header_error(
                &log_path,
                &format!(
                    "not a Moodle log export (download the course's Logs report as CSV): no column {}",
                    names.join(", ")
                ),
                &headers,
            ));
        }
        let col = |name| find(&headers, name).unwrap_or_default();
        let (time_c, user_c, context_c, component_c, event_c) = (
            col("Time"),
            col("User full name"),
            col("Event context"),
            col("Component"),
            col("Event name"),
        );
        let mut rows = Vec::new();
        for (line, record) in read_records(&mut reader, &mut log_count, q)? {
            if record.len() == headers.len() {
                let time = parse_moodle_time(&record[time_c]);
                rows.push(LogRow { line, record, time });
            } else {
                q.put(
                    &mut log_count,
                    line,
                    &width_reason(&record, &headers),
                    &record_text(&record),
                )?;
            }
        }
        let parsed: Vec<Parsed> = rows.iter().filter_map(|r| r.time).collect();
        let order = decide_order(&parsed, cfg.date_order, &log_path.display().to_string())
            .map_err(IngestError::Source)?;
        let mut submitted: BTreeMap<(i64, String), i32> = BTreeMap::new();
        // Submissions refused for lying after the as-of date: (student, activity) → first date.
        let mut submitted_later: BTreeMap<(i64, String), NaiveDate> = BTreeMap::new();
        for row in rows {
            let r = &row.record;
            let name = r[user_c].trim().to_lowercase();
            let student = match map.and_then(|m| m.get(&name)) {
                Some(id) => Some(id),
                None => match book.by_name.get(&name) {
                    Some(Some(id)) => Some(*id),
                    Some(None) => {
                        q.put(
                            &mut log_count,
                            row.line,
                            &format!("{:?} names two students in the gradebook; give a student mapping (students = \"...\")", r[user_c].trim()),
                            &record_text(r),
                        )?;
                        continue;
                    }
                    None => None,
                },
            };
            let Some(student) = student else {
                log_count.ignore(
                    "not a student in the gradebook (a teacher, an administrator or another user)",
                );
                continue;
            };
            let Some(time) = row.time else {
                q.put(
                    &mut log_count,
                    row.line,
                    &format!("time {:?} is in no known format", r[time_c].trim()),
                    &record_text(r),
                )?;
                continue;
            };
            let date = match resolve(time, order, p.start) {
                Ok(d) => d,
                Err(e) => {
                    q.put(&mut log_count, row.line, &e, &record_text(r))?;
                    continue;
                }
            };
            let context = r[context_c].trim().to_owned();
            let event = r[event_c].trim();
            let submission = SUBMISSION_EVENTS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(event));
            if let Some(reason) = after_as_of(date, as_of) {
                if submission {
                    submitted_later
                        .entry((student, context))
                        .and_modify(|d| *d = (*d).min(date))
                        .or_insert(date);
                }
                q.put(&mut log_count, row.line, &reason, &record_text(r))?;
                continue;
            }
            let day = day_of(p, date);
            let kind = activity_type(&r[component_c], event, &cfg.activity_types);
            let site = c.site(p, &context, &kind);
            c.click(p, student, site, day);
            if submission {
                submitted
                    .entry((student, context))
                    .and_modify(|d| *d = (*d).min(day))
                    .or_insert(day);
            }
            log_count.converted += 1;
        }

        // Submissions: the first submission event dates it, the gradebook scores it.
        let mut grades = SourceCount::new(&format!("{} (grade cells)", gb_count.file));
        let mut students: BTreeMap<i64, String> = BTreeMap::new();
        for (student, line, cells, result_cell) in &book.students {
            for (i, (a, cell)) in p.assessments.iter().zip(cells).enumerate() {
                let activity = a
                    .activity
                    .clone()
                    .unwrap_or_else(|| activity_of_item(&a.item));
                let day = submitted.get(&(*student, activity.clone())).copied();
                if day.is_none() && (cell.is_empty() || cell == "-") {
                    continue;
                }
                grades.read += 1;
                let score = match grade(cell, a.max) {
                    Ok(s) => s,
                    Err(e) => {
                        q.put(&mut grades, *line, &format!("{}: {e}", a.item), cell)?;
                        continue;
                    }
                };
                let Some(day) = day else {
                    let reason = match submitted_later.get(&(*student, activity.clone())) {
                        Some(d) => format!(
                            "{}: graded, but the submission of {activity:?} by student {student} is {}",
                            a.item,
                            after_as_of(*d, as_of).unwrap_or_default()
                        ),
                        None => format!(
                            "{}: graded, but the log holds no submission of {activity:?} by student {student}",
                            a.item
                        ),
                    };
                    q.put(&mut grades, *line, &reason, cell)?;
                    continue;
                };
                c.push(
                    Table::StudentAssessment,
                    vec![
                        (first_assessment + i as u64).to_string(),
                        student.to_string(),
                        day.to_string(),
                        "0".into(),
                        score.map(|s| format!("{s:.2}")).unwrap_or_default(),
                    ],
                );
                grades.converted += 1;
            }
            // Every gradebook student is registered; with no result yet, in progress (empty).
            let mut result = String::new();
            if let (Some(rule), Some(cell)) = (&p.result, result_cell)
                && !(cell.is_empty() || cell == "-")
            {
                grades.read += 1;
                match result_of(rule, cell) {
                    Err(e) => q.put(&mut grades, *line, &format!("{}: {e}", rule.column), cell)?,
                    Ok(_) if !totals_final => grades.ignore(
                        "a course total before the presentation ends (a running total, not a final result)",
                    ),
                    Ok(r) => {
                        result = r.unwrap_or_default().to_owned();
                        grades.converted += 1;
                    }
                }
            }
            students.insert(*student, result);
        }
        // The student record system's outcomes, when given, decide (and add students who left
        // the course before the gradebook was exported); a blank result there leaves the
        // gradebook's.
        let mut withdrawn = BTreeMap::new();
        for (student, (result, on)) in outcomes.into_iter().flatten() {
            let known = students.entry(student).or_default();
            if !result.is_empty() {
                *known = result;
            }
            if let Some(d) = on {
                withdrawn.insert(student, day_of(p, d));
            }
        }
        for (id, result) in &students {
            student_rows(c, p, *id, result, withdrawn.get(id).copied());
        }
        counts.extend([log_count, gb_count, grades]);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_map_to_activity_types_and_overrides_win() {
        let none = BTreeMap::new();
        assert_eq!(activity_type("System", "Course viewed", &none), "homepage");
        assert_eq!(
            activity_type("File", "Course module viewed", &none),
            "resource"
        );
        assert_eq!(activity_type("Forum", "Post created", &none), "forumng");
        assert_eq!(
            activity_type("Quiz", "Quiz attempt submitted", &none),
            "quiz"
        );
        assert_eq!(
            activity_type("Assignment", "Submission created.", &none),
            "assignment"
        );
        assert_eq!(activity_type("Virtual Lab", "viewed", &none), "virtuallab");
        let mine = BTreeMap::from([("virtual lab".to_owned(), "htmlactivity".to_owned())]);
        assert_eq!(
            activity_type("Virtual Lab", "viewed", &mine),
            "htmlactivity"
        );
    }

    #[test]
    fn grade_items_and_cells_read_as_moodle_writes_them() {
        assert_eq!(
            activity_of_item("Assignment: Essay 1 (Real)"),
            "Assignment: Essay 1"
        );
        assert_eq!(activity_of_item("Quiz: Week 2"), "Quiz: Week 2");
        assert_eq!(grade("7.50", 10.0).unwrap(), Some(75.0));
        assert_eq!(grade("7,50", 10.0).unwrap(), Some(75.0));
        assert_eq!(grade("-", 10.0).unwrap(), None);
        assert_eq!(grade("", 10.0).unwrap(), None);
        assert!(grade("A+", 10.0).is_err());
    }
}
