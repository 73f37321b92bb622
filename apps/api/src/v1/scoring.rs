//! Live scoring: feature rows posted by the caller, checked against the champion's feature
//! schema and scored by the model serving now (also used by KServe v2 inference).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use lodestar_model::{FeatureRow, Value as FeatureValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::FactorView;
use crate::AppState;
use crate::auth::{Caller, PREDICTIONS_WRITE};
use crate::champion::Loaded;
use crate::problem::{ApiError, FieldError, Problem};

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
