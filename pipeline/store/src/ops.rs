//! The operational tables other capabilities share: pipeline runs and their steps (with the
//! step cache), predictions (with retention), users and caseloads, outreach notes, prediction
//! feedback, the audit trail and API tokens (stored as SHA-256 hashes, never in clear).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::artifacts::sha256_hex;
use crate::{Store, StoreError, now};

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

/// A prediction to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    /// Model.
    pub model: String,
    /// Version that scored.
    pub version: i64,
    /// Module.
    pub code_module: String,
    /// Presentation.
    pub code_presentation: String,
    /// Student.
    pub id_student: i64,
    /// As-of week.
    pub as_of_week: i64,
    /// Calibrated probability of an at-risk outcome.
    pub probability: f64,
    /// `low`, `medium`, `high`.
    pub tier: String,
    /// Explanation (JSON: factors up and down).
    pub explanation: serde_json::Value,
    /// The run that scored it.
    pub run_id: Option<i64>,
    /// The student's week as the features saw it (activity, assessments), for the dashboard's
    /// timeline; `Null` when not recorded.
    pub context: serde_json::Value,
}

/// A stored prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Id.
    pub id: i64,
    /// What was stored.
    pub prediction: NewPrediction,
    /// When (RFC 3339).
    pub scored_at: String,
}

/// One page of a presentation's predictions at one week.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortPage {
    /// The week shown (the latest scored when none was asked for); `None` when nothing is scored.
    pub week: Option<i64>,
    /// Students matching the filter at that week.
    pub total: i64,
    /// This page, riskiest first: each student's latest prediction for the week.
    pub rows: Vec<Prediction>,
}

/// An API token as `lodestar tokens list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// Id, name and scopes.
    pub token: ApiToken,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Revoked, if it was.
    pub revoked_at: Option<String>,
    /// Last seen by an API process (updated at most once per cache period).
    pub last_used_at: Option<String>,
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Sign-in name.
    pub username: String,
    /// `advisor` or `admin`.
    pub role: String,
    /// Password hash (argon2, made by the dashboard).
    pub password_hash: String,
}

/// An API token's record (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Id.
    pub id: i64,
    /// Label.
    pub name: String,
    /// Scopes, e.g. `predictions:read`.
    pub scopes: Vec<String>,
}

pub(crate) fn json_column(
    r: &AnyRow,
    column: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = r.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Invalid(format!("stored {column} is not JSON: {e}")))
    })
    .transpose()
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

/// A user from a row holding `id`, `username`, `role` and `password_hash`.
pub(crate) fn user_from(r: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: r.try_get("role")?,
        password_hash: r.try_get("password_hash")?,
    })
}

/// The latest score of each week from predictions ordered by week then id (as
/// [`Store::prediction_history`] returns them): a week scored again counts once, as rescored.
pub fn latest_of_each_week(rows: &[Prediction]) -> Vec<&Prediction> {
    let mut out: Vec<&Prediction> = Vec::new();
    for p in rows {
        match out.last_mut() {
            Some(last) if last.prediction.as_of_week == p.prediction.as_of_week => *last = p,
            _ => out.push(p),
        }
    }
    out
}

pub(crate) fn prediction_from(
    r: &AnyRow,
    dict: &crate::explanation::Dictionary,
) -> Result<Prediction, StoreError> {
    let explanation: String = r.try_get("explanation_json")?;
    let explanation: serde_json::Value = serde_json::from_str(&explanation)
        .map_err(|e| StoreError::Invalid(format!("stored explanation is not JSON: {e}")))?;
    let context = match json_column(r, "context_json")? {
        Some(c) => crate::explanation::decode_context(c, dict)?,
        None => serde_json::Value::Null,
    };
    Ok(Prediction {
        id: r.try_get("id")?,
        prediction: NewPrediction {
            model: r.try_get("model")?,
            version: r.try_get("version")?,
            code_module: r.try_get("code_module")?,
            code_presentation: r.try_get("code_presentation")?,
            id_student: r.try_get("id_student")?,
            as_of_week: r.try_get("as_of_week")?,
            probability: r.try_get("probability")?,
            tier: r.try_get("tier")?,
            explanation: crate::explanation::decode(explanation, &context, dict)?,
            run_id: r.try_get("run_id")?,
            context,
        },
        scored_at: r.try_get("scored_at")?,
    })
}

/// Recomputes `current_risk` from the stored predictions (after a purge).
const CURRENT_RISK_REBUILD: &str = "WITH per_week AS (SELECT MAX(id) AS id FROM predictions \
     GROUP BY id_student, code_module, code_presentation, as_of_week), \
     ranked AS (SELECT p.id, p.code_module, p.code_presentation, p.id_student, p.as_of_week, \
       ROW_NUMBER() OVER (PARTITION BY p.id_student, p.code_module, p.code_presentation ORDER BY p.as_of_week DESC) AS rn \
       FROM predictions p JOIN per_week w ON w.id = p.id) \
     INSERT INTO current_risk (code_module, code_presentation, id_student, prediction_id, week, previous_id, previous_week) \
     SELECT a.code_module, a.code_presentation, a.id_student, a.id, a.as_of_week, b.id, b.as_of_week \
     FROM ranked a LEFT JOIN ranked b ON b.id_student = a.id_student AND b.code_module = a.code_module \
       AND b.code_presentation = a.code_presentation AND b.rn = 2 WHERE a.rn = 1";

const PREDICTION_COLUMNS: &str = "id, model, version, code_module, code_presentation, id_student, as_of_week, \
     probability, tier, explanation_json, run_id, scored_at, context_json";

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

    /// Whether `version` of `model` already scored this presentation at this week (a rerun of
    /// the scoring step after an interruption does not store the same predictions twice).
    pub async fn has_predictions(
        &self,
        model: &str,
        version: i64,
        code_module: &str,
        code_presentation: &str,
        as_of_week: i64,
    ) -> Result<bool, StoreError> {
        // The first such row answers: the model and version are read through the row's batch.
        let row = sqlx::query(
            "SELECT 1 AS n FROM predictions WHERE code_module = $3 AND code_presentation = $4 \
             AND as_of_week = $5 AND model = $1 AND version = $2 LIMIT 1",
        )
        .bind(model)
        .bind(version)
        .bind(code_module)
        .bind(code_presentation)
        .bind(as_of_week)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// A student's predictions in a presentation, oldest first.
    pub async fn prediction_history(
        &self,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
    ) -> Result<Vec<Prediction>, StoreError> {
        let sql = format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE code_module = $1 AND code_presentation = $2 \
             AND id_student = $3 ORDER BY as_of_week, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code_module)
            .bind(code_presentation)
            .bind(id_student)
            .fetch_all(self.pool())
            .await?;
        self.predictions_from(&rows).await
    }

    /// One stored prediction.
    pub async fn prediction(&self, id: i64) -> Result<Option<Prediction>, StoreError> {
        let sql = format!("SELECT {PREDICTION_COLUMNS} FROM predictions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(self.predictions_from(row.as_slice()).await?.pop())
    }

    /// Every prediction of a student, in every presentation: by module, presentation, week,
    /// then oldest first.
    pub async fn student_predictions(
        &self,
        id_student: i64,
    ) -> Result<Vec<Prediction>, StoreError> {
        let sql = format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE id_student = $1 \
             ORDER BY code_module, code_presentation, as_of_week, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_student)
            .fetch_all(self.pool())
            .await?;
        self.predictions_from(&rows).await
    }

    /// A page of a presentation's predictions at `week` (default: the latest week scored),
    /// each student's latest prediction for that week, riskiest first, optionally of one tier.
    pub async fn cohort(
        &self,
        code_module: &str,
        code_presentation: &str,
        week: Option<i64>,
        tier: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<CohortPage, StoreError> {
        let week = match week {
            Some(w) => Some(w),
            // Asked of each published batch (and of the rows stored before batches): the
            // index leads with the batch, so each is one probe at the end of its part.
            None => sqlx::query(
                "SELECT MAX(w) AS w FROM (\
                 SELECT (SELECT MAX(p.as_of_week) FROM prediction_rows p WHERE p.batch_id = b.id \
                 AND p.code_module = $1 AND p.code_presentation = $2) AS w \
                 FROM score_batches b WHERE b.published_at IS NOT NULL \
                 UNION ALL SELECT MAX(p.as_of_week) AS w FROM prediction_rows p \
                 WHERE p.batch_id IS NULL AND p.code_module = $1 AND p.code_presentation = $2) t",
            )
            .bind(code_module)
            .bind(code_presentation)
            .fetch_one(self.pool())
            .await?
            .try_get("w")?,
        };
        let Some(w) = week else {
            return Ok(CohortPage {
                week: None,
                total: 0,
                rows: Vec::new(),
            });
        };
        let latest = "id IN (SELECT MAX(id) FROM predictions WHERE code_module = $1 AND code_presentation = $2 \
                      AND as_of_week = $3 GROUP BY id_student) AND ($4 = '' OR tier = $4)";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM predictions WHERE {latest}"
        )))
        .bind(code_module)
        .bind(code_presentation)
        .bind(w)
        .bind(tier.unwrap_or(""))
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE {latest} \
             ORDER BY probability DESC, id_student LIMIT $5 OFFSET $6"
        )))
        .bind(code_module)
        .bind(code_presentation)
        .bind(w)
        .bind(tier.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        Ok(CohortPage {
            week: Some(w),
            total,
            rows: self.predictions_from(&rows).await?,
        })
    }

    /// Deletes predictions scored more than `days` days ago (with their feedback); returns how many.
    pub async fn purge_predictions_older_than(&self, days: u32) -> Result<u64, StoreError> {
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        self.purge_predictions_before(&before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .await
    }

    /// Deletes predictions scored before `before` (RFC 3339); returns how many. Feedback on them
    /// goes with them.
    pub async fn purge_predictions_before(&self, before: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Scores of a batch carry the batch's time (found through the batch), older rows their
        // own.
        let old = "SELECT p.id FROM prediction_rows p WHERE p.batch_id IN \
                   (SELECT b.id FROM score_batches b WHERE COALESCE(b.published_at, b.created_at) < $1) \
                   UNION ALL SELECT p.id FROM prediction_rows p WHERE p.batch_id IS NULL AND p.scored_at < $1";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM prediction_feedback WHERE prediction_id IN ({old})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM prediction_rows WHERE id IN ({old})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM score_batches WHERE COALESCE(published_at, created_at) < $1 \
             AND NOT EXISTS (SELECT 1 FROM prediction_rows p WHERE p.batch_id = score_batches.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            sqlx::query("DELETE FROM current_risk")
                .execute(&mut *tx)
                .await?;
            sqlx::query(CURRENT_RISK_REBUILD).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Records an advisor's feedback on a prediction (Moodle's three kinds).
    pub async fn add_feedback(
        &self,
        prediction_id: i64,
        kind: &str,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<i64, StoreError> {
        if !["acknowledged", "not_useful", "incorrectly_flagged"].contains(&kind) {
            return Err(StoreError::Invalid(format!(
                "feedback {kind:?}: use acknowledged, not_useful or incorrectly_flagged"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO prediction_feedback (prediction_id, kind, actor, comment, at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(prediction_id)
        .bind(kind)
        .bind(actor)
        .bind(comment)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Creates a user (the password hash is made by the caller, e.g. argon2).
    pub async fn create_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<i64, StoreError> {
        if !["advisor", "admin"].contains(&role) {
            return Err(StoreError::Invalid(format!(
                "role {role:?}: use advisor or admin"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(role)
        .bind(password_hash)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Replaces a user's password hash and clears any lockout.
    pub async fn set_password_hash(
        &self,
        user_id: i64,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL WHERE id = $2",
        )
        .bind(password_hash)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Assigns students to a user's caseload in one transaction (existing ones are kept).
    pub async fn assign_many(
        &self,
        user_id: i64,
        students: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for (module, presentation, student) in students {
            sqlx::query(
                "INSERT INTO caseloads (user_id, code_module, code_presentation, id_student) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(module)
            .bind(presentation)
            .bind(student)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The students a model version has scored: (module, presentation, student), sorted.
    pub async fn scored_students(
        &self,
        model: &str,
        version: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT code_module, code_presentation, id_student FROM predictions \
             WHERE model = $1 AND version = $2 ORDER BY code_module, code_presentation, id_student",
        )
        .bind(model)
        .bind(version)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("code_module")?,
                    r.try_get("code_presentation")?,
                    r.try_get("id_student")?,
                ))
            })
            .collect()
    }

    /// A user by sign-in name.
    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row =
            sqlx::query("SELECT id, username, role, password_hash FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(self.pool())
                .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// Puts a student in a user's caseload (idempotent).
    pub async fn assign(
        &self,
        user_id: i64,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO caseloads (user_id, code_module, code_presentation, id_student) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(code_module)
        .bind(code_presentation)
        .bind(id_student)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A user's caseload: (module, presentation, student).
    pub async fn caseload(&self, user_id: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT code_module, code_presentation, id_student FROM caseloads WHERE user_id = $1 \
             ORDER BY code_module, code_presentation, id_student",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("code_module")?,
                    r.try_get("code_presentation")?,
                    r.try_get("id_student")?,
                ))
            })
            .collect()
    }

    /// Adds an outreach note.
    pub async fn add_note(
        &self,
        author_id: i64,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
        note: &str,
        outcome: Option<&str>,
    ) -> Result<i64, StoreError> {
        let at = now();
        let row = sqlx::query(
            "INSERT INTO outreach_notes (author_id, code_module, code_presentation, id_student, note, outcome, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(author_id)
        .bind(code_module)
        .bind(code_presentation)
        .bind(id_student)
        .bind(note)
        .bind(outcome)
        .bind(&at)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Edits a note; only its author may. Returns false when the note is not theirs (or gone).
    pub async fn edit_note(
        &self,
        note_id: i64,
        author_id: i64,
        note: &str,
        outcome: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outreach_notes SET note = $1, outcome = $2, updated_at = $3 WHERE id = $4 AND author_id = $5",
        )
        .bind(note)
        .bind(outcome)
        .bind(now())
        .bind(note_id)
        .bind(author_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends to the audit trail.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_events (actor, action, subject, detail_json, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(actor)
            .bind(action)
            .bind(subject)
            .bind(detail.to_string())
            .bind(now())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The latest audit events, newest first: (actor, action, subject, at).
    pub async fn audit_events(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT actor, action, subject, at FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("actor")?,
                    r.try_get("action")?,
                    r.try_get("subject")?,
                    r.try_get("at")?,
                ))
            })
            .collect()
    }

    /// Records an API token by its hash; the token itself is never stored.
    pub async fn create_token(
        &self,
        name: &str,
        token: &str,
        scopes: &[&str],
    ) -> Result<i64, StoreError> {
        if token.len() < 24 {
            return Err(StoreError::Invalid(
                "an API token needs at least 24 characters".into(),
            ));
        }
        let row = sqlx::query("INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(name)
            .bind(sha256_hex(token.as_bytes()))
            .bind(scopes.join(" "))
            .bind(now())
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("id")?)
    }

    /// The live (not revoked) token record matching a presented token.
    pub async fn verify_token(&self, token: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, scopes FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(sha256_hex(token.as_bytes()))
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let scopes: String = r.try_get("scopes")?;
        let id: i64 = r.try_get("id")?;
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(Some(ApiToken {
            id,
            name: r.try_get("name")?,
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        }))
    }

    /// Every token ever created, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, scopes, created_at, revoked_at, last_used_at FROM api_tokens ORDER BY id DESC",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let scopes: String = r.try_get("scopes")?;
                Ok(TokenInfo {
                    token: ApiToken {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                    },
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// Revokes a token; returns false if there was no live token with that id.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
