//! Scoring at batch speed in bounded memory: the rows are scored and explained a chunk at a
//! time on a blocking thread while the previous chunk is staged in the store, then the batch is
//! published at once (see `lodestar_store`'s score batches). Used by the nightly `score` step
//! and by `lodestar bench score`, which also times the same rows scored without storing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestar_model::Artifact;
use lodestar_store::{BatchKey, NewPrediction, StagedRow, Store};
use lodestar_train::Snapshot;
use lodestar_train::batch::{CONTEXT_FEATURES, context, score_rows};
use serde_json::json;

use crate::Failpoints;
use crate::steps::ScoreTiming;

/// Rows of a snapshot to score with one model version.
#[derive(Clone)]
pub struct ScoreJob {
    /// Model.
    pub model: String,
    /// Version scoring.
    pub version: i64,
    /// The run it belongs to.
    pub run_id: Option<i64>,
    /// The snapshot's id (a batch is resumed only on the same snapshot).
    pub snapshot_id: String,
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
    /// The version's artifact.
    pub artifact: Arc<Artifact>,
    /// Snapshot rows to score, in a fixed order.
    pub rows: Arc<Vec<usize>>,
    /// Rows per write transaction.
    pub chunk: usize,
}

impl ScoreJob {
    /// Scores, explains and shapes `chunk` in the form `store` keeps, its parts on every core.
    fn staged(&self, store: &Store, chunk: &[usize]) -> Result<Vec<StagedRow>, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let part = chunk.len().div_ceil(cores.max(1)).max(256);
        std::thread::scope(|scope| {
            let parts: Vec<_> = chunk
                .chunks(part)
                .map(|c| {
                    scope.spawn(move || -> Result<Vec<StagedRow>, String> {
                        Ok(self
                            .predictions_of(c)?
                            .into_iter()
                            .map(|p| store.staged_form(p))
                            .collect())
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(chunk.len());
            for p in parts {
                out.extend(p.join().map_err(|_| "scoring panicked".to_owned())??);
            }
            Ok(out)
        })
    }

    /// Every feature name this job's explanations and contexts can use.
    fn feature_names(&self) -> Vec<String> {
        self.artifact
            .encoder
            .columns
            .iter()
            .map(|c| c.name.clone())
            .chain(CONTEXT_FEATURES.iter().map(|n| (*n).to_owned()))
            .collect()
    }

    /// Scores, explains and shapes `chunk` for the store, its parts on every core.
    fn predictions(&self, chunk: &[usize]) -> Result<Vec<NewPrediction>, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 || chunk.len() < 256 {
            return self.predictions_of(chunk);
        }
        let part = chunk.len().div_ceil(cores);
        std::thread::scope(|scope| {
            let parts: Vec<_> = chunk
                .chunks(part)
                .map(|c| scope.spawn(move || self.predictions_of(c)))
                .collect();
            let mut out = Vec::with_capacity(chunk.len());
            for p in parts {
                out.extend(p.join().map_err(|_| "scoring panicked".to_owned())??);
            }
            Ok(out)
        })
    }

    fn predictions_of(&self, chunk: &[usize]) -> Result<Vec<NewPrediction>, String> {
        let s = &self.snapshot;
        let predictions = score_rows(s, &self.artifact, chunk).map_err(|e| e.to_string())?;
        Ok(chunk
            .iter()
            .zip(predictions)
            .map(|(r, pr)| {
                let name = &s.presentations[s.presentation[*r] as usize];
                let (module, code) = name.split_once('-').unwrap_or((name, ""));
                NewPrediction {
                    model: self.model.clone(),
                    version: self.version,
                    code_module: module.to_owned(),
                    code_presentation: code.to_owned(),
                    id_student: s.student[*r],
                    as_of_week: i64::from(s.week[*r]),
                    probability: pr.probability,
                    tier: pr.tier.as_str().to_owned(),
                    explanation: json!({"up": pr.factors_up, "down": pr.factors_down, "flagged": pr.flagged}),
                    run_id: self.run_id,
                    context: context(s, *r),
                }
            })
            .collect())
    }

    /// Scores every row in memory a chunk at a time, storing nothing: the rate storing is
    /// compared with (the same work as [`score_and_store`] up to the database: scoring,
    /// explaining and shaping the rows on every core). Returns the time it took.
    pub fn score_in_memory(&self) -> Result<Duration, String> {
        let t = Instant::now();
        for chunk in self.rows.chunks(self.chunk.max(1)) {
            std::hint::black_box(self.predictions(chunk)?);
        }
        Ok(t.elapsed())
    }
}

/// Scores `job`'s rows into a batch of `store` and publishes it: an unpublished batch of the
/// same rows left by an interrupted run is taken up after the rows it holds. Returns the
/// timing (without `seconds`, which the caller measures) and the batch's id.
pub async fn score_and_store(
    store: &Store,
    job: ScoreJob,
    failpoints: &Failpoints,
) -> Result<(ScoreTiming, i64), String> {
    let mut timing = ScoreTiming {
        rows: job.rows.len() as u64,
        ..ScoreTiming::default()
    };
    let key = BatchKey {
        model: job.model.clone(),
        version: job.version,
        snapshot: job.snapshot_id.clone(),
        rows: job.rows.len() as u64,
    };
    let batch = store
        .open_score_batch(&key, job.run_id)
        .await
        .map_err(|e| e.to_string())?;
    timing.resumed_after = batch.rows_done;
    timing.discarded = batch.discarded;
    // Two chunks in flight at most: memory does not grow with the weeks or presentations.
    store
        .intern_feature_names(&job.feature_names())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<StagedRow>>(1);
    let producer_store = store.clone();
    let skip = (batch.rows_done as usize).min(job.rows.len());
    let producer = tokio::task::spawn_blocking(move || -> Result<Duration, String> {
        let mut busy = Duration::ZERO;
        for chunk in job.rows[skip..].chunks(job.chunk.max(1)) {
            let t = Instant::now();
            let out = job.staged(&producer_store, chunk)?;
            busy += t.elapsed();
            if tx.blocking_send(out).is_err() {
                break;
            }
        }
        Ok(busy)
    });
    let mut first = true;
    while let Some(chunk) = rx.recv().await {
        let held = store
            .stage_rows(batch.id, &chunk)
            .await
            .map_err(|e| e.to_string())?;
        timing.transactions += 1;
        timing.longest_write_ms = timing.longest_write_ms.max(held.as_secs_f64() * 1e3);
        if first {
            failpoints.hit("score:staged");
            first = false;
        }
    }
    let busy = producer
        .await
        .map_err(|e| format!("panicked: {}", crate::runner::panic_message(e)))??;
    timing.compute_seconds = busy.as_secs_f64();
    failpoints.hit("score:before-commit");
    let published = store
        .publish_score_batch(batch.id)
        .await
        .map_err(|e| e.to_string())?;
    timing.transactions += 1;
    timing.publish_ms = published.transaction.as_secs_f64() * 1e3;
    timing.longest_write_ms = timing.longest_write_ms.max(timing.publish_ms);
    Ok((timing, batch.id))
}
