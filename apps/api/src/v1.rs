//! The `/v1` resources: stored risk by student and by cohort, live scoring of posted feature
//! rows (checked against the champion's feature schema), feedback on a prediction, the
//! registry read-only, and pipeline runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lodestar_domain::{PresentationTerm, TermState};
use lodestar_model::{FeatureRow, Value as FeatureValue};
use lodestar_store::{ModelVersion, PipelineRun, Prediction, StepRun};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Caller, PIPELINE_RUN, PREDICTIONS_READ, PREDICTIONS_WRITE};
use crate::champion::Loaded;
use crate::problem::{ApiError, FieldError, Problem};

/// One reason for a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FactorView {
    /// Feature name.
    pub feature: String,
    /// The student's value (null when missing).
    pub value: Option<f64>,
    /// What passing students typically had by this week.
    pub typical: f64,
    /// Change in log-odds against the typical value (positive: riskier).
    pub contribution: f64,
    /// The factor in words, for an advisor.
    pub text: String,
}

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

/// Scoring options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScoreQuery {
    /// Explain each score (factors up and down, about 40 model evaluations a row); default false.
    pub explain: Option<bool>,
}

/// Rows to score: one feature row, or `{"rows": [...]}`. Each row holds every feature of the
/// champion's schema (`GET /v2/models/{name}` lists them), numbers or category text, `null` for
/// a missing value; `id_student`, `code_module`, `code_presentation` and `as_of` may ride along.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScoreRequest {
    /// The feature rows.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Value>,
}

/// One scored row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScoredRow {
    /// Its position in the request, from 0.
    pub row: usize,
    /// The caller's student id, echoed when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_student: Option<i64>,
    /// Calibrated probability of an at-risk outcome.
    pub probability: f64,
    /// Tier.
    pub tier: String,
    /// At or above the operating threshold.
    pub flagged: bool,
    /// Factors raising the risk (empty unless `explain=true`).
    pub factors_up: Vec<FactorView>,
    /// Factors lowering it.
    pub factors_down: Vec<FactorView>,
}

/// Scores of posted rows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScoreResponse {
    /// Model.
    pub model: String,
    /// Champion version that scored.
    pub model_version: i64,
    /// One per row, in order.
    pub predictions: Vec<ScoredRow>,
}

/// A JSON value as a feature row, or why not.
pub fn feature_row(v: Value) -> Result<FeatureRow, Vec<String>> {
    let Value::Object(map) = v else {
        return Err(vec![
            "a row must be a JSON object of feature names to values".into(),
        ]);
    };
    let mut row = FeatureRow::new();
    let mut problems = Vec::new();
    for (k, v) in map {
        let value = match v {
            Value::Null => None,
            Value::Number(n) => match n.as_f64() {
                Some(x) => Some(FeatureValue::Number(x)),
                None => {
                    problems.push(format!("field `{k}` is not a representable number"));
                    continue;
                }
            },
            Value::String(s) => Some(FeatureValue::Text(s)),
            other => {
                problems.push(format!(
                    "field `{k}` must be a number, text or null, not {}",
                    match other {
                        Value::Bool(_) => "a boolean",
                        Value::Array(_) => "an array",
                        _ => "an object",
                    }
                ));
                continue;
            }
        };
        row.insert(k, value);
    }
    if problems.is_empty() {
        Ok(row)
    } else {
        Err(problems)
    }
}

/// The model serving now, or 503.
pub fn champion(state: &AppState) -> Result<Arc<Loaded>, ApiError> {
    state.champion.current().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no champion of {:?} is loaded yet: run the pipeline or promote a version",
                state.config.model
            ),
        )
    })
}

/// Checks rows against the champion's schema and scores them; every problem of every row is
/// named (up to 100).
pub fn score(
    state: &AppState,
    model: &Loaded,
    rows: Vec<Value>,
    explain: bool,
) -> Result<Vec<ScoredRow>, ApiError> {
    if rows.is_empty() {
        return Err(ApiError::unprocessable("no rows to score", Vec::new()));
    }
    if rows.len() > state.config.max_batch_rows {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} rows: a request scores at most {} (max_batch_rows)",
                rows.len(),
                state.config.max_batch_rows
            ),
        ));
    }
    let a = &model.artifact;
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, v) in rows.into_iter().enumerate() {
        let id_student = v.get("id_student").and_then(Value::as_i64);
        let checked = feature_row(v).and_then(|row| {
            a.cells_of(&row).map_err(|e| match e {
                lodestar_model::ModelError::Schema(p) => p,
                other => vec![other.to_string()],
            })
        });
        let cells = match checked {
            Ok(cells) => cells,
            Err(problems) => {
                errors.extend(problems.into_iter().map(|detail| FieldError {
                    row: Some(i),
                    detail,
                }));
                continue;
            }
        };
        if !errors.is_empty() {
            continue;
        }
        let (probability, tier, flagged, up, down) = if explain {
            let p = a.score_cells(&cells);
            (
                p.probability,
                p.tier,
                p.flagged,
                p.factors_up,
                p.factors_down,
            )
        } else {
            let probability = a.calibration.apply(a.uncalibrated(&cells));
            (
                probability,
                a.tiers.tier(probability),
                probability >= a.threshold,
                Vec::new(),
                Vec::new(),
            )
        };
        let view = |f: lodestar_model::Factor| FactorView {
            feature: f.feature,
            value: f.value,
            typical: f.typical,
            contribution: f.contribution,
            text: f.text,
        };
        metrics::counter!("lodestar_predictions_total", "tier" => tier.as_str()).increment(1);
        out.push(ScoredRow {
            row: i,
            id_student,
            probability,
            tier: tier.as_str().to_owned(),
            flagged,
            factors_up: up.into_iter().map(view).collect(),
            factors_down: down.into_iter().map(view).collect(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        let n = errors.len();
        errors.truncate(100);
        Err(ApiError::unprocessable(
            format!(
                "{n} problem(s) against the feature schema of {} version {}",
                model.model, model.version
            ),
            errors,
        ))
    }
}

/// Scores feature rows sent by the caller with the champion, checked against its schema.
#[utoipa::path(
    post, path = "/v1/predictions", tag = "predictions",
    params(ScoreQuery),
    request_body(content = ScoreRequest, description = "`{\"rows\": [...]}`, or one row as the whole body"),
    security(("bearer" = ["predictions:write"])),
    responses(
        (status = 200, description = "One score per row", body = ScoreResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:write", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or batch too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Rows violate the feature schema: every problem named", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No champion loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ScoreQuery>, QueryRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<ScoreResponse>, ApiError> {
    caller.require(PREDICTIONS_WRITE)?;
    let Query(q) = query?;
    let Json(body) = body?;
    let rows = match body {
        Value::Object(mut map) if map.contains_key("rows") => match map.remove("rows") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(ApiError::unprocessable(
                    "`rows` must be an array of feature rows",
                    Vec::new(),
                ));
            }
        },
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(ApiError::unprocessable(
                "the body must be one feature row (an object) or {\"rows\": [...]}",
                Vec::new(),
            ));
        }
    };
    let model = champion(&state)?;
    let predictions = score(&state, &model, rows, q.explain.unwrap_or(false))?;
    Ok(Json(ScoreResponse {
        model: model.model.clone(),
        model_version: model.version,
        predictions,
    }))
}

/// Feedback on a prediction.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// `acknowledged`, `not_useful` or `incorrectly_flagged`.
    pub kind: String,
    /// Free text.
    pub comment: Option<String>,
}

/// Recorded feedback.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedbackRecorded {
    /// Feedback id.
    pub id: i64,
    /// The prediction.
    pub prediction_id: i64,
    /// Kind.
    pub kind: String,
    /// Who (the token).
    pub actor: String,
}

/// Records whether a stored prediction was useful.
#[utoipa::path(
    post, path = "/v1/predictions/{id}/feedback", tag = "predictions",
    params(("id" = i64, Path, description = "Prediction id")),
    request_body = FeedbackRequest,
    security(("bearer" = ["predictions:write"])),
    responses(
        (status = 201, description = "Recorded", body = FeedbackRecorded),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prediction", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind or field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<FeedbackRecorded>), ApiError> {
    caller.require(PREDICTIONS_WRITE)?;
    let Path(id) = id?;
    let Json(body) = body?;
    if !["acknowledged", "not_useful", "incorrectly_flagged"].contains(&body.kind.as_str()) {
        return Err(ApiError::unprocessable(
            format!(
                "kind {:?}: use acknowledged, not_useful or incorrectly_flagged",
                body.kind
            ),
            vec![FieldError {
                row: None,
                detail: "field `kind` is not one of the three kinds".into(),
            }],
        ));
    }
    let exists = state
        .store
        .prediction(id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("no prediction {id}")));
    }
    let actor = format!("token:{}:{}", caller.token.id, caller.token.name);
    let fid = state
        .store
        .add_feedback(id, &body.kind, &actor, body.comment.as_deref())
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok((
        StatusCode::CREATED,
        Json(FeedbackRecorded {
            id: fid,
            prediction_id: id,
            kind: body.kind,
            actor,
        }),
    ))
}

/// A registered model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelSummary {
    /// Name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<i64>,
    /// Aliases and the versions they name.
    #[schema(value_type = Object)]
    pub aliases: serde_json::Map<String, Value>,
}

/// The registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// Every registered model.
    pub models: Vec<ModelSummary>,
}

async fn aliases_of(state: &AppState, model: &str) -> Result<Vec<(String, i64)>, ApiError> {
    state
        .store
        .aliases(model)
        .await
        .map_err(|e| ApiError::store(&e))
}

/// Every registered model with its versions and aliases.
#[utoipa::path(
    get, path = "/v1/models", tag = "registry",
    security(("bearer" = ["predictions:read"])),
    responses(
        (status = 200, description = "The registry", body = ModelList),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn models(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(PREDICTIONS_READ)?;
    let names = state
        .store
        .models()
        .await
        .map_err(|e| ApiError::store(&e))?;
    let mut models = Vec::new();
    for name in names {
        let versions = state
            .store
            .versions(&name)
            .await
            .map_err(|e| ApiError::store(&e))?;
        let aliases = aliases_of(&state, &name).await?;
        models.push(ModelSummary {
            versions: versions.iter().map(|v| v.version).collect(),
            aliases: aliases
                .into_iter()
                .map(|(a, v)| (a, Value::from(v)))
                .collect(),
            name,
        });
    }
    Ok(Json(ModelList { models }))
}

/// One model version with its lineage and evaluation report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    /// Model.
    pub model: String,
    /// Version.
    pub version: i64,
    /// Aliases naming this version.
    pub aliases: Vec<String>,
    /// Artifact SHA-256.
    pub artifact_sha256: String,
    /// Artifact size in bytes.
    pub artifact_bytes: i64,
    /// Training snapshot's content hash.
    pub snapshot_hash: String,
    /// Code version that trained it.
    pub code_version: String,
    /// Training configuration.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Seed.
    pub seed: i64,
    /// The evaluation report (metrics by week, calibration, subgroups).
    #[schema(value_type = Object)]
    pub report: Value,
    /// The pipeline run that registered it.
    pub run_id: Option<i64>,
    /// Who registered it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

fn version_view(v: ModelVersion, aliases: Vec<String>) -> VersionView {
    VersionView {
        model: v.model,
        version: v.version,
        aliases,
        artifact_sha256: v.artifact.sha256,
        artifact_bytes: v.artifact.bytes,
        snapshot_hash: v.snapshot_hash,
        code_version: v.code_version,
        config: v.config,
        seed: v.seed,
        report: serde_json::to_value(&v.report).unwrap_or(Value::Null),
        run_id: v.run_id,
        created_by: v.created_by,
        created_at: v.created_at,
    }
}

/// One version of a registered model.
#[utoipa::path(
    get, path = "/v1/models/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "Model"), ("version" = i64, Path, description = "Version")),
    security(("bearer" = ["predictions:read"])),
    responses(
        (status = 200, description = "The version", body = VersionView),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model or version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn model_version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(String, i64)>, PathRejection>,
) -> Result<Json<VersionView>, ApiError> {
    caller.require(PREDICTIONS_READ)?;
    let Path((name, version)) = path?;
    let v = match state.store.version(&name, version).await {
        Ok(v) => v,
        Err(
            e @ (lodestar_store::StoreError::UnknownModel(_)
            | lodestar_store::StoreError::UnknownVersion { .. }),
        ) => return Err(ApiError::not_found(e.to_string())),
        Err(e) => return Err(ApiError::store(&e)),
    };
    let aliases = aliases_of(&state, &name)
        .await?
        .into_iter()
        .filter(|(_, v)| *v == version)
        .map(|(a, _)| a)
        .collect();
    Ok(Json(version_view(v, aliases)))
}

/// Options of a run.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Run every step even when a cached result exists.
    #[serde(default)]
    pub no_cache: bool,
}

/// One attempt of one step.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    /// Step.
    pub step: String,
    /// Attempt, from 1 (0: skipped).
    pub attempt: i64,
    /// `running`, `succeeded`, `failed`, `skipped`, `cached`.
    pub status: String,
    /// Start.
    pub started_at: String,
    /// End.
    pub finished_at: Option<String>,
    /// Inputs' hash.
    pub input_hash: Option<String>,
    /// Outputs' hash.
    pub output_hash: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A pipeline run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    /// Id.
    pub id: i64,
    /// What started it.
    pub trigger: String,
    /// `queued` (waiting for a scheduler), `running`, `succeeded`, `failed`, `skipped`.
    pub status: String,
    /// Queued or started at.
    pub started_at: String,
    /// End.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Drift above the threshold.
    pub flagged: bool,
    /// Who asked for it (API runs).
    pub requested_by: Option<String>,
    /// What it did.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
    /// Every attempt of every step so far.
    pub steps: Vec<StepView>,
}

fn run_view(r: PipelineRun, steps: &[StepRun]) -> RunView {
    RunView {
        id: r.id,
        trigger: r.trigger,
        status: r.status,
        started_at: r.started_at,
        finished_at: r.finished_at,
        error: r.error,
        flagged: r.flagged,
        requested_by: r.requested_by,
        summary: r.summary,
        steps: steps
            .iter()
            .map(|s| StepView {
                step: s.step.clone(),
                attempt: s.attempt,
                status: s.status.clone(),
                started_at: s.started_at.clone(),
                finished_at: s.finished_at.clone(),
                input_hash: s.input_hash.clone(),
                output_hash: s.output_hash.clone(),
                error: s.error.clone(),
            })
            .collect(),
    }
}

/// Queues a pipeline run; a scheduler claims it (at once in `lodestar up`, within its poll
/// period otherwise). Follow it at the `Location` returned.
#[utoipa::path(
    post, path = "/v1/pipeline/runs", tag = "pipeline",
    request_body(content = Option<RunRequest>, description = "Optional: `{\"no_cache\": true}`"),
    security(("bearer" = ["pipeline:run"])),
    responses(
        (status = 202, description = "Queued", body = RunView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks pipeline:run", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown option", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(PIPELINE_RUN)?;
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                ApiError::unprocessable(e.to_string(), Vec::new())
            } else {
                ApiError::bad_request(format!("malformed JSON: {e}"))
            }
        })?
    };
    let who = format!("token:{}:{}", caller.token.id, caller.token.name);
    let id = state
        .store
        .queue_run(&who, request.no_cache)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if let Some(wake) = &state.wake {
        wake.notify_one();
    }
    tracing::info!(run = id, requested_by = %who, "pipeline run queued");
    let run = state
        .store
        .run(id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| ApiError::not_found(format!("run {id} vanished")))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/pipeline/runs/{id}"))],
        Json(run_view(run, &[])),
    )
        .into_response())
}

/// A pipeline run with every attempt of every step.
#[utoipa::path(
    get, path = "/v1/pipeline/runs/{id}", tag = "pipeline",
    params(("id" = i64, Path, description = "Run id")),
    security(("bearer" = ["pipeline:run"])),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks pipeline:run", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    caller.require(PIPELINE_RUN)?;
    let Path(id) = id?;
    let run = state
        .store
        .run(id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let steps = state
        .store
        .steps(id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(Json(run_view(run, &steps)))
}
