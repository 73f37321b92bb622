//! The evaluation report a trained model version carries, and the promotion gate that compares a
//! candidate's report with the champion's. Pure rules: the store applies them, training fills the
//! report.

use serde::{Deserialize, Serialize};

use crate::features::ProtectedAttribute;

/// Metrics of one model at one as-of week, on the evaluated population (students still
/// registered at the end of that week).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeekMetrics {
    /// As-of week.
    pub week: u16,
    /// Students evaluated.
    pub n: u64,
    /// Of which at risk.
    pub positives: u64,
    /// Area under the ROC curve.
    pub roc_auc: f64,
    /// Area under the precision-recall curve.
    pub pr_auc: f64,
    /// Mean squared error of the probability.
    pub brier: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// F1 at the operating threshold.
    pub f1: f64,
    /// Precision at the operating threshold.
    pub precision: f64,
    /// Recall at the operating threshold.
    pub recall: f64,
}

/// Gaps between subgroups of one protected attribute at one week (largest minus smallest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubgroupGaps {
    /// The attribute grouped by.
    pub attribute: ProtectedAttribute,
    /// As-of week.
    pub week: u16,
    /// Gap in true-positive rate.
    pub tpr_gap: f64,
    /// Gap in false-positive rate.
    pub fpr_gap: f64,
    /// Gap in calibration error.
    pub calibration_gap: f64,
}

/// What a model version was evaluated on and how it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// Model family, e.g. `logistic`.
    pub model: String,
    /// How the data was split, in words (temporal by default; a random split says so).
    pub protocol: String,
    /// Presentations trained on.
    pub train_presentations: Vec<String>,
    /// Presentations evaluated on.
    pub test_presentations: Vec<String>,
    /// Metrics per week.
    pub weeks: Vec<WeekMetrics>,
    /// Fairness gaps per attribute and week.
    pub fairness: Vec<SubgroupGaps>,
}

/// A metric the gate can compare, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    /// ROC AUC, higher is better.
    RocAuc,
    /// PR AUC, higher is better.
    PrAuc,
    /// Brier score, lower is better.
    Brier,
}

impl GateMetric {
    fn of(self, m: &WeekMetrics) -> f64 {
        match self {
            GateMetric::RocAuc => m.roc_auc,
            GateMetric::PrAuc => m.pr_auc,
            GateMetric::Brier => m.brier,
        }
    }

    fn higher_is_better(self) -> bool {
        !matches!(self, GateMetric::Brier)
    }

    /// Name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            GateMetric::RocAuc => "roc_auc",
            GateMetric::PrAuc => "pr_auc",
            GateMetric::Brier => "brier",
        }
    }
}

/// When a candidate may become champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionGate {
    /// The metric compared with the champion's.
    pub metric: GateMetric,
    /// By how much the candidate must beat the champion at every gate week.
    pub margin: f64,
    /// The weeks compared.
    pub weeks: Vec<u16>,
    /// Largest expected calibration error allowed at a gate week.
    pub max_ece: f64,
    /// Largest subgroup gap (TPR, FPR or calibration) allowed at a gate week.
    pub max_fairness_gap: f64,
}

impl Default for PromotionGate {
    fn default() -> Self {
        Self {
            metric: GateMetric::RocAuc,
            margin: 0.0,
            weeks: vec![5, 10, 20],
            max_ece: 0.1,
            max_fairness_gap: 0.2,
        }
    }
}

/// The gate's verdict: passed, or every reason it did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    /// True when every check passed.
    pub passed: bool,
    /// One line per failed check (empty when passed).
    pub reasons: Vec<String>,
}

impl PromotionGate {
    /// Checks `candidate` against the current `champion` (none: only the absolute bounds apply).
    pub fn evaluate(
        &self,
        candidate: &EvaluationReport,
        champion: Option<&EvaluationReport>,
    ) -> GateDecision {
        let mut reasons = Vec::new();
        let week_of = |r: &EvaluationReport, w: u16| r.weeks.iter().find(|m| m.week == w).cloned();
        for &week in &self.weeks {
            let Some(c) = week_of(candidate, week) else {
                reasons.push(format!("the candidate has no evaluation at week {week}"));
                continue;
            };
            if c.ece.is_nan() || c.ece > self.max_ece {
                reasons.push(format!(
                    "week {week}: calibration error {:.3} exceeds {:.3}",
                    c.ece, self.max_ece
                ));
            }
            for g in candidate.fairness.iter().filter(|g| g.week == week) {
                let gaps = [g.tpr_gap, g.fpr_gap, g.calibration_gap];
                let worst = if gaps.iter().any(|g| g.is_nan()) {
                    f64::NAN
                } else {
                    gaps.iter().copied().fold(0.0_f64, f64::max)
                };
                if worst.is_nan() || worst > self.max_fairness_gap {
                    reasons.push(format!(
                        "week {week}: {:?} subgroup gap {worst:.3} exceeds {:.3}",
                        g.attribute, self.max_fairness_gap
                    ));
                }
            }
            if let Some(champion) = champion {
                let Some(ch) = week_of(champion, week) else {
                    continue;
                };
                let (cv, hv) = (self.metric.of(&c), self.metric.of(&ch));
                let better = if self.metric.higher_is_better() {
                    cv >= hv + self.margin
                } else {
                    cv <= hv - self.margin
                };
                if !better {
                    reasons.push(format!(
                        "week {week}: {} {cv:.4} does not beat the champion's {hv:.4} by {}",
                        self.metric.as_str(),
                        self.margin
                    ));
                }
            }
        }
        GateDecision {
            passed: reasons.is_empty(),
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(auc: f64, ece: f64, gap: f64) -> EvaluationReport {
        EvaluationReport {
            model: "logistic".into(),
            protocol: "temporal".into(),
            train_presentations: vec!["BBB-2013B".into()],
            test_presentations: vec!["BBB-2013J".into()],
            weeks: [5, 10, 20]
                .map(|week| WeekMetrics {
                    week,
                    n: 100,
                    positives: 40,
                    roc_auc: auc,
                    pr_auc: auc - 0.1,
                    brier: 0.2,
                    ece,
                    f1: 0.6,
                    precision: 0.6,
                    recall: 0.6,
                })
                .to_vec(),
            fairness: vec![SubgroupGaps {
                attribute: ProtectedAttribute::Gender,
                week: 10,
                tpr_gap: gap,
                fpr_gap: 0.01,
                calibration_gap: 0.01,
            }],
        }
    }

    #[test]
    fn a_better_calibrated_fair_candidate_passes() {
        let gate = PromotionGate {
            margin: 0.01,
            ..PromotionGate::default()
        };
        let d = gate.evaluate(&report(0.85, 0.03, 0.05), Some(&report(0.80, 0.03, 0.05)));
        assert!(d.passed, "{:?}", d.reasons);
        assert!(gate.evaluate(&report(0.85, 0.03, 0.05), None).passed);
    }

    #[test]
    fn every_failed_check_is_a_reason() {
        let gate = PromotionGate {
            margin: 0.01,
            ..PromotionGate::default()
        };
        let d = gate.evaluate(&report(0.805, 0.2, 0.3), Some(&report(0.80, 0.03, 0.05)));
        assert!(!d.passed);
        assert_eq!(d.reasons.len(), 3 + 3 + 1, "{:?}", d.reasons);
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("roc_auc 0.8050 does not beat"))
        );
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("Gender subgroup gap 0.300"))
        );
        let mut missing = report(0.9, 0.01, 0.0);
        missing.weeks.retain(|w| w.week != 20);
        let d = gate.evaluate(&missing, None);
        assert_eq!(
            d.reasons,
            vec!["the candidate has no evaluation at week 20".to_owned()]
        );
    }

    #[test]
    fn lower_is_better_for_brier_and_nan_never_passes() {
        let gate = PromotionGate {
            metric: GateMetric::Brier,
            ..PromotionGate::default()
        };
        let mut worse = report(0.9, 0.01, 0.0);
        worse.weeks.iter_mut().for_each(|w| w.brier = 0.25);
        assert!(!gate.evaluate(&worse, Some(&report(0.8, 0.01, 0.0))).passed);
        assert!(gate.evaluate(&report(0.8, 0.01, 0.0), Some(&worse)).passed);
        assert!(!gate.evaluate(&report(0.8, f64::NAN, 0.0), None).passed);
    }
}
