//! Training: the inputs encoded once, every family fitted with cross-fitted calibration
//! folds, the ensemble averaged from its members, and the artifact with its lineage.

use std::collections::BTreeSet;
use std::time::Instant;

use lodestar_domain::FeatureKind;
use lodestar_model::encode::{Cell, Encoder, InputColumn};
use lodestar_model::{Artifact, Calibration, Lineage, ModelFamily, Reference};

use crate::data::{Categories, RawColumn, Snapshot};
use crate::design::Rows;
use crate::fit::{Design, fit, fit_rows};
use crate::options::{CalibrationMethod, TrainOptions};
use crate::protocol::{Protocol, TrainingRows, split};
use crate::{TrainError, metrics};

/// The ensemble's members. Boosted trees are left out: on 2013B → 2013J they scored below
/// every other family and lowered the ensemble's AUC (see docs/models.md).
pub const ENSEMBLE_MEMBERS: [ModelFamily; 3] =
    [ModelFamily::Logistic, ModelFamily::Forest, ModelFamily::Mlp];

/// The input columns: the standard features, without protected ones unless asked, categories
/// as seen in `rows`.
fn input_columns(
    s: &Snapshot,
    rows: &[usize],
    include_protected: bool,
) -> Vec<(usize, InputColumn)> {
    let mut out = Vec::new();
    for (i, f) in s.schema.features.iter().enumerate() {
        if f.protected.is_some() && !include_protected {
            continue;
        }
        let categories = match &s.columns[i] {
            // Codes follow the sorted values: the values seen, in order.
            RawColumn::Text(v) => rows
                .iter()
                .map(|r| v.codes[*r])
                .filter(|c| *c != Categories::MISSING)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|c| v.values[c as usize].clone())
                .collect(),
            RawColumn::Num(_) => Vec::new(),
        };
        out.push((
            i,
            InputColumn {
                name: f.name.clone(),
                kind: f.kind,
                categories,
            },
        ));
    }
    out
}

/// The raw encoding (missing values NaN) of snapshot row `r` into `out`.
fn encode_raw(s: &Snapshot, source: &[usize], encoder: &Encoder, r: usize, out: &mut [f64]) {
    encoder.encode_raw_into(
        |c| s.cell(source[c], r, &encoder.columns[c].categories),
        out,
    );
}

/// Raw encoded rows (missing values NaN).
pub(crate) fn raw_matrix(
    s: &Snapshot,
    source: &[usize],
    encoder: &Encoder,
    rows: &[usize],
) -> Vec<f64> {
    let w = encoder.width();
    let mut x = vec![0.0; rows.len() * w];
    for (k, r) in rows.iter().enumerate() {
        encode_raw(s, source, encoder, *r, &mut x[k * w..(k + 1) * w]);
    }
    x
}

pub(crate) fn labels(s: &Snapshot, rows: &[usize]) -> Vec<bool> {
    rows.iter().map(|r| s.label[*r] == Some(true)).collect()
}

/// A trained artifact and what it took.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The artifact.
    pub artifact: Artifact,
    /// Snapshot column of each input column.
    pub source: Vec<usize>,
    /// Seconds fitting the served model (the calibration folds not counted).
    pub fit_seconds: f64,
    /// Seconds fitting the calibration folds.
    pub calibration_seconds: f64,
}

/// The training rows encoded as every family sees them: the snapshot column of each input,
/// the encoder fitted on the rows (imputation, standardisation) and the finished design.
pub fn encoded(
    s: &Snapshot,
    rows: &TrainingRows,
    o: &TrainOptions,
) -> (Vec<usize>, Encoder, Design) {
    let (source, columns): (Vec<usize>, Vec<InputColumn>) =
        input_columns(s, &rows.rows, o.include_protected)
            .into_iter()
            .unzip();
    let plain = Encoder {
        columns: columns.clone(),
        impute: vec![],
        mean: vec![],
        scale: vec![],
    };
    let mut x = raw_matrix(s, &source, &plain, &rows.rows);
    let encoder = Encoder::fit(columns, &x, true);
    let w = encoder.width();
    for row in x.chunks_mut(w.max(1)) {
        encoder.finish(row);
    }
    let design = Design {
        x,
        width: w,
        y: labels(s, &rows.rows),
    };
    (source, encoder, design)
}

/// Trains one family (see [`train_families`]).
pub fn train(
    s: &Snapshot,
    family: ModelFamily,
    rows: &TrainingRows,
    o: &TrainOptions,
) -> Result<Trained, TrainError> {
    let mut t = train_families(s, &[family], rows, o, &mut |_| {})?;
    Ok(t.remove(0))
}

/// Trains `families` on the training rows. The inputs are encoded once (imputed, standardised:
/// a monotone change that trees ignore), so the ensemble can average its members' log-odds.
/// Calibration is cross-fitted: each fold's rows are scored by a model fitted without that
/// fold (other presentations), the calibration map and operating threshold are fitted on those
/// scores, and the served model is fitted on every training row with the same settings.
pub fn train_families(
    s: &Snapshot,
    families: &[ModelFamily],
    rows: &TrainingRows,
    o: &TrainOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Trained>, TrainError> {
    o.hyperparameters.validate()?;
    let wants_ensemble = families.contains(&ModelFamily::Ensemble);
    let mut base: Vec<ModelFamily> = families
        .iter()
        .copied()
        .filter(|f| *f != ModelFamily::Ensemble)
        .collect();
    if wants_ensemble {
        for f in ENSEMBLE_MEMBERS {
            if !base.contains(&f) {
                base.push(f);
            }
        }
    }
    let (source, encoder, mut all) = encoded(s, rows, o);
    let n = all.rows();
    let mut fold_of = vec![0usize; n];
    for (k, f) in rows.folds.iter().enumerate() {
        for pos in f {
            fold_of[*pos] = k;
        }
    }
    // Per base family: the served model, its cross-fitted scores and timings.
    let mut fitted = Vec::new();
    for family in &base {
        let mut oof = vec![0.0; n];
        let started = Instant::now();
        for (k, fold) in rows.folds.iter().enumerate() {
            progress(&format!(
                "{family}: calibration fold {} of {}",
                k + 1,
                rows.folds.len()
            ));
            // The other folds' rows, read in place.
            let keep: Vec<usize> = (0..n).filter(|i| fold_of[*i] != k).collect();
            let m = if *family == ModelFamily::Logistic {
                // linfa reads one matrix: the kept rows are moved to the front of the design
                // and read there, rather than copied out beside it (which took most of the
                // design's size again); then they go back, and the held-out fold's rows,
                // overwritten, are encoded again from the snapshot (the same values).
                let y: Vec<bool> = keep.iter().map(|i| all.y[*i]).collect();
                all.move_to_front(&keep);
                let m = fit_rows(
                    *family,
                    Rows::front(&all, &y),
                    &o.hyperparameters,
                    o.seed,
                    o.device,
                );
                all.move_back(&keep, |pos, row| {
                    encode_raw(s, &source, &encoder, rows.rows[pos], row);
                    encoder.finish(row);
                });
                m
            } else {
                fit_rows(
                    *family,
                    Rows::subset(&all, &keep),
                    &o.hyperparameters,
                    o.seed,
                    o.device,
                )
            };
            let m = m.map_err(|e| {
                match e {
                    // Name the fold: the whole training set may hold both outcomes.
                    TrainError::Data(m) => TrainError::Data(format!(
                        "calibration fold {} of {} (fitted without {}): {m}; the finished training presentations need more students of each outcome",
                        k + 1,
                        rows.folds.len(),
                        rows.fold_names[k]
                    )),
                    other => other,
                }
            })?;
            for pos in fold {
                oof[*pos] = m.probability(all.row(*pos));
            }
        }
        let calibration_seconds = started.elapsed().as_secs_f64();
        progress(&format!("{family}: the served model"));
        let started = Instant::now();
        let model = fit(*family, &all, &o.hyperparameters, o.seed, o.device)?;
        fitted.push((
            *family,
            model,
            oof,
            started.elapsed().as_secs_f64(),
            calibration_seconds,
        ));
    }
    if wants_ensemble {
        let members: Vec<_> = fitted
            .iter()
            .filter(|f| ENSEMBLE_MEMBERS.contains(&f.0))
            .collect();
        let oof = (0..n)
            .map(|i| {
                lodestar_model::sigmoid(
                    members
                        .iter()
                        .map(|f| lodestar_model::logit(f.2[i]))
                        .sum::<f64>()
                        / members.len() as f64,
                )
            })
            .collect();
        let (fit_s, cal_s) = members
            .iter()
            .fold((0.0, 0.0), |(a, b), f| (a + f.3, b + f.4));
        let members = members.iter().map(|f| f.1.clone()).collect();
        fitted.push((
            ModelFamily::Ensemble,
            lodestar_model::Predictor::Ensemble { members },
            oof,
            fit_s,
            cal_s,
        ));
    }
    let reference = reference(s, &source, &encoder, &rows.rows);
    let mut out = Vec::new();
    for family in families {
        let Some((_, model, oof, fit_seconds, calibration_seconds)) =
            fitted.iter().find(|f| f.0 == *family)
        else {
            continue;
        };
        let calibration = match o.calibration {
            CalibrationMethod::Platt => Calibration::fit_platt(oof, &all.y),
            CalibrationMethod::Isotonic => Calibration::fit_isotonic(oof, &all.y),
        };
        let calibrated: Vec<f64> = oof.iter().map(|v| calibration.apply(*v)).collect();
        let threshold = metrics::best_f1_threshold(&calibrated, &all.y);
        let artifact = Artifact {
            format: Artifact::FORMAT,
            family: *family,
            encoder: encoder.clone(),
            predictor: model.clone(),
            calibration,
            threshold,
            tiers: o.tiers,
            reference: reference.clone(),
            uses_protected_attributes: o.include_protected,
            lineage: Lineage {
                snapshot_id: s.id.clone(),
                code_version: o.code_version.clone(),
                seed: o.seed,
                fit_presentations: rows.presentations.clone(),
                calibration_presentations: rows.fold_names.clone(),
                training_rows: n as u64,
                config: serde_json::to_value(o).unwrap_or_default(),
            },
        };
        artifact
            .check()
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        out.push(Trained {
            artifact,
            source: source.clone(),
            fit_seconds: *fit_seconds,
            calibration_seconds: *calibration_seconds,
        });
    }
    Ok(out)
}

/// Median raw value per input column, per week, among fit rows of students not at risk.
fn reference(s: &Snapshot, source: &[usize], encoder: &Encoder, rows: &[usize]) -> Reference {
    let last = rows.iter().map(|r| s.week[*r]).max().unwrap_or(0) as usize;
    // Rows of students not at risk, by week, in one pass.
    let mut passing: Vec<Vec<usize>> = vec![Vec::new(); last + 1];
    for r in rows.iter().filter(|r| s.label[**r] == Some(false)) {
        passing[s.week[*r] as usize].push(*r);
    }
    let mut by_week = Vec::with_capacity(last + 1);
    for at in &passing {
        let values = encoder
            .columns
            .iter()
            .enumerate()
            .map(|(c, col)| {
                if col.kind == FeatureKind::Categorical {
                    return f64::NAN;
                }
                let mut v: Vec<f64> = at
                    .iter()
                    .filter_map(|r| match s.cell(source[c], *r, &[]) {
                        Cell::Num(x) if !x.is_nan() => Some(x),
                        _ => None,
                    })
                    .collect();
                if v.is_empty() {
                    return f64::NAN;
                }
                v.sort_by(f64::total_cmp);
                let n = v.len();
                if n % 2 == 1 {
                    v[n / 2]
                } else {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                }
            })
            .collect();
        by_week.push(values);
    }
    Reference { by_week }
}

/// Trains `family` on the training rows of `protocol` (the train step of the nightly pipeline;
/// [`evaluate_artifact`](crate::evaluate::evaluate_artifact) is its evaluation).
pub fn train_for(
    s: &Snapshot,
    protocol: &Protocol,
    family: ModelFamily,
    o: &TrainOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Trained, TrainError> {
    let sp = split(s, protocol, o)?;
    let mut t = train_families(s, &[family], &sp.rows, o, progress)?;
    Ok(t.remove(0))
}
