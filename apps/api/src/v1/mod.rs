//! The `/v1` resources: stored risk by student and by cohort, live scoring of posted feature
//! rows (checked against the champion's feature schema), feedback on a prediction, the
//! registry read-only, and pipeline runs.
//!
//! - `risk`: stored risk by student and by cohort, with the presentation's term.
//! - `scoring`: live scoring of posted rows against the champion's schema.
//! - `feedback`: feedback on a stored prediction.
//! - `registry`: registered models, versions and aliases.
//! - `runs`: pipeline runs.
//!
//! Every public item of the submodules is re-exported here, so each keeps its path
//! `lodestar_api::v1::NAME` (and the router names the handlers as `v1::NAME`).

mod feedback;
mod registry;
mod risk;
mod runs;
mod scoring;

pub use feedback::*;
pub use registry::*;
pub use risk::*;
pub use runs::*;
pub use scoring::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One reason for a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FactorView {
    /// Feature name.
    pub feature: String,
    /// The student's value (null when missing).
    pub value: Option<f64>,
    /// What passing students typically had by this week.
    pub typical: f64,
    /// Change in log-odds against the typical value (positive: riskier).
    pub contribution: f64,
    /// The factor in words, for an advisor.
    pub text: String,
}
