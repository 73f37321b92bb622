//! The evaluation report a trained model version carries, and the promotion gate that compares a
//! candidate's report with the champion's. Pure rules: the store applies them, training fills the
//! report.

use serde::{Deserialize, Serialize};

use crate::features::ProtectedAttribute;

/// Counts at the operating threshold (at risk is the positive class).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Flagged and at risk.
    pub tp: u64,
    /// Flagged but not at risk.
    pub fp: u64,
    /// Not flagged and not at risk.
    pub tn: u64,
    /// Not flagged but at risk.
    pub fn_: u64,
}

/// One bin of a reliability diagram: predictions in `[lower, upper)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower bound of the predicted probability.
    #[serde(with = "crate::nan_as_null")]
    pub lower: f64,
    /// Upper bound (the last bin includes 1).
    #[serde(with = "crate::nan_as_null")]
    pub upper: f64,
    /// Predictions in the bin.
    pub count: u64,
    /// Their mean predicted probability (NaN when empty).
    #[serde(with = "crate::nan_as_null")]
    pub mean_predicted: f64,
    /// The fraction of them at risk (NaN when empty).
    #[serde(with = "crate::nan_as_null")]
    pub observed: f64,
}

/// Metrics of one model at one as-of week, on the evaluated population (students still
/// registered at the end of that week).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeekMetrics {
    /// As-of week.
    pub week: u16,
    /// Students evaluated.
    pub n: u64,
    /// Of which at risk.
    pub positives: u64,
    /// Area under the ROC curve.
    #[serde(with = "crate::nan_as_null")]
    pub roc_auc: f64,
    /// Area under the precision-recall curve.
    #[serde(with = "crate::nan_as_null")]
    pub pr_auc: f64,
    /// Mean squared error of the probability.
    #[serde(with = "crate::nan_as_null")]
    pub brier: f64,
    /// Expected calibration error.
    #[serde(with = "crate::nan_as_null")]
    pub ece: f64,
    /// F1 at the operating threshold.
    #[serde(with = "crate::nan_as_null")]
    pub f1: f64,
    /// Precision at the operating threshold.
    #[serde(with = "crate::nan_as_null")]
    pub precision: f64,
    /// Recall at the operating threshold.
    #[serde(with = "crate::nan_as_null")]
    pub recall: f64,
    /// The operating threshold the counts use.
    #[serde(default)]
    #[serde(with = "crate::nan_as_null")]
    pub threshold: f64,
    /// Counts at the operating threshold.
    #[serde(default)]
    pub confusion: Confusion,
    /// Reliability diagram (equal-width bins) of the served, calibrated probability.
    #[serde(default)]
    pub reliability: Vec<ReliabilityBin>,
    /// Expected calibration error of the model's probability before calibration.
    #[serde(default)]
    pub ece_uncalibrated: Option<f64>,
    /// Brier score before calibration.
    #[serde(default)]
    pub brier_uncalibrated: Option<f64>,
    /// Points `[false-positive rate, true-positive rate]` of the ROC curve, thinned for charts.
    #[serde(default)]
    pub roc_curve: Vec<[f64; 2]>,
}

/// The metrics of one subgroup (e.g. gender `F`) at one week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubgroupMetrics {
    /// The attribute grouped by.
    pub attribute: ProtectedAttribute,
    /// The group's value as written in the export.
    pub group: String,
    /// As-of week.
    pub week: u16,
    /// Students in the group.
    pub n: u64,
    /// Of which at risk.
    pub positives: u64,
    /// ROC AUC within the group (NaN when it has one class only).
    #[serde(with = "crate::nan_as_null")]
    pub roc_auc: f64,
    /// True-positive rate at the operating threshold.
    #[serde(with = "crate::nan_as_null")]
    pub tpr: f64,
    /// False-positive rate at the operating threshold.
    #[serde(with = "crate::nan_as_null")]
    pub fpr: f64,
    /// Expected calibration error within the group.
    #[serde(with = "crate::nan_as_null")]
    pub ece: f64,
    /// Mean predicted probability minus the observed at-risk rate.
    #[serde(with = "crate::nan_as_null")]
    pub calibration_in_the_large: f64,
    /// True-positive rate adjusted for course mix (see [`FairnessMethod::CourseMixAdjusted`]):
    /// the overall TPR plus how far the group's TPR lies from the TPR expected from the
    /// presentations its at-risk students are in. The gated TPR gap is the range of this over
    /// the measured groups. Not bounded to `[0, 1]`. NaN when undefined (no at-risk student),
    /// and in reports made before the adjustment. `tpr` stays the pooled rate.
    #[serde(default = "nan", with = "crate::nan_as_null")]
    pub adjusted_tpr: f64,
    /// False-positive rate adjusted for course mix, likewise over the group's students not at
    /// risk.
    #[serde(default = "nan", with = "crate::nan_as_null")]
    pub adjusted_fpr: f64,
    /// Calibration-in-the-large adjusted for course mix: the overall calibration-in-the-large
    /// plus the group's own minus the one expected from its students' presentations.
    #[serde(default = "nan", with = "crate::nan_as_null")]
    pub adjusted_calibration_in_the_large: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// How the gated subgroup gaps of a report ([`EvaluationReport::fairness`]) were computed.
///
/// Stored reports made before the course-mix adjustment carry no method and read as
/// [`FairnessMethod::Pooled`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FairnessMethod {
    /// Pooled over every tested presentation: a group's rate is taken over all its students,
    /// whatever course they take. When modules differ in base rate and in how many students get
    /// flagged, and groups differ in which modules they take, these gaps mostly measure the
    /// course mix, not how the model treats a group within a course.
    #[default]
    Pooled,
    /// Adjusted for course mix by indirect standardisation on the tested presentation (module
    /// and term). The question answered is "among students of the same course presentation, does
    /// the model flag one group's not-at-risk students more, or catch fewer of its at-risk
    /// students?".
    ///
    /// For group `g`: the expected TPR is the mean, over `g`'s at-risk students, of a reference
    /// TPR of their presentation; the adjusted TPR is
    /// `overall TPR + (observed TPR of g - expected TPR of g)`. FPR is the same over students
    /// not at risk, and calibration-in-the-large (mean probability minus observed at-risk rate)
    /// the same over all students. A gap is the largest minus the smallest adjusted rate over
    /// the measured groups (at least 30 students, `unknown` left out; the calibration gap over
    /// absolute adjusted calibration-in-the-large, as for pooled gaps).
    ///
    /// The reference rate of a presentation starts as its rate over all its students (textbook
    /// indirect standardisation) and is then freed of the presentation's own group mix: it
    /// contains `g`'s own students, so where `g` is most of a course the textbook comparison is
    /// largely with itself and understates a within-course difference (to about 0.65 of it in
    /// 80/20 courses). The references and group differences are re-estimated in turn until they
    /// settle, which is the least-squares fit of "rate = presentation effect + group effect"
    /// over students: a difference that holds within every presentation is recovered whatever
    /// the mix; otherwise the gap averages the within-presentation differences, weighted by how
    /// many students of both groups each presentation holds.
    ///
    /// With one tested presentation the adjusted gaps are the pooled ones. A presentation
    /// holding one group only adds no evidence either way. Intervals come from a bootstrap
    /// stratified by presentation and group (the course mix is held as observed).
    CourseMixAdjusted,
}

/// What including the protected attributes as features changes, at one week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectedComparison {
    /// As-of week.
    pub week: u16,
    /// ROC AUC without protected attributes (the default model).
    #[serde(with = "crate::nan_as_null")]
    pub roc_auc_without: f64,
    /// ROC AUC with them.
    #[serde(with = "crate::nan_as_null")]
    pub roc_auc_with: f64,
    /// Largest TPR gap over the attributes, without them.
    #[serde(with = "crate::nan_as_null")]
    pub max_tpr_gap_without: f64,
    /// Largest TPR gap over the attributes, with them.
    #[serde(with = "crate::nan_as_null")]
    pub max_tpr_gap_with: f64,
    /// Largest FPR gap over the attributes, without them.
    #[serde(with = "crate::nan_as_null")]
    pub max_fpr_gap_without: f64,
    /// Largest FPR gap over the attributes, with them.
    #[serde(with = "crate::nan_as_null")]
    pub max_fpr_gap_with: f64,
}

/// Gaps between subgroups of one protected attribute at one week (largest minus smallest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubgroupGaps {
    /// The attribute grouped by.
    pub attribute: ProtectedAttribute,
    /// As-of week.
    pub week: u16,
    /// Gap in true-positive rate.
    #[serde(with = "crate::nan_as_null")]
    pub tpr_gap: f64,
    /// Gap in false-positive rate.
    #[serde(with = "crate::nan_as_null")]
    pub fpr_gap: f64,
    /// Gap in calibration error.
    #[serde(with = "crate::nan_as_null")]
    pub calibration_gap: f64,
    /// 95 % bootstrap interval of the TPR gap (none in reports made before intervals were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpr_interval: Option<Interval>,
    /// 95 % bootstrap interval of the FPR gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpr_interval: Option<Interval>,
    /// 95 % bootstrap interval of the calibration gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_interval: Option<Interval>,
    /// The groups the gaps are measured over, with their sizes (groups too small to measure are
    /// in the report's subgroups and notes, never in a gap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured: Vec<(String, u64)>,
}

/// A 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    #[serde(with = "crate::nan_as_null")]
    pub low: f64,
    /// Upper end.
    #[serde(with = "crate::nan_as_null")]
    pub high: f64,
}

/// What a model version was evaluated on and how it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Fairness gaps per attribute and week: what the gate judges, computed as
    /// `fairness_method` says (adjusted for course mix in reports made since the adjustment).
    pub fairness: Vec<SubgroupGaps>,
    /// How the gaps in `fairness` were computed (pooled in reports made before the adjustment).
    #[serde(default)]
    pub fairness_method: FairnessMethod,
    /// The same gaps pooled over the tested presentations, with their intervals, for reference
    /// (empty in reports made before the adjustment, where `fairness` itself is pooled). Not
    /// gated, except to compare with a champion whose report has pooled gaps only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fairness_pooled: Vec<SubgroupGaps>,
    /// Metrics per subgroup, attribute and week (the basis of the gaps).
    #[serde(default)]
    pub subgroups: Vec<SubgroupMetrics>,
    /// How the served probability was calibrated, in words (method and data).
    #[serde(default)]
    pub calibration: String,
    /// What including protected attributes changes (empty when not measured).
    #[serde(default)]
    pub protected_comparison: Vec<ProtectedComparison>,
    /// Caveats a reader must see (e.g. a random split's optimism, small subgroups).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl EvaluationReport {
    /// The report as Markdown sections of a model card: data and population, metrics by week,
    /// calibration, fairness, what protected attributes change, caveats and limitations.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut md = String::new();
        let _ = writeln!(md, "## What it is");
        let _ = writeln!(
            md,
            "A `{}` model estimating, for each student still registered at the end of an as-of week, \
             the probability of an at-risk outcome (Fail or Withdrawn unless the training configuration says otherwise).\n",
            self.model
        );
        let _ = writeln!(md, "## Data and population");
        let _ = writeln!(md, "- Evaluation protocol: {}", self.protocol);
        let _ = writeln!(md, "- Trained on: {}", self.train_presentations.join(", "));
        let _ = writeln!(md, "- Evaluated on: {}", self.test_presentations.join(", "));
        let _ = writeln!(
            md,
            "- Population at week k: students still registered at the end of week k (no unregistration on or before day 7k+6).\n"
        );
        let _ = writeln!(md, "## Metrics by week\n");
        let _ = writeln!(
            md,
            "| week | students | at risk | ROC AUC | PR AUC | Brier | ECE | precision | recall | F1 | threshold | TP | FP | TN | FN |"
        );
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for w in &self.weeks {
            let c = w.confusion;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {} | {} | {} | {} |",
                w.week,
                w.n,
                w.positives,
                w.roc_auc,
                w.pr_auc,
                w.brier,
                w.ece,
                w.precision,
                w.recall,
                w.f1,
                w.threshold,
                c.tp,
                c.fp,
                c.tn,
                c.fn_
            );
        }
        let _ = writeln!(md, "\n## Calibration\n");
        if !self.calibration.is_empty() {
            let _ = writeln!(md, "{}\n", self.calibration);
        }
        if self.weeks.iter().any(|w| w.ece_uncalibrated.is_some()) {
            let _ = writeln!(
                md,
                "| week | ECE before | ECE after | Brier before | Brier after |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|");
            for w in &self.weeks {
                let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.3} | {} | {:.3} |",
                    w.week,
                    opt(w.ece_uncalibrated),
                    w.ece,
                    opt(w.brier_uncalibrated),
                    w.brier
                );
            }
        }
        for w in &self.weeks {
            if w.reliability.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "\nReliability at week {} (predicted → observed, count):",
                w.week
            );
            for b in w.reliability.iter().filter(|b| b.count > 0) {
                let _ = writeln!(
                    md,
                    "- [{:.1}, {:.1}): {:.3} → {:.3} ({})",
                    b.lower, b.upper, b.mean_predicted, b.observed, b.count
                );
            }
        }
        let _ = writeln!(md, "\n## Fairness\n");
        if self.fairness.is_empty() {
            let _ = writeln!(md, "No subgroup evaluation was stored for this version.");
        } else {
            let adjusted = self.fairness_method == FairnessMethod::CourseMixAdjusted;
            if adjusted {
                let _ = writeln!(
                    md,
                    "Gaps are adjusted for course mix: each group's rate is compared with the rate expected from the course presentations its students are in, so a gap measures how differently the model treats groups within the same course, not which courses they take. The gaps pooled over all tested presentations are listed for reference.\n"
                );
            } else {
                let _ = writeln!(
                    md,
                    "Gaps are pooled over every tested presentation (not adjusted for course mix).\n"
                );
            }
            let interval = |v: f64, i: Option<Interval>| match i {
                Some(i) => format!("{v:.3} ({:.3}–{:.3})", i.low, i.high),
                None => format!("{v:.3}"),
            };
            let _ = writeln!(
                md,
                "| attribute | week | TPR gap (95% interval) | FPR gap | calibration gap | pooled TPR / FPR / calibration gap | groups |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|");
            for g in &self.fairness {
                let pooled = if adjusted {
                    self.fairness_pooled
                        .iter()
                        .find(|h| h.week == g.week && h.attribute == g.attribute)
                } else {
                    Some(g)
                };
                let _ = writeln!(
                    md,
                    "| {:?} | {} | {} | {} | {} | {} | {} |",
                    g.attribute,
                    g.week,
                    interval(g.tpr_gap, g.tpr_interval),
                    interval(g.fpr_gap, g.fpr_interval),
                    interval(g.calibration_gap, g.calibration_interval),
                    pooled.map_or_else(
                        || "-".to_owned(),
                        |h| format!(
                            "{:.3} / {:.3} / {:.3}",
                            h.tpr_gap, h.fpr_gap, h.calibration_gap
                        )
                    ),
                    g.measured
                        .iter()
                        .map(|(name, n)| format!("{name} ({n})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if !self.subgroups.is_empty() {
            let _ = writeln!(
                md,
                "\n| attribute | group | week | students | at risk | ROC AUC | TPR | FPR | ECE | TPR adjusted | FPR adjusted |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
            for g in &self.subgroups {
                let _ = writeln!(
                    md,
                    "| {:?} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    g.attribute,
                    g.group,
                    g.week,
                    g.n,
                    g.positives,
                    g.roc_auc,
                    g.tpr,
                    g.fpr,
                    g.ece,
                    g.adjusted_tpr,
                    g.adjusted_fpr
                );
            }
        }
        if !self.protected_comparison.is_empty() {
            let _ = writeln!(md, "\n### With protected attributes as features\n");
            let _ = writeln!(
                md,
                "The served model leaves gender, disability, age band, deprivation band and region out. Trained with them:\n"
            );
            let _ = writeln!(
                md,
                "| week | ROC AUC without | with | max TPR gap without | with | max FPR gap without | with |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|");
            for c in &self.protected_comparison {
                let _ = writeln!(
                    md,
                    "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    c.week,
                    c.roc_auc_without,
                    c.roc_auc_with,
                    c.max_tpr_gap_without,
                    c.max_tpr_gap_with,
                    c.max_fpr_gap_without,
                    c.max_fpr_gap_with
                );
            }
        }
        let _ = writeln!(md, "\n## Limitations\n");
        for n in &self.notes {
            let _ = writeln!(md, "- {n}");
        }
        let _ = writeln!(
            md,
            "- Evaluated on the presentations above only; a new module, cohort or LMS change can shift accuracy and calibration."
        );
        let _ = writeln!(
            md,
            "- A score is a prompt for an advisor's conversation, not a decision about a student; check the reasons shown with it."
        );
        let _ = writeln!(
            md,
            "- Subgroups with few students have wide uncertainty: read a gap with its 95% bootstrap interval."
        );
        md
    }
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
    /// The metric's value in one week's metrics.
    pub fn of(self, m: &WeekMetrics) -> f64 {
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
    #[serde(with = "crate::nan_as_null")]
    pub margin: f64,
    /// The weeks compared.
    pub weeks: Vec<u16>,
    /// Largest expected calibration error allowed at a gate week.
    #[serde(with = "crate::nan_as_null")]
    pub max_ece: f64,
    /// Largest subgroup gap (TPR, FPR or calibration) allowed at a gate week.
    #[serde(with = "crate::nan_as_null")]
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

/// The three gaps of one attribute at one week: name, estimate, interval.
fn gap_metrics(g: &SubgroupGaps) -> [(&'static str, f64, Option<Interval>); 3] {
    [
        ("TPR", g.tpr_gap, g.tpr_interval),
        ("FPR", g.fpr_gap, g.fpr_interval),
        ("calibration", g.calibration_gap, g.calibration_interval),
    ]
}

/// An interval with both ends finite.
fn finite(i: Option<Interval>) -> Option<Interval> {
    i.filter(|i| i.low.is_finite() && i.high.is_finite())
}

/// The measured groups with their sizes, e.g. `F (1203), M (1544)`.
fn group_sizes(g: &SubgroupGaps) -> String {
    g.measured
        .iter()
        .map(|(name, n)| format!("{name} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl EvaluationReport {
    /// The report's subgroup gaps computed by `method`, where it has them: `fairness` when that
    /// is the report's method; the pooled gaps kept beside adjusted ones when asked for pooled.
    pub fn gaps_by(&self, method: FairnessMethod) -> Option<&[SubgroupGaps]> {
        if self.fairness_method == method {
            Some(&self.fairness)
        } else if method == FairnessMethod::Pooled && !self.fairness_pooled.is_empty() {
            Some(&self.fairness_pooled)
        } else {
            None
        }
    }
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
            self.judge_gaps(candidate, champion, week, &mut reasons);
            if let Some(champion) = champion {
                // A week the champion was not evaluated at is no evidence either way: refuse.
                let Some(ch) = week_of(champion, week) else {
                    reasons.push(format!(
                        "week {week}: the champion has no evaluation at week {week} to compare with"
                    ));
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

    /// The subgroup-gap checks at one gate week.
    ///
    /// The candidate's gated gaps ([`EvaluationReport::fairness`], adjusted for course mix in
    /// reports made since the adjustment) refuse where the 95% interval lies entirely above
    /// `max_fairness_gap` (the point estimate decides for a report without intervals). A gap
    /// also refuses where its interval lies entirely above the champion's interval, compared
    /// like with like: adjusted with adjusted; when the champion's report predates the
    /// adjustment, the pooled gaps both reports carry. A gap refused on the limit is not refused
    /// again against the champion.
    fn judge_gaps(
        &self,
        candidate: &EvaluationReport,
        champion: Option<&EvaluationReport>,
        week: u16,
        reasons: &mut Vec<String>,
    ) {
        let adjusted = candidate.fairness_method == FairnessMethod::CourseMixAdjusted;
        let pooled_value = |g: &SubgroupGaps, m: usize| {
            candidate
                .fairness_pooled
                .iter()
                .find(|h| h.week == g.week && h.attribute == g.attribute)
                .map(|h| gap_metrics(h)[m].1)
        };
        let mut refused = Vec::new();
        for g in candidate.fairness.iter().filter(|g| g.week == week) {
            let gaps = gap_metrics(g);
            if gaps.iter().any(|(_, v, _)| v.is_nan()) {
                reasons.push(format!(
                    "week {week}: {:?} subgroup gap NaN exceeds {:.3}",
                    g.attribute, self.max_fairness_gap
                ));
                refused.extend(["TPR", "FPR", "calibration"].map(|m| (g.attribute, m)));
                continue;
            }
            for (m, (what, value, interval)) in gaps.into_iter().enumerate() {
                let (how, pooled) = if adjusted {
                    (
                        " adjusted for course mix",
                        pooled_value(g, m)
                            .map(|v| format!("; pooled over courses it is {v:.3}"))
                            .unwrap_or_default(),
                    )
                } else {
                    ("", String::new())
                };
                match finite(interval) {
                    // With its uncertainty: refused only where the whole interval is above the
                    // limit.
                    Some(i) => {
                        if i.low > self.max_fairness_gap {
                            refused.push((g.attribute, what));
                            reasons.push(format!(
                                "week {week}: {:?} {what} gap{how} {value:.3} (95% interval {:.3} to {:.3}) exceeds {:.3}; groups: {}{pooled}",
                                g.attribute,
                                i.low,
                                i.high,
                                self.max_fairness_gap,
                                group_sizes(g)
                            ));
                        }
                    }
                    // A report without intervals: the point estimate decides, as before.
                    None => {
                        if value > self.max_fairness_gap {
                            refused.push((g.attribute, what));
                            reasons.push(if adjusted {
                                format!(
                                    "week {week}: {:?} subgroup gap {value:.3} exceeds {:.3} ({what} gap{how}; groups: {}{pooled})",
                                    g.attribute,
                                    self.max_fairness_gap,
                                    group_sizes(g)
                                )
                            } else {
                                format!(
                                    "week {week}: {:?} subgroup gap {value:.3} exceeds {:.3}",
                                    g.attribute, self.max_fairness_gap
                                )
                            });
                        }
                    }
                }
            }
        }
        // Against the champion, like with like.
        let Some(champion) = champion else { return };
        let (ours, theirs, basis, why) = match champion.gaps_by(candidate.fairness_method) {
            Some(theirs) => (
                Some(&candidate.fairness[..]),
                Some(theirs),
                if adjusted {
                    " adjusted for course mix"
                } else {
                    ""
                },
                "",
            ),
            None => (
                candidate.gaps_by(FairnessMethod::Pooled),
                champion.gaps_by(FairnessMethod::Pooled),
                " pooled over courses",
                " (the champion's report has no gaps adjusted for course mix to compare with)",
            ),
        };
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            return;
        };
        for g in ours.iter().filter(|g| g.week == week) {
            let Some(h) = theirs
                .iter()
                .find(|h| h.week == week && h.attribute == g.attribute)
            else {
                continue;
            };
            for ((what, value, interval), (_, _, champion_interval)) in
                gap_metrics(g).into_iter().zip(gap_metrics(h))
            {
                if refused.contains(&(g.attribute, what)) || value.is_nan() {
                    continue;
                }
                if let (Some(i), Some(c)) = (finite(interval), finite(champion_interval))
                    && i.low > c.high
                {
                    reasons.push(format!(
                        "week {week}: {:?} {what} gap{basis} {value:.3} (95% interval {:.3} to {:.3}) is credibly wider than the champion's (up to {:.3}){why}; groups: {}",
                        g.attribute,
                        i.low,
                        i.high,
                        c.high,
                        group_sizes(g)
                    ));
                }
            }
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
                    ..WeekMetrics::default()
                })
                .to_vec(),
            fairness: vec![SubgroupGaps {
                attribute: ProtectedAttribute::Gender,
                week: 10,
                tpr_gap: gap,
                fpr_gap: 0.01,
                calibration_gap: 0.01,
                tpr_interval: None,
                fpr_interval: None,
                calibration_interval: None,
                measured: vec![],
            }],
            ..EvaluationReport::default()
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
    fn a_gate_week_missing_from_the_champion_refuses() {
        let gate = PromotionGate::default();
        let mut champion = report(0.7, 0.01, 0.0);
        champion.weeks.retain(|w| w.week != 10);
        let d = gate.evaluate(&report(0.9, 0.01, 0.0), Some(&champion));
        assert!(!d.passed);
        assert_eq!(
            d.reasons,
            vec!["week 10: the champion has no evaluation at week 10 to compare with".to_owned()]
        );
    }

    #[test]
    fn an_undefined_metric_round_trips_through_json_as_null() {
        let mut r = report(0.8, 0.02, 0.01);
        r.weeks[0].roc_auc = f64::NAN;
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"roc_auc\":null"), "{json}");
        let back: EvaluationReport = serde_json::from_str(&json).unwrap();
        assert!(back.weeks[0].roc_auc.is_nan());
        assert_eq!(back.weeks[1], r.weeks[1]);
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

    fn gaps(tpr: f64, low: f64, high: f64) -> SubgroupGaps {
        SubgroupGaps {
            attribute: ProtectedAttribute::Gender,
            week: 10,
            tpr_gap: tpr,
            fpr_gap: 0.01,
            calibration_gap: 0.01,
            tpr_interval: Some(Interval { low, high }),
            fpr_interval: Some(Interval {
                low: 0.0,
                high: 0.05,
            }),
            calibration_interval: Some(Interval {
                low: 0.0,
                high: 0.05,
            }),
            measured: vec![("F".into(), 1203), ("M".into(), 1544)],
        }
    }

    /// A report whose gated gaps are adjusted for course mix, with its pooled gaps beside.
    fn adjusted(adjusted: SubgroupGaps, pooled: SubgroupGaps) -> EvaluationReport {
        EvaluationReport {
            fairness: vec![adjusted],
            fairness_method: FairnessMethod::CourseMixAdjusted,
            fairness_pooled: vec![pooled],
            ..report(0.8, 0.02, 0.0)
        }
    }

    #[test]
    fn the_gate_judges_the_adjusted_gaps_and_says_so() {
        let gate = PromotionGate::default();
        // Pooled over courses the gap is large; within courses it is not: passes.
        let fair = adjusted(gaps(0.05, 0.0, 0.1), gaps(0.35, 0.3, 0.4));
        assert!(gate.evaluate(&fair, None).passed);
        // Credibly above the limit within courses: refused, naming attribute, groups, sizes,
        // interval and the adjustment.
        let unfair = adjusted(gaps(0.3, 0.25, 0.35), gaps(0.1, 0.05, 0.15));
        let d = gate.evaluate(&unfair, None);
        assert_eq!(
            d.reasons,
            vec![
                "week 10: Gender TPR gap adjusted for course mix 0.300 (95% interval 0.250 to 0.350) exceeds 0.200; groups: F (1203), M (1544); pooled over courses it is 0.100"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn the_champion_is_compared_like_with_like() {
        let gate = PromotionGate::default();
        // Both adjusted: the adjusted intervals are compared.
        let champion = adjusted(gaps(0.02, 0.0, 0.05), gaps(0.3, 0.25, 0.35));
        let candidate = adjusted(gaps(0.12, 0.08, 0.16), gaps(0.12, 0.08, 0.16));
        let d = gate.evaluate(&candidate, Some(&champion));
        assert!(
            d.reasons.iter().any(|r| r.contains(
                "Gender TPR gap adjusted for course mix 0.120 (95% interval 0.080 to 0.160) is credibly wider than the champion's (up to 0.050)"
            )),
            "{:?}",
            d.reasons
        );
        // A champion whose report predates the adjustment: its pooled gaps against the
        // candidate's pooled ones.
        let mut old = report(0.7, 0.02, 0.0);
        old.fairness = vec![gaps(0.1, 0.05, 0.15)];
        let candidate = adjusted(gaps(0.02, 0.0, 0.05), gaps(0.19, 0.17, 0.21));
        let d = gate.evaluate(&candidate, Some(&old));
        assert_eq!(d.reasons.len(), 1, "{:?}", d.reasons);
        assert!(
            d.reasons[0].contains("Gender TPR gap pooled over courses 0.190")
                && d.reasons[0].contains("no gaps adjusted for course mix"),
            "{:?}",
            d.reasons
        );
        let candidate = adjusted(gaps(0.02, 0.0, 0.05), gaps(0.12, 0.08, 0.16));
        assert!(gate.evaluate(&candidate, Some(&old)).passed);
    }

    #[test]
    fn a_report_stored_before_the_adjustment_reads_as_pooled() {
        let mut r = adjusted(gaps(0.05, 0.0, 0.1), gaps(0.35, 0.3, 0.4));
        r.subgroups = vec![SubgroupMetrics {
            attribute: ProtectedAttribute::Gender,
            group: "F".into(),
            week: 10,
            n: 1203,
            positives: 400,
            roc_auc: 0.8,
            tpr: 0.7,
            fpr: 0.2,
            ece: 0.03,
            calibration_in_the_large: 0.01,
            adjusted_tpr: 0.72,
            adjusted_fpr: 0.19,
            adjusted_calibration_in_the_large: 0.0,
        }];
        let json = serde_json::to_value(&r).unwrap();
        let back: EvaluationReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, r);
        // The stored JSON of an older report has none of the new fields.
        let mut old = json;
        let o = old.as_object_mut().unwrap();
        o.remove("fairness_method");
        o.remove("fairness_pooled");
        for g in o["subgroups"].as_array_mut().unwrap() {
            let g = g.as_object_mut().unwrap();
            for k in [
                "adjusted_tpr",
                "adjusted_fpr",
                "adjusted_calibration_in_the_large",
            ] {
                assert!(g.remove(k).is_some(), "{k}");
            }
        }
        let back: EvaluationReport = serde_json::from_value(old).unwrap();
        assert_eq!(back.fairness_method, FairnessMethod::Pooled);
        assert!(back.fairness_pooled.is_empty());
        assert!(back.subgroups[0].adjusted_tpr.is_nan());
        assert_eq!(
            back.gaps_by(FairnessMethod::Pooled).unwrap(),
            &back.fairness[..]
        );
        assert!(back.gaps_by(FairnessMethod::CourseMixAdjusted).is_none());
    }
}
