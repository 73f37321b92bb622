//! The effective configuration: flags over `LODESTAR_*` variables over `lodestar.toml` over
//! defaults, each value remembering where it came from; secrets never print.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// The file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "lodestar.toml";
const DEFAULT_DATA_DIR: &str = "lodestar-data";
/// perpetual reports each early stop at info level; only its warnings are worth an operator's eye.
const DEFAULT_LOG: &str = "info,perpetual=warn";

/// The configuration file: the same settings as the global flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    artifact_store: Option<String>,
    prediction_retention_days: Option<u32>,
    pipeline: Option<lodestar_scheduler::PipelineConfig>,
    api: Option<lodestar_api::ApiConfig>,
    dashboard: Option<lodestar_dashboard::DashboardConfig>,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub(crate) enum Source {
    /// A command-line flag.
    Flag(String),
    /// An environment variable.
    Env(String),
    /// The configuration file.
    File(PathBuf),
    /// Built in.
    Default,
    /// Computed from the data directory.
    DataDir,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
            Source::DataDir => f.write_str("under data_dir"),
        }
    }
}

/// A value and its source.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

/// A secret string: `Debug`, `Display` and `Serialize` show it with credentials redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// The real value, for the code that connects with it.
    #[allow(
        dead_code,
        reason = "read by the store when it lands; printing goes through redaction"
    )]
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", redact_url(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

/// A connection URL with its password (in the authority or as a `password=` query parameter)
/// replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password")
                        || key.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

/// A secret mounted as a file: its content without surrounding whitespace; the error names the
/// file, never the content.
fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading the database URL from {}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        bail!("{} (the database URL file) is empty", path.display());
    }
    Ok(value.to_owned())
}

/// The effective configuration of this run.
#[derive(Debug, Serialize)]
pub(crate) struct Config {
    /// The configuration file read, if any.
    pub(crate) config_file: Option<PathBuf>,
    /// Everything local lives under here.
    pub(crate) data_dir: Setting<PathBuf>,
    /// The database.
    pub(crate) database_url: Setting<Secret>,
    /// Log filter.
    pub(crate) log: Setting<String>,
    /// Log format.
    pub(crate) log_format: Setting<LogFormat>,
    /// Feature snapshots (Parquet and manifests).
    pub(crate) snapshot_dir: Setting<PathBuf>,
    /// Model artifacts: a folder, `file:///path` or `s3://bucket/prefix`.
    pub(crate) artifact_store: Setting<String>,
    /// Days stored predictions are kept.
    pub(crate) prediction_retention_days: Setting<u32>,
    /// Synthetic and landed exports.
    pub(crate) export_dir: Setting<PathBuf>,
    /// The `[pipeline]` table (schedule, inbox, model, gate, drift, webhook, retries); its
    /// webhook URL may carry a secret, so `lodestar config` shows only the schedule.
    #[serde(skip)]
    pub(crate) pipeline: Setting<lodestar_scheduler::PipelineConfig>,
    /// The `[api]` table (served model, limits, token cache, champion watch).
    pub(crate) api: Setting<lodestar_api::ApiConfig>,
    /// The `[dashboard]` table (sessions, lockout, cookies, page size).
    pub(crate) dashboard: Setting<lodestar_dashboard::DashboardConfig>,
}

fn cli_source(matches: &ArgMatches, id: &str, flag: &str, env: &str) -> Source {
    let from_sub = matches
        .subcommand()
        .and_then(|(_, sub)| sub.value_source(id));
    match from_sub.or_else(|| matches.value_source(id)) {
        Some(ValueSource::EnvVariable) => Source::Env(env.to_owned()),
        _ => Source::Flag(flag.to_owned()),
    }
}

/// Picks the first of flag/env, file, default, recording the source.
fn layer<T>(
    cli: Option<T>,
    cli_src: impl FnOnce() -> Source,
    file: Option<T>,
    file_path: Option<&Path>,
    default: impl FnOnce() -> T,
) -> Setting<T> {
    match (cli, file, file_path) {
        (Some(value), _, _) => Setting {
            value,
            source: cli_src(),
        },
        (None, Some(value), Some(path)) => Setting {
            value,
            source: Source::File(path.to_owned()),
        },
        _ => Setting {
            value: default(),
            source: Source::Default,
        },
    }
}

impl Config {
    /// Resolves the configuration from the parsed command line (which already applied the
    /// `LODESTAR_*` variables) and the configuration file.
    pub(crate) fn resolve(args: &GlobalArgs, matches: &ArgMatches) -> anyhow::Result<Config> {
        let config_file = match &args.config {
            Some(path) if !path.is_file() => {
                bail!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                )
            }
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        let file = match &config_file {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let file_path = config_file.as_deref();
        let file_dir = file_path
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        let src = |id: &'static str, flag: &'static str, env: &'static str| {
            move || cli_source(matches, id, flag, env)
        };

        let data_dir = layer(
            args.data_dir.clone(),
            src("data_dir", "--data-dir", "LODESTAR_DATA_DIR"),
            file.data_dir.map(|p| file_dir.join(p)),
            file_path,
            || PathBuf::from(DEFAULT_DATA_DIR),
        );
        if data_dir.value.as_os_str().is_empty() {
            bail!("data_dir must not be empty (from {})", data_dir.source);
        }
        // DATABASE_URL, the variable sqlx and most platforms set, counts as the environment
        // setting when LODESTAR_DATABASE_URL is absent.
        // A secret file (LODESTAR_DATABASE_URL_FILE) comes after the URL itself and before it.
        let generic_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
        let url_file = match (&args.database_url, &args.database_url_file) {
            (None, Some(path)) => Some(read_secret_file(path)?),
            _ => None,
        };
        let database_src = match (&args.database_url, &url_file, &generic_url) {
            (None, Some(_), _) => cli_source(
                matches,
                "database_url_file",
                "--database-url-file",
                "LODESTAR_DATABASE_URL_FILE",
            ),
            (None, None, Some(_)) => Source::Env("DATABASE_URL".to_owned()),
            _ => cli_source(
                matches,
                "database_url",
                "--database-url",
                "LODESTAR_DATABASE_URL",
            ),
        };
        let mut database_url = layer(
            args.database_url
                .clone()
                .or(url_file)
                .or(generic_url)
                .map(Secret),
            || database_src,
            file.database_url.map(Secret),
            file_path,
            || {
                Secret(format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.value.join("lodestar.db").display()
                ))
            },
        );
        if database_url.source == Source::Default {
            database_url.source = Source::DataDir;
        }
        let url = &database_url.value.0;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            bail!(
                "database_url (from {}) must start with sqlite:, postgres:// or postgresql://, got {}",
                database_url.source,
                redact_url(url)
            );
        }
        let log = layer(
            args.log.clone(),
            src("log", "--log", "LODESTAR_LOG"),
            file.log,
            file_path,
            || DEFAULT_LOG.to_owned(),
        );
        EnvFilter::try_new(&log.value).with_context(|| {
            format!(
                "log filter {:?} (from {}) is not valid",
                log.value, log.source
            )
        })?;
        let log_format = layer(
            args.log_format,
            src("log_format", "--log-format", "LODESTAR_LOG_FORMAT"),
            file.log_format,
            file_path,
            || LogFormat::Text,
        );
        let artifact_store = layer(
            args.artifact_store.clone(),
            src(
                "artifact_store",
                "--artifact-store",
                "LODESTAR_ARTIFACT_STORE",
            ),
            file.artifact_store,
            file_path,
            || data_dir.value.join("artifacts").display().to_string(),
        );
        let artifact_store = if artifact_store.source == Source::Default {
            Setting {
                source: Source::DataDir,
                ..artifact_store
            }
        } else {
            artifact_store
        };
        let prediction_retention_days = layer(
            args.prediction_retention_days,
            src(
                "prediction_retention_days",
                "--prediction-retention-days",
                "LODESTAR_PREDICTION_RETENTION_DAYS",
            ),
            file.prediction_retention_days,
            file_path,
            || 730,
        );
        let under = |name: &str| Setting {
            value: data_dir.value.join(name),
            source: Source::DataDir,
        };
        let file_pipeline = file.pipeline.map(|mut p| {
            p.export = p.export.map(|e| file_dir.join(e));
            p.inbox = p.inbox.map(|i| file_dir.join(i));
            p
        });
        let pipeline = layer(
            None,
            || Source::Default,
            file_pipeline,
            file_path,
            lodestar_scheduler::PipelineConfig::default,
        );
        pipeline
            .value
            .validate()
            .with_context(|| format!("the [pipeline] configuration (from {})", pipeline.source))?;
        let api = layer(
            None,
            || Source::Default,
            file.api,
            file_path,
            lodestar_api::ApiConfig::default,
        );
        api.value
            .validate()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("the [api] configuration (from {})", api.source))?;
        let dashboard = layer(
            None,
            || Source::Default,
            file.dashboard,
            file_path,
            lodestar_dashboard::DashboardConfig::default,
        );
        dashboard
            .value
            .validate()
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!("the [dashboard] configuration (from {})", dashboard.source)
            })?;
        Ok(Config {
            pipeline,
            api,
            dashboard,
            snapshot_dir: under("snapshots"),
            artifact_store,
            prediction_retention_days,
            export_dir: under("exports"),
            config_file,
            data_dir,
            database_url,
            log,
            log_format,
        })
    }

    /// Starts structured logging on stderr as configured.
    pub(crate) fn init_logging(&self) -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(&self.log.value)?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let result = match self.log_format.value {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
    }

    /// `lodestar config`: the effective configuration as a table or JSON.
    pub(crate) fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let file = self.config_file.as_ref().map_or_else(
            || format!("none ({DEFAULT_CONFIG_FILE} not found)"),
            |p| p.display().to_string(),
        );
        let p = &self.pipeline.value;
        let a = &self.api.value;
        let d = &self.dashboard.value;
        let rows: [(&str, String, &Source); 11] = [
            (
                "data_dir",
                self.data_dir.value.display().to_string(),
                &self.data_dir.source,
            ),
            (
                "database_url",
                self.database_url.value.to_string(),
                &self.database_url.source,
            ),
            ("log", self.log.value.clone(), &self.log.source),
            (
                "prediction_retention_days",
                self.prediction_retention_days.value.to_string(),
                &self.prediction_retention_days.source,
            ),
            (
                "log_format",
                format!("{:?}", self.log_format.value).to_lowercase(),
                &self.log_format.source,
            ),
            (
                "snapshot_dir",
                self.snapshot_dir.value.display().to_string(),
                &self.snapshot_dir.source,
            ),
            (
                "artifact_store",
                self.artifact_store.value.clone(),
                &self.artifact_store.source,
            ),
            (
                "export_dir",
                self.export_dir.value.display().to_string(),
                &self.export_dir.source,
            ),
            (
                "pipeline",
                format!(
                    "{} ({}), model {} ({}), as of {}, scores {}, webhook {}",
                    p.schedule,
                    p.timezone,
                    p.model,
                    p.family,
                    match (&p.as_of, p.as_of_day) {
                        (Some(d), _) => d.to_string(),
                        (None, Some(day)) => format!("day {day}"),
                        (None, None) => "each running term's latest record".to_owned(),
                    },
                    if p.score_finished {
                        "running and finished test terms"
                    } else {
                        "running terms"
                    },
                    if p.webhook.is_some() { "set" } else { "none" }
                ),
                &self.pipeline.source,
            ),
            (
                "api",
                format!(
                    "model {}, batch <= {} rows, {} req/s per token (burst {}), timeout {} ms",
                    a.model,
                    a.max_batch_rows,
                    a.rate_per_second,
                    a.rate_burst,
                    a.request_timeout_ms
                ),
                &self.api.source,
            ),
            (
                "dashboard",
                format!(
                    "model {}, {} h sessions, lock after {} failures for {} min, secure cookies {}",
                    d.model,
                    d.session_hours,
                    d.lockout_failures,
                    d.lockout_minutes,
                    d.secure_cookies
                ),
                &self.dashboard.source,
            ),
        ];
        let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
        println!("config file: {file}\n");
        println!("{:<25} {:<width$}  source", "setting", "value");
        for (name, value, source) in rows {
            println!("{name:<25} {value:<width$}  {source}");
        }
        Ok(())
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("configuration file {} is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_appear() {
        assert_eq!(
            redact_url("postgres://lodestar:s3cr3t@db:5432/lodestar"),
            "postgres://lodestar:***@db:5432/lodestar"
        );
        assert_eq!(
            redact_url("postgres://lodestar@db/l"),
            "postgres://lodestar@db/l"
        );
        assert_eq!(
            redact_url("postgres://db/l?user=a&password=p%40ss&sslmode=require"),
            "postgres://db/l?user=a&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("sqlite://./lodestar-data/lodestar.db?mode=rwc"),
            "sqlite://./lodestar-data/lodestar.db?mode=rwc"
        );
        // An '@' in the path is not a credential separator.
        assert_eq!(redact_url("postgres://h/db@x"), "postgres://h/db@x");
        let secret = Secret("postgres://u:pw@h/d".into());
        assert!(!format!("{secret:?} {secret}").contains("pw"));
        assert!(!serde_json::to_string(&secret).unwrap().contains("pw"));
    }
}
