//! xAPI statements as a learning record store exports them: JSON lines, or one JSON array.
//! Each statement by a student about an activity of the course (the object, or the context's
//! parent, grouping or other activities, names the course IRI) is a click on its object on its
//! day; the object's definition type says the activity type. A statement that completes, passes,
//! fails, scores or submits a configured assessment dates that submission, and its result
//! (`score.scaled`, or `raw` of `max`) scores it. Voided statements (verb `voided`, object a
//! `StatementRef`) are removed before anything is counted as learning.
//!
//! Every student with a statement in the course, and every student of the outcomes CSV, is
//! registered; one without an outcome row (or with a blank result) is in progress: an empty
//! `final_result`, kept with their activity. Statements dated after the export's as-of date are
//! refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lodestar_domain::Table;
use serde_json::Value;

use super::time::parse_xapi_timestamp;
use super::{
    Canonical, SourceConfig, SourceCount, SourceQuarantine, StudentMap, after_as_of, day_of,
    presentations, read_outcomes, student_rows,
};
use crate::IngestError;

const VOIDED: &str = "http://adlnet.gov/expapi/verbs/voided";
/// Verbs that hand in an assessment.
const SUBMITTING: [&str; 5] = ["completed", "passed", "failed", "scored", "submitted"];

/// The activity type of an xAPI activity definition type IRI (its last path segment).
pub fn activity_type(
    definition_type: Option<&str>,
    overrides: &BTreeMap<String, String>,
) -> String {
    let Some(iri) = definition_type else {
        return "other".into();
    };
    if let Some(t) = overrides.get(iri) {
        return t.clone();
    }
    let last = iri
        .trim_end_matches('/')
        .rsplit(['/', '#'])
        .next()
        .unwrap_or("")
        .to_lowercase();
    match last.as_str() {
        "course" => "homepage",
        "module" | "lesson" | "objective" => "oucontent",
        "media" | "file" | "document" | "link" | "video" | "audio" => "resource",
        "assessment" | "question" | "interaction" | "cmi.interaction" | "quiz" => "quiz",
        "discussion" | "forum" | "comment" => "forumng",
        "meeting" | "webinar" => "oucollaborate",
        "survey" => "questionnaire",
        other => return other.replace(' ', ""),
    }
    .to_owned()
}

/// The statements of a file with their line (JSON lines) or position (array, 1-based).
fn statements(
    path: &Path,
    count: &mut SourceCount,
    q: &mut SourceQuarantine,
) -> Result<Vec<(u64, Value)>, IngestError> {
    let text = std::fs::read_to_string(path).map_err(|e| IngestError::io(path, e))?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut out = Vec::new();
    if trimmed.starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(trimmed).map_err(|e| {
            IngestError::Source(format!(
                "{}: not a JSON array of statements: {e}",
                path.display()
            ))
        })?;
        for (i, v) in all.into_iter().enumerate() {
            count.read += 1;
            out.push((i as u64 + 1, v));
        }
        return Ok(out);
    }
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        count.read += 1;
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => out.push((line_no, v)),
            Ok(_) => q.put(count, line_no, "not a JSON object", line)?,
            Err(e) => q.put(count, line_no, &format!("not JSON: {e}"), line)?,
        }
    }
    Ok(out)
}

/// The actor's keys, most specific first: mbox, mbox without `mailto:`, account name.
fn actor_keys(s: &Value) -> Vec<String> {
    let actor = &s["actor"];
    let mut keys = Vec::new();
    if let Some(m) = actor["mbox"].as_str() {
        keys.push(m.to_owned());
        keys.push(m.trim_start_matches("mailto:").to_owned());
    }
    if let Some(n) = actor["account"]["name"].as_str() {
        keys.push(n.to_owned());
    }
    if let Some(h) = actor["mbox_sha1sum"].as_str() {
        keys.push(h.to_owned());
    }
    keys
}

fn in_course(s: &Value, course: &str) -> bool {
    if s["object"]["id"].as_str() == Some(course) {
        return true;
    }
    let ctx = &s["context"]["contextActivities"];
    ["parent", "grouping", "category", "other"].iter().any(|k| {
        let v = &ctx[*k];
        let many = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
        many.iter().any(|a| a["id"].as_str() == Some(course))
    })
}

fn score_of(s: &Value) -> Option<f64> {
    let score = &s["result"]["score"];
    if let Some(scaled) = score["scaled"].as_f64() {
        return Some(scaled * 100.0);
    }
    match (score["raw"].as_f64(), score["max"].as_f64()) {
        (Some(raw), Some(max)) if max > 0.0 => Some(raw / max * 100.0),
        _ => None,
    }
}

/// Converts every presentation of an xAPI source.
pub(crate) fn convert(
    cfg: &SourceConfig,
    base: &Path,
    map: Option<&StudentMap>,
    c: &mut Canonical,
    q: &mut SourceQuarantine,
) -> Result<Vec<SourceCount>, IngestError> {
    let mut counts = Vec::new();
    for (p, first_assessment) in presentations(cfg, c) {
        let rel = p.statements.clone().unwrap_or_default();
        let mut count = SourceCount::new(&rel.display().to_string());
        let all = statements(&base.join(&rel), &mut count, q)?;
        let course = p.course.clone().unwrap_or_default();
        // Voiding first: a voided statement never counts, wherever it sits in the file.
        let voided: BTreeSet<String> = all
            .iter()
            .filter(|(_, s)| s["verb"]["id"].as_str() == Some(VOIDED))
            .filter_map(|(_, s)| s["object"]["id"].as_str().map(str::to_owned))
            .collect();
        // (student, assessment index) → (first day, best score)
        let mut submitted: BTreeMap<(i64, usize), (i32, Option<f64>)> = BTreeMap::new();
        // Students with a statement in the course, registered whether or not it converts.
        let mut seen = BTreeSet::new();
        for (line, s) in &all {
            let record = s.to_string();
            if s["verb"]["id"].as_str() == Some(VOIDED) {
                count.ignore("voids another statement");
                continue;
            }
            if s["id"].as_str().is_some_and(|id| voided.contains(id)) {
                count.ignore("voided");
                continue;
            }
            let keys = actor_keys(s);
            if keys.is_empty() {
                q.put(
                    &mut count,
                    *line,
                    "statement without actor (no mbox or account)",
                    &record,
                )?;
                continue;
            }
            if !in_course(s, &course) {
                count.ignore("another course");
                continue;
            }
            let student = match map {
                Some(m) => keys.iter().find_map(|k| m.get(k)),
                None => keys.iter().find_map(|k| k.parse::<i64>().ok()),
            };
            let Some(student) = student else {
                if map.is_some() {
                    count.ignore("actor not in the student mapping (a teacher or another user)");
                } else {
                    q.put(
                        &mut count,
                        *line,
                        "the actor has no numeric account name: give a student mapping (students = \"...\")",
                        &record,
                    )?;
                }
                continue;
            };
            seen.insert(student);
            let Some(date) = s["timestamp"].as_str().and_then(parse_xapi_timestamp) else {
                q.put(
                    &mut count,
                    *line,
                    "timestamp missing or not RFC 3339",
                    &record,
                )?;
                continue;
            };
            if let Some(reason) = after_as_of(date, cfg.as_of) {
                q.put(&mut count, *line, &reason, &record)?;
                continue;
            }
            let Some(object) = s["object"]["id"].as_str() else {
                q.put(&mut count, *line, "statement without an object id", &record)?;
                continue;
            };
            let day = day_of(p, date);
            let kind = activity_type(
                s["object"]["definition"]["type"].as_str(),
                &cfg.activity_types,
            );
            let site = c.site(p, object, &kind);
            c.click(p, student, site, day);
            let verb = s["verb"]["id"].as_str().unwrap_or("");
            let verb = verb.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if SUBMITTING.contains(&verb)
                && let Some(i) = p.assessments.iter().position(|a| a.item == object)
            {
                let score = score_of(s);
                submitted
                    .entry((student, i))
                    .and_modify(|(d, best)| {
                        *d = (*d).min(day);
                        *best = match (*best, score) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                    })
                    .or_insert((day, score));
            }
            count.converted += 1;
        }
        for ((student, i), (day, score)) in submitted {
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
        }
        let mut outcomes = BTreeMap::new();
        counts.push(count);
        if let Some(rel) = &p.outcomes {
            let mut oc = SourceCount::new(&rel.display().to_string());
            outcomes = read_outcomes(&base.join(rel), p, cfg.as_of, &mut oc, q)?;
            counts.push(oc);
        }
        // Students of the statements with no outcome row are in progress.
        for student in seen {
            outcomes.entry(student).or_insert((String::new(), None));
        }
        for (student, (result, on)) in &outcomes {
            student_rows(c, p, *student, result, on.map(|d| day_of(p, d)));
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definition_types_map_to_activity_types() {
        let none = BTreeMap::new();
        let t = |iri: &str| activity_type(Some(iri), &none);
        assert_eq!(t("http://adlnet.gov/expapi/activities/course"), "homepage");
        assert_eq!(t("http://adlnet.gov/expapi/activities/assessment"), "quiz");
        assert_eq!(
            t("http://id.tincanapi.com/activitytype/discussion"),
            "forumng"
        );
        assert_eq!(t("http://adlnet.gov/expapi/activities/media"), "resource");
        assert_eq!(activity_type(None, &none), "other");
    }

    #[test]
    fn actors_scores_and_course_membership() {
        let s = json!({
            "actor": {"mbox": "mailto:Ana@uni.example"},
            "object": {"id": "https://lms.example/quiz/1"},
            "context": {"contextActivities": {"parent": [{"id": "https://lms.example/course/7"}]}},
            "result": {"score": {"raw": 8, "max": 10}}
        });
        assert_eq!(
            actor_keys(&s),
            ["mailto:Ana@uni.example", "Ana@uni.example"]
        );
        assert!(in_course(&s, "https://lms.example/course/7"));
        assert!(!in_course(&s, "https://lms.example/course/8"));
        assert_eq!(score_of(&s), Some(80.0));
        let scaled = json!({"result": {"score": {"scaled": 0.5, "raw": 1, "max": 10}}});
        assert_eq!(score_of(&scaled), Some(50.0));
        assert!(actor_keys(&json!({"actor": {"name": "no id"}})).is_empty());
    }
}
