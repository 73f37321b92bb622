//! Stored risk by student and by cohort: a student's latest prediction with its explanation and
//! history by week, a presentation's students paged and filtered by tier, and the running or
//! finished term each response shows.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use lodestar_domain::{PresentationTerm, TermState};
use lodestar_store::Prediction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::FactorView;
use crate::AppState;
use crate::auth::{Caller, PREDICTIONS_READ};
use crate::problem::{ApiError, Problem};

/// A stored prediction with its explanation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredRisk {
    /// Prediction id (for feedback).
    pub prediction_id: i64,
    /// Course presentation, `MODULE-PRESENTATION`.
    pub presentation: String,
    /// The week of the course the features were computed as of.
    pub as_of_week: i64,
    /// Calibrated probability of an at-risk outcome (fail or withdraw).
    pub probability: f64,
    /// `low`, `medium` or `high`.
    pub tier: String,
    /// At or above the model's operating threshold.
    pub flagged: bool,
    /// Registered model.
    pub model: String,
    /// Version that scored.
    pub model_version: i64,
    /// The pipeline run that scored it.
    pub run_id: Option<i64>,
    /// When (RFC 3339).
    pub scored_at: String,
    /// Factors raising the risk, strongest first.
    pub factors_up: Vec<FactorView>,
    /// Factors lowering it, strongest first.
    pub factors_down: Vec<FactorView>,
}

/// One week of a student's risk history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WeekRisk {
    /// As-of week.
    pub as_of_week: i64,
    /// Probability.
    pub probability: f64,
    /// Tier.
    pub tier: String,
    /// Version that scored.
    pub model_version: i64,
    /// Prediction id.
    pub prediction_id: i64,
}

/// The presentation's term as of the latest export: running (outcomes not yet known; scored
/// at its current week) or finished (history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TermView {
    /// `running` or `finished`.
    pub state: String,
    /// Running: the current week (the last one complete on the as-of day; null before day 6).
    /// Finished: the week of the score shown.
    pub as_of_week: Option<i64>,
    /// The export's as-of day for the presentation (running: the day its records stop;
    /// finished: its last day).
    pub as_of_day: i64,
    /// The as-of day as a date (`YYYY-MM-DD`), null when the source has day numbers only.
    pub as_of_date: Option<String>,
    /// Weeks in the presentation.
    pub weeks: i64,
    /// In words, e.g. "running, as of 5 Nov 2024, week 6 of 20".
    pub description: String,
}

/// The term view of `term`, a finished one as of `shown_week` (the week of the score shown).
fn term_view(term: &PresentationTerm, shown_week: Option<i64>) -> TermView {
    TermView {
        state: term.state.as_str().to_owned(),
        as_of_week: match term.state {
            TermState::Running => term.current_week.map(|w| i64::from(w.0)),
            TermState::Finished => shown_week,
        },
        as_of_day: i64::from(term.as_of_day),
        as_of_date: term.as_of_date(),
        weeks: i64::from(term.weeks()),
        description: term.describe(),
    }
}

async fn term_of(
    state: &AppState,
    module: &str,
    code: &str,
) -> Result<Option<PresentationTerm>, ApiError> {
    state
        .store
        .term(module, code)
        .await
        .map_err(|e| ApiError::store(&e))
}

/// A student's risk in one presentation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StudentRisk {
    /// Student id.
    pub id_student: i64,
    /// Presentation shown.
    pub presentation: String,
    /// The presentation's term (null when none is recorded: predictions stored before terms
    /// were).
    pub term: Option<TermView>,
    /// The latest prediction (of the week asked for, if one was).
    pub current: StoredRisk,
    /// The latest prediction of every scored week, by week.
    pub history: Vec<WeekRisk>,
    /// Other presentations with predictions for this student.
    pub other_presentations: Vec<String>,
}

/// Which presentation and week.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RiskQuery {
    /// `MODULE-PRESENTATION`, e.g. `BBB-2013J` (default: the student's running presentation
    /// scored most recently, else the presentation scored most recently).
    pub presentation: Option<String>,
    /// As-of week (default: the latest scored).
    pub week: Option<i64>,
}

fn split_presentation(p: &str) -> Result<(&str, &str), ApiError> {
    p.rsplit_once('-')
        .filter(|(m, c)| !m.is_empty() && !c.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "presentation {p:?}: write it as MODULE-PRESENTATION, e.g. BBB-2013J"
            ))
        })
}

fn presentation_of(p: &Prediction) -> String {
    format!(
        "{}-{}",
        p.prediction.code_module, p.prediction.code_presentation
    )
}

fn factors(explanation: &Value, key: &str) -> Vec<FactorView> {
    explanation
        .get(key)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn stored_risk(p: &Prediction) -> StoredRisk {
    let e = &p.prediction.explanation;
    StoredRisk {
        prediction_id: p.id,
        presentation: presentation_of(p),
        as_of_week: p.prediction.as_of_week,
        probability: p.prediction.probability,
        tier: p.prediction.tier.clone(),
        flagged: e.get("flagged").and_then(Value::as_bool).unwrap_or(false),
        model: p.prediction.model.clone(),
        model_version: p.prediction.version,
        run_id: p.prediction.run_id,
        scored_at: p.scored_at.clone(),
        factors_up: factors(e, "up"),
        factors_down: factors(e, "down"),
    }
}

/// A student's latest stored risk with its explanation, its history by week, and the
/// presentation's term (running or finished, as of which week and day).
#[utoipa::path(
    get, path = "/v1/students/{id}/risk", tag = "predictions",
    params(("id" = i64, Path, description = "Student id"), RiskQuery),
    security(("bearer" = ["predictions:read"])),
    responses(
        (status = 200, description = "The student's risk", body = StudentRisk),
        (status = 400, description = "Bad presentation", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No prediction for this student (presentation, week)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn student_risk(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<RiskQuery>, QueryRejection>,
) -> Result<Json<StudentRisk>, ApiError> {
    caller.require(PREDICTIONS_READ)?;
    let Path(id) = id?;
    let Query(q) = query?;
    let all = state
        .store
        .student_predictions(id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let presentation = match &q.presentation {
        Some(p) => {
            let (m, c) = split_presentation(p)?;
            format!("{m}-{c}")
        }
        None => {
            let running: Vec<String> = state
                .store
                .terms()
                .await
                .map_err(|e| ApiError::store(&e))?
                .into_iter()
                .filter(PresentationTerm::is_running)
                .map(|t| t.presentation)
                .collect();
            all.iter()
                .max_by_key(|p| (running.contains(&presentation_of(p)), p.id))
                .map(presentation_of)
                .ok_or_else(|| ApiError::not_found(format!("no prediction for student {id}")))?
        }
    };
    let mut others: Vec<String> = all
        .iter()
        .map(presentation_of)
        .filter(|p| *p != presentation)
        .collect();
    others.dedup();
    let mine: Vec<Prediction> = all
        .iter()
        .filter(|p| presentation_of(p) == presentation)
        .cloned()
        .collect();
    let history = lodestar_store::latest_of_each_week(&mine);
    let current = match q.week {
        Some(w) => history.iter().find(|p| p.prediction.as_of_week == w),
        None => history.last(),
    }
    .ok_or_else(|| {
        ApiError::not_found(match q.week {
            Some(w) => format!("no prediction for student {id} in {presentation} at week {w}"),
            None => format!("no prediction for student {id} in {presentation}"),
        })
    })?;
    let (module, code) = split_presentation(&presentation)?;
    let term = term_of(&state, module, code)
        .await?
        .map(|t| term_view(&t, Some(current.prediction.as_of_week)));
    Ok(Json(StudentRisk {
        id_student: id,
        presentation: presentation.clone(),
        term,
        current: stored_risk(current),
        history: history
            .iter()
            .map(|p| WeekRisk {
                as_of_week: p.prediction.as_of_week,
                probability: p.prediction.probability,
                tier: p.prediction.tier.clone(),
                model_version: p.prediction.version,
                prediction_id: p.id,
            })
            .collect(),
        other_presentations: others,
    }))
}

/// Filters and page of a cohort.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CohortQuery {
    /// Only this tier: `low`, `medium` or `high`.
    pub tier: Option<String>,
    /// As-of week (default: a running presentation's current week, else the latest scored).
    pub week: Option<i64>,
    /// Page, from 1.
    pub page: Option<i64>,
    /// Students per page (at most `max_page_size`, default 50).
    pub per_page: Option<i64>,
}

/// One student of a cohort page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohortStudent {
    /// Student id.
    pub id_student: i64,
    /// Prediction id.
    pub prediction_id: i64,
    /// Probability.
    pub probability: f64,
    /// Tier.
    pub tier: String,
    /// At or above the operating threshold.
    pub flagged: bool,
    /// The strongest factor raising the risk, in words.
    pub top_factor: Option<String>,
    /// Version that scored.
    pub model_version: i64,
}

/// A page of a presentation's risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohortRisk {
    /// Presentation.
    pub presentation: String,
    /// The presentation's term (null when none is recorded: predictions stored before terms
    /// were).
    pub term: Option<TermView>,
    /// Week shown (null when nothing is scored).
    pub week: Option<i64>,
    /// Students matching the filter.
    pub total: i64,
    /// This page.
    pub page: i64,
    /// Page size.
    pub per_page: i64,
    /// Riskiest first.
    pub students: Vec<CohortStudent>,
}

/// A presentation's students by risk at one week (a running presentation's current week by
/// default), paged and filterable by tier, with the presentation's term.
#[utoipa::path(
    get, path = "/v1/cohorts/{presentation}/risk", tag = "predictions",
    params(("presentation" = String, Path, description = "MODULE-PRESENTATION, e.g. BBB-2013J"), CohortQuery),
    security(("bearer" = ["predictions:read"])),
    responses(
        (status = 200, description = "One page", body = CohortRisk),
        (status = 400, description = "Bad filter or page", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing scored for this presentation (or a running one before its week 0 ends)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cohort_risk(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(presentation): Path<String>,
    query: Result<Query<CohortQuery>, QueryRejection>,
) -> Result<Json<CohortRisk>, ApiError> {
    caller.require(PREDICTIONS_READ)?;
    let Query(q) = query?;
    let (module, code) = split_presentation(&presentation)?;
    if let Some(t) = &q.tier
        && !["low", "medium", "high"].contains(&t.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "tier {t:?}: use low, medium or high"
        )));
    }
    let page = q.page.unwrap_or(1);
    let per_page = q.per_page.unwrap_or(50);
    if page < 1 {
        return Err(ApiError::bad_request("page counts from 1"));
    }
    if !(1..=state.config.max_page_size).contains(&per_page) {
        return Err(ApiError::bad_request(format!(
            "per_page must be between 1 and {}",
            state.config.max_page_size
        )));
    }
    let term = term_of(&state, module, code).await?;
    // A running presentation is shown at its current week unless another is asked for.
    let week = match (&term, q.week) {
        (_, Some(w)) => Some(w),
        (Some(t), None) if t.is_running() => match t.current_week {
            Some(w) => Some(i64::from(w.0)),
            None => {
                return Err(ApiError::not_found(format!(
                    "{module}-{code} is {}: nothing is scored before week 0 ends",
                    t.describe()
                )));
            }
        },
        _ => None,
    };
    let found = state
        .store
        .cohort(
            module,
            code,
            week,
            q.tier.as_deref(),
            per_page,
            (page - 1).saturating_mul(per_page),
        )
        .await
        .map_err(|e| ApiError::store(&e))?;
    if found.week.is_none() {
        return Err(ApiError::not_found(format!(
            "nothing scored for {module}-{code}"
        )));
    }
    Ok(Json(CohortRisk {
        presentation: format!("{module}-{code}"),
        term: term.as_ref().map(|t| term_view(t, found.week)),
        week: found.week,
        total: found.total,
        page,
        per_page,
        students: found
            .rows
            .iter()
            .map(|p| {
                let r = stored_risk(p);
                CohortStudent {
                    id_student: p.prediction.id_student,
                    prediction_id: p.id,
                    probability: r.probability,
                    tier: r.tier,
                    flagged: r.flagged,
                    top_factor: r.factors_up.first().map(|f| f.text.clone()),
                    model_version: r.model_version,
                }
            })
            .collect(),
    }))
}
