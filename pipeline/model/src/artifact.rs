//! The model artifact: everything needed to score and explain, with its lineage, as one JSON
//! document. Its SHA-256 is the artifact hash: the same snapshot, configuration and seed give the
//! same bytes (no timestamps, no hash maps inside).

use std::cmp::Ordering;

use lodestar_domain::{FeatureKind, RiskTier, TierThresholds};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::encode::{Cell, Encoder, FeatureRow};
use crate::explain::{Factor, Reference, describe};
use crate::predictor::{ModelFamily, Predictor};
use crate::probe::{self, Probe};
use crate::{Calibration, ModelError, logit};

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Content hash of the training feature snapshot.
    pub snapshot_id: String,
    /// Version of the code that trained it.
    pub code_version: String,
    /// Random seed.
    pub seed: u64,
    /// Presentations the model was fitted on.
    pub fit_presentations: Vec<String>,
    /// Presentations the calibration was fitted on (held out of the fit).
    pub calibration_presentations: Vec<String>,
    /// Training rows (student × week).
    pub training_rows: u64,
    /// Hyperparameters and training options.
    pub config: serde_json::Value,
}

/// A trained model, ready to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Format of this document.
    pub format: u32,
    /// Model family.
    pub family: ModelFamily,
    /// Input encoding.
    pub encoder: Encoder,
    /// The fitted model.
    pub predictor: Predictor,
    /// Calibration of its probability.
    pub calibration: Calibration,
    /// Operating threshold on the calibrated probability: at or above it a student is flagged.
    pub threshold: f64,
    /// Risk tiers shown to advisors.
    pub tiers: TierThresholds,
    /// Typical values of passing students, for explanations.
    pub reference: Reference,
    /// Whether protected attributes are among the inputs.
    pub uses_protected_attributes: bool,
    /// Where it came from.
    pub lineage: Lineage,
}

/// One student's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Calibrated probability of an at-risk outcome.
    pub probability: f64,
    /// The model's probability before calibration.
    pub uncalibrated: f64,
    /// Tier shown to advisors.
    pub tier: RiskTier,
    /// At or above the operating threshold.
    pub flagged: bool,
    /// Factors raising the risk, strongest first.
    pub factors_up: Vec<Factor>,
    /// Factors lowering it, strongest first.
    pub factors_down: Vec<Factor>,
}

/// Fields a caller's row may carry beside the features.
pub const IDENTIFIERS: [&str; 4] = ["id_student", "code_module", "code_presentation", "as_of"];

/// Factors shown each way.
pub const TOP_FACTORS: usize = 3;

impl Artifact {
    /// Format written by this build.
    pub const FORMAT: u32 = 1;

    /// The artifact as bytes (stable for equal artifacts).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of [`Artifact::to_bytes`], hex.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.to_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads and checks an artifact.
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ModelError> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_slice(bytes)?;
        if head.format != Self::FORMAT {
            return Err(ModelError::Version {
                found: head.format,
                expected: Self::FORMAT,
            });
        }
        let a: Artifact = serde_json::from_slice(bytes)?;
        a.check()?;
        Ok(a)
    }

    /// Checks that the parts agree in size.
    pub fn check(&self) -> Result<(), ModelError> {
        let w = self.encoder.width();
        if [
            &self.encoder.impute,
            &self.encoder.mean,
            &self.encoder.scale,
        ]
        .iter()
        .any(|v| v.len() != w)
        {
            return Err(ModelError::Inconsistent(
                "the encoder's statistics do not match its columns".into(),
            ));
        }
        if self
            .reference
            .by_week
            .iter()
            .any(|r| r.len() != self.encoder.columns.len())
        {
            return Err(ModelError::Inconsistent(
                "the reference values do not match the columns".into(),
            ));
        }
        self.predictor.check(w)
    }

    /// Checks a caller's row and returns its cells.
    pub fn cells_of(&self, row: &FeatureRow) -> Result<Vec<Cell>, ModelError> {
        self.encoder.cells_of(row, &IDENTIFIERS)
    }

    /// The model's probability, before calibration, of checked cells.
    pub fn uncalibrated(&self, cells: &[Cell]) -> f64 {
        self.predictor.probability(&self.encoder.vector(cells))
    }

    /// Scores and explains a caller's row.
    pub fn score(&self, row: &FeatureRow) -> Result<Prediction, ModelError> {
        Ok(self.score_cells(&self.cells_of(row)?))
    }

    /// Scores and explains checked cells: the [`TOP_FACTORS`] strongest factors each way, as
    /// [`Artifact::explain`] ranks them (only those are written in words).
    pub fn score_cells(&self, cells: &[Cell]) -> Prediction {
        // The strongest each way, in the order of `explain` (a stable sort: ties in column order).
        let mut up = Strongest::default();
        let mut down = Strongest::default();
        let (uncalibrated, typical) = self.measure(cells, None, |column, contribution| {
            if contribution > 0.0 {
                up.offer(self, (column, contribution));
            } else if contribution < 0.0 {
                down.offer(self, (column, contribution));
            }
        });
        let probability = self.calibration.apply(uncalibrated);
        let words = |side: Strongest| -> Vec<Factor> {
            side.kept()
                .iter()
                .map(|&(column, contribution)| {
                    self.factor(cells, typical.unwrap_or_default(), column, contribution)
                })
                .collect()
        };
        Prediction {
            probability,
            uncalibrated,
            tier: self.tiers.tier(probability),
            flagged: probability >= self.threshold,
            factors_up: words(up),
            factors_down: words(down),
        }
    }

    /// Every numeric feature's contribution, largest magnitude first (ties by name):
    /// `logit(uncalibrated)` minus the model's log-odds with that one feature at its typical
    /// value for the row's week, through the whole model, encoder included. Features with no
    /// typical value, and contributions under 1e-6 in magnitude, are left out.
    pub fn explain(&self, cells: &[Cell], uncalibrated: f64) -> Vec<Factor> {
        let mut measured = Vec::new();
        let (_, typical) = self.measure(cells, Some(uncalibrated), |column, contribution| {
            measured.push((column, contribution));
        });
        let Some(typical) = typical else {
            return Vec::new();
        };
        measured.sort_by(|a, b| self.stronger(*a, *b));
        measured
            .into_iter()
            .map(|(column, contribution)| self.factor(cells, typical, column, contribution))
            .collect()
    }

    /// The order of factors `(column, contribution)`: larger magnitude first, then by name.
    fn stronger(&self, a: (usize, f64), b: (usize, f64)) -> Ordering {
        let columns = &self.encoder.columns;
        b.1.abs()
            .total_cmp(&a.1.abs())
            .then_with(|| columns[a.0].name.cmp(&columns[b.0].name))
    }

    /// The row's numeric value of column `name` (None when missing or not numeric).
    fn value_of(&self, cells: &[Cell], name: &str) -> Option<f64> {
        let i = self.encoder.columns.iter().position(|c| c.name == name)?;
        match cells[i] {
            Cell::Num(v) if !v.is_nan() => Some(v),
            _ => None,
        }
    }

    /// Measures checked cells: returns the model's probability (exactly
    /// [`Artifact::uncalibrated`]) and the typical values for the row's week (None when none
    /// are known), and gives `found` each contribution `(column, contribution)` of
    /// [`Artifact::explain`], in column order, against `uncalibrated` (the model's probability
    /// when None). The what-ifs are evaluated together and incrementally (see
    /// [`crate::probe`]); no text is written.
    fn measure(
        &self,
        cells: &[Cell],
        uncalibrated: Option<f64>,
        mut found: impl FnMut(usize, f64),
    ) -> (f64, Option<&[f64]>) {
        let columns = &self.encoder.columns;
        let week = self.value_of(cells, "as_of_week").unwrap_or(0.0);
        let typical = self.reference.at(week);
        probe::with_scratch(|s| {
            let (mut x, mut probes, mut owners, mut out) = (
                std::mem::take(&mut s.x),
                std::mem::take(&mut s.probes),
                std::mem::take(&mut s.owners),
                std::mem::take(&mut s.out),
            );
            // As `Encoder::vector`, into a buffer.
            x.clear();
            x.resize(self.encoder.width(), 0.0);
            self.encoder.encode_raw_into(|i| cells[i], &mut x);
            self.encoder.finish(&mut x);
            probes.clear();
            owners.clear();
            let mut at = 0;
            for (i, (c, cell)) in columns.iter().zip(cells).enumerate() {
                let j = at;
                at += match cell {
                    Cell::Num(_) => 1,
                    Cell::Cat(_) => c.width(),
                };
                let Some(typical) = typical else { break };
                if c.kind == FeatureKind::Categorical || c.name == "as_of_week" {
                    continue;
                }
                let Cell::Num(_) = cell else { continue };
                let t = typical[i];
                if t.is_nan() {
                    continue;
                }
                let value = self.encoder.finish_one(j, t);
                if value == x[j] {
                    // Already typical once encoded: the row itself.
                    owners.push((i, None));
                } else {
                    owners.push((i, Some(probes.len())));
                    probes.push(Probe { input: j, value });
                }
            }
            out.clear();
            out.resize(probes.len(), 0.0);
            let own = if typical.is_some() {
                probe::probabilities(&self.predictor, &x, &probes, &mut out, s)
            } else {
                self.predictor.probability(&x)
            };
            let base = logit(uncalibrated.unwrap_or(own));
            for &(column, k) in &owners {
                let contribution = base - logit(k.map_or(own, |k| out[k]));
                if contribution.abs() < 1e-6 {
                    continue;
                }
                found(column, contribution);
            }
            (s.x, s.probes, s.owners, s.out) = (x, probes, owners, out);
            (own, typical)
        })
    }

    /// Column `column`'s factor, in words.
    fn factor(&self, cells: &[Cell], typical: &[f64], column: usize, contribution: f64) -> Factor {
        let c = &self.encoder.columns[column];
        let value = match cells[column] {
            Cell::Num(v) if !v.is_nan() => Some(v),
            _ => None,
        };
        let t = typical[column];
        Factor {
            feature: c.name.clone(),
            value,
            typical: t,
            contribution,
            text: describe(&c.name, value, t, &|name| self.value_of(cells, name)),
        }
    }
}

/// The [`TOP_FACTORS`] strongest factors `(column, contribution)` offered so far, strongest
/// first, in the order of [`Artifact::explain`]'s stable sort (ties in the order offered).
#[derive(Default)]
struct Strongest {
    kept: [(usize, f64); TOP_FACTORS],
    len: usize,
}

impl Strongest {
    fn offer(&mut self, a: &Artifact, new: (usize, f64)) {
        if self.len == TOP_FACTORS && new.1.abs() < self.kept[TOP_FACTORS - 1].1.abs() {
            return;
        }
        let at = self.kept[..self.len]
            .iter()
            .position(|e| a.stronger(*e, new) == Ordering::Greater)
            .unwrap_or(self.len);
        if at == TOP_FACTORS {
            return;
        }
        let end = (self.len + 1).min(TOP_FACTORS);
        self.kept.copy_within(at..end - 1, at + 1);
        self.kept[at] = new;
        self.len = end;
    }

    fn kept(&self) -> &[(usize, f64)] {
        &self.kept[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;
    use crate::encode::InputColumn;

    fn artifact() -> Artifact {
        let columns = vec![
            InputColumn {
                name: "as_of_week".into(),
                kind: FeatureKind::Count,
                categories: vec![],
            },
            InputColumn {
                name: "days_since_last_activity".into(),
                kind: FeatureKind::Numeric,
                categories: vec![],
            },
            InputColumn {
                name: "clicks_total".into(),
                kind: FeatureKind::Count,
                categories: vec![],
            },
        ];
        let encoder = Encoder::fit(columns, &[0.0, 1.0, 100.0, 5.0, 3.0, 300.0], false);
        Artifact {
            format: Artifact::FORMAT,
            family: ModelFamily::Logistic,
            encoder,
            predictor: Predictor::Linear {
                weights: vec![0.0, 0.2, -0.01],
                bias: 0.0,
            },
            calibration: Calibration::Identity,
            threshold: 0.5,
            tiers: TierThresholds::default(),
            reference: Reference {
                by_week: vec![vec![0.0, 2.0, 100.0]],
            },
            uses_protected_attributes: false,
            lineage: Lineage {
                snapshot_id: "s".into(),
                code_version: "test".into(),
                seed: 1,
                fit_presentations: vec![],
                calibration_presentations: vec![],
                training_rows: 2,
                config: serde_json::Value::Null,
            },
        }
    }

    fn row(days: f64, clicks: f64) -> FeatureRow {
        [
            ("as_of_week", 3.0),
            ("days_since_last_activity", days),
            ("clicks_total", clicks),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Some(Value::Number(v))))
        .collect()
    }

    #[test]
    fn scores_explain_themselves_against_typical_values() {
        let a = artifact();
        let p = a.score(&row(12.0, 150.0)).unwrap();
        // logit = 0.2 * 12 - 0.01 * 150 = 0.9
        assert!((p.probability - crate::sigmoid(0.9)).abs() < 1e-12);
        assert!(p.flagged);
        assert_eq!(
            p.tier,
            RiskTier::High,
            "0.71 is at or above the default high bound 0.7"
        );
        assert_eq!(p.factors_up.len(), 1);
        let up = &p.factors_up[0];
        assert_eq!(up.feature, "days_since_last_activity");
        assert!((up.contribution - 0.2 * 10.0).abs() < 1e-9);
        assert_eq!(up.text, "no activity for 12 days (typical: 2)");
        let down = &p.factors_down[0];
        assert_eq!(down.feature, "clicks_total");
        assert!((down.contribution + 0.5).abs() < 1e-9);
    }

    #[test]
    fn bytes_round_trip_with_a_stable_hash_and_bad_artifacts_are_refused() {
        let a = artifact();
        let b = Artifact::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        let mut broken = a.clone();
        broken.predictor = Predictor::Linear {
            weights: vec![1.0],
            bias: 0.0,
        };
        assert!(matches!(
            Artifact::from_bytes(&broken.to_bytes()),
            Err(ModelError::Inconsistent(_))
        ));
        let mut future = serde_json::to_value(&a).unwrap();
        future["format"] = 99.into();
        assert!(matches!(
            Artifact::from_bytes(&serde_json::to_vec(&future).unwrap()),
            Err(ModelError::Version { found: 99, .. })
        ));
    }
}
