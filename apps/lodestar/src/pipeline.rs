//! `lodestar pipeline …`, `lodestar scheduler`, `lodestar up` and `lodestar demo`: the nightly
//! pipeline from the command line with a live display per step, and the services that run it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use lodestar_scheduler::service::{Folders, router, run_json, run_scheduler, step_json};
use lodestar_scheduler::{Event, Outcome, Pipeline, PipelineConfig, Trigger, schedule};
use lodestar_store::{PipelineRun, Store};
use serde_json::{Value, json};

use crate::cli::{DemoArgs, PipelineCommand, ServeArgs};
use crate::config::Config;
use crate::models::{artifacts, connect};

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) async fn pipeline(
    config: &Config,
    pipeline: PipelineConfig,
) -> anyhow::Result<Arc<Pipeline>> {
    let store = connect(config).await?;
    Ok(Arc::new(Pipeline::new(
        store,
        artifacts(config)?,
        config.snapshot_dir.value.clone(),
        pipeline,
    )?))
}

/// The live display: one line per step event, with the time since the run started.
fn display() -> impl Fn(&Event) + Send + Sync {
    let started = Instant::now();
    move |e: &Event| {
        let t = started.elapsed().as_secs_f64();
        match e {
            Event::RunStarted { run } => eprintln!("[{t:>7.1} s] run {run} started"),
            Event::StepStarted { step, attempt } if *attempt > 1 => {
                eprintln!("[{t:>7.1} s] {step:<9} running (attempt {attempt})")
            }
            Event::StepStarted { step, .. } => eprintln!("[{t:>7.1} s] {step:<9} running"),
            Event::StepCached { step, from_run } => {
                eprintln!("[{t:>7.1} s] {step:<9} cached (same inputs as run {from_run})")
            }
            Event::StepSucceeded { step, seconds } => {
                eprintln!("[{t:>7.1} s] {step:<9} done in {seconds:.1} s")
            }
            Event::StepFailed {
                step,
                attempt,
                error,
                retry_in,
            } => match retry_in {
                Some(wait) => eprintln!(
                    "[{t:>7.1} s] {step:<9} attempt {attempt} failed: {error}; retrying in {:.1} s",
                    wait.as_secs_f64()
                ),
                None => eprintln!("[{t:>7.1} s] {step:<9} FAILED: {error}"),
            },
            Event::StepSkipped { step } => {
                eprintln!("[{t:>7.1} s] {step:<9} skipped (an earlier step failed)")
            }
        }
    }
}

/// What a finished run did, in a few lines.
fn print_summary(summary: &Value) {
    let cached: Vec<String> = summary["steps"]
        .as_object()
        .map(|steps| {
            steps
                .iter()
                .filter(|(_, s)| s["status"] == "cached")
                .map(|(name, s)| format!("{name} (run {})", s["from_run"]))
                .collect()
        })
        .unwrap_or_default();
    if !cached.is_empty() {
        println!(
            "replayed from earlier runs with the same inputs: {} (their figures below are from then)",
            cached.join(", ")
        );
    }
    if let Some(r) = summary.get("registered").filter(|r| !r.is_null()) {
        println!(
            "registered: {} version {}{}",
            r["model"].as_str().unwrap_or("?"),
            r["version"],
            if r["existing"] == json!(true) {
                " (already registered)"
            } else {
                ""
            }
        );
    }
    if let Some(g) = summary.get("gate").filter(|g| !g.is_null()) {
        let verdict = if g["promoted"] == json!(true) {
            format!("version {} promoted to champion", g["candidate"])
        } else {
            format!("champion stays version {}", g["champion"])
        };
        let reasons: Vec<&str> = g["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if reasons.is_empty() {
            println!("gate: {verdict} (passed the gate)");
        } else {
            println!("gate: {verdict}: {}", reasons.join("; "));
        }
        for w in g["compared"].as_array().into_iter().flatten() {
            println!(
                "  week {}: {} candidate {:.4} vs champion {:.4}, both on tonight's {} test students",
                w["week"],
                w["metric"].as_str().unwrap_or("?"),
                w["candidate"].as_f64().unwrap_or(f64::NAN),
                w["champion"].as_f64().unwrap_or(f64::NAN),
                w["candidate_n"]
            );
        }
    }
    if let Some(s) = summary.get("score").filter(|s| !s.is_null()) {
        let tiers = &s["by_tier"];
        println!(
            "scored: {} predictions by version {} (high {}, medium {}, low {}) at {}{}",
            s["stored"],
            s["version"],
            tiers["high"],
            tiers["medium"],
            tiers["low"],
            s["weeks"]
                .as_object()
                .map(|w| w
                    .iter()
                    .map(|(p, wk)| format!("{p} week {wk}"))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            match s["already_scored"].as_array() {
                Some(a) if !a.is_empty() => format!(" ({} already scored)", a.len()),
                _ => String::new(),
            }
        );
        for p in s["presentations"].as_array().into_iter().flatten() {
            let as_of = match p["as_of_date"].as_str() {
                Some(d) => format!("as of {d} (day {})", p["as_of_day"]),
                None => format!("as of day {}", p["as_of_day"]),
            };
            println!(
                "  {} ({}, {as_of}): {} students at week {} of {}",
                p["presentation"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["students"],
                p["week"],
                p["weeks"]
            );
        }
        for note in s["notes"].as_array().into_iter().flatten() {
            println!("  note: {}", note.as_str().unwrap_or(""));
        }
        if let Some(t) = s.get("timing").filter(|t| !t.is_null())
            && t["rows"].as_u64().is_some_and(|n| n > 0)
        {
            let rows = t["rows"].as_f64().unwrap_or(0.0);
            let seconds = t["seconds"].as_f64().unwrap_or(f64::NAN);
            let write = t["write_seconds"].as_f64().unwrap_or(seconds);
            let compute = t["compute_seconds"].as_f64().unwrap_or(f64::NAN);
            let resumed = t["resumed_after"].as_u64().unwrap_or(0);
            println!(
                "  {:.1} s ({:.1} s scoring and writing): {:.0} predictions/s scored and stored, {:.0}/s scoring alone (ratio {:.2}); longest write transaction {:.0} ms of {}, publication {:.0} ms{}",
                seconds,
                write,
                rows / write,
                (rows - resumed as f64) / compute,
                compute / write,
                t["longest_write_ms"].as_f64().unwrap_or(f64::NAN),
                t["transactions"],
                t["publish_ms"].as_f64().unwrap_or(f64::NAN),
                if resumed > 0 {
                    format!(" (taken up after {resumed} rows an interrupted run had stored)")
                } else {
                    String::new()
                }
            );
        }
    }
    if let Some(d) = summary.get("drift").filter(|d| !d.is_null()) {
        if let Some(note) = d["note"].as_str() {
            println!("drift: {note}");
        } else {
            let top: Vec<String> = d["top"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .take(3)
                        .map(|f| {
                            format!(
                                "{} {:.3}",
                                f["feature"].as_str().unwrap_or("?"),
                                f["psi"].as_f64().unwrap_or(f64::NAN)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "drift against version {}'s training data: max PSI {:.3}{} (highest: {})",
                d["reference_version"],
                d["max_psi"].as_f64().unwrap_or(f64::NAN),
                if d["flagged"] == json!(true) {
                    ", FLAGGED"
                } else {
                    ""
                },
                top.join(", ")
            );
        }
    }
}

async fn run_once(
    p: &Arc<Pipeline>,
    trigger: &Trigger,
    json_out: bool,
) -> anyhow::Result<Option<i64>> {
    let outcome = p.run(trigger, &display()).await?;
    match outcome {
        Outcome::Finished {
            run,
            status,
            error,
            flagged,
            summary,
        } => {
            if json_out {
                let doc = json!({"run": run, "status": status, "error": error, "flagged": flagged, "summary": summary});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "\nrun {run} {status}{}",
                    if flagged { " (flagged: drift)" } else { "" }
                );
                print_summary(&summary);
                println!("details: lodestar pipeline show {run}");
            }
            if status != "succeeded" {
                bail!(
                    "run {run} failed: {}",
                    error.unwrap_or_else(|| "see lodestar pipeline show".into())
                );
            }
            Ok(Some(run))
        }
        Outcome::Busy { holder } => bail!(
            "another scheduler ({}) is running the pipeline; see `lodestar pipeline status`",
            holder.unwrap_or_else(|| "unknown".into())
        ),
        Outcome::AlreadyServed { slot } => {
            println!("slot {slot} was already served");
            Ok(None)
        }
    }
}

/// `lodestar pipeline …`.
pub(crate) fn run(config: &Config, command: &PipelineCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match command {
            PipelineCommand::Run(args) => {
                let mut settings = config.pipeline.value.clone();
                if let Some(day) = args.as_of_day {
                    settings.as_of_day = Some(day);
                }
                if let Some(date) = args.as_of {
                    settings.as_of = Some(date);
                }
                if let Some(device) = &args.device {
                    settings.device = device.parse().map_err(anyhow::Error::msg)?;
                }
                let p = pipeline(config, settings).await?;
                let trigger = Trigger {
                    kind: "cli".into(),
                    slot: None,
                    export: args.export.clone(),
                    no_cache: args.no_cache,
                    queued: None,
                };
                run_once(&p, &trigger, args.json).await.map(|_| ())
            }
            PipelineCommand::Status { json } => status(config, *json).await,
            PipelineCommand::History { limit, json } => {
                let store = connect(config).await?;
                history(&store, *limit, *json).await
            }
            PipelineCommand::Show { run, json } => {
                let store = connect(config).await?;
                show(&store, *run, *json).await
            }
        }
    })
}

fn seconds_between(a: &str, b: Option<&str>) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(a).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b?).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

fn duration_text(r: &PipelineRun) -> String {
    seconds_between(&r.started_at, r.finished_at.as_deref())
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"))
}

async fn status(config: &Config, json_out: bool) -> anyhow::Result<()> {
    let store = connect(config).await?;
    let lease = store.lease_record().await?;
    let runs = store.runs(20).await?;
    let running = runs.iter().find(|r| r.status == "running");
    let current_step = match running {
        Some(r) => store
            .steps(r.id)
            .await?
            .into_iter()
            .rev()
            .find(|s| s.status == "running")
            .map(|s| s.step),
        None => None,
    };
    let last = runs.iter().find(|r| r.status != "running");
    let p = &config.pipeline.value;
    let tz = p.tz()?;
    let next = p
        .cron()?
        .and_then(|cron| schedule::next_slot(&cron, tz, chrono::Utc::now()));
    let inbox = inbox_dir(config);
    let waiting = lodestar_scheduler::inbox::ready_exports(&inbox, p.inbox_require_marker)
        .map(|v| v.len())
        .unwrap_or(0);
    if json_out {
        let doc = json!({
            "lease": {"holder": lease.holder, "acquired_at": lease.acquired_at, "heartbeat_at": lease.heartbeat_at},
            "running": running.map(run_json), "current_step": current_step,
            "last": last.map(run_json), "next_slot": next.map(schedule::slot_text),
            "schedule": p.schedule, "timezone": p.timezone,
            "inbox": inbox, "exports_waiting": waiting,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match (&lease.holder, running) {
        (Some(h), Some(r)) => println!(
            "running: run {} ({}), step {}, on {h} since {}",
            r.id,
            r.trigger,
            current_step.as_deref().unwrap_or("-"),
            r.started_at
        ),
        (Some(h), None) => println!("lease held by {h} (starting a run)"),
        (None, Some(r)) => println!(
            "run {} is marked running but no scheduler holds the lease: it was interrupted and the next run closes it",
            r.id
        ),
        (None, None) => println!("idle: no run in progress"),
    }
    match last {
        Some(r) => println!(
            "last run: {} {} ({}, {}, {}){}",
            r.id,
            r.status,
            r.trigger,
            r.started_at,
            duration_text(r),
            r.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        None => println!("last run: none yet"),
    }
    println!(
        "schedule: {} ({}), next slot {}",
        p.schedule,
        p.timezone,
        next.map(schedule::slot_text)
            .unwrap_or_else(|| "none".into())
    );
    println!("inbox: {} ({waiting} export(s) waiting)", inbox.display());
    Ok(())
}

async fn history(store: &Store, limit: i64, json_out: bool) -> anyhow::Result<()> {
    let runs = store.runs(limit).await?;
    if json_out {
        let doc: Vec<Value> = runs.iter().map(run_json).collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs yet: `lodestar pipeline run --export DIR` starts one");
        return Ok(());
    }
    println!(
        "{:>5}  {:<9} {:<10} {:<24} {:>9}  {:<7} error",
        "run", "trigger", "status", "started", "took", "flagged"
    );
    for r in &runs {
        println!(
            "{:>5}  {:<9} {:<10} {:<24} {:>9}  {:<7} {}",
            r.id,
            r.trigger,
            r.status,
            r.started_at,
            duration_text(r),
            if r.flagged { "yes" } else { "" },
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn show(store: &Store, id: i64, json_out: bool) -> anyhow::Result<()> {
    let Some(r) = store.run(id).await? else {
        bail!("no run {id}: `lodestar pipeline history` lists them");
    };
    let steps = store.steps(id).await?;
    if json_out {
        let mut doc = run_json(&r);
        doc["steps"] = steps
            .iter()
            .map(|s| {
                let mut v = step_json(s);
                v["output"] = s.output.clone().unwrap_or(Value::Null);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "run {} {} ({}{}), started {}, took {}{}",
        r.id,
        r.status,
        r.trigger,
        r.scheduled_for
            .as_deref()
            .map(|s| format!(" for slot {s}"))
            .unwrap_or_default(),
        r.started_at,
        duration_text(&r),
        if r.flagged { ", FLAGGED" } else { "" }
    );
    if let Some(e) = &r.export_dir {
        println!("export: {e}");
    }
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
    println!(
        "\n{:<9} {:>7} {:<9} {:>8}  {:<12} {:<12} error",
        "step", "attempt", "status", "seconds", "inputs", "outputs"
    );
    for s in &steps {
        let short = |h: &Option<String>| {
            h.as_deref()
                .map_or("-", |h| &h[..h.len().min(12)])
                .to_owned()
        };
        println!(
            "{:<9} {:>7} {:<9} {:>8}  {:<12} {:<12} {}",
            s.step,
            s.attempt,
            s.status,
            seconds_between(&s.started_at, s.finished_at.as_deref())
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            short(&s.input_hash),
            short(&s.output_hash),
            s.error.as_deref().unwrap_or("")
        );
    }
    if let Some(summary) = &r.summary {
        println!();
        print_summary(summary);
    }
    Ok(())
}

fn inbox_dir(config: &Config) -> PathBuf {
    config
        .pipeline
        .value
        .inbox
        .clone()
        .unwrap_or_else(|| config.data_dir.value.join("inbox"))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// What one process serves besides the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Services {
    /// `lodestar scheduler`: its run status on HTTP.
    SchedulerOnly,
    /// `lodestar up` and `lodestar demo`: the prediction API (with the run routes) too.
    All,
}

/// Serves HTTP and runs the scheduler until SIGINT or SIGTERM.
async fn serve(
    config: &Config,
    p: Arc<Pipeline>,
    args: &ServeArgs,
    services: Services,
) -> anyhow::Result<()> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let api = match services {
        Services::All => Some(
            lodestar_api::Api::new(
                p.store.clone(),
                p.artifacts.clone(),
                config.api.value.clone(),
                Some(wake.clone()),
            )
            .await?,
        ),
        Services::SchedulerOnly => None,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {} (--listen, LODESTAR_LISTEN)", args.listen))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    println!("serving on {base}");
    println!("  {base}/healthz            liveness");
    if api.is_some() {
        println!("  {base}/signin             the advisor dashboard (sign in)");
        crate::api::print_routes(&base);
    } else {
        println!("  {base}/readyz             readiness (store reachable)");
        println!("  {base}/v1/pipeline/runs   pipeline runs (JSON)");
    }
    println!(
        "scheduler: {} ({}); inbox {}",
        p.config.schedule,
        p.config.timezone,
        inbox_dir(config).display()
    );
    println!("stop with Ctrl-C");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let http = async {
        match api {
            Some(api) => {
                let dashboard = lodestar_dashboard::Dashboard::new(
                    p.store.clone(),
                    config.dashboard.value.clone(),
                )
                .map_err(anyhow::Error::msg)?;
                api.serve_with(listener, dashboard.routes(), stopped(stop_rx.clone()))
                    .await
                    .context("the HTTP server")
            }
            None => axum::serve(listener, router(p.store.clone()))
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .await
                .context("the HTTP server"),
        }
    };
    let folders = Folders {
        inbox: inbox_dir(config),
        landed: config.export_dir.value.clone(),
    };
    let scheduler = run_scheduler(p.clone(), folders, wake, stopped(stop_rx.clone()));
    let signal = async move {
        shutdown_signal().await;
        eprintln!("shutting down: finishing in-flight requests and the current run");
        let _ = stop_tx.send(true);
    };
    let (http, scheduler, ()) = tokio::join!(http, scheduler, signal);
    http?;
    scheduler?;
    Ok(())
}

/// `lodestar scheduler`.
pub(crate) fn scheduler(config: &Config, args: &ServeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let p = pipeline(config, config.pipeline.value.clone()).await?;
        serve(config, p, args, Services::SchedulerOnly).await
    })
}

/// `lodestar up`.
pub(crate) fn up(config: &Config, args: &ServeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let p = pipeline(config, config.pipeline.value.clone()).await?;
        serve(config, p, args, Services::All).await
    })
}

/// The demo advisor: a new password each time the demo runs, and a caseload of the first
/// running presentation the champion scored (this week's students of the term under way).
async fn demo_advisor(p: &Pipeline) -> anyhow::Result<()> {
    let store = &p.store;
    let model = &p.config.model;
    let champion = store
        .alias(model, lodestar_store::CHAMPION)
        .await?
        .context("the demo run left no champion")?;
    let (id, password) = demo_user(store, DEMO_ADVISOR, "advisor").await?;
    let running: Vec<String> = store
        .terms()
        .await?
        .into_iter()
        .filter(|t| t.is_running())
        .map(|t| t.presentation)
        .collect();
    let scored = store.scored_students(model, champion).await?;
    let Some((module, presentation, _)) = scored
        .iter()
        .find(|(m, c, _)| running.contains(&format!("{m}-{c}")))
        .or(scored.first())
        .cloned()
    else {
        bail!("the champion scored no student");
    };
    let caseload: Vec<_> = scored
        .into_iter()
        .filter(|(m, c, _)| *m == module && *c == presentation)
        .collect();
    store.assign_many(id, &caseload).await?;
    let name = format!("{module}-{presentation}");
    let term = store
        .term(&module, &presentation)
        .await?
        .map_or_else(String::new, |t| format!(", {}", t.describe()));
    println!(
        "demo advisor: {DEMO_ADVISOR} / {password} (caseload: the {} students scored in {name}{term}; the dashboard signs in with it; a new password each demo run)",
        caseload.len()
    );
    let (_, admin_password) = demo_user(store, DEMO_ADMIN, "admin").await?;
    println!(
        "demo admin: {DEMO_ADMIN} / {admin_password} (every student, the model page and the audit log)"
    );
    Ok(())
}

/// The demo's export: the sample with one presentation cut as a term under way, in
/// `<exports>/demo-running` (made anew each run); the removed outcomes are kept beside it.
fn demo_running_export(config: &Config, args: &DemoArgs) -> anyhow::Result<std::path::PathBuf> {
    let exports = &config.export_dir.value;
    let dst = exports.join("demo-running");
    let outcomes = exports.join("demo-running-outcomes.csv");
    if dst.exists() {
        std::fs::remove_dir_all(&dst).with_context(|| format!("removing {}", dst.display()))?;
    }
    std::fs::create_dir_all(exports).with_context(|| format!("creating {}", exports.display()))?;
    let cut = lodestar_samples::cut::cut_running(
        &args.export,
        &dst,
        std::slice::from_ref(&args.running),
        args.as_of_day,
        Some(&outcomes),
    )
    .with_context(|| format!("cutting {} as a running term", args.running))?;
    println!(
        "demo: {} shown as the term under way, exported on day {} (week {}): the outcomes of its {} students removed (kept in {} to compare with the live scores) and {} later click rows dropped",
        args.running,
        args.as_of_day,
        lodestar_domain::AsOfWeek::completed_by(args.as_of_day)
            .map_or_else(|| "none complete".to_owned(), |w| w.0.to_string()),
        cut.students,
        outcomes.display(),
        cut.dropped(lodestar_domain::Table::StudentVle)
    );
    Ok(dst)
}

/// A demo user with a new password (created, or its password reset and lockout lifted).
async fn demo_user(store: &Store, name: &str, role: &str) -> anyhow::Result<(i64, String)> {
    let password = crate::accounts::new_password();
    let hash = crate::accounts::hash_password(&password)?;
    let id = match store.user(name).await? {
        Some(u) => {
            store.set_password_hash(u.id, &hash).await?;
            store.sign_in_succeeded(u.id).await?;
            u.id
        }
        None => store.create_user(name, role, &hash).await?,
    };
    Ok((id, password))
}

/// The demo admin's sign-in name.
const DEMO_ADMIN: &str = "admin";

/// The demo advisor's sign-in name.
const DEMO_ADVISOR: &str = "advisor";

/// `lodestar demo`.
pub(crate) fn demo(config: &Config, args: &DemoArgs) -> anyhow::Result<()> {
    if !args.export.is_dir() {
        bail!(
            "the demo export {} is missing: run `lodestar demo` from the repository root, or pass --export DIR",
            args.export.display()
        );
    }
    let export = if args.running.eq_ignore_ascii_case("none") {
        args.export.clone()
    } else {
        demo_running_export(config, args)?
    };
    runtime()?.block_on(async {
        let mut settings = config.pipeline.value.clone();
        settings.export = Some(export.clone());
        // The sample is one module's slice: its regions and IMD bands hold 30 to 60 students,
        // too few for a subgroup gap to mean anything, so the demo's gate checks ranking and
        // calibration only. Real data keeps the configured limit.
        settings.gate.max_fairness_gap = f64::INFINITY;
        settings.gate.max_ece = settings.gate.max_ece.max(0.2);
        // Score the running term's earlier weeks too, so the dashboard shows each student's
        // risk as the course went, up to this week.
        settings.score_history = true;
        let p = pipeline(config, settings).await?;
        println!(
            "demo: running the pipeline on {} into {}",
            export.display(),
            config.data_dir.value.display()
        );
        println!(
            "demo gate: ROC AUC not below the champion's, ECE at most {:.2}; subgroup gaps reported, not gated (the sample's subgroups are too small)",
            p.config.gate.max_ece
        );
        let trigger = Trigger::on_demand("demo");
        run_once(&p, &trigger, false).await?;
        demo_advisor(&p).await?;
        crate::api::demo_token(&p.store).await?;
        if args.no_serve {
            return Ok(());
        }
        println!();
        serve(config, p, &args.serve, Services::All).await
    })
}
