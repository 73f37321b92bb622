//! Pipeline runs on demand: queue one (a scheduler claims it) and follow it with every attempt
//! of every step.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lodestar_store::{PipelineRun, StepRun};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, PIPELINE_RUN};
use crate::problem::{ApiError, Problem};

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
