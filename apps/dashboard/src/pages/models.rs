//! The model page (admins): the evidence for the champion and the latest challenger, drift, the
//! latest pipeline run and the alias history, with promote (through the registry's gate) and
//! rollback.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use lodestar_domain::{EvaluationReport, PromotionGate};
use lodestar_store::{CHAMPION, Promotion, StoreError};
use serde::Deserialize;
use serde_json::Value;

use super::{Nav, St, encode, nav, render};
use crate::session::SignedIn;
use crate::{PageError, charts};

struct VersionView {
    version: i64,
    label: String,
    weeks: Vec<Vec<String>>,
    reliability: String,
    roc: String,
    gaps: Vec<Vec<String>>,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    nav: Nav,
    model: String,
    versions: Vec<VersionView>,
    history: Vec<Vec<String>>,
    drift: Vec<Vec<String>>,
    drift_note: String,
    message: String,
    candidates: Vec<i64>,
    last_run: Option<RunSummary>,
}

/// The latest pipeline run, as its notify step summarised it.
struct RunSummary {
    headline: String,
    steps: Vec<(String, String)>,
    outcome: Vec<String>,
}

fn run_summary(r: &lodestar_store::PipelineRun) -> RunSummary {
    let s = r.summary.clone().unwrap_or(Value::Null);
    let mut steps: Vec<(String, String)> = s["steps"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, v)| {
                    let status = v["status"].as_str().unwrap_or("?").to_owned();
                    let detail = match (v["seconds"].as_f64(), v["error"].as_str()) {
                        (_, Some(e)) => format!("{status}: {e}"),
                        (Some(sec), _) => format!("{status} in {sec:.1} s"),
                        _ => status,
                    };
                    (name.clone(), detail)
                })
                .collect()
        })
        .unwrap_or_default();
    const ORDER: [&str; 9] = [
        "ingest", "features", "train", "evaluate", "register", "gate", "score", "drift", "notify",
    ];
    steps.sort_by_key(|(n, _)| ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()));
    let mut outcome = Vec::new();
    if let Some(g) = s["gate"].as_object() {
        let promoted = g.get("promoted").and_then(Value::as_bool).unwrap_or(false);
        outcome.push(format!(
            "Gate: version {} {}",
            g.get("candidate").map(Value::to_string).unwrap_or_default(),
            if promoted {
                "promoted to champion".to_owned()
            } else {
                format!(
                    "kept out; champion stays version {}",
                    g.get("champion").map(Value::to_string).unwrap_or_default()
                )
            }
        ));
    }
    if let Some(sc) = s["score"].as_object() {
        outcome.push(format!(
            "Scored: {} predictions ({})",
            sc.get("stored").map(Value::to_string).unwrap_or_default(),
            sc.get("by_tier")
                .and_then(Value::as_object)
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        ));
        for p in sc
            .get("presentations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let as_of = match p["as_of_date"].as_str() {
                Some(d) => lodestar_domain::term::date_in_words(d).unwrap_or_else(|| d.to_owned()),
                None => format!("day {}", p["as_of_day"]),
            };
            outcome.push(format!(
                "{} ({}, as of {as_of}): {} students scored at week {} of {}",
                p["presentation"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["students"],
                p["week"],
                p["weeks"]
            ));
        }
        for note in sc
            .get("notes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            outcome.push(format!("Note: {}", note.as_str().unwrap_or("")));
        }
    }
    RunSummary {
        headline: format!(
            "Run {} ({}, started {}): {}{}{}",
            r.id,
            r.trigger,
            r.started_at.get(..16).unwrap_or("").replace('T', " "),
            r.status,
            if r.flagged { ", flagged for drift" } else { "" },
            r.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        steps,
        outcome,
    }
}

fn metric(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "—".into()
    }
}

fn version_view(version: i64, label: &str, r: &EvaluationReport) -> VersionView {
    let first = r.weeks.first();
    VersionView {
        version,
        label: label.to_owned(),
        weeks: r
            .weeks
            .iter()
            .map(|w| {
                vec![
                    w.week.to_string(),
                    w.n.to_string(),
                    metric(w.roc_auc),
                    metric(w.pr_auc),
                    metric(w.brier),
                    metric(w.ece),
                    metric(w.precision),
                    metric(w.recall),
                ]
            })
            .collect(),
        reliability: first.map_or_else(String::new, |w| {
            let bins: Vec<(f64, f64)> = w
                .reliability
                .iter()
                .filter(|b| b.count > 0 && b.mean_predicted.is_finite() && b.observed.is_finite())
                .map(|b| (b.mean_predicted, b.observed))
                .collect();
            charts::reliability(&bins, &format!("Reliability, week {}", w.week))
        }),
        roc: first.map_or_else(String::new, |w| {
            charts::roc(&w.roc_curve, &format!("ROC, week {}", w.week))
        }),
        gaps: r
            .fairness
            .iter()
            .map(|g| {
                vec![
                    format!("{:?}", g.attribute),
                    g.week.to_string(),
                    metric(g.tpr_gap),
                    metric(g.fpr_gap),
                    metric(g.calibration_gap),
                ]
            })
            .collect(),
    }
}

/// What the model page says after a promote or rollback.
#[derive(Debug, Default, Deserialize)]
pub struct ModelsQuery {
    #[serde(default)]
    done: String,
}

/// The model evidence (admins): champion and challenger, drift, alias history, actions.
pub async fn models(
    State(state): St,
    s: SignedIn,
    Query(q): Query<ModelsQuery>,
) -> Result<Response, PageError> {
    s.require_admin()?;
    let model = state.config.model.clone();
    let versions = match state.store.versions(&model).await {
        Ok(v) => v,
        Err(StoreError::UnknownModel(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let champion = state.store.alias(&model, CHAMPION).await?;
    let mut views = Vec::new();
    if let Some(c) = champion.and_then(|c| versions.iter().find(|v| v.version == c)) {
        views.push(version_view(c.version, "champion", &c.report));
    }
    if let Some(latest) = versions.last()
        && Some(latest.version) != champion
    {
        views.push(version_view(
            latest.version,
            "challenger (latest)",
            &latest.report,
        ));
    }
    let history = state
        .store
        .alias_history(&model)
        .await
        .unwrap_or_default()
        .iter()
        .rev()
        .map(|m| {
            vec![
                m.at.get(..16).unwrap_or("").replace('T', " "),
                m.alias.clone(),
                m.kind.clone(),
                m.from_version.map(|v| v.to_string()).unwrap_or_default(),
                m.to_version.map(|v| v.to_string()).unwrap_or_default(),
                m.actor.clone(),
                format!("{}{}", m.reason, if m.forced { " (forced)" } else { "" }),
            ]
        })
        .collect();
    let runs = state.store.runs(20).await?;
    let last_run = runs.first().map(run_summary);
    let run = runs
        .into_iter()
        .find(|r| r.summary.as_ref().is_some_and(|s| !s["drift"].is_null()));
    let drift_summary = run
        .as_ref()
        .and_then(|r| r.summary.as_ref())
        .map(|s| s["drift"].clone());
    let drift = drift_summary
        .as_ref()
        .and_then(|d| d["top"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|f| {
            vec![
                f["feature"].as_str().unwrap_or("").to_owned(),
                metric(f["psi"].as_f64().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    let drift_note = match (&run, &drift_summary) {
        (Some(r), Some(d)) => format!(
            "Run {} ({}): highest PSI {}, {}{}",
            r.id,
            r.started_at.get(..16).unwrap_or("").replace('T', " "),
            metric(d["max_psi"].as_f64().unwrap_or(f64::NAN)),
            if d["flagged"].as_bool().unwrap_or(false) {
                "flagged: the population moved"
            } else {
                "not flagged"
            },
            d["note"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        _ => "No pipeline run has measured drift yet.".into(),
    };
    render(&ModelsPage {
        nav: nav(&s),
        candidates: versions
            .iter()
            .map(|v| v.version)
            .filter(|v| Some(*v) != champion)
            .rev()
            .collect(),
        model,
        versions: views,
        history,
        drift,
        drift_note,
        message: q.done,
        last_run,
    })
}

/// A promotion or rollback.
#[derive(Debug, Deserialize)]
pub struct AliasForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    reason: String,
}

fn done(message: &str) -> Response {
    Redirect::to(&format!("/models?done={}", encode(message))).into_response()
}

/// Promotes a version through the registry's gate (refusals are shown, nothing changes).
pub async fn promote(
    State(state): St,
    s: SignedIn,
    Form(f): Form<AliasForm>,
) -> Result<Response, PageError> {
    s.require_admin()?;
    s.check_csrf(&f.csrf)?;
    let Some(version) = f.version else {
        return Err(PageError::BadRequest("Choose a version to promote.".into()));
    };
    if f.reason.trim().is_empty() {
        return Err(PageError::BadRequest(
            "Say why (the reason is kept in the alias history).".into(),
        ));
    }
    let result = state
        .store
        .promote(&Promotion {
            model: state.config.model.clone(),
            version,
            gate: PromotionGate::default(),
            actor: s.user().username.clone(),
            reason: f.reason.trim().to_owned(),
            force: false,
            // A manual promotion compares the versions' stored reports.
            evidence: None,
        })
        .await;
    let message = match result {
        Ok(_) => format!("Version {version} is now the champion."),
        Err(
            e @ (StoreError::GateRefused(_)
            | StoreError::AlreadyHolds { .. }
            | StoreError::UnknownVersion { .. }
            | StoreError::UnknownModel(_)),
        ) => {
            format!("Not promoted: {e}")
        }
        Err(e) => return Err(e.into()),
    };
    state
        .store
        .audit(
            &s.user().username,
            "model.promote",
            &state.config.model,
            &serde_json::json!({"version": version, "result": message}),
        )
        .await?;
    Ok(done(&message))
}

/// Returns the champion to the version before.
pub async fn rollback(
    State(state): St,
    s: SignedIn,
    Form(f): Form<AliasForm>,
) -> Result<Response, PageError> {
    s.require_admin()?;
    s.check_csrf(&f.csrf)?;
    if f.reason.trim().is_empty() {
        return Err(PageError::BadRequest(
            "Say why (the reason is kept in the alias history).".into(),
        ));
    }
    let message = match state
        .store
        .rollback(&state.config.model, &s.user().username, f.reason.trim())
        .await
    {
        Ok(m) => format!(
            "Rolled back to version {}.",
            m.to_version.map(|v| v.to_string()).unwrap_or_default()
        ),
        Err(e @ (StoreError::NothingToRollBack { .. } | StoreError::UnknownModel(_))) => {
            format!("Not rolled back: {e}")
        }
        Err(e) => return Err(e.into()),
    };
    state
        .store
        .audit(
            &s.user().username,
            "model.rollback",
            &state.config.model,
            &serde_json::json!({"result": message}),
        )
        .await?;
    Ok(done(&message))
}
