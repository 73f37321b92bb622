//! The training options shared by every family: hyperparameters, seed, device, calibration
//! method, protected attributes, the weeks trained on, tiers and the code version.

use lodestar_domain::TierThresholds;
use serde::{Deserialize, Serialize};

use crate::fit::{Hyperparameters, TrainDevice};

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
