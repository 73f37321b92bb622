//! What a pipeline run and the scheduler may vary: the `[pipeline]` table of `lodestar.toml`,
//! every field with a default, checked before anything runs.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lodestar_domain::PromotionGate;
use lodestar_model::ModelFamily;
use lodestar_train::TrainDevice;
use serde::{Deserialize, Serialize};

use crate::SchedulerError;

/// The `[pipeline]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The export a run reads when none is given (an OULAD-schema folder).
    pub export: Option<PathBuf>,
    /// Cron expression: five fields (`min hour day month weekday`) or six with seconds first;
    /// `off` when something else starts the nightly run (a Kubernetes CronJob running
    /// `lodestar pipeline run`), so the scheduler only serves the inbox and runs queued over the API.
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/London`.
    pub timezone: String,
    /// Folder watched for new exports (default: `<data dir>/inbox`).
    pub inbox: Option<PathBuf>,
    /// Only start on an inbox export that holds a `_READY` file (otherwise any folder whose
    /// name is not hidden or `*.tmp`/`*.partial`, i.e. written elsewhere then renamed in).
    pub inbox_require_marker: bool,
    /// Seconds between looks at the inbox.
    pub inbox_poll_seconds: u64,
    /// Registered model name.
    pub model: String,
    /// Model family trained each night.
    pub family: ModelFamily,
    /// Where the MLP (alone or inside the ensemble) trains: `cpu`, or `wgpu` (a GPU through
    /// burn's wgpu backend; needs a binary built with `--features wgpu`).
    pub device: TrainDevice,
    /// Training presentations (codes or `MODULE-CODE`); empty: every code before the tested one.
    pub train: Vec<String>,
    /// Test presentations; empty: the latest code whose presentations have finished (a running
    /// presentation is never tested on).
    pub test: Vec<String>,
    /// Weeks evaluated.
    pub weeks: Vec<u16>,
    /// Seed for every random choice.
    pub seed: u64,
    /// The export's as-of day for every running presentation, in OULAD-schema day numbers
    /// (`--as-of-day`); records dated after it are refused. Empty: a source's configured as-of,
    /// else each running presentation's latest recorded day.
    pub as_of_day: Option<i32>,
    /// The export's as-of date (`YYYY-MM-DD`, `--as-of`) for Moodle and xAPI sources, whose
    /// records carry calendar dates; over the source configuration's own `as_of`.
    pub as_of: Option<chrono::NaiveDate>,
    /// As-of week scored; empty: each running presentation's current week (the last week
    /// complete on its as-of day).
    pub score_week: Option<u16>,
    /// Also score every earlier week of the running presentations a version has not scored yet
    /// (a course's risk history on its first night, or in the demo).
    pub score_history: bool,
    /// Also score the finished test presentations (a replay of history); off: each night scores
    /// the running presentations only.
    pub score_finished: bool,
    /// Predictions written per transaction while scoring (each a few hundredths of a second of
    /// the database; tonight's scores become visible together once all are written).
    pub score_chunk_rows: usize,
    /// The promotion gate the candidate must pass against the champion.
    pub gate: PromotionGate,
    /// A run is flagged when a feature's population stability index exceeds this.
    pub drift_threshold: f64,
    /// Webhook that receives each run's summary (JSON POST); none: not sent.
    pub webhook: Option<String>,
    /// Attempts per step (the first included).
    pub attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled before each later one.
    pub backoff_ms: u64,
    /// Longest a step may run, in seconds.
    pub step_timeout_seconds: u64,
    /// A SQLite lease whose heartbeat is older than this many seconds is taken over.
    pub lease_stale_seconds: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            export: None,
            schedule: "0 2 * * *".into(),
            timezone: "UTC".into(),
            inbox: None,
            inbox_require_marker: false,
            inbox_poll_seconds: 30,
            model: "at-risk".into(),
            family: ModelFamily::Ensemble,
            device: TrainDevice::Cpu,
            train: vec![],
            test: vec![],
            weeks: vec![5, 10, 20],
            seed: 42,
            as_of_day: None,
            as_of: None,
            score_week: None,
            score_history: false,
            score_finished: false,
            score_chunk_rows: lodestar_store::STAGE_CHUNK,
            gate: PromotionGate::default(),
            drift_threshold: 0.25,
            webhook: None,
            attempts: 3,
            backoff_ms: 2_000,
            step_timeout_seconds: 3_600,
            lease_stale_seconds: 120,
        }
    }
}

impl PipelineConfig {
    /// The schedule, parsed; `None` when it is `off`.
    pub fn cron(&self) -> Result<Option<cron::Schedule>, SchedulerError> {
        if self.schedule.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let fields = self.schedule.split_whitespace().count();
        let expr = match fields {
            5 => format!("0 {}", self.schedule.trim()),
            6 | 7 => self.schedule.trim().to_owned(),
            _ => {
                return Err(SchedulerError::Config(format!(
                    "pipeline.schedule {:?}: give five fields (min hour day month weekday), e.g. \"0 2 * * *\", or \"off\"",
                    self.schedule
                )));
            }
        };
        cron::Schedule::from_str(&expr).map(Some).map_err(|e| {
            SchedulerError::Config(format!("pipeline.schedule {:?}: {e}", self.schedule))
        })
    }

    /// The time zone, parsed.
    pub fn tz(&self) -> Result<chrono_tz::Tz, SchedulerError> {
        self.timezone.parse().map_err(|_| {
            SchedulerError::Config(format!(
                "pipeline.timezone {:?} is not an IANA time zone (e.g. UTC, Europe/London, America/New_York)",
                self.timezone
            ))
        })
    }

    /// Checks every field that can be wrong.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        self.cron()?;
        self.tz()?;
        let bad = |what: &str| Err(SchedulerError::Config(what.to_owned()));
        if self.model.trim().is_empty() {
            return bad("pipeline.model must name the registered model");
        }
        if self.weeks.is_empty() {
            return bad("pipeline.weeks must name at least one week");
        }
        if self.attempts == 0 {
            return bad("pipeline.attempts must be at least 1");
        }
        if self.score_chunk_rows == 0 {
            return bad("pipeline.score_chunk_rows must be at least 1");
        }
        if self.step_timeout_seconds == 0 {
            return bad("pipeline.step_timeout_seconds must be at least 1");
        }
        if self.device == TrainDevice::Wgpu && !cfg!(feature = "wgpu") {
            return bad(
                "pipeline.device = \"wgpu\": this binary was built without the wgpu backend; build it with `cargo build -p lodestar --features wgpu` (the Dockerfile's pipeline-gpu target does)",
            );
        }
        if self.drift_threshold.is_nan() || self.drift_threshold <= 0.0 {
            return bad("pipeline.drift_threshold must be positive");
        }
        if let Some(url) = &self.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("pipeline.webhook must be an http:// or https:// URL");
        }
        if self
            .as_of_day
            .is_some_and(|d| !(-2000..=10_000).contains(&d))
        {
            return bad("pipeline.as_of_day must be a day number between -2000 and 10000");
        }
        Ok(())
    }

    /// The step timeout.
    pub fn step_timeout(&self) -> Duration {
        Duration::from_secs(self.step_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_and_zones_are_read_and_bad_ones_named() {
        let c = PipelineConfig::default();
        c.validate().unwrap();
        assert_eq!(c.cron().unwrap().unwrap().source(), "0 0 2 * * *");
        let off = PipelineConfig {
            schedule: " Off ".into(),
            ..PipelineConfig::default()
        };
        off.validate().unwrap();
        assert!(off.cron().unwrap().is_none());
        let bad = PipelineConfig {
            schedule: "2am".into(),
            ..PipelineConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("five fields")
        );
        let bad = PipelineConfig {
            timezone: "Mars/Olympus".into(),
            ..PipelineConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("IANA"));
        let parsed: PipelineConfig =
            toml_like(r#"{"schedule": "30 1 * * 1-5", "timezone": "Europe/London"}"#);
        parsed.validate().unwrap();
        assert_eq!(parsed.model, "at-risk");
        assert_eq!(parsed.device, TrainDevice::Cpu);
        let gpu: PipelineConfig = toml_like(r#"{"device": "wgpu"}"#);
        assert_eq!(
            gpu.validate().is_ok(),
            cfg!(feature = "wgpu"),
            "a wgpu device is accepted exactly when the backend is built in"
        );
    }

    fn toml_like(json: &str) -> PipelineConfig {
        serde_json::from_str(json).unwrap()
    }
}
