//! The student page (risk by week, the explanation, the weekly timeline, notes, feedback) and its
//! forms: outreach notes and feedback on a prediction. A student outside an advisor's caseload is
//! "not found".

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use lodestar_domain::TierThresholds;
use lodestar_store::StoreError;
use serde::Deserialize;
use serde_json::Value;

use super::{Nav, St, nav, percent, render};
use crate::session::SignedIn;
use crate::{AppState, PageError, charts};

fn split_presentation(p: &str) -> Result<(&str, &str), PageError> {
    p.rsplit_once('-')
        .filter(|(m, c)| !m.is_empty() && !c.is_empty())
        .ok_or(PageError::NotFound)
}

/// Refuses (404) a student outside an advisor's caseload.
async fn may_see(
    state: &AppState,
    s: &SignedIn,
    module: &str,
    code: &str,
    id: i64,
) -> Result<(), PageError> {
    if s.is_admin()
        || state
            .store
            .in_caseload(s.user().id, module, code, id)
            .await?
    {
        Ok(())
    } else {
        Err(PageError::NotFound)
    }
}

struct FactorView {
    text: String,
    strength: String,
}

struct WeekView {
    week: i64,
    percent: String,
    tier: String,
    clicks: String,
    active_days: String,
    assessments: String,
    missing: String,
    late: String,
    score: String,
}

struct NoteView {
    id: i64,
    author: String,
    note: String,
    outcome: String,
    when: String,
    mine: bool,
}

#[derive(Template)]
#[template(path = "student.html")]
struct StudentPage {
    nav: Nav,
    presentation: String,
    term: String,
    back: String,
    id_student: i64,
    base: String,
    percent: String,
    tier: String,
    week: i64,
    model_version: i64,
    prediction_id: i64,
    chart: String,
    up: Vec<FactorView>,
    down: Vec<FactorView>,
    weeks: Vec<WeekView>,
    notes: Vec<NoteView>,
    feedback: Vec<String>,
}

fn factor_views(e: &Value, key: &str) -> Vec<FactorView> {
    e.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| FactorView {
                    text: f
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    strength: format!(
                        "{:+.2}",
                        f.get("contribution").and_then(Value::as_f64).unwrap_or(0.0)
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn num(c: &Value, key: &str) -> String {
    c.get(key).and_then(Value::as_f64).map_or_else(
        || "—".to_owned(),
        |v| format!("{}", (v * 10.0).round() / 10.0),
    )
}

/// A student: risk by week, the current explanation, the weekly timeline, notes, feedback.
pub async fn student(
    State(state): St,
    s: SignedIn,
    Path((presentation, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (module, code) = split_presentation(&presentation)?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    may_see(&state, &s, module, code, id).await?;
    let all = state.store.prediction_history(module, code, id).await?;
    let history = lodestar_store::latest_of_each_week(&all);
    let Some(current) = history.last().copied() else {
        return Err(PageError::NotFound);
    };
    state
        .store
        .audit(
            &s.user().username,
            "student.view",
            &format!("{module}-{code}/{id}"),
            &serde_json::json!({"prediction": current.id}),
        )
        .await?;
    let tiers = TierThresholds::default();
    let points: Vec<(i64, f64)> = history
        .iter()
        .map(|p| (p.prediction.as_of_week, p.prediction.probability))
        .collect();
    let notes = state.store.notes(module, code, id).await?;
    let feedback = state.store.feedback_on(current.id).await?;
    let term = state.store.term(module, code).await?;
    let back = match &term {
        Some(t) if t.is_running() => "/caseload",
        _ => "/caseload?term=finished",
    };
    let e = &current.prediction.explanation;
    render(&StudentPage {
        nav: nav(&s),
        term: match &term {
            Some(t) => format!("Term: {}", t.describe()),
            None => "Term: not recorded (scored before the export's terms were kept)".to_owned(),
        },
        back: back.to_owned(),
        base: format!("/students/{module}-{code}/{id}"),
        presentation: format!("{module}-{code}"),
        id_student: id,
        percent: percent(current.prediction.probability),
        tier: current.prediction.tier.clone(),
        week: current.prediction.as_of_week,
        model_version: current.prediction.version,
        prediction_id: current.id,
        chart: charts::risk_by_week(&points, tiers.medium(), tiers.high()),
        up: factor_views(e, "up"),
        down: factor_views(e, "down"),
        weeks: history
            .iter()
            .rev()
            .map(|p| {
                let c = &p.prediction.context;
                WeekView {
                    week: p.prediction.as_of_week,
                    percent: percent(p.prediction.probability),
                    tier: p.prediction.tier.clone(),
                    clicks: num(c, "clicks_this_week"),
                    active_days: num(c, "active_days_this_week"),
                    assessments: format!(
                        "{} of {}",
                        num(c, "assessments_submitted"),
                        num(c, "assessments_due")
                    ),
                    missing: num(c, "assessments_missing"),
                    late: num(c, "assessments_late"),
                    score: num(c, "score_mean"),
                }
            })
            .collect(),
        notes: notes
            .into_iter()
            .map(|n| NoteView {
                mine: n.author_id == s.user().id,
                id: n.id,
                author: n.author,
                note: n.note,
                outcome: n.outcome.unwrap_or_default(),
                when: n.updated_at.get(..16).unwrap_or("").replace('T', " "),
            })
            .collect(),
        feedback: feedback
            .into_iter()
            .map(|(kind, actor, at)| {
                format!(
                    "{} by {actor}, {}",
                    kind.replace('_', " "),
                    at.get(..16).unwrap_or("").replace('T', " ")
                )
            })
            .collect(),
    })
}

/// A note and its outcome.
#[derive(Debug, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    note: String,
    #[serde(default)]
    outcome: String,
}

const OUTCOMES: [&str; 5] = ["", "reached", "no answer", "referred", "declined"];

fn check_note(f: &NoteForm) -> Result<(&str, Option<&str>), PageError> {
    let note = f.note.trim();
    if note.is_empty() || note.len() > 4000 {
        return Err(PageError::BadRequest(
            "A note needs between 1 and 4,000 characters.".into(),
        ));
    }
    if !OUTCOMES.contains(&f.outcome.as_str()) {
        return Err(PageError::BadRequest(format!(
            "Outcome {:?}: choose reached, no answer, referred or declined.",
            f.outcome
        )));
    }
    Ok((note, (!f.outcome.is_empty()).then_some(f.outcome.as_str())))
}

/// Adds an outreach note to a student.
pub async fn add_note(
    State(state): St,
    s: SignedIn,
    Path((presentation, id)): Path<(String, String)>,
    Form(f): Form<NoteForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let (module, code) = split_presentation(&presentation)?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    may_see(&state, &s, module, code, id).await?;
    let (note, outcome) = check_note(&f)?;
    let note_id = state
        .store
        .add_note(s.user().id, module, code, id, note, outcome)
        .await?;
    state
        .store
        .audit(
            &s.user().username,
            "note.add",
            &format!("{module}-{code}/{id}"),
            &serde_json::json!({"note": note_id}),
        )
        .await?;
    Ok(Redirect::to(&format!("/students/{module}-{code}/{id}#notes")).into_response())
}

/// Edits one's own note.
pub async fn edit_note(
    State(state): St,
    s: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<NoteForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let (note, outcome) = check_note(&f)?;
    let Some((module, code, student)) = state.store.note_subject(id).await? else {
        return Err(PageError::NotFound);
    };
    may_see(&state, &s, &module, &code, student).await?;
    if !state
        .store
        .edit_note(id, s.user().id, note, outcome)
        .await?
    {
        // Someone else's note: not found, as for anything not the user's.
        return Err(PageError::NotFound);
    }
    state
        .store
        .audit(
            &s.user().username,
            "note.edit",
            &format!("{module}-{code}/{student}"),
            &serde_json::json!({"note": id}),
        )
        .await?;
    Ok(Redirect::to(&format!("/students/{module}-{code}/{student}#notes")).into_response())
}

/// Feedback on a prediction.
#[derive(Debug, Deserialize)]
pub struct FeedbackForm {
    #[serde(default)]
    csrf: String,
    kind: String,
}

/// Records an advisor's feedback on a prediction.
pub async fn feedback(
    State(state): St,
    s: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<FeedbackForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let Some(p) = state.store.prediction(id).await? else {
        return Err(PageError::NotFound);
    };
    let (module, code, student) = (
        p.prediction.code_module.clone(),
        p.prediction.code_presentation.clone(),
        p.prediction.id_student,
    );
    may_see(&state, &s, &module, &code, student).await?;
    match state
        .store
        .add_feedback(id, &f.kind, &s.user().username, None)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Invalid(why)) => return Err(PageError::BadRequest(why)),
        Err(e) => return Err(e.into()),
    }
    state
        .store
        .audit(
            &s.user().username,
            "prediction.feedback",
            &format!("{module}-{code}/{student}"),
            &serde_json::json!({"prediction": id, "kind": f.kind}),
        )
        .await?;
    Ok(Redirect::to(&format!("/students/{module}-{code}/{student}#feedback")).into_response())
}
