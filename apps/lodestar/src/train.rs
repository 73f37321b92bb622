//! `lodestar evaluate` and `lodestar train`: the temporal protocol from the command line, the
//! metrics table, the JSON report and model card, and registration of the trained artifact.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use lodestar_domain::EvaluationReport;
use lodestar_ingest::snapshot::LATEST_FILE;
use lodestar_ingest::{IngestOptions, ingest};
use lodestar_model::{Artifact, ModelFamily};
use lodestar_store::NewVersion;
use lodestar_train::evaluate::CalibrationMethod;
use lodestar_train::{Evaluation, Hyperparameters, Protocol, Snapshot, TrainOptions};
use serde_json::json;

use crate::cli::{EvaluateArgs, ModelArgs, TrainArgs};
use crate::config::Config;
use crate::models::{artifacts, connect, runtime};

/// The snapshot folder `args` names: ingested from `--export`, given, or the latest.
fn snapshot_dir(config: &Config, args: &ModelArgs) -> anyhow::Result<PathBuf> {
    let root = &config.snapshot_dir.value;
    if let Some(export) = &args.export {
        let outcome = ingest(
            export,
            root,
            &IngestOptions::default(),
            false,
            &mut |_, _| {},
        )
        .with_context(|| format!("ingesting {}", export.display()))?;
        eprintln!(
            "snapshot {} ({} feature rows{})",
            outcome.manifest.snapshot_id,
            outcome.manifest.feature_rows,
            if outcome.reused { ", reused" } else { "" }
        );
        return Ok(root.join(&outcome.manifest.snapshot_id));
    }
    if let Some(s) = &args.snapshot {
        let as_dir = Path::new(s);
        return Ok(if as_dir.is_dir() {
            as_dir.to_path_buf()
        } else {
            root.join(s)
        });
    }
    let latest = root.join(LATEST_FILE);
    let id = fs::read_to_string(&latest).with_context(|| {
        format!(
            "no snapshot yet ({} is missing): run `lodestar ingest --export DIR` or pass --export",
            latest.display()
        )
    })?;
    Ok(root.join(id.trim()))
}

/// The protocol `args` asks for; by default the latest presentation code is tested and every
/// earlier one trained on.
fn protocol(s: &Snapshot, args: &ModelArgs) -> anyhow::Result<Protocol> {
    if let Some(fraction) = args.random_split {
        return Ok(Protocol::Random {
            presentations: s.presentations.clone(),
            test_fraction: fraction,
        });
    }
    Ok(Protocol::temporal(s, &args.train, &args.test)?)
}

fn options(args: &ModelArgs) -> anyhow::Result<TrainOptions> {
    let mut hyperparameters = Hyperparameters::default();
    if let Some(path) = &args.hyperparameters {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let given: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let mut merged = serde_json::to_value(&hyperparameters)?;
        let (Some(target), Some(given)) = (merged.as_object_mut(), given.as_object()) else {
            bail!("{}: hyperparameters must be a JSON object", path.display());
        };
        for (family, values) in given {
            let Some(slot) = target.get_mut(family).and_then(|v| v.as_object_mut()) else {
                bail!(
                    "{}: unknown model family {family:?} (logistic, forest, boosted, mlp)",
                    path.display()
                );
            };
            let Some(values) = values.as_object() else {
                bail!("{}: {family} must be an object", path.display());
            };
            for (k, v) in values {
                if !slot.contains_key(k) {
                    bail!("{}: unknown hyperparameter {family}.{k}", path.display());
                }
                slot.insert(k.clone(), v.clone());
            }
        }
        hyperparameters = serde_json::from_value(merged)
            .with_context(|| format!("{}: a hyperparameter has the wrong type", path.display()))?;
    }
    hyperparameters.validate()?;
    if args.device == "wgpu" && !cfg!(feature = "wgpu") {
        bail!(
            "--device wgpu: this binary was built without the wgpu backend; build it with `cargo build -p lodestar --features wgpu`"
        );
    }
    let calibration = match args.calibration.as_str() {
        "platt" => CalibrationMethod::Platt,
        "isotonic" => CalibrationMethod::Isotonic,
        other => bail!("--calibration {other}: use platt or isotonic"),
    };
    Ok(TrainOptions {
        hyperparameters,
        seed: args.seed,
        device: args.device.parse().map_err(anyhow::Error::msg)?,
        calibration,
        include_protected: args.include_protected,
        max_week: args.max_week,
        ..TrainOptions::default()
    })
}

fn load(config: &Config, args: &ModelArgs) -> anyhow::Result<Snapshot> {
    let dir = snapshot_dir(config, args)?;
    let started = Instant::now();
    let s = Snapshot::read(&dir)?;
    eprintln!(
        "loaded snapshot {} ({} rows, {} presentations) in {:.1} s",
        s.id,
        s.len(),
        s.presentations.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(s)
}

fn run_evaluation(
    s: &Snapshot,
    args: &ModelArgs,
    o: &TrainOptions,
    families: &[ModelFamily],
    compare_protected: bool,
) -> anyhow::Result<Evaluation> {
    let protocol = protocol(s, args)?;
    let started = Instant::now();
    let evaluation = lodestar_train::evaluate(
        s,
        &protocol,
        families,
        &args.weeks,
        o,
        compare_protected,
        &mut |step| eprintln!("[{:>6.1} s] {step}", started.elapsed().as_secs_f64()),
    )?;
    Ok(evaluation)
}

fn print_report(r: &EvaluationReport, fit_seconds: f64) {
    println!("\n{} (fitted in {fit_seconds:.1} s)", r.model);
    println!(
        "{:>5} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>10} {:>9} {:>7} {:>7} {:>9}",
        "week",
        "n",
        "at risk",
        "ROC AUC",
        "PR AUC",
        "Brier",
        "ECE",
        "ECE raw",
        "precision",
        "recall",
        "F1",
        "threshold"
    );
    for w in &r.weeks {
        println!(
            "{:>5} {:>7} {:>7} {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>10.3} {:>9.3} {:>7.3} {:>7.3} {:>9.3}",
            w.week,
            w.n,
            w.positives,
            w.roc_auc,
            w.pr_auc,
            w.brier,
            w.ece,
            w.ece_uncalibrated.unwrap_or(f64::NAN),
            w.precision,
            w.recall,
            w.f1,
            w.threshold
        );
    }
}

fn card_of(r: &EvaluationReport, a: &Artifact, title: &str) -> String {
    let mut md = format!("# Model card: {title}\n\n");
    md.push_str(&r.markdown());
    md.push_str("\n## Lineage\n\n");
    md.push_str(&format!(
        "- Training snapshot: `{}`\n- Code version: `{}`; seed {}\n- Fitted on {} ({} rows); calibrated on {}\n- Artifact sha256 `{}`\n- Uses protected attributes: {}\n",
        a.lineage.snapshot_id,
        a.lineage.code_version,
        a.lineage.seed,
        a.lineage.fit_presentations.join(", "),
        a.lineage.training_rows,
        a.lineage.calibration_presentations.join(", "),
        a.hash(),
        if a.uses_protected_attributes { "yes" } else { "no" }
    ));
    md
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("partial.{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `lodestar evaluate`.
pub(crate) fn evaluate(config: &Config, args: &EvaluateArgs) -> anyhow::Result<()> {
    let families = args
        .models
        .iter()
        .map(|m| m.trim().parse::<ModelFamily>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let o = options(&args.model)?;
    let s = load(config, &args.model)?;
    let e = run_evaluation(
        &s,
        &args.model,
        &o,
        &families,
        !args.no_protected_comparison,
    )?;
    let first = &e.results[0].report;
    println!("protocol: {}", first.protocol);
    for r in &e.results {
        print_report(&r.report, r.fit_seconds);
    }
    let best = &e.results[e.best];
    println!(
        "\nbest by mean ROC AUC over weeks {:?}: {}",
        args.model.weeks, best.family
    );
    for c in &best.report.protected_comparison {
        println!(
            "  week {}: with protected attributes ROC AUC {:.3} → {:.3}, max TPR gap {:.3} → {:.3}, max FPR gap {:.3} → {:.3}",
            c.week,
            c.roc_auc_without,
            c.roc_auc_with,
            c.max_tpr_gap_without,
            c.max_tpr_gap_with,
            c.max_fpr_gap_without,
            c.max_fpr_gap_with
        );
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "snapshot": s.id,
            "best": best.family,
            "results": e.results.iter().map(|r| json!({
                "family": r.family,
                "fit_seconds": r.fit_seconds,
                "artifact_sha256": r.artifact.hash(),
                "report": r.report,
            })).collect::<Vec<_>>(),
        });
        write_atomically(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
        println!("wrote the evaluation to {}", path.display());
    }
    if let Some(path) = &args.card {
        let title = format!("{} (evaluation of snapshot {})", best.family, s.id);
        write_atomically(
            path,
            card_of(&best.report, &best.artifact, &title).as_bytes(),
        )?;
        println!("wrote the model card to {}", path.display());
    }
    Ok(())
}

/// `lodestar train`.
pub(crate) fn train(config: &Config, args: &TrainArgs) -> anyhow::Result<()> {
    let family: ModelFamily = args.family.parse().map_err(anyhow::Error::msg)?;
    let o = options(&args.model)?;
    let s = load(config, &args.model)?;
    let e = run_evaluation(&s, &args.model, &o, &[family], false)?;
    let result = &e.results[0];
    print_report(&result.report, result.fit_seconds);
    let bytes = result.artifact.to_bytes();
    let hash = result.artifact.hash();
    if let Some(path) = &args.out {
        write_atomically(path, &bytes)?;
        println!("wrote the artifact to {} (sha256 {hash})", path.display());
    }
    if args.no_register {
        return Ok(());
    }
    let a = &result.artifact;
    runtime()?.block_on(async {
        let store = connect(config).await?;
        let artifact = artifacts(config)?.put(&args.name, &bytes).await?;
        let v = store
            .register_version(NewVersion {
                model: args.name.clone(),
                artifact,
                snapshot_hash: a.lineage.snapshot_id.clone(),
                code_version: a.lineage.code_version.clone(),
                config: json!({"family": family, "options": a.lineage.config}),
                seed: a.lineage.seed as i64,
                report: result.report.clone(),
                run_id: None,
                actor: args.actor.clone(),
            })
            .await?;
        println!(
            "registered {} version {} (artifact sha256 {}); promote it with `lodestar models promote {} {}`",
            v.model, v.version, v.artifact.sha256, v.model, v.version
        );
        anyhow::Ok(())
    })
}
