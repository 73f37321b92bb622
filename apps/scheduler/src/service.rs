//! The scheduler service: waits for the next cron slot (after catching up once on a slot missed
//! while it was down), looks at the inbox, runs the pipeline, and serves its status over HTTP
//! (`/healthz`, `/readyz`, `/v1/pipeline/runs`, `/v1/pipeline/runs/{id}`) until shut down.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lodestar_store::{PipelineRun, StepRun, Store};
use serde_json::{Value, json};

use crate::runner::{Outcome, Trigger};
use crate::{Pipeline, SchedulerError, inbox, schedule};

/// A run as JSON.
pub fn run_json(r: &PipelineRun) -> Value {
    json!({
        "id": r.id, "trigger": r.trigger, "status": r.status, "started_at": r.started_at,
        "finished_at": r.finished_at, "error": r.error, "flagged": r.flagged,
        "scheduled_for": r.scheduled_for, "export": r.export_dir, "holder": r.holder,
        "summary": r.summary, "requested_by": r.requested_by,
    })
}

/// A step attempt as JSON (its output left out: `pipeline show --json` has it).
pub fn step_json(s: &StepRun) -> Value {
    json!({
        "step": s.step, "attempt": s.attempt, "status": s.status, "started_at": s.started_at,
        "finished_at": s.finished_at, "input_hash": s.input_hash, "output_hash": s.output_hash,
        "error": s.error,
    })
}

fn problem(status: StatusCode, detail: String) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail})
            .to_string(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(store): State<Store>) -> Response {
    match store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}"),
        ),
    }
}

async fn runs(State(store): State<Store>) -> Response {
    match store.runs(50).await {
        Ok(runs) => {
            Json(json!({"runs": runs.iter().map(run_json).collect::<Vec<_>>()})).into_response()
        }
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn run(State(store): State<Store>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no run {id:?}: run ids are numbers"),
        );
    };
    let found = match store.run(id).await {
        Ok(found) => found,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some(r) = found else {
        return problem(StatusCode::NOT_FOUND, format!("no run {id}"));
    };
    match store.steps(id).await {
        Ok(steps) => {
            let mut doc = run_json(&r);
            doc["steps"] = steps.iter().map(step_json).collect();
            Json(doc).into_response()
        }
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The status routes.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/pipeline/runs", get(runs))
        .route("/v1/pipeline/runs/{id}", get(run))
        .with_state(store)
}

/// Where the service looks and puts things.
#[derive(Debug, Clone)]
pub struct Folders {
    /// Watched for new exports.
    pub inbox: PathBuf,
    /// Picked exports are moved here.
    pub landed: PathBuf,
}

fn log_outcome(what: &str, outcome: &Result<Outcome, SchedulerError>) {
    match outcome {
        Ok(Outcome::Finished {
            run, status, error, ..
        }) => {
            tracing::info!(run, %status, error = error.as_deref().unwrap_or(""), "{what} run finished")
        }
        Ok(Outcome::Busy { holder }) => {
            tracing::info!(
                holder = holder.as_deref().unwrap_or("?"),
                "{what}: another scheduler is running the pipeline"
            )
        }
        Ok(Outcome::AlreadyServed { slot }) => {
            tracing::info!(%slot, "{what}: slot already served by another scheduler")
        }
        Err(e) => tracing::error!(error = %e, "{what} run could not start"),
    }
}

/// The scheduler's record of each step event (the CLI shows them live instead).
pub fn log_event(e: &crate::Event) {
    use crate::Event;
    match e {
        Event::RunStarted { run } => tracing::info!(run, "pipeline run started"),
        Event::StepStarted { step, attempt } => tracing::info!(step, attempt, "step started"),
        Event::StepCached { step, from_run } => {
            tracing::info!(step, from_run, "step cached: same inputs as an earlier run")
        }
        Event::StepSucceeded { step, seconds } => tracing::info!(step, seconds, "step done"),
        Event::StepFailed {
            step,
            attempt,
            error,
            retry_in,
        } => tracing::warn!(
            step,
            attempt,
            %error,
            retry_in_seconds = retry_in.map(|d| d.as_secs_f64()),
            "step failed"
        ),
        Event::StepSkipped { step } => tracing::info!(step, "step skipped: an earlier step failed"),
    }
}

/// Runs the scheduler until `shutdown` resolves (a run in progress is finished first). Besides
/// its cron slots and the inbox it runs the runs queued over the API, looking each poll period
/// and whenever `wake` is notified (the API in the same process does).
pub async fn run_scheduler(
    pipeline: Arc<Pipeline>,
    folders: Folders,
    wake: Arc<tokio::sync::Notify>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let schedule = pipeline.config.cron()?;
    let tz = pipeline.config.tz()?;
    let poll = Duration::from_secs(pipeline.config.inbox_poll_seconds.max(1));
    let quiet = &log_event;
    let last = pipeline.store.latest_scheduled_slot().await?;
    let mut pending: Option<String> = schedule.as_ref().and_then(|schedule| {
        schedule::catch_up(schedule, tz, chrono::Utc::now(), last.as_deref()).map(|due| {
            tracing::info!(slot = %schedule::slot_text(due), "catching up on a slot missed while the scheduler was down");
            schedule::slot_text(due)
        })
    });
    let mut pending_kind = "catch-up";
    let next_slot = |now| {
        schedule
            .as_ref()
            .and_then(|schedule| schedule::next_slot(schedule, tz, now))
    };
    let mut next = next_slot(chrono::Utc::now());
    tracing::info!(
        next = next.map(schedule::slot_text).unwrap_or_default(),
        inbox = %folders.inbox.display(),
        "scheduler started"
    );
    tokio::pin!(shutdown);
    loop {
        if let Some(slot) = pending.clone() {
            let trigger = Trigger {
                kind: pending_kind.to_owned(),
                slot: Some(slot),
                export: None,
                no_cache: false,
                queued: None,
            };
            let outcome = pipeline.run(&trigger, quiet).await;
            log_outcome(pending_kind, &outcome);
            // Busy: try again at the next tick, unless the slot gets served meanwhile.
            if !matches!(outcome, Ok(Outcome::Busy { .. })) {
                pending = None;
            }
        }
        for export in inbox::ready_exports(&folders.inbox, pipeline.config.inbox_require_marker)
            .map_err(|e| SchedulerError::Io(format!("{}: {e}", folders.inbox.display())))?
        {
            if pipeline.store.lease_record().await?.holder.is_some() {
                break;
            }
            let landed = inbox::land(&export, &folders.landed)
                .map_err(|e| SchedulerError::Io(e.to_string()))?;
            tracing::info!(export = %landed.display(), "new export in the inbox");
            let trigger = Trigger {
                kind: "inbox".into(),
                slot: None,
                export: Some(landed),
                no_cache: false,
                queued: None,
            };
            let outcome = pipeline.run(&trigger, quiet).await;
            log_outcome("inbox", &outcome);
        }
        for queued in pipeline.store.queued_runs().await? {
            tracing::info!(
                run = queued.id,
                requested_by = queued.requested_by.as_deref().unwrap_or("?"),
                "run queued over the API"
            );
            let outcome = pipeline.run(&Trigger::queued(&queued), quiet).await;
            log_outcome("api", &outcome);
            if matches!(outcome, Ok(Outcome::Busy { .. })) {
                break;
            }
        }
        let now = chrono::Utc::now();
        let until_slot = next
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(poll);
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("scheduler stopped");
                return Ok(());
            }
            () = tokio::time::sleep(until_slot.min(poll)) => {}
            () = wake.notified() => {}
        }
        if let Some(t) = next
            && chrono::Utc::now() >= t
        {
            pending = Some(schedule::slot_text(t));
            pending_kind = "cron";
            next = next_slot(chrono::Utc::now());
        }
    }
}
