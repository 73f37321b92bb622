//! `lodestar migrate` and `lodestar models …`: the registry from the command line, as tables or
//! JSON.

use std::fs;

use anyhow::{Context, bail};
use lodestar_domain::{EvaluationReport, GateMetric, PromotionGate};
use lodestar_store::{
    AliasMove, ArtifactStore, CHAMPION, ModelVersion, NewVersion, Promotion, Store, StoreError,
    model_card,
};
use serde_json::json;

use crate::cli::{ModelsCommand, PromoteArgs, RegisterArgs};
use crate::config::Config;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Connects to the configured database (creating the data directory for the embedded SQLite).
pub(crate) async fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url.value.expose();
    if url.starts_with("sqlite:") {
        fs::create_dir_all(&config.data_dir.value).with_context(|| {
            format!(
                "creating the data directory {}",
                config.data_dir.value.display()
            )
        })?;
    }
    Store::connect(url)
        .await
        .with_context(|| format!("opening the store at {}", config.database_url.value))
}

/// `lodestar migrate`.
pub(crate) fn migrate(config: &Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connect(config).await?;
        store.ping().await?;
        println!(
            "{} is up to date ({:?})",
            config.database_url.value,
            store.backend()
        );
        Ok(())
    })
}

/// `lodestar purge`: deletes predictions older than the retention period.
pub(crate) fn purge(config: &Config, older_than_days: Option<u32>) -> anyhow::Result<()> {
    let days = older_than_days.unwrap_or(config.prediction_retention_days.value);
    runtime()?.block_on(async {
        let store = connect(config).await?;
        let deleted = store.purge_predictions_older_than(days).await?;
        println!("deleted {deleted} predictions scored more than {days} days ago");
        Ok(())
    })
}

pub(crate) fn artifacts(config: &Config) -> anyhow::Result<ArtifactStore> {
    ArtifactStore::from_url(&config.artifact_store.value)
        .with_context(|| format!("opening the artifact store {}", config.artifact_store.value))
}

fn metric_at(v: &ModelVersion, week: u16) -> String {
    v.report
        .weeks
        .iter()
        .find(|w| w.week == week)
        .map_or_else(|| "-".to_owned(), |w| format!("{:.3}", w.roc_auc))
}

async fn artifact_status(store: &ArtifactStore, v: &ModelVersion) -> String {
    match store.load(&v.artifact).await {
        Ok(_) => "ok".to_owned(),
        Err(StoreError::ArtifactMissing { .. }) => "MISSING".to_owned(),
        Err(StoreError::ArtifactCorrupted { .. }) => "CORRUPTED".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    }
}

fn move_json(m: &AliasMove) -> serde_json::Value {
    json!({
        "alias": m.alias, "kind": m.kind, "from_version": m.from_version, "to_version": m.to_version,
        "actor": m.actor, "reason": m.reason, "forced": m.forced, "at": m.at,
        "gate": m.gate.as_deref().and_then(|g| serde_json::from_str::<serde_json::Value>(g).ok()),
    })
}

fn report_move(m: &AliasMove, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&move_json(m))?);
    } else {
        print_move(m);
    }
    Ok(())
}

fn print_move(m: &AliasMove) {
    let from = m
        .from_version
        .map_or_else(|| "none".to_owned(), |v| v.to_string());
    let to = m
        .to_version
        .map_or_else(|| "none".to_owned(), |v| v.to_string());
    let forced = if m.forced { " (forced)" } else { "" };
    println!(
        "{}  {} {}: {from} -> {to}{forced} by {}: {}",
        m.at, m.kind, m.alias, m.actor, m.reason
    );
}

/// `lodestar models …`.
pub(crate) fn run(config: &Config, command: &ModelsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connect(config).await?;
        match command {
            ModelsCommand::List { json } => list(&store, *json).await,
            ModelsCommand::Show { name, json } => show(config, &store, name, *json).await,
            ModelsCommand::Register(args) => register(config, &store, args).await,
            ModelsCommand::Promote(args) => promote(&store, args).await,
            ModelsCommand::Rollback {
                name,
                reason,
                actor,
                json,
            } => report_move(&store.rollback(name, actor, reason).await?, *json),
            ModelsCommand::Alias {
                name,
                alias,
                version,
                reason,
                actor,
                json,
            } => report_move(
                &store
                    .set_alias(name, alias, *version, actor, reason)
                    .await?,
                *json,
            ),
            ModelsCommand::History { name, json } => {
                if !store.models().await?.contains(name) {
                    bail!("no registered model {name:?}");
                }
                let history = store.alias_history(name).await?;
                if *json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &history.iter().map(move_json).collect::<Vec<_>>()
                        )?
                    );
                } else if history.is_empty() {
                    println!("{name}: no alias has moved yet");
                } else {
                    history.iter().for_each(print_move);
                }
                Ok(())
            }
            ModelsCommand::Card { name, version, out } => {
                let v = store.version(name, *version).await?;
                let aliases = aliases_of(&store, name, *version).await?;
                let card = model_card(&v, &aliases);
                match out {
                    Some(path) => {
                        fs::write(path, card)
                            .with_context(|| format!("writing {}", path.display()))?;
                        println!(
                            "wrote the model card of {name} version {version} to {}",
                            path.display()
                        );
                    }
                    None => print!("{card}"),
                }
                Ok(())
            }
        }
    })
}

/// The aliases a version holds now.
async fn aliases_of(store: &Store, model: &str, version: i64) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = store
        .alias_history(model)
        .await?
        .into_iter()
        .map(|m| m.alias)
        .collect();
    names.sort();
    names.dedup();
    let mut held = Vec::new();
    for alias in names {
        if store.alias(model, &alias).await? == Some(version) {
            held.push(alias);
        }
    }
    Ok(held)
}

async fn list(store: &Store, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for name in store.models().await? {
        let versions = store.versions(&name).await?;
        let champion = store.alias(&name, CHAMPION).await?;
        rows.push((
            name,
            versions.len(),
            versions.last().map(|v| v.version),
            champion,
        ));
    }
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(n, count, latest, champion)| json!({"name": n, "versions": count, "latest": latest, "champion": champion}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if rows.is_empty() {
        println!("no registered models yet (lodestar models register ...)");
    } else {
        println!(
            "{:<24} {:>8} {:>8} {:>9}",
            "model", "versions", "latest", "champion"
        );
        for (n, count, latest, champion) in rows {
            let show = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            println!(
                "{n:<24} {count:>8} {:>8} {:>9}",
                show(latest),
                show(champion)
            );
        }
    }
    Ok(())
}

async fn show(config: &Config, store: &Store, name: &str, json: bool) -> anyhow::Result<()> {
    let versions = store.versions(name).await?;
    if versions.is_empty() {
        bail!("no registered model {name:?}");
    }
    let artifacts = artifacts(config)?;
    let mut held = Vec::new();
    let mut status = Vec::new();
    for v in &versions {
        held.push(aliases_of(store, name, v.version).await?);
        status.push(artifact_status(&artifacts, v).await);
    }
    if json {
        let out: Vec<_> = versions
            .iter()
            .zip(&held)
            .zip(&status)
            .map(|((v, aliases), status)| {
                json!({
                    "version": v.version, "aliases": aliases, "created_at": v.created_at, "created_by": v.created_by,
                    "snapshot_hash": v.snapshot_hash, "code_version": v.code_version, "seed": v.seed,
                    "artifact": {"uri": v.artifact.uri, "sha256": v.artifact.sha256, "bytes": v.artifact.bytes,
                                 "status": status},
                    "report": v.report,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:>7}  {:<20} {:>7} {:>7} {:>7}  {:<9} {:<24} snapshot",
        "version", "aliases", "auc@5", "auc@10", "auc@20", "artifact", "registered"
    );
    for ((v, aliases), status) in versions.iter().zip(&held).zip(&status) {
        println!(
            "{:>7}  {:<20} {:>7} {:>7} {:>7}  {:<9} {:<24} {}",
            v.version,
            aliases.join(","),
            metric_at(v, 5),
            metric_at(v, 10),
            metric_at(v, 20),
            status,
            v.created_at,
            v.snapshot_hash
        );
    }
    Ok(())
}

async fn register(config: &Config, store: &Store, args: &RegisterArgs) -> anyhow::Result<()> {
    let bytes =
        fs::read(&args.artifact).with_context(|| format!("reading {}", args.artifact.display()))?;
    let text = fs::read_to_string(&args.report)
        .with_context(|| format!("reading {}", args.report.display()))?;
    let report: EvaluationReport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an evaluation report", args.report.display()))?;
    let config_json: serde_json::Value = serde_json::from_str(&args.training_config)
        .context("--training-config is not valid JSON")?;
    let artifact = artifacts(config)?.put(&args.name, &bytes).await?;
    let v = store
        .register_version(NewVersion {
            model: args.name.clone(),
            artifact,
            snapshot_hash: args.snapshot.clone(),
            code_version: args.code_version.clone(),
            config: config_json,
            seed: args.seed,
            report,
            run_id: None,
            actor: args.actor.clone(),
        })
        .await?;
    println!(
        "registered {} version {} (artifact sha256 {})",
        v.model, v.version, v.artifact.sha256
    );
    Ok(())
}

async fn promote(store: &Store, args: &PromoteArgs) -> anyhow::Result<()> {
    let metric = match args.metric.as_str() {
        "roc_auc" => GateMetric::RocAuc,
        "pr_auc" => GateMetric::PrAuc,
        "brier" => GateMetric::Brier,
        other => bail!("--metric {other}: use roc_auc, pr_auc or brier"),
    };
    let promotion = Promotion {
        model: args.name.clone(),
        version: args.version,
        gate: PromotionGate {
            metric,
            margin: args.margin,
            weeks: args.weeks.clone(),
            max_ece: args.max_ece,
            max_fairness_gap: args.max_gap,
        },
        actor: args.actor.clone(),
        reason: args.force.clone().unwrap_or_else(|| args.reason.clone()),
        force: args.force.is_some(),
        // By hand, the gate reads the versions' stored reports; the nightly run compares both
        // versions on tonight's test rows instead.
        evidence: None,
    };
    let m = store.promote(&promotion).await?;
    report_move(&m, args.json)
}
