//! Tonight's scores, stored in bulk without holding the database.
//!
//! The nightly run opens a *score batch*, stages its predictions into it in chunks (each chunk
//! one short transaction of multi-row inserts), then publishes it in one short transaction that
//! makes the whole batch visible and moves each student's current risk set-wise. Readers query
//! the `predictions` view, which holds published rows only: they see last night's complete set
//! or tonight's, never half, and the pipeline's lease renewal and the dashboard are never
//! blocked for longer than one chunk. A run killed while staging leaves an unpublished batch;
//! the next run that scores the same rows (same model version, same snapshot, same number of
//! rows) resumes it after the rows already staged, and a batch that will never be resumed is
//! deleted in chunks.
//!
//! Staging is in `stage`, publishing (with the `Staged` record that lets it skip reading the
//! batch back) in `publish`.

use std::time::Duration;

use sqlx::Row;

use crate::{NewPrediction, Store, StoreError, now};

mod publish;
mod stage;

pub(crate) use publish::Staged;

/// Predictions per multi-row `INSERT` on SQLite (14 parameters each at most: under its limit on
/// bound parameters).
const ROWS_PER_STATEMENT: usize = 400;

/// Rows deleted per transaction when an abandoned batch is cleared.
const DELETE_CHUNK: i64 = 20_000;

/// Which scores a batch holds: a batch is resumed only by a run scoring the same rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey {
    /// Model.
    pub model: String,
    /// Version that scores.
    pub version: i64,
    /// The feature snapshot scored.
    pub snapshot: String,
    /// How many predictions the batch will hold once complete.
    pub rows: u64,
}

/// An open, unpublished batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreBatch {
    /// Id.
    pub id: i64,
    /// Rows already staged (by an interrupted earlier run when `resumed`): the caller stages
    /// the rest, in the same order.
    pub rows_done: u64,
    /// An earlier run's batch of the same rows, taken up where it stopped.
    pub resumed: bool,
    /// Rows of abandoned batches (other rows, never to be resumed) deleted on opening.
    pub discarded: u64,
}

/// A prediction in its stored form: made by [`Store::staged_form`].
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    model: String,
    version: i64,
    code_module: String,
    code_presentation: String,
    id_student: i64,
    as_of_week: i64,
    probability: f64,
    tier: String,
    explanation: String,
    run_id: Option<i64>,
    context: Option<String>,
}

/// A scored prediction, borrowed from the model's output: see [`Store::staged_scored`].
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// Model.
    pub model: &'a str,
    /// Version that scored.
    pub version: i64,
    /// Module.
    pub code_module: &'a str,
    /// Presentation.
    pub code_presentation: &'a str,
    /// Student.
    pub id_student: i64,
    /// As-of week.
    pub as_of_week: i64,
    /// Calibrated probability.
    pub probability: f64,
    /// Tier.
    pub tier: &'a str,
    /// Factors raising the risk, as the model wrote them (their words are `describe`'s for
    /// their numbers).
    pub up: &'a [lodestar_model::Factor],
    /// Factors lowering it, the same.
    pub down: &'a [lodestar_model::Factor],
    /// At or above the operating threshold.
    pub flagged: bool,
    /// The student's week: feature and value (finite values only).
    pub context: &'a [(&'a str, f64)],
    /// The run that scored it.
    pub run_id: Option<i64>,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Predictions made visible.
    pub rows: u64,
    /// Students whose current risk moved.
    pub students: u64,
    /// How long the publishing transaction held the database.
    pub transaction: Duration,
}

impl Store {
    /// Appends `rows` tuples of `columns` parameters to a multi-row `VALUES`. SQLite gets
    /// anonymous `?` (its driver resolves each numbered parameter by a linear search of the
    /// statement's names: quadratic in a statement of thousands), PostgreSQL `$1, $2, ...`.
    fn placeholders(&self, sql: &mut String, rows: usize, columns: usize) {
        let numbered = self.backend() == crate::Backend::Postgres;
        for i in 0..rows {
            sql.push_str(if i > 0 { ",(" } else { "(" });
            for c in 0..columns {
                if c > 0 {
                    sql.push(',');
                }
                if numbered {
                    sql.push('$');
                    sql.push_str(itoa::Buffer::new().format(1 + i * columns + c));
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
    }

    /// Opens the batch tonight's scores are staged into: an unpublished batch of the same key
    /// is resumed; unpublished batches of other keys (runs that will never finish them) are
    /// deleted in chunks.
    pub async fn open_score_batch(
        &self,
        key: &BatchKey,
        run_id: Option<i64>,
    ) -> Result<ScoreBatch, StoreError> {
        let open = sqlx::query(
            "SELECT id, model, version, snapshot, rows_planned, rows_done FROM score_batches \
             WHERE published_at IS NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        let mut resume = None;
        let mut discarded = 0;
        for r in &open {
            let id: i64 = r.try_get("id")?;
            let same = r.try_get::<String, _>("model")? == key.model
                && r.try_get::<i64, _>("version")? == key.version
                && r.try_get::<String, _>("snapshot")? == key.snapshot
                && r.try_get::<i64, _>("rows_planned")? == key.rows as i64;
            if same && resume.is_none() {
                resume = Some((id, r.try_get::<i64, _>("rows_done")?));
            } else {
                discarded += self.discard_batch(id).await?;
            }
        }
        if let Some((id, done)) = resume {
            sqlx::query("UPDATE score_batches SET run_id = $1 WHERE id = $2")
                .bind(run_id)
                .bind(id)
                .execute(self.pool())
                .await?;
            return Ok(ScoreBatch {
                id,
                rows_done: done.max(0) as u64,
                resumed: true,
                discarded,
            });
        }
        let id = self.new_batch(key, run_id).await?;
        Ok(ScoreBatch {
            id,
            rows_done: 0,
            resumed: false,
            discarded,
        })
    }

    async fn new_batch(&self, key: &BatchKey, run_id: Option<i64>) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO score_batches (model, version, snapshot, run_id, rows_planned, rows_done, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) RETURNING id",
        )
        .bind(&key.model)
        .bind(key.version)
        .bind(&key.snapshot)
        .bind(run_id)
        .bind(key.rows as i64)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Deletes an unpublished batch's rows, a chunk per transaction, then the batch.
    async fn discard_batch(&self, id: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM prediction_rows WHERE id IN \
                 (SELECT id FROM prediction_rows WHERE batch_id = $1 LIMIT $2)",
            )
            .bind(id)
            .bind(DELETE_CHUNK)
            .execute(self.pool())
            .await?;
            deleted += done.rows_affected();
            if done.rows_affected() == 0 {
                break;
            }
        }
        sqlx::query("DELETE FROM score_batches WHERE id = $1 AND published_at IS NULL")
            .bind(id)
            .execute(self.pool())
            .await?;
        self.staged_batches().remove(&id);
        Ok(deleted)
    }

    /// A batch's predictions per tier.
    pub async fn batch_tiers(&self, batch: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tier, COUNT(*) AS n FROM prediction_rows WHERE batch_id = $1 GROUP BY tier ORDER BY tier",
        )
        .bind(batch)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tier")?, r.try_get::<i64, _>("n")?.max(0) as u64)))
            .collect()
    }

    /// Stores predictions at once (a batch of their own, staged in chunks and published): for
    /// callers that score a few rows; the nightly run stages its own batch chunk by chunk.
    pub async fn insert_predictions(&self, rows: &[NewPrediction]) -> Result<u64, StoreError> {
        let key = BatchKey {
            model: rows.first().map(|p| p.model.clone()).unwrap_or_default(),
            version: rows.first().map_or(0, |p| p.version),
            snapshot: String::new(),
            rows: rows.len() as u64,
        };
        // A row whose run is not its batch's keeps its own, unless it has none: that would read
        // as the batch's, so a batch of several runs has none.
        let run_id = rows.first().and_then(|p| p.run_id);
        let run_id = if rows.iter().all(|p| p.run_id == run_id) {
            run_id
        } else {
            None
        };
        let batch = self.new_batch(&key, run_id).await?;
        let stored = async {
            for chunk in rows.chunks(STAGE_CHUNK) {
                self.stage_predictions(batch, chunk).await?;
            }
            self.publish_score_batch(batch).await
        }
        .await;
        if stored.is_err() {
            // No run takes this batch up (a nightly discards it): forget what it staged here.
            self.staged_batches().remove(&batch);
        }
        stored?;
        Ok(rows.len() as u64)
    }
}

/// Predictions per staging transaction: a few hundredths of a second of writing.
pub const STAGE_CHUNK: usize = 5_000;
