//! Runs the pipeline once: takes the lease (one run at a time across replicas), records the run
//! and every attempt of every step with its inputs' and outputs' hashes, replays a step whose
//! inputs match a finished one (the step cache), retries a failing or panicking step with
//! exponential backoff, stops one that runs past its timeout, and ends with a clear status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestar_store::NewRun;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::dag::{PIPELINE, StepSpec};
use crate::steps::{self, Inputs, RunContext, StepError};
use crate::{Pipeline, SchedulerError};

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `cron`, `catch-up`, `inbox`, `cli`, `api`, `demo`.
    pub kind: String,
    /// The cron slot it serves (RFC 3339), for scheduled runs.
    pub slot: Option<String>,
    /// The export to read (default: `pipeline.export`).
    pub export: Option<PathBuf>,
    /// Run every step even when a finished one with the same inputs exists.
    pub no_cache: bool,
    /// A run queued over the API, claimed instead of starting a new one.
    pub queued: Option<i64>,
}

impl Trigger {
    /// An on-demand run.
    pub fn on_demand(kind: &str) -> Trigger {
        Trigger {
            kind: kind.to_owned(),
            slot: None,
            export: None,
            no_cache: false,
            queued: None,
        }
    }

    /// A run queued over the API (`POST /v1/pipeline/runs`).
    pub fn queued(run: &lodestar_store::PipelineRun) -> Trigger {
        Trigger {
            kind: "api".to_owned(),
            slot: None,
            export: None,
            no_cache: run.no_cache,
            queued: Some(run.id),
        }
    }
}

/// What the progress display hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run started.
    RunStarted {
        /// Run id.
        run: i64,
    },
    /// An attempt of a step started.
    StepStarted {
        /// Step.
        step: &'static str,
        /// Attempt, from 1.
        attempt: u32,
    },
    /// A step's output was replayed from an earlier run.
    StepCached {
        /// Step.
        step: &'static str,
        /// The run whose output it replayed.
        from_run: i64,
    },
    /// A step succeeded.
    StepSucceeded {
        /// Step.
        step: &'static str,
        /// Seconds.
        seconds: f64,
    },
    /// An attempt failed.
    StepFailed {
        /// Step.
        step: &'static str,
        /// Attempt.
        attempt: u32,
        /// Why.
        error: String,
        /// Wait before the next attempt, if there is one.
        retry_in: Option<Duration>,
    },
    /// A step did not run because an earlier one failed.
    StepSkipped {
        /// Step.
        step: &'static str,
    },
}

/// How a call to [`Pipeline::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The run finished (succeeded or failed: see `status`).
    Finished {
        /// Run id.
        run: i64,
        /// `succeeded` or `failed`.
        status: String,
        /// The failed step's error.
        error: Option<String>,
        /// Drift above the threshold.
        flagged: bool,
        /// The run summary.
        summary: Value,
    },
    /// Another scheduler holds the lease.
    Busy {
        /// Who, as recorded.
        holder: Option<String>,
    },
    /// The cron slot was already served (by another replica or an earlier start).
    AlreadyServed {
        /// The slot.
        slot: String,
    },
}

fn hash_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a panic said.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// The part of the configuration a step's result depends on (part of its inputs' hash).
fn step_config(p: &Pipeline, step: &str) -> Value {
    let c = &p.config;
    match step {
        "train" => {
            json!({"model": c.model, "family": c.family, "train": c.train, "test": c.test, "seed": c.seed})
        }
        "evaluate" => json!({"weeks": c.weeks, "seed": c.seed}),
        "register" => json!({"model": c.model}),
        "score" => {
            json!({"train": c.train, "test": c.test, "week": c.score_week, "history": c.score_history, "finished": c.score_finished})
        }
        "drift" => json!({"threshold": c.drift_threshold}),
        _ => Value::Null,
    }
}

/// Version of the step code, part of every inputs' hash: a new release recomputes.
const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Pipeline {
    /// Runs the pipeline once for `trigger`, reporting progress to `progress`.
    pub async fn run(
        self: &Arc<Self>,
        trigger: &Trigger,
        progress: &(dyn Fn(&Event) + Send + Sync),
    ) -> Result<Outcome, SchedulerError> {
        let stale =
            chrono::Utc::now() - chrono::Duration::seconds(self.config.lease_stale_seconds as i64);
        let stale = stale.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let Some(lease) = self
            .store
            .try_lease(&self.holder, &stale, &process_alive)
            .await?
        else {
            let holder = self.store.lease_record().await?.holder;
            return Ok(Outcome::Busy { holder });
        };
        let result = self.run_leased(trigger, progress, &lease).await;
        let released = lease.release().await;
        let outcome = result?;
        released?;
        Ok(outcome)
    }

    async fn run_leased(
        self: &Arc<Self>,
        trigger: &Trigger,
        progress: &(dyn Fn(&Event) + Send + Sync),
        lease: &lodestar_store::Lease,
    ) -> Result<Outcome, SchedulerError> {
        let closed = self.store.close_interrupted_runs(&self.holder.id).await?;
        if closed > 0 {
            tracing::warn!(
                closed,
                "closed runs left running by a scheduler that stopped"
            );
        }
        let export = trigger
            .export
            .clone()
            .or_else(|| self.config.export.clone())
            .ok_or_else(|| {
                SchedulerError::Config(
                    "no export to read: pass --export DIR or set pipeline.export".into(),
                )
            })?;
        // Recorded absolute, so `pipeline show` names it whatever folder it is read from.
        let export = std::path::absolute(&export).unwrap_or(export);
        let export_text = export.display().to_string();
        let started = match trigger.queued {
            Some(id) => self
                .store
                .claim_run(id, &self.holder.id, &export_text)
                .await?
                .then_some(id),
            None => {
                self.store
                    .start_run(&NewRun {
                        trigger: &trigger.kind,
                        scheduled_for: trigger.slot.as_deref(),
                        export_dir: Some(&export_text),
                        holder: Some(&self.holder.id),
                    })
                    .await?
            }
        };
        let Some(run_id) = started else {
            return Ok(Outcome::AlreadyServed {
                slot: trigger.slot.clone().unwrap_or_default(),
            });
        };
        progress(&Event::RunStarted { run: run_id });
        let heartbeat_every = Duration::from_secs((self.config.lease_stale_seconds / 3).max(1));
        let mut outputs: Inputs = BTreeMap::new();
        let mut hashes: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut statuses = serde_json::Map::new();
        let mut failure: Option<(String, String)> = None;
        let mut ctx = RunContext {
            id: run_id,
            export,
            so_far: Value::Null,
            no_cache: trigger.no_cache,
        };
        for spec in &PIPELINE {
            if failure.is_some() && !spec.always {
                statuses.insert(spec.name.into(), json!({"status": "skipped"}));
                let id = self.store.start_step(run_id, spec.name, 0, None).await?;
                self.store
                    .finish_step(id, "skipped", None, None, Some("an earlier step failed"))
                    .await?;
                progress(&Event::StepSkipped { step: spec.name });
                continue;
            }
            let inputs: Inputs = spec
                .after
                .iter()
                .filter_map(|d| outputs.get(d).map(|v| (*d, v.clone())))
                .collect();
            let input_hash = hash_hex(
                json!({
                    "step": spec.name,
                    "code": CODE_VERSION,
                    "config": step_config(self, spec.name),
                    "inputs": spec.after.iter().map(|d| (d.to_string(), hashes.get(d).cloned())).collect::<BTreeMap<_, _>>(),
                })
                .to_string()
                .as_bytes(),
            );
            ctx.so_far = Value::Object(statuses.clone());
            let started = Instant::now();
            let done = tokio::select! {
                r = self.run_step(spec, &ctx, &inputs, &input_hash, trigger.no_cache, progress) => r?,
                () = heartbeat(lease, heartbeat_every) => unreachable_heartbeat(),
            };
            match done {
                Ok((output, output_hash, cached_from)) => {
                    let mut status = json!({"status": if cached_from.is_some() { "cached" } else { "succeeded" }, "seconds": started.elapsed().as_secs_f64()});
                    if let Some(from) = cached_from {
                        status["from_run"] = json!(from);
                    }
                    statuses.insert(spec.name.into(), status);
                    hashes.insert(spec.name, output_hash);
                    outputs.insert(spec.name, output);
                }
                Err(error) => {
                    statuses.insert(
                        spec.name.into(),
                        json!({"status": "failed", "error": error}),
                    );
                    if failure.is_none() {
                        failure = Some((spec.name.to_owned(), error));
                    }
                }
            }
        }
        ctx.so_far = Value::Object(statuses);
        let summary = steps::summary(&ctx, &outputs);
        let flagged = outputs
            .get("drift")
            .and_then(|d| d.get("flagged"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (status, error) = match &failure {
            Some((step, e)) => ("failed", Some(format!("step {step} failed: {e}"))),
            None => ("succeeded", None),
        };
        self.store
            .finish_run(run_id, status, error.as_deref(), flagged, &summary)
            .await?;
        Ok(Outcome::Finished {
            run: run_id,
            status: status.to_owned(),
            error,
            flagged,
            summary,
        })
    }

    /// One step: from the cache, or attempted until it succeeds or the attempts run out.
    /// The outer error is the store's; the inner one the step's last error.
    async fn run_step(
        self: &Arc<Self>,
        spec: &'static StepSpec,
        ctx: &RunContext,
        inputs: &Inputs,
        input_hash: &str,
        no_cache: bool,
        progress: &(dyn Fn(&Event) + Send + Sync),
    ) -> Result<Result<(Value, String, Option<i64>), String>, SchedulerError> {
        let store = &self.store;
        if spec.cacheable
            && !no_cache
            && let Some(hit) = store.cached_step(spec.name, input_hash).await?
            && let (Some(output), Some(hash)) = (hit.output, hit.output_hash)
            && steps::still_valid(spec.name, &output)
        {
            let id = store
                .start_step(ctx.id, spec.name, 1, Some(input_hash))
                .await?;
            store
                .finish_step(id, "cached", Some(&output), Some(&hash), None)
                .await?;
            progress(&Event::StepCached {
                step: spec.name,
                from_run: hit.run_id,
            });
            return Ok(Ok((output, hash, Some(hit.run_id))));
        }
        let attempts = self.config.attempts;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            progress(&Event::StepStarted {
                step: spec.name,
                attempt,
            });
            let started = Instant::now();
            let id = store
                .start_step(ctx.id, spec.name, i64::from(attempt), Some(input_hash))
                .await?;
            let result = self.attempt(spec, ctx, inputs, attempt).await;
            match result.map_err(|e| (e.permanent, e.message)) {
                Ok(output) => {
                    let hash = hash_hex(
                        steps::hashed_view(spec.name, &output)
                            .to_string()
                            .as_bytes(),
                    );
                    self.failpoints.hit(&format!("{}:after", spec.name));
                    store
                        .finish_step(id, "succeeded", Some(&output), Some(&hash), None)
                        .await?;
                    progress(&Event::StepSucceeded {
                        step: spec.name,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    return Ok(Ok((output, hash, None)));
                }
                Err((permanent, error)) => {
                    store
                        .finish_step(id, "failed", None, None, Some(&error))
                        .await?;
                    if permanent {
                        progress(&Event::StepFailed {
                            step: spec.name,
                            attempt,
                            error: error.clone(),
                            retry_in: None,
                        });
                        return Ok(Err(error));
                    }
                    let retry_in = (attempt < attempts).then(|| {
                        Duration::from_millis(
                            self.config
                                .backoff_ms
                                .saturating_mul(1 << (attempt - 1).min(16)),
                        )
                    });
                    progress(&Event::StepFailed {
                        step: spec.name,
                        attempt,
                        error: error.clone(),
                        retry_in,
                    });
                    last_error = error;
                    if let Some(wait) = retry_in {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        Ok(Err(if attempts > 1 {
            format!("{last_error} (after {attempts} attempts)")
        } else {
            last_error
        }))
    }

    /// One attempt, on its own task: a panic or a timeout is an error like any other.
    async fn attempt(
        self: &Arc<Self>,
        spec: &'static StepSpec,
        ctx: &RunContext,
        inputs: &Inputs,
        attempt: u32,
    ) -> Result<Value, StepError> {
        let (p, c, i) = (Arc::clone(self), ctx.clone(), inputs.clone());
        let name = spec.name;
        let task = tokio::spawn(async move {
            p.failpoints.fail(name, attempt)?;
            if p.failpoints.hangs(name) {
                std::future::pending::<()>().await;
            }
            steps::execute(p, c, name, i).await
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(self.config.step_timeout(), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("panicked: {}", panic_message(join)).into()),
            Err(_) => {
                abort.abort();
                Err(format!(
                    "timed out after {} s (pipeline.step_timeout_seconds)",
                    self.config.step_timeout_seconds
                )
                .into())
            }
        }
    }
}

/// Renews the lease until the step it runs beside ends (never returns on its own).
async fn heartbeat(lease: &lodestar_store::Lease, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = lease.heartbeat().await {
            tracing::warn!(error = %e, "could not renew the pipeline lease");
        }
    }
}

fn unreachable_heartbeat() -> Result<(Value, String, Option<i64>), String> {
    Err("the lease heartbeat stopped".into())
}

/// Whether a process of this host is alive (Linux: its /proc entry exists).
pub fn process_alive(pid: i64) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}
