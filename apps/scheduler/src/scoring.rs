//! Scoring at batch speed in bounded memory: the rows are scored and explained a chunk at a
//! time on a blocking thread while the previous chunk is staged in the store, then the batch is
//! published at once (see `lodestar_store`'s score batches). Used by the nightly `score` step
//! and by `lodestar bench score`, which also times the same rows scored without storing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lodestar_model::Artifact;
use lodestar_store::{BatchKey, Scored, StagedRow, Store};
use lodestar_train::Snapshot;
use lodestar_train::batch::{CONTEXT_FEATURES, ContextColumns, score_rows};

use crate::Failpoints;
use crate::steps::ScoreTiming;

/// Rows a scoring thread takes at a time.
const PART_ROWS: usize = 250;

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
        let columns = ContextColumns::of(&self.snapshot);
        self.on_every_core(chunk, |part| {
            let predictions =
                score_rows(&self.snapshot, &self.artifact, part).map_err(|e| e.to_string())?;
            let mut context = Vec::with_capacity(CONTEXT_FEATURES.len());
            Ok(part
                .iter()
                .zip(predictions)
                .map(|(r, pr)| {
                    columns.read(&self.snapshot, *r, &mut context);
                    let (module, code) = self.presentation_of(*r);
                    store.staged_scored(Scored {
                        model: &self.model,
                        version: self.version,
                        code_module: module,
                        code_presentation: code,
                        id_student: self.snapshot.student[*r],
                        as_of_week: i64::from(self.snapshot.week[*r]),
                        probability: pr.probability,
                        tier: pr.tier.as_str(),
                        up: &pr.factors_up,
                        down: &pr.factors_down,
                        flagged: pr.flagged,
                        context: &context,
                        run_id: self.run_id,
                    })
                })
                .collect())
        })
    }

    /// Runs `f` over parts of `chunk` on every core, results in order. The parts are small and
    /// taken by whichever thread is free, so a core shared with the writer does not leave the
    /// other idle at the end of each chunk.
    fn on_every_core<T: Send>(
        &self,
        chunk: &[usize],
        f: impl Fn(&[usize]) -> Result<Vec<T>, String> + Sync,
    ) -> Result<Vec<T>, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores <= 1 || chunk.len() <= PART_ROWS {
            return f(chunk);
        }
        let parts: Vec<&[usize]> = chunk.chunks(PART_ROWS).collect();
        let next = AtomicUsize::new(0);
        let done = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..cores.min(parts.len()))
                .map(|_| {
                    scope.spawn(|| -> Result<Vec<(usize, Vec<T>)>, String> {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(part) = parts.get(i) else {
                                return Ok(done);
                            };
                            done.push((i, f(part)?));
                        }
                    })
                })
                .collect();
            let mut done = Vec::with_capacity(parts.len());
            for w in workers {
                done.extend(w.join().map_err(|_| "scoring panicked".to_owned())??);
            }
            Ok::<_, String>(done)
        })?;
        let mut done = done;
        done.sort_unstable_by_key(|(i, _)| *i);
        Ok(done.into_iter().flat_map(|(_, rows)| rows).collect())
    }

    fn presentation_of(&self, r: usize) -> (&str, &str) {
        let name = &self.snapshot.presentations[self.snapshot.presentation[r] as usize];
        name.split_once('-').unwrap_or((name, ""))
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

    /// Scores and explains every row in memory a chunk at a time on every core, with each
    /// row's weekly context, storing nothing: the rate storing is compared with. Returns the
    /// time it took.
    pub fn score_in_memory(&self) -> Result<Duration, String> {
        let t = Instant::now();
        let columns = ContextColumns::of(&self.snapshot);
        for chunk in self.rows.chunks(self.chunk.max(1)) {
            let out = self.on_every_core(chunk, |part| {
                let predictions =
                    score_rows(&self.snapshot, &self.artifact, part).map_err(|e| e.to_string())?;
                let mut context = Vec::new();
                Ok(part
                    .iter()
                    .zip(predictions)
                    .map(|(r, pr)| {
                        columns.read(&self.snapshot, *r, &mut context);
                        (pr, context.len())
                    })
                    .collect())
            })?;
            std::hint::black_box(out);
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
    let started = Instant::now();
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
            .stage_rows(batch.id, chunk)
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
    timing.write_seconds = started.elapsed().as_secs_f64();
    Ok((timing, batch.id))
}
