//! `lodestar bench`: benchmarks that print figures (speed targets live here, not in tests).

use std::fs;
use std::time::Instant;

use anyhow::Context;
use lodestar_ingest::{IngestOptions, ingest};
use lodestar_samples::{GeneratorConfig, generate};

use crate::cli::BenchIngestArgs;
use crate::config::Config;

/// Peak resident memory of this process so far, in MiB (Linux; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(crate) fn run_ingest(config: &Config, args: &BenchIngestArgs) -> anyhow::Result<()> {
    let work = config.data_dir.value.join("bench");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let export = match &args.export {
        Some(dir) => dir.clone(),
        None => {
            let dir = work.join(format!(
                "export-{}x{}-{}",
                args.students, args.presentations, args.seed
            ));
            if !dir.join("courses.csv").is_file() {
                eprintln!(
                    "generating {} students in {} presentations into {}",
                    args.students,
                    args.presentations,
                    dir.display()
                );
                let generator = GeneratorConfig {
                    students: args.students,
                    presentations: args.presentations,
                    seed: args.seed,
                    gzip_clicks: false,
                    running_day: None,
                };
                generate(&generator, &dir, &mut |_| {})?;
            }
            dir
        }
    };
    let snapshots = work.join("snapshots");
    let _ = fs::remove_dir_all(&snapshots);
    let before = peak_rss_mib();
    let started = Instant::now();
    let outcome = ingest(
        &export,
        &snapshots,
        &IngestOptions::default(),
        true,
        &mut |_, _| {},
    )
    .with_context(|| format!("ingesting {}", export.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let m = &outcome.manifest;
    let clicks = m
        .tables
        .iter()
        .find(|t| t.file.starts_with("studentVle"))
        .map_or(0, |t| t.read);
    let rows: u64 = m.tables.iter().map(|t| t.read).sum();
    let bytes: u64 = m.inputs.iter().map(|i| i.bytes).sum();
    println!("export        {}", export.display());
    println!(
        "input         {rows} rows ({clicks} click rows), {:.0} MB on disk",
        bytes as f64 / 1e6
    );
    println!("wall          {wall:.2} s");
    println!(
        "throughput    {:.2} M rows/s ({:.2} M click rows/s)",
        rows as f64 / wall / 1e6,
        clicks as f64 / wall / 1e6
    );
    for (step, seconds) in &m.timings {
        println!("  {step:<20} {seconds:.2} s");
    }
    println!(
        "feature rows  {} ({} students x weeks)",
        m.feature_rows, m.student_presentations
    );
    match (peak_rss_mib(), before) {
        (Some(peak), Some(before)) => println!(
            "peak memory   {peak:.0} MiB (process high-water mark; {before:.0} MiB before ingest)"
        ),
        _ => println!("peak memory   unavailable on this platform"),
    }
    Ok(())
}

/// One storing run's figures.
struct Stored {
    seconds: f64,
    longest_ms: f64,
    publish_ms: f64,
    transactions: u64,
    bytes: f64,
}

/// The database's size in bytes: SQLite's file once its write-ahead log is folded in, or
/// PostgreSQL's prediction tables with their indexes.
async fn database_bytes(url: &str) -> anyhow::Result<f64> {
    use sqlx::Row;
    let pool = sqlx::AnyPool::connect(url).await?;
    let bytes = if url.starts_with("sqlite:") {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await?;
        let row = sqlx::query(
            "SELECT CAST(page_count * page_size AS BIGINT) AS b FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&pool)
        .await?;
        row.try_get::<i64, _>("b")? as f64
    } else {
        let row = sqlx::query(
            "SELECT CAST(pg_total_relation_size('prediction_rows') + pg_total_relation_size('current_risk') \
             + pg_total_relation_size('feature_names') + pg_total_relation_size('score_batches') AS BIGINT) AS b",
        )
        .fetch_one(&pool)
        .await?;
        row.try_get::<i64, _>("b")? as f64
    };
    pool.close().await;
    Ok(bytes)
}

/// Scores and stores `job` into a fresh database at `url`.
async fn store_once(
    url: &str,
    job: &lodestar_scheduler::scoring::ScoreJob,
) -> anyhow::Result<Stored> {
    let store = lodestar_store::Store::connect(url).await?;
    let before = database_bytes(url).await?;
    let started = Instant::now();
    let (t, _) = lodestar_scheduler::scoring::score_and_store(
        &store,
        job.clone(),
        &lodestar_scheduler::Failpoints::default(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let seconds = started.elapsed().as_secs_f64();
    let after = database_bytes(url).await?;
    Ok(Stored {
        seconds,
        longest_ms: t.longest_write_ms,
        publish_ms: t.publish_ms,
        transactions: t.transactions,
        bytes: (after - before) / job.rows.len().max(1) as f64,
    })
}

pub(crate) fn run_score(config: &Config, args: &crate::cli::BenchScoreArgs) -> anyhow::Result<()> {
    let rt = crate::pipeline::runtime()?;
    rt.block_on(async {
        let mut settings = config.pipeline.value.clone();
        settings.score_history = !args.current_only;
        let p = crate::pipeline::pipeline(config, settings).await?;
        let job = lodestar_scheduler::steps::latest_score_job(&p)
            .await
            .map_err(anyhow::Error::msg)?;
        let rows = job.rows.len();
        eprintln!(
            "{rows} predictions of model {} version {} on snapshot {} ({}), {} rows a chunk",
            job.model,
            job.version,
            &job.snapshot_id[..12.min(job.snapshot_id.len())],
            if args.current_only {
                "each presentation's current week"
            } else {
                "every week, as a first night scores"
            },
            job.chunk
        );
        let work = config.data_dir.value.join("bench");
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let mut memory = f64::INFINITY;
        let mut sqlite: Option<Stored> = None;
        let mut postgres: Option<Stored> = None;
        let best = |slot: &mut Option<Stored>, s: Stored| {
            if slot.as_ref().is_none_or(|b| s.seconds < b.seconds) {
                *slot = Some(s);
            }
        };
        for round in 0..args.repeat.max(1) {
            let j = job.clone();
            let t = tokio::task::spawn_blocking(move || j.score_in_memory())
                .await?
                .map_err(anyhow::Error::msg)?;
            memory = memory.min(t.as_secs_f64());
            eprintln!("round {}: in memory {:.2} s", round + 1, t.as_secs_f64());
            let file = work.join(format!("score-{round}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = fs::remove_file(format!("{}{suffix}", file.display()));
            }
            let url = format!("sqlite://{}?mode=rwc", file.display());
            let s = store_once(&url, &job).await?;
            eprintln!("round {}: SQLite {:.2} s", round + 1, s.seconds);
            best(&mut sqlite, s);
            for suffix in ["", "-wal", "-shm"] {
                let _ = fs::remove_file(format!("{}{suffix}", file.display()));
            }
            if let Some(base) = &args.postgres {
                let schema = format!("lodestar_bench_{}_{round}", std::process::id());
                let admin = sqlx::AnyPool::connect(base).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                )))
                .execute(&admin)
                .await?;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                let s = store_once(&url, &job).await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&admin)
                .await?;
                let s = s?;
                eprintln!("round {}: PostgreSQL {:.2} s", round + 1, s.seconds);
                best(&mut postgres, s);
            }
        }
        let rate = |seconds: f64| rows as f64 / seconds;
        println!(
            "scoring in memory (score, explain, read each row's week; nothing stored): {:.2} s, {:.0} predictions/s",
            memory,
            rate(memory)
        );
        for (name, s) in [("SQLite", sqlite), ("PostgreSQL", postgres)] {
            let Some(s) = s else { continue };
            println!(
                "{name}: scored and stored in {:.2} s, {:.0} predictions/s (ratio to in memory {:.2}); \
                 longest write transaction {:.0} ms of {} (publication {:.0} ms); {:.0} database bytes per prediction",
                s.seconds,
                rate(s.seconds),
                memory / s.seconds,
                s.longest_ms,
                s.transactions,
                s.publish_ms,
                s.bytes
            );
        }
        if let Some(mib) = peak_rss_mib() {
            println!("peak memory of this process: {mib:.0} MiB");
        }
        anyhow::Ok(())
    })
}
