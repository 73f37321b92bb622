//! The trained-model artifact: one JSON document holding the fitted model as plain numbers
//! (weights, trees, layers), the feature encoding, imputation and standardisation fitted on the
//! training rows, the calibration, the operating threshold and tiers, and the lineage (training
//! snapshot, code version, seed). It loads without polars, linfa or burn, and scores and explains
//! plain feature rows the same way for batch scoring and the API.
//!
//! - [`encode`]: from named feature values to the model's input matrix, and its checks.
//! - [`predictor`]: the fitted model families as plain data.
//! - [`calibration`]: Platt and isotonic calibration of a probability.
//! - [`explain`]: the factors that push one student's risk up and down, in words.
//! - [`artifact`]: the whole artifact, its hash, `score` and `explain` (whose what-ifs a private
//!   module, `probe`, evaluates incrementally per model family).

pub mod artifact;
pub mod calibration;
pub mod encode;
pub mod explain;
pub mod predictor;
mod probe;

pub use artifact::{Artifact, Lineage, Prediction};
pub use calibration::Calibration;
pub use encode::{Encoder, FeatureRow, InputColumn, Value};
pub use explain::{Factor, Reference};
pub use predictor::{ModelFamily, Node, Predictor, Tree};

/// What can go wrong loading an artifact or scoring a row.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The artifact is not valid JSON of the expected shape.
    #[error("the model artifact cannot be read: {0}")]
    Format(#[from] serde_json::Error),
    /// The artifact was written by an incompatible version.
    #[error("the model artifact has format {found}; this build reads format {expected}")]
    Version {
        /// Format found.
        found: u32,
        /// Format understood.
        expected: u32,
    },
    /// A feature row does not match the model's schema; each problem is named.
    #[error("the feature row does not match the model's schema: {}", .0.join("; "))]
    Schema(Vec<String>),
    /// The artifact is internally inconsistent (sizes that disagree).
    #[error("the model artifact is inconsistent: {0}")]
    Inconsistent(String),
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Log-odds of `p`, clamped away from 0 and 1 so it stays finite.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}
