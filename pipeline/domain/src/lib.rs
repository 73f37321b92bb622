//! Plain types and rules shared by every Lodestar crate; no IO and no heavy dependencies.
//!
//! - [`ids`]: students, modules, course presentations, assessments, VLE sites.
//! - [`tables`]: the canonical LMS tables every reader produces (the OULAD data model), with
//!   their column schema and row types.
//! - [`activity`]: VLE activity types grouped into the families features are built from.
//! - [`features`]: the weekly feature schema, as-of-week rules and the outcome label.
//! - [`risk`]: risk tiers and their thresholds.
//! - [`term`]: finished and running presentations, their as-of day and current week.

pub mod activity;

/// Serde for an `f64` that may be NaN (an undefined metric): NaN is written as JSON `null`
/// and read back from it, so reports with an undefined AUC round-trip.
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes NaN as `null`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    /// Reads `null` as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

pub mod evaluation;
pub mod features;
pub mod ids;
pub mod risk;
pub mod tables;
pub mod term;

pub use activity::ActivityFamily;
pub use evaluation::{
    Confusion, EvaluationReport, GateDecision, GateMetric, Interval, PromotionGate,
    ProtectedComparison, ReliabilityBin, SubgroupGaps, SubgroupMetrics, WeekMetrics,
};
pub use features::{AsOfWeek, FeatureGroup, FeatureKind, FeatureSchema, FeatureSpec, LabelRule};
pub use ids::{AssessmentId, ModuleCode, PresentationCode, PresentationId, SiteId, StudentId};
pub use risk::{RiskTier, TierThresholds};
pub use tables::{Column, ColumnType, FinalResult, Table};
pub use term::{AsOfSource, PresentationTerm, TermState};

/// Why a value could not become a domain type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A textual identifier or code did not follow its format.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidValue {
        /// What was being parsed, e.g. "presentation code".
        kind: &'static str,
        /// The offending text.
        value: String,
        /// What the format requires.
        reason: &'static str,
    },
    /// Risk-tier thresholds that do not split (0, 1) into three ordered bands.
    #[error(
        "invalid risk thresholds: medium {medium} and high {high} must satisfy 0 < medium < high < 1"
    )]
    InvalidThresholds {
        /// Lower bound of the medium tier.
        medium: f64,
        /// Lower bound of the high tier.
        high: f64,
    },
}

impl DomainError {
    pub(crate) fn invalid(kind: &'static str, value: &str, reason: &'static str) -> Self {
        Self::InvalidValue {
            kind,
            value: value.to_owned(),
            reason,
        }
    }
}
