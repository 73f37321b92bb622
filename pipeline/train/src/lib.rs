//! Training and honest evaluation of at-risk models over a feature snapshot.
//!
//! - [`data`]: a snapshot in memory, column by column.
//! - [`fit`]: one training interface for every family (linfa logistic regression, a random
//!   forest of linfa trees, perpetual's gradient-boosted trees, a burn MLP), hyperparameters
//!   checked first, seeded.
//! - [`metrics`]: ROC AUC, PR AUC, Brier, ECE and reliability, confusion matrix.
//! - [`evaluate`]: the temporal protocol (train on earlier presentations, calibrate on held-out
//!   training presentations, test on later ones, per as-of week on students still registered),
//!   fairness by protected subgroup, and the artifact with its lineage.
//! - [`batch`]: scoring tonight's students with explanations; feature drift (PSI).

pub mod batch;
mod boosted;
pub mod data;
mod design;
pub mod evaluate;
mod fairness;
pub mod fit;
mod forest;
mod logistic;
pub mod metrics;
mod mlp;
mod options;
mod protocol;
mod training;

use std::path::PathBuf;

pub use data::Snapshot;
pub use evaluate::{
    Evaluation, Protocol, TrainOptions, evaluate, evaluate_artifact, source_columns, train,
    train_for,
};
pub use fit::{Design, Hyperparameters, TrainDevice, fit};

/// What can go wrong training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The snapshot is missing or malformed.
    #[error("feature snapshot: {0}")]
    Snapshot(String),
    /// Options or hyperparameters are invalid.
    #[error("{0}")]
    Config(String),
    /// The data cannot support the request (e.g. one outcome only).
    #[error("{0}")]
    Data(String),
    /// A library failed to fit.
    #[error("fitting failed: {0}")]
    Fit(String),
}
