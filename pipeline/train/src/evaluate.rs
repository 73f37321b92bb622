//! The evaluation protocol and the trained artifact.
//!
//! Temporal by default: fit on earlier presentations, calibrate on training presentations held
//! out of the fit, test on later presentations. At as-of week k the evaluated population is the
//! students still registered at the end of week k. A random split of students exists for
//! comparison only, and its report says so.

use std::collections::BTreeSet;
use std::time::Instant;

use lodestar_domain::evaluation::FairnessMethod;
use lodestar_domain::{
    EvaluationReport, FeatureKind, Interval, ProtectedComparison, SubgroupGaps, SubgroupMetrics,
    TierThresholds, WeekMetrics,
};
use lodestar_model::encode::{Cell, Encoder, InputColumn};
use lodestar_model::{Artifact, Calibration, Lineage, ModelFamily, Reference};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Categories, RawColumn, Snapshot};
use crate::fit::{Design, Hyperparameters, Rows, TrainDevice, fit, fit_rows};
use crate::{TrainError, metrics};

/// How rows are split into training and test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// Train on `train`, test on `test` (presentations or codes such as `2013B`).
    Temporal {
        /// Training presentations.
        train: Vec<String>,
        /// Test presentations.
        test: Vec<String>,
    },
    /// Students of `presentations` split at random, `test_fraction` of them tested. Students of
    /// the same course term share teachers, materials and deadlines, so this flatters every
    /// model: for comparison only.
    Random {
        /// Presentations pooled.
        presentations: Vec<String>,
        /// Fraction of students tested.
        test_fraction: f64,
    },
}

/// How the served probability is calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// Platt scaling.
    #[default]
    Platt,
    /// Isotonic regression.
    Isotonic,
}

/// Training options shared by every family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Hyperparameters.
    pub hyperparameters: Hyperparameters,
    /// Seed for every random choice.
    pub seed: u64,
    /// Where the MLP trains.
    pub device: TrainDevice,
    /// Calibration method.
    pub calibration: CalibrationMethod,
    /// Include protected attributes as features (off by default).
    pub include_protected: bool,
    /// Train on rows up to this as-of week (all weeks when None).
    pub max_week: Option<u16>,
    /// Tiers written into the artifact.
    pub tiers: TierThresholds,
    /// Version of the code, written into the lineage.
    pub code_version: String,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            hyperparameters: Hyperparameters::default(),
            seed: 42,
            device: TrainDevice::Cpu,
            calibration: CalibrationMethod::Platt,
            include_protected: false,
            max_week: None,
            tiers: TierThresholds::default(),
            code_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Smallest subgroup whose rates enter the fairness gaps.
pub const MIN_GROUP: u64 = 30;

/// Reliability bins in reports.
const BINS: usize = 10;

/// Training rows and the folds of the cross-fitted calibration.
#[derive(Debug, Clone)]
pub struct TrainingRows {
    /// Every training row, ascending.
    pub rows: Vec<usize>,
    /// Per fold, the positions (in `rows`) it holds out.
    pub folds: Vec<Vec<usize>>,
    /// Training presentations.
    pub presentations: Vec<String>,
    /// What each fold holds out, in words.
    pub fold_names: Vec<String>,
}

/// The ensemble's members. Boosted trees are left out: on 2013B → 2013J they scored below
/// every other family and lowered the ensemble's AUC (see docs/models.md).
pub const ENSEMBLE_MEMBERS: [ModelFamily; 3] =
    [ModelFamily::Logistic, ModelFamily::Forest, ModelFamily::Mlp];

/// Most calibration folds.
const MAX_FOLDS: usize = 4;

fn usable(s: &Snapshot, row: usize, max_week: Option<u16>) -> bool {
    s.active[row] && s.label[row].is_some() && max_week.is_none_or(|w| s.week[row] <= w)
}

/// The training rows of `presentations`, with calibration folds: each fold holds out whole
/// presentations (up to four folds, presentations dealt to them in a seeded order); with a
/// single presentation, a quarter of its students per fold.
pub fn split_training(
    s: &Snapshot,
    presentations: &[u32],
    seed: u64,
    max_week: Option<u16>,
) -> Result<TrainingRows, TrainError> {
    let rows: Vec<usize> = (0..s.len())
        .filter(|r| presentations.contains(&s.presentation[*r]) && usable(s, *r, max_week))
        .collect();
    if rows.is_empty() {
        return Err(TrainError::Data(format!(
            "no training rows: {} has no registered student with a known outcome",
            s.names(presentations).join(", ")
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let names = s.names(presentations);
    let (fold_of_row, fold_names): (Vec<usize>, Vec<String>) = if presentations.len() >= 2 {
        let mut order = presentations.to_vec();
        order.shuffle(&mut rng);
        let k = order.len().min(MAX_FOLDS);
        let fold_of = |p: u32| order.iter().position(|q| *q == p).unwrap_or(0) % k;
        let mut fold_names = vec![Vec::new(); k];
        for p in presentations {
            fold_names[fold_of(*p)].push(s.presentations[*p as usize].clone());
        }
        (
            rows.iter().map(|r| fold_of(s.presentation[*r])).collect(),
            fold_names.into_iter().map(|v| v.join(" + ")).collect(),
        )
    } else {
        let fold_of_row = student_folds(s, &rows, &mut rng);
        let k = fold_of_row.iter().max().map_or(1, |m| m + 1);
        (
            fold_of_row,
            (1..=k)
                .map(|i| format!("part {i} of {k} of {}'s students", names.join(", ")))
                .collect(),
        )
    };
    let mut folds = vec![Vec::new(); fold_names.len()];
    for (pos, f) in fold_of_row.iter().enumerate() {
        folds[*f].push(pos);
    }
    if folds.len() < 2 {
        return Err(TrainError::Data(
            "calibration needs at least two training students".into(),
        ));
    }
    Ok(TrainingRows {
        rows,
        folds,
        presentations: names,
        fold_names,
    })
}

/// The calibration fold of each row when folds are cut by student: the distinct students
/// (presentation, id) of `rows` in a seeded order, dealt to up to [`MAX_FOLDS`] folds.
fn student_folds(s: &Snapshot, rows: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let key = |r: usize| (s.presentation[r], s.student[r]);
    let mut students: Vec<(u32, i64)> = rows
        .iter()
        .map(|r| key(*r))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    students.shuffle(rng);
    let k = MAX_FOLDS.min(students.len()).max(1);
    let fold: std::collections::HashMap<(u32, i64), usize> = students
        .into_iter()
        .enumerate()
        .map(|(i, st)| (st, i % k))
        .collect();
    rows.iter().map(|r| fold[&key(*r)]).collect()
}

/// A seeded `fraction` of the distinct students among `rows`.
fn held_out_students(
    s: &Snapshot,
    rows: &[usize],
    fraction: f64,
    rng: &mut ChaCha8Rng,
) -> BTreeSet<(u32, i64)> {
    let students: BTreeSet<(u32, i64)> = rows
        .iter()
        .map(|r| (s.presentation[*r], s.student[*r]))
        .collect();
    let mut students: Vec<_> = students.into_iter().collect();
    students.shuffle(rng);
    let k = ((students.len() as f64 * fraction).round() as usize).clamp(1, students.len());
    students.truncate(k);
    students.into_iter().collect()
}

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
fn raw_matrix(s: &Snapshot, source: &[usize], encoder: &Encoder, rows: &[usize]) -> Vec<f64> {
    let w = encoder.width();
    let mut x = vec![0.0; rows.len() * w];
    for (k, r) in rows.iter().enumerate() {
        encode_raw(s, source, encoder, *r, &mut x[k * w..(k + 1) * w]);
    }
    x
}

fn labels(s: &Snapshot, rows: &[usize]) -> Vec<bool> {
    rows.iter().map(|r| s.label[*r] == Some(true)).collect()
}

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

/// Bootstrap replicates behind each gap's interval.
const BOOTSTRAP: usize = 400;

/// Counts at the operating threshold and summed probability of a set of rows.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    tp: u64,
    fn_: u64,
    fp: u64,
    tn: u64,
    sum_p: f64,
}

impl Tally {
    fn add(&mut self, p: f64, y: bool, threshold: f64) {
        self.sum_p += p;
        match (p >= threshold, y) {
            (true, true) => self.tp += 1,
            (false, true) => self.fn_ += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.tp += o.tp;
        self.fn_ += o.fn_;
        self.fp += o.fp;
        self.tn += o.tn;
        self.sum_p += o.sum_p;
    }

    /// The rows each rate is over: at risk (TPR), not at risk (FPR), all (calibration).
    fn weights(&self) -> [u64; 3] {
        let (pos, neg) = (self.tp + self.fn_, self.fp + self.tn);
        [pos, neg, pos + neg]
    }

    /// TPR, FPR and calibration-in-the-large (mean probability minus observed at-risk rate),
    /// NaN where undefined.
    fn rates(&self) -> [f64; 3] {
        let [pos, _, n] = self.weights();
        [
            metrics::ratio(self.tp, pos),
            metrics::ratio(self.fp, self.fp + self.tn),
            if n == 0 {
                f64::NAN
            } else {
                (self.sum_p - pos as f64) / n as f64
            },
        ]
    }
}

/// Most passes of the course-mix adjustment's fixed-point iteration ([`group_effects`]).
const ADJUST_PASSES: usize = 1000;

/// The adjustment stops once no group effect moves by more than this in a pass.
const ADJUST_TOLERANCE: f64 = 1e-10;

/// Each group's pooled and course-mix-adjusted `[TPR, FPR, calibration-in-the-large]`, from
/// the tallies `cells[g][q]` of group `g` in presentation `q`.
///
/// `cells` holds every group of the attribute (small and `unknown` ones included), so the
/// presentations' reference rates are over all their students. The adjusted rate of group `g`
/// is the overall rate plus `g`'s effect from [`group_effects`] (centred so the effects average
/// to zero over all students the rate is taken on): the overall rate plus how far `g`'s observed
/// rate lies from the one expected from the presentations its students are in. With one
/// presentation the adjusted rate is the pooled one.
fn group_rates(cells: &[Vec<Tally>]) -> Vec<([f64; 3], [f64; 3])> {
    let mut all = Tally::default();
    let totals: Vec<Tally> = cells
        .iter()
        .map(|g| {
            let mut t = Tally::default();
            for c in g {
                t.merge(c);
            }
            all.merge(&t);
            t
        })
        .collect();
    let overall = all.rates();
    let mut adjusted = vec![[f64::NAN; 3]; cells.len()];
    for m in 0..3 {
        let weight: Vec<Vec<f64>> = cells
            .iter()
            .map(|g| g.iter().map(|c| c.weights()[m] as f64).collect())
            .collect();
        let rate: Vec<Vec<f64>> = cells
            .iter()
            .map(|g| g.iter().map(|c| c.rates()[m]).collect())
            .collect();
        let effects = group_effects(&weight, &rate, ADJUST_PASSES);
        let (mut sum, mut total) = (0.0, 0.0);
        for (e, t) in effects.iter().zip(&totals) {
            let w = t.weights()[m] as f64;
            if w > 0.0 {
                sum += w * e;
                total += w;
            }
        }
        let centre = if total > 0.0 { sum / total } else { 0.0 };
        for (a, e) in adjusted.iter_mut().zip(&effects) {
            a[m] = overall[m] + e - centre;
        }
    }
    totals
        .iter()
        .zip(adjusted)
        .map(|(t, a)| (t.rates(), a))
        .collect()
}

/// Group effects net of presentation: `beta[g]` for cell rates `rate[g][q]` weighted by
/// `weight[g][q]` (the rows each rate is over; cells without rows ignored), NaN for a group with
/// no rows.
///
/// Indirect standardisation, its presentation references freed of their own group mix. The
/// rate expected of group `g` is the weighted mean, over the presentations of `g`'s rows, of a
/// reference rate `alpha[q]` per presentation, and `beta[g]` is `g`'s observed rate minus that
/// expected rate. The first pass takes `alpha[q]` as presentation `q`'s own rate over all its
/// students, which is textbook indirect standardisation; but that reference contains `g`'s
/// own students, so where `g` is most of a presentation the comparison is largely with itself,
/// and a within-course difference `d` between two groups shrinks to about `d` times the share
/// of the other group in each one's courses (`0.65 d` with 80/20 courses). Later passes take
/// `alpha[q]` as the presentation's rate with each group's effect taken out, and recompute the
/// effects, until they stop moving (at most `passes`): the fixed point is the least-squares fit of
/// `rate = alpha[presentation] + beta[group]` (a linear model with presentation and group
/// effects, fitted over students), which recovers a difference `d` that holds within every
/// presentation whatever the mix, and otherwise gives an average of the within-presentation
/// differences weighted by how many students of both groups each presentation holds. With one
/// presentation the effects are the groups' own rates, less a constant. A presentation holding
/// one group only tells nothing about differences and moves no effect. Groups that share no
/// presentation, directly or through other groups, cannot be compared within courses: each
/// such set of groups keeps effects averaging zero over its own students (the passes preserve
/// that weighted mean, which starts at zero), so as a whole it looks like the average.
fn group_effects(weight: &[Vec<f64>], rate: &[Vec<f64>], passes: usize) -> Vec<f64> {
    let presentations = weight.first().map_or(0, Vec::len);
    let by_group: Vec<f64> = weight.iter().map(|g| g.iter().sum()).collect();
    let by_presentation: Vec<f64> = (0..presentations)
        .map(|q| weight.iter().map(|g| g[q]).sum())
        .collect();
    let mut alpha = vec![0.0; presentations];
    let mut beta = vec![0.0; weight.len()];
    for _ in 0..passes {
        for (q, a) in alpha.iter_mut().enumerate() {
            if by_presentation[q] > 0.0 {
                let mut sum = 0.0;
                for (g, b) in beta.iter().enumerate() {
                    if weight[g][q] > 0.0 {
                        sum += weight[g][q] * (rate[g][q] - b);
                    }
                }
                *a = sum / by_presentation[q];
            }
        }
        let mut moved = 0.0f64;
        for (g, b) in beta.iter_mut().enumerate() {
            if by_group[g] > 0.0 {
                let mut sum = 0.0;
                for (q, a) in alpha.iter().enumerate() {
                    if weight[g][q] > 0.0 {
                        sum += weight[g][q] * (rate[g][q] - a);
                    }
                }
                let next = sum / by_group[g];
                moved = moved.max((next - *b).abs());
                *b = next;
            }
        }
        if moved < ADJUST_TOLERANCE {
            break;
        }
    }
    beta.iter()
        .zip(&by_group)
        .map(|(b, w)| if *w > 0.0 { *b } else { f64::NAN })
        .collect()
}

/// The TPR, FPR and calibration gaps over the groups marked `measured`: largest minus smallest
/// defined rate (the calibration gap over absolute calibration-in-the-large); NaN with fewer
/// than two defined rates.
fn spreads<'a>(rates: impl Iterator<Item = &'a [f64; 3]>, measured: &[bool]) -> [f64; 3] {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    let mut count = [0usize; 3];
    for (r, _) in rates.zip(measured).filter(|(_, m)| **m) {
        for m in 0..3 {
            let v = if m == 2 { r[m].abs() } else { r[m] };
            if !v.is_nan() {
                lo[m] = lo[m].min(v);
                hi[m] = hi[m].max(v);
                count[m] += 1;
            }
        }
    }
    std::array::from_fn(|m| {
        if count[m] < 2 {
            f64::NAN
        } else {
            hi[m] - lo[m]
        }
    })
}

/// The pooled and the adjusted gaps of one set of tallies.
fn both_spreads(cells: &[Vec<Tally>], measured: &[bool]) -> [[f64; 3]; 2] {
    let rates = group_rates(cells);
    [
        spreads(rates.iter().map(|r| &r.0), measured),
        spreads(rates.iter().map(|r| &r.1), measured),
    ]
}

/// The tallies of each (group, presentation) cell of row positions `members[g][q]`.
fn tallies(members: &[Vec<Vec<usize>>], p: &[f64], y: &[bool], threshold: f64) -> Vec<Vec<Tally>> {
    members
        .iter()
        .map(|g| {
            g.iter()
                .map(|cell| {
                    let mut t = Tally::default();
                    for k in cell {
                        t.add(p[*k], y[*k], threshold);
                    }
                    t
                })
                .collect()
        })
        .collect()
}

/// 95 % bootstrap intervals of the pooled and of the course-mix-adjusted TPR, FPR and
/// calibration gaps whose estimates are `estimates`, as `[pooled, adjusted]`.
///
/// Resampling is stratified by presentation and group: each (group, presentation) cell's rows
/// are drawn with replacement, independently, keeping the cell's size. The course mix (how many
/// students of each group sit in each presentation) is the design the adjustment conditions on,
/// not noise: resampling within groups only would let a replicate move a group's students
/// between courses, adding the composition's variation back into an interval meant for how the
/// model treats groups within courses, and could leave a group with no students in a
/// presentation it has. With one presentation this is the within-group resampling used before
/// the adjustment. Every group of the attribute is resampled (not only the measured ones), so
/// the presentations' reference rates vary in each replicate as in the data. A range over noisy
/// rates is biased upwards (the largest of several noisy rates overshoots), and its bootstrap
/// replicates overshoot the estimate by about as much again, so each interval is the basic
/// (reverse-percentile) one, `[2g - q97.5, 2g - q2.5]` around the estimate `g`, clamped to
/// `[0, 1]`. None with fewer than two measured groups, or where fewer than half the replicates
/// define the gap.
fn gap_intervals(
    members: &[Vec<Vec<usize>>],
    measured: &[bool],
    estimates: [[f64; 3]; 2],
    p: &[f64],
    y: &[bool],
    threshold: f64,
    seed: u64,
) -> [[Option<Interval>; 3]; 2] {
    if measured.iter().filter(|m| **m).count() < 2 {
        return [[None; 3]; 2];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
    let mut cells: Vec<Vec<Tally>> = members
        .iter()
        .map(|g| vec![Tally::default(); g.len()])
        .collect();
    for _ in 0..BOOTSTRAP {
        for (g, cell) in members.iter().zip(cells.iter_mut()) {
            for (idx, t) in g.iter().zip(cell.iter_mut()) {
                *t = Tally::default();
                for _ in 0..idx.len() {
                    let k = idx[rng.random_range(0..idx.len())];
                    t.add(p[k], y[k], threshold);
                }
            }
        }
        for (kind, gaps) in both_spreads(&cells, measured).into_iter().enumerate() {
            for (m, v) in gaps.into_iter().enumerate() {
                if !v.is_nan() {
                    samples[kind][m].push(v);
                }
            }
        }
    }
    std::array::from_fn(|kind| {
        std::array::from_fn(|m| {
            let g = estimates[kind][m];
            let v = &mut samples[kind][m];
            if v.len() < BOOTSTRAP / 2 || g.is_nan() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            Some(Interval {
                low: (2.0 * g - at(0.975)).clamp(0.0, 1.0),
                high: (2.0 * g - at(0.025)).clamp(0.0, 1.0),
            })
        })
    })
}

/// The subgroup evaluation of one week (see [`fairness`]).
#[derive(Debug, Clone, Default)]
pub struct WeekFairness {
    /// Metrics per group: pooled rates, and the course-mix-adjusted TPR, FPR and
    /// calibration-in-the-large.
    pub subgroups: Vec<SubgroupMetrics>,
    /// Gaps adjusted for course mix, with their intervals: what the gate judges (the report's
    /// `fairness`).
    pub gaps: Vec<SubgroupGaps>,
    /// The same gaps pooled over presentations, with their intervals (the report's
    /// `fairness_pooled`).
    pub pooled: Vec<SubgroupGaps>,
}

/// Metrics per protected subgroup and the gaps between them (with bootstrap intervals) at one
/// week, for scores `p` of `rows` with labels `y`.
///
/// The gaps are adjusted for course mix ([`FairnessMethod::CourseMixAdjusted`]): modules differ
/// widely in how many students are at risk and how many not at risk get flagged, and groups
/// differ in which modules they take, so a group's rate pooled over courses mostly reflects
/// its courses. Each group's rate is instead compared with the rate expected from the
/// presentations its students are in (indirect standardisation, see [`group_rates`]), and a gap
/// is the largest minus the smallest adjusted rate over the measured groups: those of at least
/// [`MIN_GROUP`] students, `unknown` left out. The pooled gaps are computed as before and
/// returned beside them; with one tested presentation the two are equal. Intervals: see
/// [`gap_intervals`]. A gap with fewer than two measured groups is 0 and has no interval.
pub fn fairness(
    s: &Snapshot,
    week: u16,
    rows: &[usize],
    p: &[f64],
    y: &[bool],
    threshold: f64,
) -> WeekFairness {
    let mut out = WeekFairness::default();
    // Presentation of each row, numbered among the rows' presentations.
    let presentations: BTreeSet<u32> = rows.iter().map(|r| s.presentation[*r]).collect();
    let presentations: Vec<u32> = presentations.into_iter().collect();
    let presentation_of: Vec<usize> = rows
        .iter()
        .map(|r| {
            presentations
                .binary_search(&s.presentation[*r])
                .unwrap_or_default()
        })
        .collect();
    for (attribute, labels) in &s.groups {
        // The groups among the rows, in name order (codes follow the sorted names).
        let codes: Vec<u32> = rows
            .iter()
            .map(|r| labels.codes[*r])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names: Vec<&str> = codes
            .iter()
            .map(|c| {
                labels
                    .values
                    .get(*c as usize)
                    .map_or("unknown", String::as_str)
            })
            .collect();
        // Row positions per group and presentation.
        let mut members = vec![vec![Vec::new(); presentations.len()]; names.len()];
        for (k, r) in rows.iter().enumerate() {
            let g = codes.binary_search(&labels.codes[*r]).unwrap_or_default();
            members[g][presentation_of[k]].push(k);
        }
        let cells = tallies(&members, p, y, threshold);
        let rates = group_rates(&cells);
        let mut these = Vec::with_capacity(names.len());
        for ((name, g), (_, adjusted)) in names.iter().zip(&members).zip(&rates) {
            // The group's rows in row order (ties in the AUC and ECE are then broken as before).
            let mut idx: Vec<usize> = g.iter().flatten().copied().collect();
            idx.sort_unstable();
            let gp: Vec<f64> = idx.iter().map(|k| p[*k]).collect();
            let gy: Vec<bool> = idx.iter().map(|k| y[*k]).collect();
            let c = metrics::confusion(&gp, &gy, threshold);
            let (_, tpr, fpr, _) = metrics::rates(&c);
            let (ece, _) = metrics::reliability(&gp, &gy, BINS);
            let mean_p = gp.iter().sum::<f64>() / gp.len().max(1) as f64;
            let observed = gy.iter().filter(|v| **v).count() as f64 / gy.len().max(1) as f64;
            these.push(SubgroupMetrics {
                attribute: *attribute,
                group: (*name).to_owned(),
                week,
                n: gp.len() as u64,
                positives: gy.iter().filter(|v| **v).count() as u64,
                roc_auc: metrics::roc_auc(&gp, &gy),
                tpr,
                fpr,
                ece,
                calibration_in_the_large: mean_p - observed,
                adjusted_tpr: adjusted[0],
                adjusted_fpr: adjusted[1],
                adjusted_calibration_in_the_large: adjusted[2],
            });
        }
        let measured: Vec<bool> = these
            .iter()
            .map(|g| g.n >= MIN_GROUP && g.group != "unknown")
            .collect();
        let estimates = [
            spreads(rates.iter().map(|r| &r.0), &measured),
            spreads(rates.iter().map(|r| &r.1), &measured),
        ];
        let seed = 0x6a9 ^ (u64::from(week) << 8) ^ (*attribute as u64);
        let intervals = gap_intervals(&members, &measured, estimates, p, y, threshold, seed);
        let sizes: Vec<(String, u64)> = these
            .iter()
            .zip(&measured)
            .filter(|(_, m)| **m)
            .map(|(g, _)| (g.group.clone(), g.n))
            .collect();
        let [pooled, adjusted] = [0, 1].map(|kind| {
            let gap = |m: usize| {
                let v: f64 = estimates[kind][m];
                if v.is_nan() { 0.0 } else { v }
            };
            let [tpr_interval, fpr_interval, calibration_interval] = intervals[kind];
            SubgroupGaps {
                attribute: *attribute,
                week,
                tpr_gap: gap(0),
                fpr_gap: gap(1),
                calibration_gap: gap(2),
                tpr_interval,
                fpr_interval,
                calibration_interval,
                measured: sizes.clone(),
            }
        });
        out.gaps.push(adjusted);
        out.pooled.push(pooled);
        out.subgroups.extend(these);
    }
    out
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

/// Training and test rows of a protocol.
struct Split {
    rows: TrainingRows,
    test_rows: Vec<usize>,
    description: String,
    train_names: Vec<String>,
    test_names: Vec<String>,
    random: bool,
}

fn split(s: &Snapshot, protocol: &Protocol, o: &TrainOptions) -> Result<Split, TrainError> {
    let (rows, test_rows, description, train_names, test_names, random) = match protocol {
        Protocol::Temporal { train, test } => {
            // Running presentations have no outcomes yet: never trained or tested on.
            let mut tr = s.select_presentations(train)?;
            tr.retain(|p| !s.is_running(*p));
            let mut te = s.select_presentations(test)?;
            te.retain(|p| !s.is_running(*p));
            if let Some(p) = tr.iter().find(|p| te.contains(p)) {
                return Err(TrainError::Config(format!(
                    "{} is both a training and a test presentation",
                    s.presentations[*p as usize]
                )));
            }
            let rows = split_training(s, &tr, o.seed, o.max_week)?;
            let test_rows: Vec<usize> = (0..s.len())
                .filter(|r| te.contains(&s.presentation[*r]) && usable(s, *r, None))
                .collect();
            let (trn, ten) = (s.names(&tr), s.names(&te));
            let d = if ten.is_empty() {
                format!(
                    "temporal: trained on {}; not tested (no finished presentation is later than the training ones)",
                    trn.join(", ")
                )
            } else {
                format!(
                    "temporal: trained on {}, tested on {}",
                    trn.join(", "),
                    ten.join(", ")
                )
            };
            (rows, test_rows, d, trn, ten, false)
        }
        Protocol::Random {
            presentations,
            test_fraction,
        } => {
            if !(*test_fraction > 0.0 && *test_fraction < 1.0) {
                return Err(TrainError::Config(
                    "the test fraction must be in (0, 1)".into(),
                ));
            }
            let ps = s.select_presentations(presentations)?;
            let all: Vec<usize> = (0..s.len())
                .filter(|r| ps.contains(&s.presentation[*r]) && usable(s, *r, None))
                .collect();
            let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x5eed);
            let test = held_out_students(s, &all, *test_fraction, &mut rng);
            let (test_rows, train): (Vec<usize>, Vec<usize>) = all
                .into_iter()
                .partition(|r| test.contains(&(s.presentation[*r], s.student[*r])));
            let train: Vec<usize> = train
                .into_iter()
                .filter(|r| usable(s, *r, o.max_week))
                .collect();
            let names = s.names(&ps);
            let fold_of_row = student_folds(s, &train, &mut rng);
            let mut folds = vec![Vec::new(); MAX_FOLDS];
            for (pos, f) in fold_of_row.iter().enumerate() {
                folds[*f].push(pos);
            }
            folds.retain(|f| !f.is_empty());
            let rows = TrainingRows {
                fold_names: (1..=folds.len())
                    .map(|i| format!("training students, part {i} of {}", folds.len()))
                    .collect(),
                rows: train,
                folds,
                presentations: names.clone(),
            };
            let d = format!(
                "random split of students ({:.0}% tested) within {}: FOR COMPARISON ONLY; students of one course term share teachers, materials and deadlines, so this overstates how the model does on next term's students",
                test_fraction * 100.0,
                names.join(", ")
            );
            (rows, test_rows, d, names.clone(), names, true)
        }
    };
    Ok(Split {
        rows,
        test_rows,
        description,
        train_names,
        test_names,
        random,
    })
}

impl Protocol {
    /// A temporal protocol over the snapshot's presentation codes (e.g. `2013B`): `test` by
    /// default the latest code, `train` by default every code before the latest tested one.
    pub fn temporal(
        s: &Snapshot,
        train: &[String],
        test: &[String],
    ) -> Result<Protocol, TrainError> {
        // Only finished presentations train and test: a running one has no outcomes yet.
        let mut codes: Vec<&str> = s
            .presentations
            .iter()
            .enumerate()
            .filter(|(i, _)| !s.is_running(*i as u32))
            .map(|(_, p)| p.split_once('-').map_or(p.as_str(), |(_, c)| c))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        if codes.is_empty() {
            return Err(TrainError::Config(format!(
                "no finished presentation to train on: every presentation of snapshot {} is running ({})",
                s.id,
                s.presentations.join(", ")
            )));
        }
        let test: Vec<String> = if test.is_empty() {
            match codes.last() {
                Some(c) if codes.len() >= 2 => vec![(*c).to_owned()],
                // One finished presentation code: train on it; the report says it is untested.
                _ if train.is_empty() => {
                    return Ok(Protocol::Temporal {
                        train: codes.iter().map(|c| (*c).to_owned()).collect(),
                        test: Vec::new(),
                    });
                }
                _ => Vec::new(),
            }
        } else {
            test.to_vec()
        };
        let train: Vec<String> = if train.is_empty() {
            let latest = test.iter().max().cloned().unwrap_or_default();
            codes
                .iter()
                .filter(|c| **c < latest.as_str() && !test.iter().any(|t| t == *c))
                .map(|c| (*c).to_owned())
                .collect()
        } else {
            train.to_vec()
        };
        if train.is_empty() {
            return Err(TrainError::Config(
                "no presentation precedes the test presentations: name the training ones".into(),
            ));
        }
        Ok(Protocol::Temporal { train, test })
    }
}

/// Trains `family` on the training rows of `protocol` (the train step of the nightly pipeline;
/// [`evaluate_artifact`] is its evaluation).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two presentations, 80/20 and 20/80 by group, the second group's rate `d` above the
    /// first's within each, presentations far apart.
    fn mixed(d: f64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let weight = vec![vec![800.0, 200.0], vec![200.0, 800.0]];
        let rate = vec![vec![0.5, 0.1], vec![0.5 + d, 0.1 + d]];
        (weight, rate)
    }

    #[test]
    fn a_difference_within_every_presentation_is_recovered_whatever_the_mix() {
        let (weight, rate) = mixed(0.3);
        let b = group_effects(&weight, &rate, ADJUST_PASSES);
        assert!((b[1] - b[0] - 0.3).abs() < 1e-9, "{b:?}");
        // Textbook indirect standardisation (one pass, presentation rates over all students)
        // compares each group largely with itself and finds much less.
        let b = group_effects(&weight, &rate, 1);
        assert!(b[1] - b[0] < 0.25, "{b:?}");
        // No difference within presentations: none found, though pooled rates differ by 0.24.
        let (weight, rate) = mixed(0.0);
        let b = group_effects(&weight, &rate, ADJUST_PASSES);
        assert!((b[1] - b[0]).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn groups_without_a_shared_presentation_look_average_and_empty_ones_are_undefined() {
        // Group 0 alone in presentation 0, groups 1 and 2 share presentation 1; group 3 has
        // no rows.
        let weight = vec![
            vec![100.0, 0.0],
            vec![0.0, 50.0],
            vec![0.0, 50.0],
            vec![0.0, 0.0],
        ];
        let rate = vec![
            vec![0.9, f64::NAN],
            vec![f64::NAN, 0.2],
            vec![f64::NAN, 0.4],
            vec![f64::NAN, f64::NAN],
        ];
        let b = group_effects(&weight, &rate, ADJUST_PASSES);
        assert!(b[0].abs() < 1e-12, "{b:?}");
        assert!(
            (b[1] + 0.1).abs() < 1e-9 && (b[2] - 0.1).abs() < 1e-9,
            "{b:?}"
        );
        assert!(b[3].is_nan());
    }

    #[test]
    fn adjusted_rates_centre_on_the_overall_rate() {
        // Cells of 100 students, 50 at risk; flagged: group 1 more than group 0 in both.
        let cell = |tp: u64, fp: u64| Tally {
            tp,
            fn_: 50 - tp,
            fp,
            tn: 50 - fp,
            sum_p: 0.0,
        };
        let cells = vec![
            vec![cell(40, 10), cell(20, 5)],
            vec![cell(45, 20), cell(25, 15)],
        ];
        let rates = group_rates(&cells);
        // Equal weights everywhere: the adjusted TPRs are the overall TPR plus or minus half
        // the within-course difference of 0.1.
        let overall = 130.0 / 200.0;
        assert!((rates[0].1[0] - (overall - 0.05)).abs() < 1e-9, "{rates:?}");
        assert!((rates[1].1[0] - (overall + 0.05)).abs() < 1e-9, "{rates:?}");
        assert!(
            (rates[1].1[1] - rates[0].1[1] - 0.2).abs() < 1e-9,
            "{rates:?}"
        );
        // Pooled rates are the groups' own.
        assert!((rates[0].0[0] - 0.6).abs() < 1e-12);
    }
}
