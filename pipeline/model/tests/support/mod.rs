//! Shared by the explanation tests and the explanation benchmark: the per-feature re-evaluation
//! that `Artifact::score_cells` and `Artifact::explain` used before their incremental fast path
//! (kept verbatim as the reference the fast path must agree with), and synthetic artifacts of
//! every model family with random-ish rows (missing values, categorical columns, repeated tree
//! features) to compare them on.

#![allow(dead_code)]

use lodestar_domain::{FeatureKind, TierThresholds};
use lodestar_model::artifact::TOP_FACTORS;
use lodestar_model::encode::Cell;
use lodestar_model::explain::describe;
use lodestar_model::predictor::Dense;
use lodestar_model::{
    Artifact, Calibration, Encoder, Factor, InputColumn, Lineage, ModelFamily, Node, Prediction,
    Predictor, Reference, Tree, logit,
};

/// The reference explanation: every numeric feature set to its typical value in turn and the
/// whole model (encoder included) evaluated again; a sentence for every factor.
pub(crate) fn explain(a: &Artifact, cells: &[Cell], uncalibrated: f64) -> Vec<Factor> {
    let columns = &a.encoder.columns;
    let value_of = |name: &str| -> Option<f64> {
        let i = columns.iter().position(|c| c.name == name)?;
        match cells[i] {
            Cell::Num(v) if !v.is_nan() => Some(v),
            _ => None,
        }
    };
    let week = value_of("as_of_week").unwrap_or(0.0);
    let Some(typical) = a.reference.at(week) else {
        return Vec::new();
    };
    let base = logit(uncalibrated);
    let mut probe = cells.to_vec();
    let mut factors = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if c.kind == FeatureKind::Categorical || c.name == "as_of_week" {
            continue;
        }
        let Cell::Num(v) = cells[i] else { continue };
        let t = typical[i];
        if t.is_nan() {
            continue;
        }
        probe[i] = Cell::Num(t);
        let contribution = base - logit(a.uncalibrated(&probe));
        probe[i] = cells[i];
        if contribution.abs() < 1e-6 {
            continue;
        }
        let value = (!v.is_nan()).then_some(v);
        factors.push(Factor {
            feature: c.name.clone(),
            value,
            typical: t,
            contribution,
            text: describe(&c.name, value, t, &value_of),
        });
    }
    factors.sort_by(|a, b| {
        b.contribution
            .abs()
            .total_cmp(&a.contribution.abs())
            .then_with(|| a.feature.cmp(&b.feature))
    });
    factors
}

/// The reference score: [`explain`], then the strongest factors each way.
pub(crate) fn score_cells(a: &Artifact, cells: &[Cell]) -> Prediction {
    let uncalibrated = a.uncalibrated(cells);
    let probability = a.calibration.apply(uncalibrated);
    let mut factors = explain(a, cells, uncalibrated);
    let mut down: Vec<Factor> = factors
        .iter()
        .filter(|f| f.contribution < 0.0)
        .cloned()
        .collect();
    factors.retain(|f| f.contribution > 0.0);
    factors.truncate(TOP_FACTORS);
    down.truncate(TOP_FACTORS);
    Prediction {
        probability,
        uncalibrated,
        tier: a.tiers.tier(probability),
        flagged: probability >= a.threshold,
        factors_up: factors,
        factors_down: down,
    }
}

/// SplitMix64: deterministic and dependency-free.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Roughly standard normal (sum of uniforms).
    pub(crate) fn normal(&mut self) -> f64 {
        (0..6).map(|_| self.uniform()).sum::<f64>() - 3.0
    }
}

/// The shape of a synthetic artifact.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Generic numeric columns added after the named ones.
    pub(crate) extra_numeric: usize,
    /// Trees per tree ensemble.
    pub(crate) trees: usize,
    /// Their maximum depth.
    pub(crate) depth: usize,
    /// Hidden widths of the MLP.
    pub(crate) hidden: Vec<usize>,
    /// Whether the encoder standardises.
    pub(crate) standardise: bool,
    /// Members of an ensemble.
    pub(crate) members: Vec<ModelFamily>,
}

impl Spec {
    /// Small, for tests.
    pub(crate) fn small() -> Spec {
        Spec {
            extra_numeric: 4,
            trees: 12,
            depth: 7,
            hidden: vec![9, 5],
            standardise: true,
            members: ModelFamily::ALL.to_vec(),
        }
    }

    /// About the size of a served model: ~40 encoded inputs, 100 trees of depth 10, an MLP
    /// 40x64x32x1, and the served ensemble of logistic, forest and MLP.
    pub(crate) fn served() -> Spec {
        Spec {
            extra_numeric: 11,
            trees: 100,
            depth: 10,
            hidden: vec![64, 32],
            standardise: true,
            members: vec![ModelFamily::Logistic, ModelFamily::Forest, ModelFamily::Mlp],
        }
    }
}

fn column(name: &str, kind: FeatureKind, categories: &[&str]) -> InputColumn {
    InputColumn {
        name: name.into(),
        kind,
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
    }
}

/// Named columns that `describe` knows, two categorical ones between them, then generic ones.
pub(crate) fn columns(extra_numeric: usize) -> Vec<InputColumn> {
    use FeatureKind::*;
    let mut c = vec![
        column("as_of_week", Count, &[]),
        column("days_since_last_activity", Numeric, &[]),
        column("assessments_due", Count, &[]),
        column("assessments_submitted", Count, &[]),
        column("assessments_missing", Count, &[]),
        column("assessments_late", Count, &[]),
        column("assessments_banked", Count, &[]),
        column("gender", Categorical, &["F", "M"]),
        column("score_mean", Numeric, &[]),
        column("score_weighted", Numeric, &[]),
        column("clicks_total", Count, &[]),
        column("clicks_this_week", Count, &[]),
        column("clicks_last_week", Count, &[]),
        column("active_days_total", Count, &[]),
        column("active_days_this_week", Count, &[]),
        column("region", Categorical, &["North", "South", "East", "West"]),
        column("trend_vs_own", Numeric, &[]),
        column("trend_vs_cohort", Numeric, &[]),
        column("days_registered_before_start", Numeric, &[]),
        column("num_of_prev_attempts", Count, &[]),
        column("studied_credits", Count, &[]),
        column("highest_education", Ordinal, &[]),
        column("imd_band", Ordinal, &[]),
        column("disability", Binary, &[]),
        column("clicks_forum_total", Count, &[]),
        column("clicks_quiz_total", Count, &[]),
    ];
    for i in 0..extra_numeric {
        c.push(column(&format!("feature_{i:02}"), Numeric, &[]));
    }
    c
}

/// A value of column `c` (NaN sometimes where allowed).
fn value(rng: &mut Rng, c: &InputColumn) -> Cell {
    match c.kind {
        FeatureKind::Categorical => {
            Cell::Cat((!rng.chance(0.1)).then(|| rng.below(c.categories.len() + 1)))
        }
        _ if c.nullable() && rng.chance(0.12) => Cell::Num(f64::NAN),
        FeatureKind::Count if c.name == "as_of_week" => Cell::Num(rng.below(14) as f64),
        FeatureKind::Count => Cell::Num((rng.uniform().powi(2) * 12.0).floor()),
        FeatureKind::Ordinal => Cell::Num(rng.below(5) as f64),
        FeatureKind::Binary => Cell::Num(rng.below(2) as f64),
        FeatureKind::Numeric => Cell::Num((rng.normal() * 10.0 + 20.0).round() / 2.0),
    }
}

/// `n` rows of cells for `columns`.
pub(crate) fn rows(rng: &mut Rng, columns: &[InputColumn], n: usize) -> Vec<Vec<Cell>> {
    (0..n)
        .map(|_| columns.iter().map(|c| value(rng, c)).collect())
        .collect()
}

fn tree(rng: &mut Rng, encoded: &[Vec<f64>], depth: usize, leaf: &dyn Fn(&mut Rng) -> f64) -> Tree {
    fn grow(
        rng: &mut Rng,
        encoded: &[Vec<f64>],
        nodes: &mut Vec<Node>,
        depth: usize,
        leaf: &dyn Fn(&mut Rng) -> f64,
    ) -> u32 {
        let at = nodes.len();
        if depth == 0 || (nodes.len() > 2 && rng.chance(0.08)) {
            nodes.push(Node::leaf(leaf(rng)));
            return at as u32;
        }
        let width = encoded[0].len();
        // Few distinct features near the root, so paths repeat features.
        let feature = if rng.chance(0.3) {
            rng.below(4.min(width))
        } else {
            rng.below(width)
        };
        let threshold = encoded[rng.below(encoded.len())][feature] + (rng.uniform() - 0.5) * 1e-3;
        nodes.push(Node::leaf(0.0));
        let left = grow(rng, encoded, nodes, depth - 1, leaf);
        let right = grow(rng, encoded, nodes, depth - 1, leaf);
        let missing = match rng.below(3) {
            0 => left,
            1 => right,
            _ => grow(rng, encoded, nodes, 0, leaf),
        };
        nodes[at] = Node {
            feature: feature as i32,
            threshold,
            left,
            right,
            missing,
            value: 0.0,
        };
        at as u32
    }
    let mut nodes = Vec::new();
    grow(rng, encoded, &mut nodes, depth, leaf);
    Tree { nodes }
}

fn predictor(
    rng: &mut Rng,
    family: ModelFamily,
    spec: &Spec,
    encoded: &[Vec<f64>],
    scale: &[f64],
) -> Predictor {
    let width = encoded[0].len();
    match family {
        ModelFamily::Logistic => Predictor::Linear {
            weights: (0..width)
                .map(|j| rng.normal() * 0.5 / (width as f64).sqrt() / scale[j])
                .collect(),
            bias: rng.normal() * 0.3,
        },
        ModelFamily::Forest => Predictor::Forest {
            trees: (0..spec.trees)
                .map(|_| {
                    tree(rng, encoded, spec.depth, &|r: &mut Rng| match r.below(40) {
                        0 => 0.0,
                        1 => 1.0,
                        _ => r.uniform(),
                    })
                })
                .collect(),
        },
        ModelFamily::Boosted => Predictor::Boosted {
            base: -0.4,
            trees: (0..spec.trees)
                .map(|_| {
                    tree(rng, encoded, spec.depth, &|r: &mut Rng| {
                        (r.uniform() - 0.5) * 0.6
                    })
                })
                .collect(),
        },
        ModelFamily::Mlp => {
            let mut widths = vec![width];
            widths.extend(&spec.hidden);
            widths.push(1);
            Predictor::Mlp {
                layers: widths
                    .windows(2)
                    .enumerate()
                    .map(|(l, w)| {
                        let gain = (3.0 / w[0] as f64).sqrt();
                        Dense {
                            inputs: w[0],
                            outputs: w[1],
                            weights: (0..w[0] * w[1])
                                .map(|k| {
                                    let s = if l == 0 { scale[k / w[1]] } else { 1.0 };
                                    ((rng.uniform() * 2.0 - 1.0) * gain / s) as f32
                                })
                                .collect(),
                            bias: (0..w[1]).map(|_| (rng.normal() * 0.1) as f32).collect(),
                        }
                    })
                    .collect(),
            }
        }
        ModelFamily::Ensemble => Predictor::Ensemble {
            members: spec
                .members
                .iter()
                .map(|m| predictor(rng, *m, spec, encoded, scale))
                .collect(),
        },
    }
}

/// A checked synthetic artifact of `family` and `spec`, fitted on `fit` rows.
pub(crate) fn artifact(rng: &mut Rng, family: ModelFamily, spec: &Spec) -> Artifact {
    let columns = columns(spec.extra_numeric);
    let fit = rows(rng, &columns, 300);
    let probe = Encoder::fit(columns.clone(), &[], false);
    let width = probe.width();
    let mut raw = vec![0.0; fit.len() * width];
    for (r, cells) in fit.iter().enumerate() {
        probe.encode_raw_into(|i| cells[i], &mut raw[r * width..(r + 1) * width]);
    }
    let encoder = Encoder::fit(columns.clone(), &raw, spec.standardise);
    let scale = if spec.standardise {
        vec![1.0; width]
    } else {
        Encoder::fit(columns.clone(), &raw, true).scale
    };
    let encoded: Vec<Vec<f64>> = fit.iter().map(|cells| encoder.vector(cells)).collect();
    let by_week = (0..8)
        .map(|_| {
            rows(rng, &columns, 1)[0]
                .iter()
                .map(|cell| match cell {
                    Cell::Num(v) if !v.is_nan() && !rng.chance(0.05) => *v,
                    _ => f64::NAN,
                })
                .collect()
        })
        .collect();
    let a = Artifact {
        format: Artifact::FORMAT,
        family,
        predictor: predictor(rng, family, spec, &encoded, &scale),
        encoder,
        calibration: Calibration::Platt { a: 0.9, b: -0.1 },
        threshold: 0.5,
        tiers: TierThresholds::default(),
        reference: Reference { by_week },
        uses_protected_attributes: false,
        lineage: Lineage {
            snapshot_id: "synthetic".into(),
            code_version: "test".into(),
            seed: 7,
            fit_presentations: vec![],
            calibration_presentations: vec![],
            training_rows: fit.len() as u64,
            config: serde_json::Value::Null,
        },
    };
    a.check().expect("a consistent synthetic artifact");
    a
}
