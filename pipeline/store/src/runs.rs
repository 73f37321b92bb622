//! Pipeline runs and their steps: runs started by a scheduler or queued over the API (and
//! claimed by one), each attempt of each step, and the step cache (the latest succeeded attempt
//! of a step with the same inputs).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, json_column, now};

/// A pipeline run.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineRun {
    /// Id.
    pub id: i64,
    /// `cron`, `inbox`, `cli`, `api`.
    pub trigger: String,
    /// `running`, `succeeded`, `failed`, `skipped`.
    pub status: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End, once finished.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Flagged for attention (e.g. drift above threshold).
    pub flagged: bool,
    /// The cron slot it serves (RFC 3339), for scheduled runs.
    pub scheduled_for: Option<String>,
    /// The export it read.
    pub export_dir: Option<String>,
    /// The scheduler that ran it (`host:pid`).
    pub holder: Option<String>,
    /// What it did (JSON), once finished.
    pub summary: Option<serde_json::Value>,
    /// Who asked for it, for runs queued over the API (the token's name).
    pub requested_by: Option<String>,
    /// Asked to run every step even when a cached result exists.
    pub no_cache: bool,
}

/// One attempt of one step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    /// Id.
    pub id: i64,
    /// The run.
    pub run_id: i64,
    /// Step name.
    pub step: String,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// `running`, `succeeded`, `failed`, `skipped`, `cached`.
    pub status: String,
    /// Hash of the step's inputs.
    pub input_hash: Option<String>,
    /// Hash of its outputs.
    pub output_hash: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End, once finished.
    pub finished_at: Option<String>,
    /// What it produced (JSON), once succeeded: what a cached rerun replays.
    pub output: Option<serde_json::Value>,
}

/// A run to start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRun<'a> {
    /// `cron`, `catch-up`, `inbox`, `cli`, `api`.
    pub trigger: &'a str,
    /// The cron slot served (RFC 3339): a second run for the same slot is refused.
    pub scheduled_for: Option<&'a str>,
    /// The export read.
    pub export_dir: Option<&'a str>,
    /// Who runs it (`host:pid`).
    pub holder: Option<&'a str>,
}

const RUN_COLUMNS: &str = "id, trigger, status, started_at, finished_at, error, flagged, scheduled_for, export_dir, holder, summary_json, requested_by, no_cache";
const STEP_COLUMNS: &str = "id, run_id, step, attempt, status, input_hash, output_hash, error, started_at, finished_at, output_json";

fn run_from(r: &AnyRow) -> Result<PipelineRun, StoreError> {
    Ok(PipelineRun {
        id: r.try_get("id")?,
        trigger: r.try_get("trigger")?,
        status: r.try_get("status")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        error: r.try_get("error")?,
        flagged: r.try_get::<i64, _>("flagged")? != 0,
        scheduled_for: r.try_get("scheduled_for")?,
        export_dir: r.try_get("export_dir")?,
        holder: r.try_get("holder")?,
        summary: json_column(r, "summary_json")?,
        requested_by: r.try_get("requested_by")?,
        no_cache: r.try_get::<i64, _>("no_cache")? != 0,
    })
}

fn step_from(r: &AnyRow) -> Result<StepRun, StoreError> {
    Ok(StepRun {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        step: r.try_get("step")?,
        attempt: r.try_get("attempt")?,
        status: r.try_get("status")?,
        input_hash: r.try_get("input_hash")?,
        output_hash: r.try_get("output_hash")?,
        error: r.try_get("error")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        output: json_column(r, "output_json")?,
    })
}

impl Store {
    /// Starts a pipeline run; `None` when a run for the same cron slot already exists (another
    /// replica, or an earlier start of this one, took it).
    pub async fn start_run(&self, new: &NewRun<'_>) -> Result<Option<i64>, StoreError> {
        let result = sqlx::query(
            "INSERT INTO pipeline_runs (trigger, status, started_at, scheduled_for, export_dir, holder) \
             VALUES ($1, 'running', $2, $3, $4, $5) RETURNING id",
        )
        .bind(new.trigger)
        .bind(now())
        .bind(new.scheduled_for)
        .bind(new.export_dir)
        .bind(new.holder)
        .fetch_one(self.pool())
        .await;
        match result {
            Ok(row) => Ok(Some(row.try_get("id")?)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Queues a run asked for over the API; a scheduler claims it (see [`Store::claim_run`]).
    pub async fn queue_run(&self, requested_by: &str, no_cache: bool) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO pipeline_runs (trigger, status, started_at, requested_by, no_cache) \
             VALUES ('api', 'queued', $1, $2, $3) RETURNING id",
        )
        .bind(now())
        .bind(requested_by)
        .bind(i64::from(no_cache))
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Runs waiting for a scheduler, oldest first.
    pub async fn queued_runs(&self) -> Result<Vec<PipelineRun>, StoreError> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE status = 'queued' ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(run_from).collect()
    }

    /// Claims a queued run for `holder` (status `running`, started now); false when it was no
    /// longer queued (another scheduler took it).
    pub async fn claim_run(
        &self,
        id: i64,
        holder: &str,
        export_dir: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE pipeline_runs SET status = 'running', started_at = $1, holder = $2, export_dir = $3 \
             WHERE id = $4 AND status = 'queued'",
        )
        .bind(now())
        .bind(holder)
        .bind(export_dir)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a run's end.
    pub async fn finish_run(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        flagged: bool,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pipeline_runs SET status = $1, error = $2, flagged = $3, summary_json = $4, finished_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(error)
        .bind(i64::from(flagged))
        .bind(summary.to_string())
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One run.
    pub async fn run(&self, id: i64) -> Result<Option<PipelineRun>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(run_from).transpose()
    }

    /// The latest runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<PipelineRun>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs ORDER BY id DESC LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(run_from).collect()
    }

    /// The latest cron slot any run served (RFC 3339).
    pub async fn latest_scheduled_slot(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT MAX(scheduled_for) AS slot FROM pipeline_runs")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("slot")?)
    }

    /// Marks runs (and their steps) still `running` as failed: called by the lease holder, so
    /// they belong to a scheduler that stopped mid-run (killed, crashed, host lost). Returns
    /// how many runs were closed.
    pub async fn close_interrupted_runs(&self, by: &str) -> Result<u64, StoreError> {
        let at = now();
        let why = format!("interrupted: the scheduler stopped during this run (found by {by})");
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE step_runs SET status = 'failed', error = $1, finished_at = $2 WHERE status = 'running'")
            .bind(&why)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "UPDATE pipeline_runs SET status = 'failed', error = $1, finished_at = $2 WHERE status = 'running'",
        )
        .bind(&why)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Starts an attempt of a step.
    pub async fn start_step(
        &self,
        run_id: i64,
        step: &str,
        attempt: i64,
        input_hash: Option<&str>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO step_runs (run_id, step, attempt, status, started_at, input_hash) \
             VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id",
        )
        .bind(run_id)
        .bind(step)
        .bind(attempt)
        .bind(now())
        .bind(input_hash)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Records a step attempt's end: `output` is what it produced (kept for the step cache),
    /// `output_hash` its hash.
    pub async fn finish_step(
        &self,
        id: i64,
        status: &str,
        output: Option<&serde_json::Value>,
        output_hash: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE step_runs SET status = $1, output_json = $2, output_hash = $3, error = $4, finished_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(output.map(|v| v.to_string()))
        .bind(output_hash)
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The latest succeeded attempt of `step` with these inputs, if any (the step cache).
    pub async fn cached_step(
        &self,
        step: &str,
        input_hash: &str,
    ) -> Result<Option<StepRun>, StoreError> {
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM step_runs \
             WHERE step = $1 AND input_hash = $2 AND status = 'succeeded' ORDER BY id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(step)
            .bind(input_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(step_from).transpose()
    }

    /// Every step attempt of a run, in order.
    pub async fn steps(&self, run_id: i64) -> Result<Vec<StepRun>, StoreError> {
        let sql = format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(step_from).collect()
    }
}
