//! The evaluation protocol and the trained artifact.
//!
//! Temporal by default: fit on earlier presentations, calibrate on training presentations held
//! out of the fit, test on later presentations. At as-of week k the evaluated population is the
//! students still registered at the end of week k. A random split of students exists for
//! comparison only, and its report says so.
//!
//! Training lives in `training.rs`, the split in `protocol.rs`, the options in `options.rs` and
//! fairness in `fairness.rs`; their public items are re-exported here.

use std::collections::BTreeSet;

use lodestar_domain::evaluation::FairnessMethod;
use lodestar_domain::{EvaluationReport, ProtectedComparison, SubgroupGaps, WeekMetrics};
use lodestar_model::{Artifact, ModelFamily};

use crate::data::Snapshot;
use crate::fairness::BINS;
pub use crate::fairness::{MIN_GROUP, WeekFairness, fairness};
pub use crate::options::{CalibrationMethod, TrainOptions};
pub use crate::protocol::{Protocol, TrainingRows, split_training};
use crate::protocol::{Split, split};
pub use crate::training::{ENSEMBLE_MEMBERS, Trained, encoded, train, train_families, train_for};
use crate::training::{labels, raw_matrix};
use crate::{TrainError, metrics};

/// Uncalibrated probabilities of `rows` under an artifact.
fn probabilities(s: &Snapshot, source: &[usize], a: &Artifact, rows: &[usize]) -> Vec<f64> {
    let encoder = &a.encoder;
    let w = encoder.width();
    let mut x = raw_matrix(s, source, encoder, rows);
    x.chunks_mut(w.max(1))
        .map(|row| {
            encoder.finish(row);
            a.predictor.probability(row)
        })
        .collect()
}

/// One family's evaluation.
#[derive(Debug, Clone)]
pub struct FamilyResult {
    /// The family.
    pub family: ModelFamily,
    /// Its report.
    pub report: EvaluationReport,
    /// The evaluated artifact.
    pub artifact: Artifact,
    /// Seconds fitting the served model.
    pub fit_seconds: f64,
    /// Seconds fitting the calibration folds.
    pub calibration_seconds: f64,
}

/// The evaluation of every family asked for.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per family, in the order asked.
    pub results: Vec<FamilyResult>,
    /// Index of the best family (highest mean ROC AUC over the weeks).
    pub best: usize,
}

fn week_metrics(week: u16, p: &[f64], p_uncal: &[f64], y: &[bool], threshold: f64) -> WeekMetrics {
    let confusion = metrics::confusion(p, y, threshold);
    let (precision, recall, _, f1) = metrics::rates(&confusion);
    let (ece, reliability) = metrics::reliability(p, y, BINS);
    let (ece_uncal, _) = metrics::reliability(p_uncal, y, BINS);
    WeekMetrics {
        week,
        n: y.len() as u64,
        positives: y.iter().filter(|v| **v).count() as u64,
        roc_auc: metrics::roc_auc(p, y),
        pr_auc: metrics::pr_auc(p, y),
        brier: metrics::brier(p, y),
        ece,
        f1,
        precision,
        recall,
        threshold,
        confusion,
        reliability,
        ece_uncalibrated: Some(ece_uncal),
        brier_uncalibrated: Some(metrics::brier(p_uncal, y)),
        roc_curve: metrics::roc_curve(p, y, 50),
    }
}

/// Evaluates a trained artifact on the test rows at each week.
fn report_for(
    s: &Snapshot,
    t: &Trained,
    test_rows: &[usize],
    weeks: &[u16],
    protocol: String,
    train_names: Vec<String>,
    test_names: Vec<String>,
) -> EvaluationReport {
    let a = &t.artifact;
    let mut report = EvaluationReport {
        model: a.family.as_str().to_owned(),
        protocol,
        train_presentations: train_names,
        test_presentations: test_names,
        calibration: format!(
            "{} cross-fitted on held-out training data ({}): each held out in turn and scored by a model fitted without it; the served model is fitted on every training row with the same settings. Operating threshold {:.3}, chosen on the same held-out scores for the best F1.",
            a.calibration.name(),
            a.lineage.calibration_presentations.join("; "),
            a.threshold
        ),
        fairness_method: FairnessMethod::CourseMixAdjusted,
        ..EvaluationReport::default()
    };
    if report.test_presentations.is_empty() && !report.protocol.is_empty() {
        report.notes.push(
            "Not evaluated: no finished presentation is later than the training ones, so there is no later term to test on. The report fills in once a later presentation finishes; until then the gate has no evidence to promote on.".into(),
        );
        return report;
    }
    for &week in weeks {
        let rows: Vec<usize> = test_rows
            .iter()
            .copied()
            .filter(|r| s.week[*r] == week)
            .collect();
        if rows.is_empty() {
            report.notes.push(format!(
                "week {week}: no registered student with a known outcome in the test presentations"
            ));
            continue;
        }
        let p_uncal = probabilities(s, &t.source, a, &rows);
        let p: Vec<f64> = p_uncal.iter().map(|v| a.calibration.apply(*v)).collect();
        let y = labels(s, &rows);
        report
            .weeks
            .push(week_metrics(week, &p, &p_uncal, &y, a.threshold));
        let f = fairness(s, week, &rows, &p, &y, a.threshold);
        report.subgroups.extend(f.subgroups);
        report.fairness.extend(f.gaps);
        report.fairness_pooled.extend(f.pooled);
    }
    let small: BTreeSet<String> = report
        .subgroups
        .iter()
        .filter(|g| g.n < MIN_GROUP)
        .map(|g| format!("{:?} {}", g.attribute, g.group))
        .collect();
    if !small.is_empty() {
        report.notes.push(format!(
            "Subgroups under {MIN_GROUP} students are listed but left out of the gaps: {}.",
            small.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let tested: BTreeSet<u32> = test_rows.iter().map(|r| s.presentation[*r]).collect();
    if tested.len() > 1 && !report.fairness.is_empty() {
        report.notes.push(format!(
            "Subgroup gaps are adjusted for course mix over the {} tested presentations: each group's TPR, FPR and calibration are compared with those expected from the presentations its students are in, so a gap measures how differently the model treats groups within the same course. Gaps pooled over courses (fairness_pooled) also reflect which courses each group takes.",
            tested.len()
        ));
    }
    report
}

fn mean_auc(r: &EvaluationReport) -> f64 {
    let v: Vec<f64> = r
        .weeks
        .iter()
        .map(|w| w.roc_auc)
        .filter(|v| !v.is_nan())
        .collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn max_gap(r: &EvaluationReport, week: u16, f: fn(&SubgroupGaps) -> f64) -> f64 {
    r.fairness
        .iter()
        .filter(|g| g.week == week)
        .map(f)
        .fold(0.0, f64::max)
}

/// The snapshot column of each of an artifact's input columns, matched by name.
pub fn source_columns(s: &Snapshot, a: &Artifact) -> Result<Vec<usize>, TrainError> {
    a.encoder
        .columns
        .iter()
        .map(|c| {
            s.schema
                .features
                .iter()
                .position(|f| f.name == c.name)
                .ok_or_else(|| {
                    TrainError::Snapshot(format!(
                        "snapshot {} has no feature {:?}, which the model needs",
                        s.id, c.name
                    ))
                })
        })
        .collect()
}

/// Evaluates a trained artifact on the test rows of `protocol` at each week (with the same
/// split [`train_for`] used, given the same options).
pub fn evaluate_artifact(
    s: &Snapshot,
    a: &Artifact,
    protocol: &Protocol,
    weeks: &[u16],
    o: &TrainOptions,
) -> Result<EvaluationReport, TrainError> {
    if weeks.is_empty() {
        return Err(TrainError::Config("name at least one week".into()));
    }
    let sp = split(s, protocol, o)?;
    let t = Trained {
        source: source_columns(s, a)?,
        artifact: a.clone(),
        fit_seconds: 0.0,
        calibration_seconds: 0.0,
    };
    let mut report = report_for(
        s,
        &t,
        &sp.test_rows,
        weeks,
        sp.description,
        sp.train_names,
        sp.test_names,
    );
    if sp.random {
        report.notes.insert(
            0,
            "Random split: for comparison only; expect lower accuracy on a later presentation."
                .into(),
        );
    }
    Ok(report)
}

/// Splits, trains every family in `families`, evaluates each at `weeks`, and for the best one
/// measures what including protected attributes changes (when `compare_protected`).
pub fn evaluate(
    s: &Snapshot,
    protocol: &Protocol,
    families: &[ModelFamily],
    weeks: &[u16],
    o: &TrainOptions,
    compare_protected: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Evaluation, TrainError> {
    if families.is_empty() || weeks.is_empty() {
        return Err(TrainError::Config(
            "name at least one model and one week".into(),
        ));
    }
    let Split {
        rows,
        test_rows,
        description,
        train_names,
        test_names,
        random,
    } = split(s, protocol, o)?;
    let trained = train_families(s, families, &rows, o, progress)?;
    let mut results = Vec::new();
    for t in trained {
        let family = t.artifact.family;
        progress(&format!(
            "evaluating {family} ({:.1} s to fit, {:.1} s for the calibration folds)",
            t.fit_seconds, t.calibration_seconds
        ));
        let mut report = report_for(
            s,
            &t,
            &test_rows,
            weeks,
            description.clone(),
            train_names.clone(),
            test_names.clone(),
        );
        if random {
            report.notes.insert(
                0,
                "Random split: for comparison only; expect lower accuracy on a later presentation."
                    .into(),
            );
        }
        results.push(FamilyResult {
            family,
            report,
            artifact: t.artifact,
            fit_seconds: t.fit_seconds,
            calibration_seconds: t.calibration_seconds,
        });
    }
    let best = (0..results.len())
        .max_by(|a, b| {
            mean_auc(&results[*a].report)
                .total_cmp(&mean_auc(&results[*b].report))
                .then(b.cmp(a))
        })
        .unwrap_or(0);
    if compare_protected && !o.include_protected {
        // Measured with the best single family (an ensemble would refit every member).
        let single = (0..results.len())
            .filter(|i| results[*i].family != ModelFamily::Ensemble)
            .max_by(|a, b| {
                mean_auc(&results[*a].report)
                    .total_cmp(&mean_auc(&results[*b].report))
                    .then(b.cmp(a))
            });
        if let Some(single) = single {
            let family = results[single].family;
            progress(&format!(
                "training {family} with protected attributes, for comparison"
            ));
            let with = TrainOptions {
                include_protected: true,
                ..o.clone()
            };
            let t = train(s, family, &rows, &with)?;
            let r = report_for(s, &t, &test_rows, weeks, String::new(), vec![], vec![]);
            let base = &results[single].report;
            let comparison = base
                .weeks
                .iter()
                .filter_map(|w| {
                    let v = r.weeks.iter().find(|x| x.week == w.week)?;
                    Some(ProtectedComparison {
                        week: w.week,
                        roc_auc_without: w.roc_auc,
                        roc_auc_with: v.roc_auc,
                        max_tpr_gap_without: max_gap(base, w.week, |g| g.tpr_gap),
                        max_tpr_gap_with: max_gap(&r, w.week, |g| g.tpr_gap),
                        max_fpr_gap_without: max_gap(base, w.week, |g| g.fpr_gap),
                        max_fpr_gap_with: max_gap(&r, w.week, |g| g.fpr_gap),
                    })
                })
                .collect();
            results[best].report.protected_comparison = comparison;
            results[best].report.notes.push(format!(
                "What protected attributes change was measured by retraining the {family} model with them."
            ));
        }
    }
    Ok(Evaluation { results, best })
}
