//! The weekly feature schema: which columns a feature snapshot has, what each means, which are
//! protected characteristics; the as-of-week rules and the outcome label.
//!
//! A feature row describes one student in one presentation "as of week k": it may only use
//! records dated on or before [`AsOfWeek::cutoff_day`]. The label is kept beside the features,
//! never among them.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::activity::ActivityFamily;
use crate::tables::FinalResult;

/// Week `k` of a presentation (week 0 holds days 0–6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AsOfWeek(pub u16);

impl AsOfWeek {
    /// The last day whose records a row as of this week may use: `7k + 6`.
    pub fn cutoff_day(self) -> i32 {
        7 * i32::from(self.0) + 6
    }

    /// The last week of a presentation `length_days` long (days `0..length_days`).
    pub fn last_of(length_days: u16) -> AsOfWeek {
        AsOfWeek(length_days.saturating_sub(1) / 7)
    }

    /// Whether a student is still registered at the end of this week: not unregistered on or
    /// before the cutoff day. Only such students are scored and evaluated.
    pub fn is_still_registered(self, unregistered_day: Option<i32>) -> bool {
        unregistered_day.is_none_or(|d| d > self.cutoff_day())
    }
}

impl fmt::Display for AsOfWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "week {}", self.0)
    }
}

/// Which final results count as "at risk". Default: Fail and Withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRule {
    /// Results that make the label 1.
    pub at_risk: BTreeSet<FinalResult>,
}

impl LabelRule {
    /// The label of a final result.
    pub fn is_at_risk(&self, result: FinalResult) -> bool {
        self.at_risk.contains(&result)
    }
}

impl Default for LabelRule {
    fn default() -> Self {
        Self {
            at_risk: [FinalResult::Fail, FinalResult::Withdrawn].into(),
        }
    }
}

/// A protected characteristic: left out of training by default, grouped by in fairness reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectedAttribute {
    /// `gender`.
    Gender,
    /// `disability`.
    Disability,
    /// `age_band`.
    AgeBand,
    /// `imd_band` (deprivation).
    ImdBand,
    /// `region`.
    Region,
}

/// What part of the record a feature comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureGroup {
    /// Where in the presentation the row is.
    Context,
    /// VLE clicks and activity.
    Activity,
    /// Assessments due so far.
    Assessment,
    /// Registration and study load.
    Registration,
    /// The student's attributes.
    Attribute,
}

/// How a feature's values are encoded in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A count (non-negative integer stored as a number).
    Count,
    /// A continuous number; may be missing (NaN) where the description says so.
    Numeric,
    /// An ordered category encoded 0, 1, 2, …
    Ordinal,
    /// 0 or 1.
    Binary,
    /// An unordered category, stored as text.
    Categorical,
}

/// One column of a feature snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Column name.
    pub name: String,
    /// Where it comes from.
    pub group: FeatureGroup,
    /// Encoding.
    pub kind: FeatureKind,
    /// Set when the column is a protected characteristic.
    pub protected: Option<ProtectedAttribute>,
    /// What it means, in words an advisor understands.
    pub description: String,
}

/// The ordered list of feature columns, with a version that changes whenever their meaning does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// Bumped whenever a column is added, removed or computed differently.
    pub version: u32,
    /// Columns, in snapshot order.
    pub features: Vec<FeatureSpec>,
}

impl FeatureSchema {
    /// Version of [`FeatureSchema::standard`].
    pub const STANDARD_VERSION: u32 = 1;

    /// The standard weekly features built from the canonical tables.
    pub fn standard() -> FeatureSchema {
        use FeatureGroup::{Activity, Assessment, Attribute, Context, Registration};
        use FeatureKind::{Binary, Categorical, Count, Numeric, Ordinal};
        let mut f = Vec::new();
        let mut add = |name: &str, group, kind, protected, description: &str| {
            f.push(FeatureSpec {
                name: name.to_owned(),
                group,
                kind,
                protected,
                description: description.to_owned(),
            });
        };
        add(
            "as_of_week",
            Context,
            Count,
            None,
            "week of the presentation the row describes",
        );
        add(
            "clicks_total",
            Activity,
            Count,
            None,
            "clicks in the VLE so far",
        );
        add(
            "clicks_this_week",
            Activity,
            Count,
            None,
            "clicks in the VLE this week",
        );
        add(
            "clicks_last_week",
            Activity,
            Count,
            None,
            "clicks in the VLE last week",
        );
        for family in ActivityFamily::ALL {
            add(
                &format!("clicks_{family}_total"),
                Activity,
                Count,
                None,
                &format!("clicks on {family} resources so far"),
            );
        }
        add(
            "active_days_total",
            Activity,
            Count,
            None,
            "days with any VLE activity so far",
        );
        add(
            "active_days_this_week",
            Activity,
            Count,
            None,
            "days with VLE activity this week",
        );
        add(
            "days_since_last_activity",
            Activity,
            Numeric,
            None,
            "days since the last VLE activity (since registration if none yet)",
        );
        add(
            "trend_vs_own",
            Activity,
            Numeric,
            None,
            "clicks in the last two weeks relative to the student's own earlier weekly average",
        );
        add(
            "trend_vs_cohort",
            Activity,
            Numeric,
            None,
            "clicks in the last two weeks relative to the presentation's median student",
        );
        add(
            "assessments_due",
            Assessment,
            Count,
            None,
            "assessments due so far",
        );
        add(
            "assessments_submitted",
            Assessment,
            Count,
            None,
            "assessments due so far that were submitted",
        );
        add(
            "assessments_missing",
            Assessment,
            Count,
            None,
            "assessments due so far that were not submitted",
        );
        add(
            "assessments_late",
            Assessment,
            Count,
            None,
            "assessments submitted after their due day",
        );
        add(
            "assessments_banked",
            Assessment,
            Count,
            None,
            "results carried over from an earlier attempt",
        );
        add(
            "score_mean",
            Assessment,
            Numeric,
            None,
            "mean score of marked submissions (missing if none)",
        );
        add(
            "score_weighted",
            Assessment,
            Numeric,
            None,
            "weighted score over assessments due so far, a missing submission counting 0",
        );
        add(
            "days_registered_before_start",
            Registration,
            Numeric,
            None,
            "how many days before the start the student registered",
        );
        add(
            "num_of_prev_attempts",
            Registration,
            Count,
            None,
            "earlier attempts at this module",
        );
        add(
            "studied_credits",
            Registration,
            Count,
            None,
            "credits studied in total this year",
        );
        add(
            "highest_education",
            Attribute,
            Ordinal,
            None,
            "highest education on entry, from no formal qualifications (0) to postgraduate (4)",
        );
        add(
            "gender",
            Attribute,
            Categorical,
            Some(ProtectedAttribute::Gender),
            "gender",
        );
        add(
            "disability",
            Attribute,
            Binary,
            Some(ProtectedAttribute::Disability),
            "declared disability",
        );
        add(
            "age_band",
            Attribute,
            Ordinal,
            Some(ProtectedAttribute::AgeBand),
            "age band: 0-35, 35-55, 55+",
        );
        add(
            "imd_band",
            Attribute,
            Ordinal,
            Some(ProtectedAttribute::ImdBand),
            "deprivation decile of the home area, 0 most deprived (missing if unknown)",
        );
        add(
            "region",
            Attribute,
            Categorical,
            Some(ProtectedAttribute::Region),
            "region of residence",
        );
        FeatureSchema {
            version: Self::STANDARD_VERSION,
            features: f,
        }
    }

    /// The schema less the named features (those a source cannot supply), order kept.
    pub fn without(&self, absent: &[String]) -> FeatureSchema {
        FeatureSchema {
            version: self.version,
            features: self
                .features
                .iter()
                .filter(|f| !absent.contains(&f.name))
                .cloned()
                .collect(),
        }
    }

    /// Column names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// The column called `name`.
    pub fn get(&self, name: &str) -> Option<&FeatureSpec> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The same schema without protected characteristics: what models train on by default.
    pub fn without_protected(&self) -> FeatureSchema {
        FeatureSchema {
            version: self.version,
            features: self
                .features
                .iter()
                .filter(|f| f.protected.is_none())
                .cloned()
                .collect(),
        }
    }

    /// Column names that appear more than once (a valid schema has none).
    pub fn duplicate_names(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.names().filter(|n| !seen.insert(*n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_and_last_week_follow_the_7k_plus_6_rule() {
        assert_eq!(AsOfWeek(0).cutoff_day(), 6);
        assert_eq!(AsOfWeek(5).cutoff_day(), 41);
        // 268 days are days 0..=267; day 267 is in week 38.
        assert_eq!(AsOfWeek::last_of(268), AsOfWeek(38));
        assert_eq!(AsOfWeek::last_of(240), AsOfWeek(34));
        assert_eq!(AsOfWeek::last_of(0), AsOfWeek(0));
    }

    #[test]
    fn a_student_who_left_on_the_cutoff_day_is_no_longer_registered() {
        let week = AsOfWeek(1);
        assert!(week.is_still_registered(None));
        assert!(week.is_still_registered(Some(14)));
        assert!(!week.is_still_registered(Some(13)));
        assert!(!week.is_still_registered(Some(-5)));
    }

    #[test]
    fn default_label_is_fail_or_withdrawn() {
        let rule = LabelRule::default();
        assert!(rule.is_at_risk(FinalResult::Fail) && rule.is_at_risk(FinalResult::Withdrawn));
        assert!(!rule.is_at_risk(FinalResult::Pass) && !rule.is_at_risk(FinalResult::Distinction));
    }

    #[test]
    fn standard_schema_is_consistent() {
        let schema = FeatureSchema::standard();
        assert!(
            schema.duplicate_names().is_empty(),
            "{:?}",
            schema.duplicate_names()
        );
        let protected: Vec<_> = schema.features.iter().filter_map(|f| f.protected).collect();
        assert_eq!(
            protected.len(),
            5,
            "gender, disability, age band, imd band, region"
        );
        let training = schema.without_protected();
        assert_eq!(training.features.len(), schema.features.len() - 5);
        assert!(training.get("gender").is_none() && training.get("clicks_total").is_some());
        assert!(schema.get("clicks_forum_total").is_some());
        let json = serde_json::to_string(&schema).unwrap();
        assert_eq!(
            serde_json::from_str::<FeatureSchema>(&json).unwrap(),
            schema
        );
    }
}
