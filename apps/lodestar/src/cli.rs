//! The command line: global configuration flags (each also a `LODESTAR_*` variable) and the
//! subcommands, one per capability.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Lodestar: student-success prediction from LMS exports.
#[derive(Debug, Parser)]
#[command(name = "lodestar", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Settings every subcommand shares. Precedence: flag, then environment variable, then the
/// configuration file, then the built-in default.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Configuration file (TOML). Default: ./lodestar.toml when it exists.
    #[arg(long, env = "LODESTAR_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Folder holding the SQLite database, snapshots and model artifacts.
    #[arg(long, env = "LODESTAR_DATA_DIR", global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Database: sqlite://FILE or postgres://USER:PASSWORD@HOST/DB. Default: SQLite in the data dir.
    #[arg(
        long,
        env = "LODESTAR_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,
    /// Log filter, e.g. `info` or `lodestar=debug,warn`.
    #[arg(long, env = "LODESTAR_LOG", global = true, value_name = "FILTER")]
    pub(crate) log: Option<String>,
    /// Log format on stderr.
    #[arg(long, env = "LODESTAR_LOG_FORMAT", global = true, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the effective configuration and where each value came from (secrets redacted).
    Config(ConfigArgs),
    /// Write a synthetic LMS export in the OULAD schema, at any scale, deterministic per seed.
    Generate(GenerateArgs),
    /// Validate an LMS export and build the weekly feature snapshot (Parquet + manifest).
    Ingest(IngestArgs),
    /// Benchmarks that print figures: `lodestar bench ingest`.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Ingest + features on an export (generated at the given size unless --export is given):
    /// prints rows/s, wall time per step and peak memory.
    Ingest(BenchIngestArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchIngestArgs {
    /// Benchmark this export instead of generating one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["students", "presentations", "seed"])]
    pub(crate) export: Option<PathBuf>,
    /// Students of the generated export (30,500 give about OULAD's 10.66 M click rows).
    #[arg(long, default_value_t = 30_500)]
    pub(crate) students: u64,
    /// Presentations of the generated export (OULAD has 22).
    #[arg(long, default_value_t = 22)]
    pub(crate) presentations: u32,
    /// Seed of the generated export.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// The export folder: the seven OULAD tables as .csv or .csv.gz.
    #[arg(long, value_name = "DIR")]
    pub(crate) export: PathBuf,
    /// Rebuild the snapshot even if an identical one exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Final results that make the at-risk label 1.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Fail,Withdrawn",
        value_name = "RESULTS"
    )]
    pub(crate) at_risk: Vec<String>,
    /// Days before a presentation's start that registrations, clicks and submissions may be dated.
    #[arg(long, default_value_t = 365)]
    pub(crate) pre_start_days: i64,
    /// Days after a presentation's end that clicks and submissions may be dated.
    #[arg(long, default_value_t = 30)]
    pub(crate) post_end_days: i64,
    /// Print the manifest as JSON instead of the summary.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Students in all, spread evenly over the presentations (OULAD has 32,593).
    #[arg(long, default_value_t = 1000)]
    pub(crate) students: u64,
    /// Module presentations, two per module (B then J).
    #[arg(long, default_value_t = 4)]
    pub(crate) presentations: u32,
    /// Random seed: the same seed and sizes give the same bytes.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Output folder. Default: <data dir>/exports/synthetic.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Compress the click table as studentVle.csv.gz, as the genuine export ships it.
    #[arg(long)]
    pub(crate) gzip: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}
