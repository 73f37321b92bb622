//! The model artifact: everything needed to score and explain, with its lineage, as one JSON
//! document. Its SHA-256 is the artifact hash: the same snapshot, configuration and seed give the
//! same bytes (no timestamps, no hash maps inside).

use lodestar_domain::{FeatureKind, RiskTier, TierThresholds};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::encode::{Cell, Encoder, FeatureRow};
use crate::explain::{Factor, Reference, describe};
use crate::predictor::{ModelFamily, Predictor};
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
const TOP_FACTORS: usize = 3;

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

    /// Scores and explains checked cells.
    pub fn score_cells(&self, cells: &[Cell]) -> Prediction {
        let uncalibrated = self.uncalibrated(cells);
        let probability = self.calibration.apply(uncalibrated);
        let mut factors = self.explain(cells, uncalibrated);
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
            tier: self.tiers.tier(probability),
            flagged: probability >= self.threshold,
            factors_up: factors,
            factors_down: down,
        }
    }

    /// Every numeric feature's contribution, largest magnitude first (ties by name).
    pub fn explain(&self, cells: &[Cell], uncalibrated: f64) -> Vec<Factor> {
        let columns = &self.encoder.columns;
        let value_of = |name: &str| -> Option<f64> {
            let i = columns.iter().position(|c| c.name == name)?;
            match cells[i] {
                Cell::Num(v) if !v.is_nan() => Some(v),
                _ => None,
            }
        };
        let week = value_of("as_of_week").unwrap_or(0.0);
        let Some(typical) = self.reference.at(week) else {
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
            let contribution = base - logit(self.uncalibrated(&probe));
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
