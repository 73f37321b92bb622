//! What each step of [`crate::dag::PIPELINE`] does. A step reads its upstream steps' recorded
//! outputs and returns its own as JSON (what the run records and the step cache replays).
//! Every side effect is either invisible until it is complete (snapshots staged then renamed,
//! artifacts named by their hash, predictions in one transaction) or idempotent (a retried
//! registration finds the version its first attempt made; a presentation already scored by the
//! same version at the same week is not scored twice), so a step killed at any point can rerun.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lodestar_domain::{EvaluationReport, PresentationTerm, RiskTier, TermState};
use lodestar_ingest::snapshot::snapshot_id;
use lodestar_ingest::sources::{convert_as_of, converted_dir};
use lodestar_ingest::{IngestOptions, ingest};
use lodestar_model::Artifact;
use lodestar_store::{ArtifactRef, CHAMPION, GateEvidence, NewVersion, Promotion, StoreError};
use lodestar_train::batch::{FeatureDrift, current_rows, history_rows, population_stability};
use lodestar_train::{Protocol, Snapshot, TrainOptions, evaluate_artifact, train_for};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Pipeline;
use crate::scoring::{ScoreJob, score_and_store};

/// Outputs of the steps a step reads, by step name.
pub type Inputs = BTreeMap<&'static str, Value>;

/// Why a step failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// What went wrong.
    pub message: String,
    /// A decision or a configuration problem: retrying gives the same answer.
    pub permanent: bool,
}

impl StepError {
    /// A failure no retry can mend.
    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError {
            message,
            permanent: false,
        }
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

type StepResult = Result<Value, StepError>;

/// The run a step belongs to.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Run id.
    pub id: i64,
    /// The export read.
    pub export: PathBuf,
    /// What happened to every earlier step (status and error), for the always-run steps.
    pub so_far: Value,
    /// Recompute everything: the snapshot too, even when an identical one exists.
    pub no_cache: bool,
}

/// An artifact's place, as recorded in step outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactOut {
    /// URI.
    pub uri: String,
    /// SHA-256.
    pub sha256: String,
    /// Size.
    pub bytes: i64,
}

impl From<&ArtifactOut> for ArtifactRef {
    fn from(a: &ArtifactOut) -> Self {
        ArtifactRef {
            uri: a.uri.clone(),
            sha256: a.sha256.clone(),
            bytes: a.bytes,
        }
    }
}

/// `features` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeaturesOut {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Feature rows.
    pub feature_rows: u64,
    /// Rows quarantined.
    pub quarantined_rows: u64,
    /// Presentations.
    pub presentations: Vec<String>,
    /// Each presentation running or finished, as of which day.
    #[serde(default)]
    pub terms: Vec<PresentationTerm>,
    /// An identical snapshot existed.
    pub reused: bool,
}

/// `train` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOut {
    /// The artifact (stored, not yet registered).
    pub artifact: ArtifactOut,
    /// Protocol it was trained under.
    pub protocol: Protocol,
    /// Seconds fitting the served model.
    pub fit_seconds: f64,
    /// Seconds fitting the calibration folds.
    pub calibration_seconds: f64,
}

/// `register` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterOut {
    /// Model.
    pub model: String,
    /// Version.
    pub version: i64,
    /// The version existed already (a retried registration).
    pub existing: bool,
}

/// `gate` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateOut {
    /// Model.
    pub model: String,
    /// The candidate.
    pub candidate: i64,
    /// The champion after the gate.
    pub champion: i64,
    /// Whether the candidate was promoted now.
    pub promoted: bool,
    /// The version drift is measured against: the champion that served before tonight's gate
    /// (tonight's champion on a first run).
    pub drift_reference: i64,
    /// Why.
    pub reasons: Vec<String>,
    /// Candidate and champion on tonight's test rows, week by week (empty on a first run or
    /// when the candidate already holds the title).
    #[serde(default)]
    pub compared: Vec<GateWeek>,
}

/// One gate week of tonight's comparison: both versions scored on the same rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateWeek {
    /// The week.
    pub week: u16,
    /// The gate's metric.
    pub metric: String,
    /// Test rows the candidate was scored on.
    pub candidate_n: u64,
    /// Its metric.
    #[serde(with = "lodestar_domain::nan_as_null")]
    pub candidate: f64,
    /// Test rows the champion was scored on (the same rows).
    pub champion_n: u64,
    /// Its metric.
    #[serde(with = "lodestar_domain::nan_as_null")]
    pub champion: f64,
}

/// `score` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreOut {
    /// Model version that scored.
    pub version: i64,
    /// Predictions stored.
    pub stored: u64,
    /// Students per tier.
    pub by_tier: BTreeMap<String, u64>,
    /// As-of week per presentation.
    pub weeks: BTreeMap<String, u16>,
    /// Presentations this version had already scored at that week.
    pub already_scored: Vec<String>,
    /// Per presentation scored tonight: its term, the week, and how many students.
    #[serde(default)]
    pub presentations: Vec<ScoredPresentation>,
    /// Why nothing (or less than every running presentation) was scored, in words.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Where the step's time went (absent in outputs of older versions).
    #[serde(default)]
    pub timing: Option<ScoreTiming>,
}

/// How fast tonight's scores were computed and stored, and how long any write held the
/// database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreTiming {
    /// Predictions scored and stored tonight.
    pub rows: u64,
    /// The step's wall time, reading the snapshot included.
    pub seconds: f64,
    /// Scoring, explaining and writing the rows, from opening the batch to its publication (the
    /// step's other time is reading the snapshot and recording the terms).
    #[serde(default)]
    pub write_seconds: f64,
    /// Time spent scoring and explaining (in memory, overlapped with the writes).
    pub compute_seconds: f64,
    /// Write transactions (staging chunks and the publication).
    pub transactions: u64,
    /// The longest of them, in milliseconds.
    pub longest_write_ms: f64,
    /// The publication (tonight's rows made visible, current risk moved), in milliseconds.
    pub publish_ms: f64,
    /// Rows an interrupted earlier run had staged, taken up rather than scored again.
    pub resumed_after: u64,
    /// Rows of abandoned unpublished batches deleted.
    pub discarded: u64,
}

/// One presentation scored tonight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPresentation {
    /// `MODULE-PRESENTATION`.
    pub presentation: String,
    /// Running (tonight's students) or finished (a replay, with `score_finished`).
    pub state: TermState,
    /// The week scored (the current week of a running presentation).
    pub week: u16,
    /// Weeks in the presentation.
    pub weeks: u16,
    /// The export's as-of day for it.
    pub as_of_day: i32,
    /// The as-of day as a date, when the source has a calendar.
    pub as_of_date: Option<String>,
    /// Students scored at `week` (still registered).
    pub students: u64,
}

/// `drift` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftOut {
    /// The version compared against (the champion that served before tonight).
    pub reference_version: i64,
    /// Its training snapshot.
    pub reference: String,
    /// Tonight's.
    pub current: String,
    /// Threshold.
    pub threshold: f64,
    /// Highest index.
    pub max_psi: f64,
    /// Above the threshold.
    pub flagged: bool,
    /// Why there is no comparison, when there is none.
    pub note: Option<String>,
    /// Per feature, highest first.
    pub features: Vec<FeatureDrift>,
}

fn input<T: DeserializeOwned>(inputs: &Inputs, step: &str) -> Result<T, StepError> {
    let v = inputs
        .get(step)
        .ok_or_else(|| format!("the output of {step} is missing"))?;
    Ok(serde_json::from_value(v.clone())
        .map_err(|e| format!("the output of {step} is unreadable: {e}"))?)
}

/// Tonight's evaluation report (the `evaluate` step's output).
fn evaluation_report(inputs: &Inputs) -> Result<EvaluationReport, StepError> {
    let report = inputs
        .get("evaluate")
        .and_then(|e| e.get("report"))
        .cloned()
        .ok_or("the evaluation report is missing")?;
    Ok(serde_json::from_value(report)
        .map_err(|e| format!("the evaluation report is unreadable: {e}"))?)
}

fn to_json<T: Serialize>(v: &T) -> StepResult {
    Ok(serde_json::to_value(v).map_err(|e| e.to_string())?)
}

fn store_err(e: StoreError) -> String {
    e.to_string()
}

/// Runs CPU work off the async threads; a panic in it comes back as an error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("panicked: {}", crate::runner::panic_message(e)))?
}

fn protocol(s: &Snapshot, train: &[String], test: &[String]) -> Result<Protocol, StepError> {
    Protocol::temporal(s, train, test).map_err(|e| StepError::permanent(e.to_string()))
}

fn train_options(p: &Pipeline) -> TrainOptions {
    TrainOptions {
        seed: p.config.seed,
        device: p.config.device,
        ..TrainOptions::default()
    }
}

fn read_snapshot(dir: &Path) -> Result<Snapshot, StepError> {
    Ok(Snapshot::read(dir).map_err(|e| e.to_string())?)
}

/// Runs step `name`.
pub async fn execute(
    p: Arc<Pipeline>,
    run: RunContext,
    name: &'static str,
    inputs: Inputs,
) -> StepResult {
    match name {
        "ingest" => ingest_step(&p, &run).await,
        "features" => features_step(&p, &run).await,
        "train" => train_step(&p, &inputs).await,
        "evaluate" => evaluate_step(&p, &inputs).await,
        "register" => register_step(&p, &run, &inputs).await,
        "gate" => gate_step(&p, &run, &inputs).await,
        "score" => score_step(&p, &run, &inputs).await,
        "drift" => drift_step(&p, &inputs).await,
        "notify" => notify_step(&p, &run, &inputs).await,
        other => Err(StepError::permanent(format!("no step named {other}"))),
    }
}

/// The part of a step's output that later steps depend on, which its output hash covers:
/// informational fields (whether a snapshot was reused, why the gate decided as it did) are
/// left out, so a rerun that reaches the same state replays the steps after it from the cache.
pub fn hashed_view(name: &str, output: &Value) -> Value {
    let volatile: &[&str] = match name {
        "features" => &["reused"],
        "register" => &["existing"],
        "gate" => &["candidate", "promoted", "reasons", "compared"],
        _ => &[],
    };
    let mut v = output.clone();
    if let Some(map) = v.as_object_mut() {
        for key in volatile {
            map.remove(*key);
        }
    }
    v
}

/// Whether a cached output still stands (the files it names are still there).
pub fn still_valid(name: &str, output: &Value) -> bool {
    match name {
        "features" => serde_json::from_value::<FeaturesOut>(output.clone()).is_ok_and(|f| {
            f.dir
                .join(lodestar_ingest::snapshot::MANIFEST_FILE)
                .is_file()
        }),
        _ => true,
    }
}

/// The folder of canonical tables a run reads: the export itself, or, when the export is a
/// Moodle or xAPI source configuration (a `.toml` file), the folder it is converted into.
fn tables_dir(p: &Pipeline, export: &Path) -> Result<PathBuf, StepError> {
    if export.is_file() {
        let exports = p
            .snapshot_root
            .parent()
            .map_or_else(|| PathBuf::from("exports"), |d| d.join("exports"));
        converted_dir(&exports, export).map_err(|e| StepError::permanent(e.to_string()))
    } else {
        Ok(export.to_owned())
    }
}

fn ingest_options(p: &Pipeline) -> IngestOptions {
    IngestOptions {
        as_of_day: p.config.as_of_day,
        ..IngestOptions::default()
    }
}

async fn ingest_step(p: &Pipeline, run: &RunContext) -> StepResult {
    let export = run.export.clone();
    let tables = tables_dir(p, &export)?;
    let as_of = p.config.as_of;
    let options = ingest_options(p);
    blocking(move || {
        if export.is_file() {
            // A Moodle or xAPI source: converted again each night, as its files change.
            convert_as_of(&export, &tables, as_of)
                .map_err(|e| StepError::permanent(e.to_string()))?;
        } else if !export.is_dir() {
            return Err(StepError::permanent(format!(
                "the export {} does not exist (an export folder, or a Moodle or xAPI source configuration)",
                export.display()
            )));
        }
        let (id, files) = snapshot_id(&tables, &options)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        // The export's place is on the run; its content is what the next steps depend on.
        Ok(json!({"snapshot_id": id, "files": files, "tables": tables}))
    })
    .await
}

async fn features_step(p: &Pipeline, run: &RunContext) -> StepResult {
    let export = tables_dir(p, &run.export)?;
    let root = p.snapshot_root.clone();
    let force = run.no_cache;
    let options = ingest_options(p);
    let outcome = blocking(move || {
        ingest(&export, &root, &options, force, &mut |_, _| {})
            .map_err(|e| StepError::from(e.to_string()))
    })
    .await?;
    let m = &outcome.manifest;
    to_json(&FeaturesOut {
        snapshot_id: m.snapshot_id.clone(),
        dir: outcome.dir.clone(),
        feature_rows: m.feature_rows,
        quarantined_rows: m.quarantined_rows,
        presentations: m.presentations.clone(),
        terms: m.terms.clone(),
        reused: outcome.reused,
    })
}

async fn train_step(p: &Pipeline, inputs: &Inputs) -> StepResult {
    let f: FeaturesOut = input(inputs, "features")?;
    let (family, train, test) = (
        p.config.family,
        p.config.train.clone(),
        p.config.test.clone(),
    );
    let o = train_options(p);
    let (trained, protocol) = blocking(move || {
        let s = read_snapshot(&f.dir)?;
        let protocol = protocol(&s, &train, &test)?;
        let t = train_for(&s, &protocol, family, &o, &mut |_| {}).map_err(|e| e.to_string())?;
        Ok((t, protocol))
    })
    .await?;
    let bytes = trained.artifact.to_bytes();
    let stored = p
        .artifacts
        .put(&p.config.model, &bytes)
        .await
        .map_err(store_err)?;
    to_json(&TrainOut {
        artifact: ArtifactOut {
            uri: stored.uri,
            sha256: stored.sha256,
            bytes: stored.bytes,
        },
        protocol,
        fit_seconds: trained.fit_seconds,
        calibration_seconds: trained.calibration_seconds,
    })
}

async fn load_artifact(p: &Pipeline, a: &ArtifactRef) -> Result<Artifact, StepError> {
    let bytes = p.artifacts.load(a).await.map_err(store_err)?;
    Ok(Artifact::from_bytes(&bytes).map_err(|e| format!("{}: {e}", a.uri))?)
}

async fn evaluate_step(p: &Pipeline, inputs: &Inputs) -> StepResult {
    let f: FeaturesOut = input(inputs, "features")?;
    let t: TrainOut = input(inputs, "train")?;
    let artifact = load_artifact(p, &(&t.artifact).into()).await?;
    let weeks = p.config.weeks.clone();
    let o = train_options(p);
    let report = blocking(move || {
        let s = read_snapshot(&f.dir)?;
        Ok(evaluate_artifact(&s, &artifact, &t.protocol, &weeks, &o).map_err(|e| e.to_string())?)
    })
    .await?;
    Ok(json!({ "report": report }))
}

async fn register_step(p: &Pipeline, run: &RunContext, inputs: &Inputs) -> StepResult {
    let t: TrainOut = input(inputs, "train")?;
    let report = evaluation_report(inputs)?;
    let model = &p.config.model;
    if let Some(v) = p
        .store
        .version_with_artifact(model, &t.artifact.sha256)
        .await
        .map_err(store_err)?
    {
        return to_json(&RegisterOut {
            model: v.model,
            version: v.version,
            existing: true,
        });
    }
    let artifact = load_artifact(p, &(&t.artifact).into()).await?;
    let v = p
        .store
        .register_version(NewVersion {
            model: model.clone(),
            artifact: (&t.artifact).into(),
            snapshot_hash: artifact.lineage.snapshot_id.clone(),
            code_version: artifact.lineage.code_version.clone(),
            config: json!({"family": artifact.family, "protocol": t.protocol, "options": artifact.lineage.config}),
            seed: artifact.lineage.seed as i64,
            report,
            run_id: Some(run.id),
            actor: format!("scheduler ({})", p.holder.id),
        })
        .await
        .map_err(store_err)?;
    to_json(&RegisterOut {
        model: v.model,
        version: v.version,
        existing: false,
    })
}

async fn gate_step(p: &Pipeline, run: &RunContext, inputs: &Inputs) -> StepResult {
    let r: RegisterOut = input(inputs, "register")?;
    let current = p.store.alias(&r.model, CHAMPION).await.map_err(store_err)?;
    if current == Some(r.version) {
        return to_json(&GateOut {
            model: r.model,
            candidate: r.version,
            champion: r.version,
            promoted: false,
            drift_reference: r.version,
            reasons: vec![format!("version {} is already the champion", r.version)],
            compared: vec![],
        });
    }
    // Like with like: the candidate's report is tonight's evaluation; the champion is scored by
    // its own artifact on the same test rows, never compared through its stored report.
    let candidate = evaluation_report(inputs)?;
    let champion = match current {
        Some(c) => {
            let f: FeaturesOut = input(inputs, "features")?;
            let t: TrainOut = input(inputs, "train")?;
            let v = p.store.version(&r.model, c).await.map_err(store_err)?;
            let artifact = load_artifact(p, &v.artifact).await?;
            let weeks = p.config.weeks.clone();
            let o = train_options(p);
            let report = blocking(move || {
                let s = read_snapshot(&f.dir)?;
                evaluate_artifact(&s, &artifact, &t.protocol, &weeks, &o).map_err(|e| {
                    StepError::permanent(format!(
                        "the champion (version {c}) cannot be scored on tonight's test rows, so the gate cannot compare: {e}"
                    ))
                })
            })
            .await?;
            Some((c, report))
        }
        None => None,
    };
    let metric = p.config.gate.metric;
    let compared: Vec<GateWeek> = champion
        .as_ref()
        .map(|(_, ch)| {
            p.config
                .gate
                .weeks
                .iter()
                .filter_map(|w| {
                    let c = candidate.weeks.iter().find(|m| m.week == *w)?;
                    let h = ch.weeks.iter().find(|m| m.week == *w)?;
                    Some(GateWeek {
                        week: *w,
                        metric: metric.as_str().to_owned(),
                        candidate_n: c.n,
                        candidate: metric.of(c),
                        champion_n: h.n,
                        champion: metric.of(h),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let untested = candidate.test_presentations.is_empty();
    let promotion = Promotion {
        model: r.model.clone(),
        version: r.version,
        gate: p.config.gate.clone(),
        actor: format!("scheduler ({})", p.holder.id),
        reason: format!("pipeline run {}", run.id),
        force: false,
        evidence: Some(GateEvidence {
            candidate,
            champion,
        }),
    };
    let (champion, promoted, reasons) = match p.store.promote(&promotion).await {
        Ok(m) => {
            let reasons = m
                .gate
                .as_deref()
                .and_then(|g| serde_json::from_str::<lodestar_domain::GateDecision>(g).ok())
                .map(|d| d.reasons)
                .unwrap_or_default();
            (r.version, true, reasons)
        }
        Err(StoreError::GateRefused(decision)) => match current {
            Some(c) => (c, false, decision.reasons),
            None => {
                let untested = if untested {
                    format!(
                        " (no finished presentation is later than the training ones, so there was nothing to test on; to score tonight's students anyway, promote it by hand: lodestar models promote {} {} --force REASON)",
                        r.model, r.version
                    )
                } else {
                    String::new()
                };
                return Err(StepError::permanent(format!(
                    "version {} failed the gate and there is no champion to keep: {}{untested}",
                    r.version,
                    decision.reasons.join("; ")
                )));
            }
        },
        Err(e) => return Err(store_err(e).into()),
    };
    to_json(&GateOut {
        model: r.model,
        candidate: r.version,
        champion,
        promoted,
        drift_reference: current.unwrap_or(champion),
        reasons,
        compared,
    })
}

/// The rows tonight scores: every running presentation (at its current week, or every week up
/// to it with `score_history`), and with `score_finished` the finished test presentations too.
fn rows_to_score(
    s: &Snapshot,
    p: &crate::config::PipelineConfig,
    notes: &mut Vec<String>,
) -> Result<Vec<usize>, StepError> {
    let mut presentations = s.running_presentations();
    for t in s.terms.iter().filter(|t| t.is_running()) {
        if t.current_week.is_none() {
            notes.push(format!(
                "{}: {}; nothing to score until then",
                t.presentation,
                t.describe()
            ));
        }
    }
    if p.score_finished {
        let Protocol::Temporal { test, .. } = protocol(s, &p.train, &p.test)? else {
            return Err(StepError::permanent("scoring needs a temporal protocol"));
        };
        let tested = s.select_presentations(&test).map_err(|e| e.to_string())?;
        for t in tested {
            if !presentations.contains(&t) {
                presentations.push(t);
            }
        }
    } else if presentations.is_empty() {
        notes.push(
            "no presentation of this export is running (every student has an outcome): nothing to score tonight; finished terms are history (set pipeline.score_finished = true to rescore them)"
                .into(),
        );
    }
    Ok(if p.score_history {
        history_rows(s, &presentations, p.score_week)
    } else {
        current_rows(s, &presentations, p.score_week)
    })
}

async fn score_step(p: &Pipeline, run: &RunContext, inputs: &Inputs) -> StepResult {
    let started = Instant::now();
    let f: FeaturesOut = input(inputs, "features")?;
    let g: GateOut = input(inputs, "gate")?;
    let v = p
        .store
        .version(&g.model, g.champion)
        .await
        .map_err(store_err)?;
    let artifact = Arc::new(load_artifact(p, &v.artifact).await?);
    let config = p.config.clone();
    let dir = f.dir.clone();
    let (s, rows, notes) = blocking(move || {
        let s = read_snapshot(&dir)?;
        let mut notes = Vec::new();
        let rows = rows_to_score(&s, &config, &mut notes)?;
        Ok((s, rows, notes))
    })
    .await?;
    let s = Arc::new(s);
    // The week each presentation is scored at, and every (presentation, week) scored.
    let mut weeks: BTreeMap<String, u16> = BTreeMap::new();
    let mut pairs: BTreeMap<(u32, u16), u64> = BTreeMap::new();
    for r in &rows {
        let w = weeks
            .entry(s.presentations[s.presentation[*r] as usize].clone())
            .or_insert(0);
        *w = (*w).max(s.week[*r]);
        *pairs.entry((s.presentation[*r], s.week[*r])).or_default() += 1;
    }
    let presentations: Vec<ScoredPresentation> = weeks
        .iter()
        .filter_map(|(name, week)| {
            let pr = s.presentations.iter().position(|n| n == name)? as u32;
            let term = s.term(pr)?;
            Some(ScoredPresentation {
                presentation: name.clone(),
                state: term.state,
                week: *week,
                weeks: term.weeks(),
                as_of_day: term.as_of_day,
                as_of_date: term.as_of_date(),
                students: pairs.get(&(pr, *week)).copied().unwrap_or(0),
            })
        })
        .collect();
    // A presentation and week this version has already scored (and published) is not scored
    // twice.
    let mut done: std::collections::BTreeSet<(u32, u16)> = Default::default();
    for (pr, week) in pairs.keys() {
        let name = &s.presentations[*pr as usize];
        let (module, code) = name.split_once('-').unwrap_or((name, ""));
        if p.store
            .has_predictions(&g.model, g.champion, module, code, i64::from(*week))
            .await
            .map_err(store_err)?
        {
            done.insert((*pr, *week));
        }
    }
    let already: Vec<String> = weeks
        .iter()
        .filter(|(name, week)| {
            s.presentations
                .iter()
                .position(|n| n == *name)
                .is_some_and(|pr| done.contains(&(pr as u32, **week)))
        })
        .map(|(name, _)| name.clone())
        .collect();
    let todo: Vec<usize> = rows
        .into_iter()
        .filter(|r| !done.contains(&(s.presentation[*r], s.week[*r])))
        .collect();
    let mut timing = ScoreTiming::default();
    let mut by_tier: BTreeMap<String, u64> = RiskTier::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), 0))
        .collect();
    if !todo.is_empty() {
        let job = ScoreJob {
            model: g.model.clone(),
            version: g.champion,
            run_id: Some(run.id),
            snapshot_id: f.snapshot_id.clone(),
            snapshot: Arc::clone(&s),
            artifact,
            rows: Arc::new(todo),
            chunk: p.config.score_chunk_rows,
        };
        let (t, batch) = score_and_store(&p.store, job, &p.failpoints).await?;
        timing = t;
        for (tier, n) in p.store.batch_tiers(batch).await.map_err(store_err)? {
            by_tier.insert(tier, n);
        }
    }
    // Then every presentation's term (running or finished, as of which day, current week): the
    // caseload shows a running term's students at its current week, so the week moves on only
    // once its scores are published. Idempotent; a retry after a failure here stores no score
    // twice and records the terms.
    p.store
        .record_terms(&s.terms, &s.id)
        .await
        .map_err(store_err)?;
    timing.seconds = started.elapsed().as_secs_f64();
    to_json(&ScoreOut {
        version: g.champion,
        stored: timing.rows,
        by_tier,
        weeks,
        already_scored: already,
        presentations,
        notes,
        timing: Some(timing),
    })
}

async fn drift_step(p: &Pipeline, inputs: &Inputs) -> StepResult {
    let f: FeaturesOut = input(inputs, "features")?;
    let g: GateOut = input(inputs, "gate")?;
    let v = p
        .store
        .version(&g.model, g.drift_reference)
        .await
        .map_err(store_err)?;
    let reference_dir = p.snapshot_root.join(&v.snapshot_hash);
    let threshold = p.config.drift_threshold;
    let mut out = DriftOut {
        reference_version: v.version,
        reference: v.snapshot_hash.clone(),
        current: f.snapshot_id.clone(),
        threshold,
        max_psi: 0.0,
        flagged: false,
        note: None,
        features: vec![],
    };
    if v.snapshot_hash == f.snapshot_id {
        out.note = Some(format!(
            "tonight's snapshot is the one version {} was trained on: nothing to compare",
            v.version
        ));
        return to_json(&out);
    }
    if !reference_dir.is_dir() {
        out.note = Some(format!(
            "the champion's training snapshot {} is no longer in {}: drift not measured",
            v.snapshot_hash,
            p.snapshot_root.display()
        ));
        return to_json(&out);
    }
    let features = blocking(move || {
        let reference = read_snapshot(&reference_dir)?;
        let current = read_snapshot(&f.dir)?;
        Ok(population_stability(&reference, &current))
    })
    .await?;
    out.max_psi = features.first().map_or(0.0, |d| d.psi);
    out.flagged = out.max_psi > threshold;
    out.features = features;
    to_json(&out)
}

/// The run's summary as the webhook, `pipeline show` and the dashboard see it.
pub fn summary(run: &RunContext, inputs: &Inputs) -> Value {
    let drift = inputs.get("drift").map(|d| {
        json!({
            "reference_version": d.get("reference_version"),
            "max_psi": d.get("max_psi"), "flagged": d.get("flagged"), "note": d.get("note"),
            "top": d.get("features").and_then(|f| f.as_array()).map(|f| f.iter().take(5).cloned().collect::<Vec<_>>()),
        })
    });
    json!({
        "run": run.id,
        "export": run.export,
        "steps": run.so_far,
        "snapshot": inputs.get("features").and_then(|f| f.get("snapshot_id")),
        "terms": inputs.get("features").and_then(|f| f.get("terms")),
        "registered": inputs.get("register"),
        "gate": inputs.get("gate"),
        "score": inputs.get("score"),
        "drift": drift,
    })
}

/// `scheme://host[:port]` of a URL, for messages.
fn webhook_host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}")
}

async fn notify_step(p: &Pipeline, run: &RunContext, inputs: &Inputs) -> StepResult {
    let Some(url) = &p.config.webhook else {
        return Ok(json!({"sent": false, "reason": "no pipeline.webhook configured"}));
    };
    // Webhook URLs often carry a token in their path or query: errors name the host only.
    let shown = webhook_host(url);
    let body = summary(run, inputs);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("webhook {shown}: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("webhook {shown} answered {status}").into());
    }
    Ok(json!({"sent": true, "status": status.as_u16()}))
}

/// The rows tonight's `score` step would score (every one, as on a first night), from the
/// latest run whose `features` and `gate` steps succeeded: for `lodestar bench score`.
pub async fn latest_score_job(p: &Pipeline) -> Result<ScoreJob, String> {
    for run in p.store.runs(50).await.map_err(|e| e.to_string())? {
        let steps = p.store.steps(run.id).await.map_err(|e| e.to_string())?;
        let output = |name: &str| {
            steps
                .iter()
                .rev()
                .find(|s| s.step == name && s.status == "succeeded")
                .and_then(|s| s.output.clone())
        };
        let (Some(f), Some(g)) = (output("features"), output("gate")) else {
            continue;
        };
        let f: FeaturesOut = serde_json::from_value(f).map_err(|e| e.to_string())?;
        let g: GateOut = serde_json::from_value(g).map_err(|e| e.to_string())?;
        let v = p
            .store
            .version(&g.model, g.champion)
            .await
            .map_err(|e| e.to_string())?;
        let artifact = load_artifact(p, &v.artifact).await.map_err(|e| e.message)?;
        let config = p.config.clone();
        let dir = f.dir.clone();
        let (s, rows) = blocking(move || {
            let s = read_snapshot(&dir)?;
            let rows = rows_to_score(&s, &config, &mut Vec::new())?;
            Ok((s, rows))
        })
        .await
        .map_err(|e| e.message)?;
        return Ok(ScoreJob {
            model: g.model,
            version: g.champion,
            run_id: None,
            snapshot_id: f.snapshot_id,
            snapshot: Arc::new(s),
            artifact: Arc::new(artifact),
            rows: Arc::new(rows),
            chunk: p.config.score_chunk_rows,
        });
    }
    Err("no run in this data folder got past its gate: run `lodestar pipeline run --export DIR` first".into())
}

#[cfg(test)]
mod tests {
    use super::webhook_host;

    #[test]
    fn webhook_messages_name_the_host_only() {
        assert_eq!(
            webhook_host("https://hooks.slack.com/services/T000/B000/SECRET?x=1"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            webhook_host("http://user:pw@10.0.0.5:8080/hook"),
            "http://10.0.0.5:8080"
        );
    }
}
