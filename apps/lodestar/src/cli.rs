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
    /// A file holding the database URL (a Docker or Kubernetes secret mounted as a file), read
    /// when --database-url is not given; surrounding whitespace is ignored.
    #[arg(
        long,
        env = "LODESTAR_DATABASE_URL_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub(crate) database_url_file: Option<PathBuf>,
    /// Log filter, e.g. `info` or `lodestar=debug,warn`.
    #[arg(long, env = "LODESTAR_LOG", global = true, value_name = "FILTER")]
    pub(crate) log: Option<String>,
    /// Log format on stderr.
    #[arg(long, env = "LODESTAR_LOG_FORMAT", global = true, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Days stored predictions are kept (lodestar purge deletes older ones).
    #[arg(
        long,
        env = "LODESTAR_PREDICTION_RETENTION_DAYS",
        global = true,
        value_name = "DAYS"
    )]
    pub(crate) prediction_retention_days: Option<u32>,
    /// Model artifacts: a folder, file:///path or s3://bucket/prefix. Default: <data dir>/artifacts.
    #[arg(
        long,
        env = "LODESTAR_ARTIFACT_STORE",
        global = true,
        value_name = "URL"
    )]
    pub(crate) artifact_store: Option<String>,
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
    /// Make a mid-term export from a finished one: the named presentations lose their outcomes
    /// and everything dated after the as-of day (for fixtures, demos and for measuring how early
    /// warnings would have come).
    Cut(crate::cut::CutArgs),
    /// Validate an LMS export and build the weekly feature snapshot (Parquet + manifest).
    Ingest(IngestArgs),
    /// Create or update the database schema (every service also does this at start-up).
    Migrate,
    /// Delete stored predictions older than the retention period (and the feedback on them).
    Purge {
        /// Keep this many days of predictions (default: the configured retention).
        #[arg(long)]
        older_than_days: Option<u32>,
    },
    /// Train and evaluate model families on a temporal split (earlier presentations → later),
    /// per as-of week; print the metrics, write the JSON report and the model card.
    Evaluate(EvaluateArgs),
    /// Train one model, evaluate it on later presentations, and register it with its report.
    Train(TrainArgs),
    /// The model registry: versions, aliases, promotion, rollback, model cards.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Benchmarks that print figures: `lodestar bench ingest`.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The nightly pipeline (ingest → features → train → evaluate → register → gate → score →
    /// drift → notify): run it now, see its status, its history, one run's steps.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// The scheduler service: the cron schedule, the inbox folder, and the run status over HTTP.
    Scheduler(ServeArgs),
    /// The prediction API for campus systems (REST under /v1, KServe v2, /openapi.json).
    Api(ServeArgs),
    /// API tokens: create (printed once, stored hashed), list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The advisor dashboard (server-rendered pages, no JavaScript).
    Dashboard(ServeArgs),
    /// Dashboard users: create (advisor or admin), assign a caseload, reset a password.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Every service in one process on the embedded default: the scheduler, the prediction API
    /// and the dashboard on one address.
    Up(ServeArgs),
    /// From a fresh clone: ingest data-samples/, train, register and promote, score, then serve.
    Demo(DemoArgs),
    /// Ask the service listening on --listen (LODESTAR_LISTEN) for a health route; exit status 0
    /// when it answers 2xx. A container's HEALTHCHECK calls this (the images carry no curl).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// The route to ask: /healthz (the process answers) or /readyz (it can serve).
    #[arg(long, default_value = "/readyz")]
    pub(crate) path: String,
    /// Milliseconds to wait for the connection and the answer.
    #[arg(long, default_value_t = 3_000)]
    pub(crate) timeout_ms: u64,
    /// Where the service listens; a wildcard address is reached on loopback.
    #[arg(long, env = "LODESTAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PipelineCommand {
    /// Run the pipeline now, with a live display of each step.
    Run(PipelineRunArgs),
    /// Who holds the pipeline lease, the run in progress, the last run, the next slot.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The latest runs.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run: every attempt of every step, hashes, errors, gate, scores, drift.
    Show {
        /// Run id.
        run: i64,
        /// Print JSON (with each step's recorded output).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PipelineRunArgs {
    /// The export to read (default: pipeline.export in the configuration file).
    #[arg(long, value_name = "DIR")]
    pub(crate) export: Option<PathBuf>,
    /// Run every step, even those whose inputs match a finished step.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Where the MLP trains, over `pipeline.device`: `cpu`, or `wgpu` (a GPU; needs a binary
    /// built with `--features wgpu`).
    #[arg(long, value_parser = ["cpu", "wgpu"])]
    pub(crate) device: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The export's as-of day for every running presentation, in OULAD-schema day numbers:
    /// records dated after it are refused (default: a source's configured as-of, else each
    /// running presentation's latest recorded day).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) as_of_day: Option<i32>,
    /// The export's as-of date (YYYY-MM-DD) for Moodle and xAPI sources, over the source
    /// configuration's `as_of`: records dated after it are refused.
    #[arg(long, value_name = "DATE")]
    pub(crate) as_of: Option<chrono::NaiveDate>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address the HTTP server listens on.
    #[arg(long, env = "LODESTAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The export the demo runs on.
    #[arg(long, value_name = "DIR", default_value = "data-samples/oulad")]
    pub(crate) export: PathBuf,
    /// The presentation the demo shows as the term under way: the export is cut as if it had
    /// been taken on --as-of-day (outcomes removed, later records dropped) into
    /// <data dir>/exports/demo-running; `none` runs on the export as it is.
    #[arg(long, value_name = "MODULE-PRESENTATION", default_value = "GGG-2013J")]
    pub(crate) running: String,
    /// The day the demo's running term is exported on (day 76 of GGG-2013J is in week 10).
    #[arg(long, value_name = "N", default_value_t = 76)]
    pub(crate) as_of_day: i32,
    /// Stop after the pipeline run instead of serving.
    #[arg(long)]
    pub(crate) no_serve: bool,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Ingest + features on an export (generated at the given size unless --export is given):
    /// prints rows/s, wall time per step and peak memory.
    Ingest(BenchIngestArgs),
    /// The prediction API against this binary on loopback: exec to /readyz, a 1,000-row batch,
    /// and single-row POST /v1/predictions throughput with wrk (when installed).
    Api(BenchApiArgs),
    /// The nightly scoring on this data folder's latest run (run `lodestar pipeline run` first):
    /// every row it would score with history, scored in memory and scored and stored, on
    /// SQLite and (with --postgres) PostgreSQL, alternating: predictions per second, the ratio,
    /// the longest write transaction, database bytes per prediction and peak memory.
    Score(BenchScoreArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchScoreArgs {
    /// Also store into this PostgreSQL database (a fresh schema per repeat, dropped after).
    #[arg(long, value_name = "URL")]
    pub(crate) postgres: Option<String>,
    /// Times each side is run (alternating); the best is kept.
    #[arg(long, default_value_t = 2)]
    pub(crate) repeat: u32,
    /// Score only each presentation's current week (the default nightly), not every week.
    #[arg(long)]
    pub(crate) current_only: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchApiArgs {
    /// Seconds of single-row load (wrk).
    #[arg(long, default_value_t = 30)]
    pub(crate) seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: u32,
    /// Cold starts to time.
    #[arg(long, default_value_t = 10)]
    pub(crate) starts: u32,
    /// Batches of 1,000 rows to time.
    #[arg(long, default_value_t = 50)]
    pub(crate) batches: u32,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a user; the password is generated and printed once (stored as an argon2 hash).
    Create {
        /// Sign-in name.
        #[arg(long)]
        name: String,
        /// `advisor` (sees their caseload) or `admin` (sees everyone, the model and the audit log).
        #[arg(long, value_parser = ["advisor", "admin"])]
        role: String,
    },
    /// Add students to a user's caseload: every scored student of a presentation, or the listed ones.
    Assign {
        /// Sign-in name.
        #[arg(long)]
        name: String,
        /// `MODULE-PRESENTATION`, e.g. BBB-2013J.
        #[arg(long)]
        presentation: String,
        /// Student ids (comma-separated); default: every scored student of the presentation.
        #[arg(long, value_delimiter = ',')]
        students: Vec<i64>,
    },
    /// Set a new generated password (printed once) and lift any lockout.
    ResetPassword {
        /// Sign-in name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        /// A label: who or what uses it (e.g. `sis-prod`).
        #[arg(long)]
        name: String,
        /// Scopes: predictions:read, predictions:write, pipeline:run, admin (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// Every token: id, name, scopes, created, last used, revoked.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token (API processes stop accepting it within their token cache period).
    Revoke {
        /// Token id (from `tokens list`).
        id: i64,
    },
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
    /// oulad: the export folder (the seven OULAD tables as .csv or .csv.gz); moodle or xapi: the
    /// source configuration file (TOML; see docs/ingest.md, Ingest from Moodle and xAPI).
    #[arg(long, value_name = "PATH")]
    pub(crate) export: PathBuf,
    /// What the export is: oulad (canonical CSVs), moodle (log + gradebook exports) or xapi
    /// (statements); moodle and xapi are converted into <data dir>/exports/<format>-<name>/ first.
    #[arg(long, default_value = "oulad", value_parser = ["oulad", "moodle", "xapi"])]
    pub(crate) format: String,
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
    /// The export's as-of day for every running presentation, in OULAD-schema day numbers:
    /// records dated after it are refused (default: a source's configured as-of, else each
    /// running presentation's latest recorded day).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) as_of_day: Option<i32>,
    /// The export's as-of date (YYYY-MM-DD) for Moodle and xAPI sources, over the source
    /// configuration's `as_of`: records dated after it are refused.
    #[arg(long, value_name = "DATE")]
    pub(crate) as_of: Option<chrono::NaiveDate>,
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
    /// Write the presentations with the latest presentation code as running on day N: outcomes
    /// empty, no click, submission or unregistration dated after day N.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(crate) running_day: Option<i32>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// Registered models with their champion and latest version.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A model's versions, aliases and artifact checks.
    Show {
        /// Model name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register a trained model version (artifact, evaluation report, lineage).
    Register(RegisterArgs),
    /// Make a version champion if it passes the promotion gate.
    Promote(PromoteArgs),
    /// Move champion back to the previous holder.
    Rollback {
        /// Model name.
        name: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        actor: String,
        /// Print the move as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point an alias other than champion (e.g. challenger) at a version.
    Alias {
        /// Model name.
        name: String,
        /// Alias.
        alias: String,
        /// Version.
        version: i64,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        actor: String,
        /// Print the move as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every alias move of a model.
    History {
        /// Model name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The Markdown model card of a version.
    Card {
        /// Model name.
        name: String,
        /// Version.
        version: i64,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// Model name.
    #[arg(long)]
    pub(crate) name: String,
    /// The model artifact file.
    #[arg(long, value_name = "FILE")]
    pub(crate) artifact: PathBuf,
    /// The evaluation report (JSON, as training writes it).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: PathBuf,
    /// Content hash of the training snapshot.
    #[arg(long)]
    pub(crate) snapshot: String,
    /// Training seed.
    #[arg(long)]
    pub(crate) seed: i64,
    /// Training configuration as JSON.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    pub(crate) training_config: String,
    /// Code version that trained it.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub(crate) code_version: String,
    /// Who (default: $USER).
    #[arg(long, env = "USER", default_value = "unknown")]
    pub(crate) actor: String,
}

#[derive(Debug, Args)]
pub(crate) struct PromoteArgs {
    /// Model name.
    pub(crate) name: String,
    /// Candidate version.
    pub(crate) version: i64,
    /// Why (recorded).
    #[arg(long, default_value = "promoted from the command line")]
    pub(crate) reason: String,
    /// Skip the gate; the reason is required and recorded.
    #[arg(long, value_name = "REASON")]
    pub(crate) force: Option<String>,
    /// Metric compared with the champion: roc_auc, pr_auc or brier.
    #[arg(long, default_value = "roc_auc")]
    pub(crate) metric: String,
    /// Margin by which the candidate must beat the champion at every gate week.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) margin: f64,
    /// Gate weeks.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20")]
    pub(crate) weeks: Vec<u16>,
    /// Largest expected calibration error allowed.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) max_ece: f64,
    /// Largest subgroup gap allowed.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) max_gap: f64,
    /// Print the move as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Who (default: $USER).
    #[arg(long, env = "USER", default_value = "unknown")]
    pub(crate) actor: String,
}

/// What to train on and how: shared by `lodestar evaluate` and `lodestar train`.
#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    /// Ingest this export first (an identical snapshot is reused) and use its snapshot.
    #[arg(long, value_name = "DIR", conflicts_with = "snapshot")]
    pub(crate) export: Option<PathBuf>,
    /// Snapshot id (under the snapshot folder) or folder; default: the latest ingested.
    #[arg(long, value_name = "ID|DIR")]
    pub(crate) snapshot: Option<String>,
    /// Training presentations: codes such as 2013B (every module) or BBB-2013B. Default: every
    /// presentation code but the latest.
    #[arg(long, value_delimiter = ',', value_name = "PRESENTATIONS")]
    pub(crate) train: Vec<String>,
    /// Test presentations. Default: the latest presentation code.
    #[arg(long, value_delimiter = ',', value_name = "PRESENTATIONS")]
    pub(crate) test: Vec<String>,
    /// As-of weeks to evaluate at.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5,10,20",
        value_name = "WEEKS"
    )]
    pub(crate) weeks: Vec<u16>,
    /// FOR COMPARISON ONLY: split students at random (this fraction tested) instead of by
    /// presentation; the report says so.
    #[arg(long, value_name = "FRACTION", conflicts_with_all = ["train", "test"])]
    pub(crate) random_split: Option<f64>,
    /// Seed for every random choice (same snapshot + options + seed = same artifact).
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Where the MLP trains: cpu (burn flex) or wgpu (needs a build with `--features wgpu`).
    #[arg(long, default_value = "cpu", value_name = "cpu|wgpu")]
    pub(crate) device: String,
    /// Calibration of the served probability: platt or isotonic.
    #[arg(long, default_value = "platt", value_name = "platt|isotonic")]
    pub(crate) calibration: String,
    /// Train with the protected attributes as features (off by default).
    #[arg(long)]
    pub(crate) include_protected: bool,
    /// Train on rows up to this as-of week only.
    #[arg(long)]
    pub(crate) max_week: Option<u16>,
    /// Hyperparameters as JSON (any subset of `{"logistic": …, "forest": …, "boosted": …,
    /// "mlp": …}`; the rest default).
    #[arg(long, value_name = "FILE")]
    pub(crate) hyperparameters: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct EvaluateArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Model families, from logistic, forest, boosted, mlp and ensemble (the mean log-odds of
    /// the others).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "logistic,forest,boosted,mlp,ensemble"
    )]
    pub(crate) models: Vec<String>,
    /// Write the evaluation (every family's report) as JSON.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write the best family's model card (Markdown).
    #[arg(long, value_name = "FILE")]
    pub(crate) card: Option<PathBuf>,
    /// Skip retraining the best family with protected attributes for the fairness comparison.
    #[arg(long)]
    pub(crate) no_protected_comparison: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Model family: logistic, forest, boosted, mlp or ensemble.
    #[arg(long = "model", default_value = "ensemble")]
    pub(crate) family: String,
    /// Registered model name.
    #[arg(long, default_value = "at-risk")]
    pub(crate) name: String,
    /// Also write the artifact here.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Do not register (with --out: only write the artifact).
    #[arg(long, requires = "out")]
    pub(crate) no_register: bool,
    /// Who registers it.
    #[arg(long, default_value = "lodestar train")]
    pub(crate) actor: String,
}
