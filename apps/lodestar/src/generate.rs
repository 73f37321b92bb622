//! `lodestar generate`: runs the synthetic export generator with a progress bar on a terminal
//! and prints a summary.

use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lodestar_samples::{GeneratorConfig, Progress, generate};

use crate::cli::GenerateArgs;
use crate::config::Config;

pub(crate) fn run(config: &Config, args: &GenerateArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| config.export_dir.value.join("synthetic"));
    let generator = GeneratorConfig {
        students: args.students,
        presentations: args.presentations,
        seed: args.seed,
        gzip_clicks: args.gzip,
        running_day: args.running_day,
    };
    // Hidden automatically when stderr is not a terminal.
    let bar = ProgressBar::new(args.students).with_style(
        ProgressStyle::with_template(
            "{spinner} students {pos}/{len} {wide_bar} {msg} {elapsed}<{eta}",
        )
        .context("progress template")?,
    );
    let started = Instant::now();
    let summary = generate(&generator, &out, &mut |p: Progress| {
        bar.set_position(p.students_done);
        bar.set_message(format!("{} click rows", p.click_rows));
    })
    .with_context(|| format!("generating a synthetic export into {}", out.display()))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let total: u64 = summary.rows.values().sum();
    tracing::info!(out = %out.display(), rows = total, seconds, "synthetic export written");
    if args.json {
        let rows: serde_json::Map<_, _> = summary
            .rows
            .iter()
            .map(|(t, n)| (t.file_stem().to_owned(), (*n).into()))
            .collect();
        let report = serde_json::json!({
            "out": out,
            "students": args.students,
            "presentations": args.presentations,
            "seed": args.seed,
            "running_day": args.running_day,
            "rows": rows,
            "seconds": seconds,
            "rows_per_second": total as f64 / seconds.max(1e-9),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("wrote a synthetic OULAD-schema export to {}", out.display());
        for (table, file) in summary.rows.iter().zip(&summary.files) {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            println!("  {name:<26} {:>12} rows", table.1);
        }
        println!(
            "{total} rows in {seconds:.2} s ({:.0} rows/s); seed {}, same seed and sizes give the same files",
            total as f64 / seconds.max(1e-9),
            args.seed
        );
        if let Some(day) = args.running_day {
            println!(
                "the presentations with the latest code are running as of day {day}: no outcomes, nothing dated after it"
            );
        }
    }
    Ok(())
}
