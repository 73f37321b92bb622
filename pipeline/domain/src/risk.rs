//! Risk tiers: how a calibrated probability of an at-risk outcome is shown to advisors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// The tier a prediction falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskTier {
    /// No action suggested.
    Low,
    /// Worth watching; outreach if it persists.
    Medium,
    /// Outreach suggested this week.
    High,
}

impl RiskTier {
    /// Every tier, lowest first.
    pub const ALL: [RiskTier; 3] = [RiskTier::Low, RiskTier::Medium, RiskTier::High];

    /// Lower-case name (API and CSV value).
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Medium => "medium",
            RiskTier::High => "high",
        }
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Probability bounds of the tiers: `p < medium` is low, `medium <= p < high` is medium,
/// `p >= high` is high.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawThresholds")]
pub struct TierThresholds {
    medium: f64,
    high: f64,
}

#[derive(Deserialize)]
struct RawThresholds {
    medium: f64,
    high: f64,
}

impl TryFrom<RawThresholds> for TierThresholds {
    type Error = DomainError;
    fn try_from(raw: RawThresholds) -> Result<Self, Self::Error> {
        TierThresholds::new(raw.medium, raw.high)
    }
}

impl TierThresholds {
    /// Checked thresholds: `0 < medium < high < 1`.
    pub fn new(medium: f64, high: f64) -> Result<Self, DomainError> {
        if medium > 0.0 && medium < high && high < 1.0 {
            Ok(Self { medium, high })
        } else {
            Err(DomainError::InvalidThresholds { medium, high })
        }
    }

    /// Lower bound of the medium tier.
    pub fn medium(&self) -> f64 {
        self.medium
    }

    /// Lower bound of the high tier.
    pub fn high(&self) -> f64 {
        self.high
    }

    /// The tier of a probability. A NaN probability is treated as high, so a broken score is
    /// looked at rather than hidden.
    pub fn tier(&self, probability: f64) -> RiskTier {
        if probability < self.medium {
            RiskTier::Low
        } else if probability < self.high {
            RiskTier::Medium
        } else {
            // Also reached by NaN, which fails both comparisons above.
            RiskTier::High
        }
    }
}

impl Default for TierThresholds {
    fn default() -> Self {
        Self {
            medium: 0.4,
            high: 0.7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_split_at_their_bounds() {
        let t = TierThresholds::new(0.3, 0.6).unwrap();
        assert_eq!(t.tier(0.0), RiskTier::Low);
        assert_eq!(t.tier(0.299), RiskTier::Low);
        assert_eq!(t.tier(0.3), RiskTier::Medium);
        assert_eq!(t.tier(0.6), RiskTier::High);
        assert_eq!(t.tier(f64::NAN), RiskTier::High);
    }

    #[test]
    fn unordered_thresholds_are_rejected_also_when_deserialised() {
        assert!(TierThresholds::new(0.6, 0.3).is_err());
        assert!(TierThresholds::new(0.0, 0.5).is_err());
        assert!(TierThresholds::new(0.5, 1.0).is_err());
        assert!(serde_json::from_str::<TierThresholds>(r#"{"medium":0.8,"high":0.2}"#).is_err());
        let ok: TierThresholds = serde_json::from_str(r#"{"medium":0.2,"high":0.8}"#).unwrap();
        assert_eq!((ok.medium(), ok.high()), (0.2, 0.8));
    }
}
