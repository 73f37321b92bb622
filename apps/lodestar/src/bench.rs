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
