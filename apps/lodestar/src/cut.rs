//! `lodestar cut`: makes a mid-term export from a finished one (the named presentations lose their
//! outcomes and everything dated after the as-of day), for fixtures, demos and for measuring how
//! early warnings would have come.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lodestar_domain::Table;
use lodestar_samples::cut_running;

#[derive(Debug, Args)]
pub(crate) struct CutArgs {
    /// The finished OULAD-schema export to cut (read, never changed).
    #[arg(long, value_name = "DIR")]
    pub(crate) export: PathBuf,
    /// The presentations to make running, as MODULE-PRESENTATION (comma separated or repeated).
    #[arg(
        long,
        value_name = "MODULE-PRESENTATION",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) running: Vec<String>,
    /// The export's as-of day (days from the presentation's start, as OULAD counts them): nothing
    /// of the running presentations dated after it is kept.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(crate) as_of_day: i32,
    /// Where to write the cut export: a new or empty folder.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Also write the removed outcomes here (code_module, code_presentation, id_student,
    /// final_result, date_unregistration), to score live predictions against later. Never inside
    /// --out.
    #[arg(long, value_name = "FILE")]
    pub(crate) outcomes: Option<PathBuf>,
}

pub(crate) fn run(args: &CutArgs) -> anyhow::Result<()> {
    let summary = cut_running(
        &args.export,
        &args.out,
        &args.running,
        args.as_of_day,
        args.outcomes.as_deref(),
    )
    .with_context(|| {
        format!(
            "cutting {} into {}",
            args.export.display(),
            args.out.display()
        )
    })?;
    let day = summary.as_of_day;
    let file = |table: Table| {
        summary.tables[&table]
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    tracing::info!(
        export = %args.export.display(),
        out = %args.out.display(),
        presentations = %summary.presentations.join(","),
        as_of_day = day,
        "running-term export written"
    );
    println!(
        "cut {} into {}: {} running as of day {day}",
        args.export.display(),
        args.out.display(),
        summary.presentations.join(", ")
    );
    println!(
        "  {} students: {} outcomes removed, {} unregistrations after day {day} emptied",
        summary.students,
        summary.outcomes_removed,
        summary.emptied(Table::StudentRegistration)
    );
    println!(
        "  dropped {} of {} rows of {} and {} of {} rows of {} dated after day {day}",
        summary.dropped(Table::StudentVle),
        summary.tables[&Table::StudentVle].rows_read,
        file(Table::StudentVle),
        summary.dropped(Table::StudentAssessment),
        summary.tables[&Table::StudentAssessment].rows_read,
        file(Table::StudentAssessment),
    );
    println!("  every other presentation and table copied unchanged");
    match &summary.outcomes {
        Some((path, rows)) => println!("  removed outcomes: {} ({rows} students)", path.display()),
        None => println!("  removed outcomes not kept (--outcomes FILE keeps them)"),
    }
    Ok(())
}
