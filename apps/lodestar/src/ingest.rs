//! `lodestar ingest`: validates an export and builds its feature snapshot, with a progress
//! display on a terminal and a one-screen summary (or the manifest as JSON).

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lodestar_domain::{FinalResult, LabelRule};
use lodestar_ingest::snapshot::QUARANTINE_FILE;
use lodestar_ingest::sources::{
    SOURCE_QUARANTINE_FILE, SourceFormat, convert_as_of, converted_dir, source_format,
};
use lodestar_ingest::{DateWindow, IngestOptions, ingest};

use crate::cli::IngestArgs;
use crate::config::Config;

pub(crate) fn run(config: &Config, args: &IngestArgs) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").context("progress template")?,
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let at_risk = args
        .at_risk
        .iter()
        .map(|r| r.trim().parse::<FinalResult>())
        .collect::<Result<_, _>>()
        .context("--at-risk")?;
    let options = IngestOptions {
        window: DateWindow {
            pre_start_days: args.pre_start_days,
            post_end_days: args.post_end_days,
        },
        label: LabelRule { at_risk },
        as_of_day: args.as_of_day,
    };
    let as_of = args.as_of;
    if as_of.is_some() && args.format == "oulad" {
        anyhow::bail!(
            "--as-of DATE is for Moodle and xAPI sources, whose records carry dates; an OULAD-schema export counts days: use --as-of-day N"
        );
    }
    let started = Instant::now();
    let format: SourceFormat = args.format.parse().map_err(anyhow::Error::msg)?;
    let export = match format {
        SourceFormat::Oulad => args.export.clone(),
        SourceFormat::Moodle | SourceFormat::Xapi => {
            spinner.set_message(format!("converting {}", args.export.display()));
            if args.export.is_dir() {
                anyhow::bail!(
                    "--format {}: --export names the source configuration (a .toml file), not a folder; see docs/ingest.md, Ingest from Moodle and xAPI",
                    args.format
                );
            }
            let declared = source_format(&args.export)?;
            if declared != format {
                let declared = format!("{declared:?}").to_lowercase();
                anyhow::bail!(
                    "{} declares format = \"{declared}\", not \"{}\": run with --format {declared}",
                    args.export.display(),
                    args.format
                );
            }
            let out = converted_dir(&config.export_dir.value, &args.export)
                .with_context(|| format!("reading {}", args.export.display()))?;
            let converted = convert_as_of(&args.export, &out, as_of)
                .with_context(|| format!("converting {}", args.export.display()))?;
            spinner.suspend(|| {
                if args.json {
                    return;
                }
                println!(
                    "converted {} ({}) into {}",
                    args.export.display(),
                    args.format,
                    converted.dir.display()
                );
                println!(
                    "\n{:<34} {:>9} {:>10} {:>9} {:>12}",
                    "source file", "read", "converted", "ignored", "quarantined"
                );
                for f in &converted.report.files {
                    println!(
                        "{:<34} {:>9} {:>10} {:>9} {:>12}",
                        f.file,
                        f.read,
                        f.converted,
                        f.ignored.values().sum::<u64>(),
                        f.quarantined
                    );
                    for (reason, n) in &f.ignored {
                        println!("    ignored {n}: {reason}");
                    }
                }
                if converted.quarantined > 0 {
                    println!(
                        "{} source records quarantined, with file, line and reason: {}",
                        converted.quarantined,
                        converted.dir.join(SOURCE_QUARANTINE_FILE).display()
                    );
                }
                println!(
                    "not in this source (absent from the features): {}\n",
                    converted.report.absent_student_columns.join(", ")
                );
            });
            converted.dir
        }
    };
    let outcome = ingest(
        &export,
        &config.snapshot_dir.value,
        &options,
        args.force,
        &mut |stage, rows| {
            if rows > 0 {
                spinner.set_message(format!("reading {stage}: {rows} rows"));
            } else {
                spinner.set_message(stage.to_owned());
            }
        },
    )
    .with_context(|| format!("ingesting {}", export.display()))?;
    spinner.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let m = &outcome.manifest;
    tracing::info!(snapshot = %m.snapshot_id, reused = outcome.reused, seconds, "ingest finished");
    if args.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    if outcome.reused {
        println!(
            "unchanged export: reusing snapshot {} (use --force to rebuild)",
            m.snapshot_id
        );
    } else {
        println!("snapshot {} built in {seconds:.2} s", m.snapshot_id);
    }
    println!(
        "\n{:<26} {:>12} {:>12} {:>12}",
        "file", "read", "accepted", "quarantined"
    );
    for t in &m.tables {
        println!(
            "{:<26} {:>12} {:>12} {:>12}",
            t.file, t.read, t.accepted, t.quarantined
        );
    }
    println!(
        "\n{} feature rows: {} students in {} presentations ({}); finished: weeks 0 to the last, running: weeks 0 to the current one",
        m.feature_rows,
        m.student_presentations,
        m.presentations.len(),
        m.presentations.join(", ")
    );
    for t in &m.terms {
        let running = if t.is_running() {
            format!(
                " ({} of {} students without an outcome yet; as-of day: {})",
                t.students - t.outcomes_known,
                t.students,
                t.as_of_source.describe()
            )
        } else {
            String::new()
        };
        println!("  {}: {}{running}", t.presentation, t.describe());
    }
    if m.quarantined_rows > 0 {
        println!(
            "{} rows quarantined, with file, line and reason: {}",
            m.quarantined_rows,
            outcome.dir.join(QUARANTINE_FILE).display()
        );
    }
    let timings: Vec<String> = m
        .timings
        .iter()
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect();
    println!("timings: {}", timings.join(", "));
    println!("snapshot: {}", outcome.dir.display());
    Ok(())
}
