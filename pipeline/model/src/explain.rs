//! Why a student's risk is what it is. Each feature's contribution is measured the same way for
//! every model family: the change in the model's log-odds when that one feature is set to what
//! is typical, at the same week, for students who went on to pass. Positive contributions push
//! the risk up. Each factor is written in words an advisor can act on, with the typical value
//! beside the student's.

use serde::{Deserialize, Serialize};

/// Typical values to compare a student with: per as-of week, the median of each input column
/// among training students who were not at risk (NaN for categorical columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// `by_week[k][column]`; weeks beyond the last use the last (NaN, written `null`: none).
    #[serde(with = "nan_rows")]
    pub by_week: Vec<Vec<f64>>,
}

impl Reference {
    /// The typical values at `week`.
    pub fn at(&self, week: f64) -> Option<&[f64]> {
        if self.by_week.is_empty() {
            return None;
        }
        let k = if week.is_finite() && week > 0.0 {
            (week as usize).min(self.by_week.len() - 1)
        } else {
            0
        };
        Some(&self.by_week[k])
    }
}

mod nan_rows {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Vec<Option<f64>>> = v
            .iter()
            .map(|r| r.iter().map(|x| (!x.is_nan()).then_some(*x)).collect())
            .collect();
        rows.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let rows = Vec::<Vec<Option<f64>>>::deserialize(d)?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
            .collect())
    }
}

/// One reason for a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Feature name.
    pub feature: String,
    /// The student's value (None when missing).
    pub value: Option<f64>,
    /// The typical value it was compared with.
    pub typical: f64,
    /// Change in log-odds this feature causes against the typical value (positive: riskier).
    pub contribution: f64,
    /// The factor in words.
    pub text: String,
}

fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

fn plural(n: f64, one: &str, many: &str) -> String {
    if (n - 1.0).abs() < 1e-9 {
        format!("1 {one}")
    } else {
        format!("{} {many}", num(n))
    }
}

const EDUCATION: [&str; 5] = [
    "no formal qualifications",
    "lower than A level",
    "A level or equivalent",
    "a higher-education qualification",
    "a postgraduate qualification",
];

/// Whether [`describe`]'s words for factor `name` read the student's other features (through
/// its `get`); for every other factor they are a function of the name, value and typical
/// value alone (a test checks).
pub fn reads_other_values(name: &str) -> bool {
    matches!(name, "assessments_missing" | "assessments_submitted")
}

/// The factor `name` = `value` in words; `typical` is what passing students had at this week
/// and `get` reads the student's other features.
pub fn describe(
    name: &str,
    value: Option<f64>,
    typical: f64,
    get: &dyn Fn(&str) -> Option<f64>,
) -> String {
    let t = num(typical);
    let Some(v) = value else {
        return match name {
            "score_mean" | "score_weighted" => "no marked assessment yet".to_owned(),
            "imd_band" => "home-area deprivation band unknown".to_owned(),
            _ => format!("{name} not recorded"),
        };
    };
    match name {
        "days_since_last_activity" => {
            if v >= 1.0 {
                format!(
                    "no activity for {} (typical: {t})",
                    plural(v, "day", "days")
                )
            } else {
                "active in the last day".to_owned()
            }
        }
        "assessments_missing" => {
            let due = get("assessments_due").unwrap_or(v);
            if v > 0.0 {
                format!("{} of {} assessments due so far missing", num(v), num(due))
            } else if due > 0.0 {
                format!("all {} assessments due so far submitted", num(due))
            } else {
                "no assessment due yet".to_owned()
            }
        }
        "assessments_submitted" => {
            let due = get("assessments_due").unwrap_or(v);
            format!(
                "{} of {} assessments due so far submitted",
                num(v),
                num(due)
            )
        }
        "assessments_due" => format!("{} due so far", plural(v, "assessment", "assessments")),
        "assessments_late" => {
            if v > 0.0 {
                format!("{} submitted late", plural(v, "assessment", "assessments"))
            } else {
                "no late submissions".to_owned()
            }
        }
        "assessments_banked" => format!(
            "{} carried over from an earlier attempt",
            plural(v, "result", "results")
        ),
        "score_mean" => format!("average mark {} (typical: {t})", num(v.round())),
        "score_weighted" => format!("weighted mark so far {} (typical: {t})", num(v.round())),
        "clicks_total" => format!(
            "{} in the VLE so far (typical: {t})",
            plural(v, "click", "clicks")
        ),
        "clicks_this_week" => format!(
            "{} in the VLE this week (typical: {t})",
            plural(v, "click", "clicks")
        ),
        "clicks_last_week" => format!(
            "{} in the VLE last week (typical: {t})",
            plural(v, "click", "clicks")
        ),
        "active_days_total" => format!(
            "active on {} so far (typical: {t})",
            plural(v, "day", "days")
        ),
        "active_days_this_week" => format!(
            "active on {} this week (typical: {t})",
            plural(v, "day", "days")
        ),
        "trend_vs_own" => format!(
            "activity over the last two weeks at {:.0}% of the student's own earlier average",
            v * 100.0
        ),
        "trend_vs_cohort" => format!(
            "activity over the last two weeks at {:.0}% of the course's median student",
            v * 100.0
        ),
        "days_registered_before_start" => {
            if v >= 0.0 {
                format!(
                    "registered {} before the start (typical: {t})",
                    plural(v, "day", "days")
                )
            } else {
                format!("registered {} after the start", plural(-v, "day", "days"))
            }
        }
        "num_of_prev_attempts" => {
            if v > 0.0 {
                format!(
                    "{} at this module",
                    plural(v, "earlier attempt", "earlier attempts")
                )
            } else {
                "first attempt at this module".to_owned()
            }
        }
        "studied_credits" => format!("studying {} credits this year (typical: {t})", num(v)),
        "highest_education" => format!(
            "highest education on entry: {}",
            EDUCATION.get(v as usize).copied().unwrap_or("unknown")
        ),
        _ => {
            if let Some(family) = name
                .strip_prefix("clicks_")
                .and_then(|n| n.strip_suffix("_total"))
            {
                if v > 0.0 {
                    format!(
                        "{} on {family} resources so far (typical: {t})",
                        plural(v, "click", "clicks")
                    )
                } else {
                    format!("no {family} activity so far (typical: {t} clicks)")
                }
            } else {
                format!("{name} = {} (typical: {t})", num(v))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_factors_said_to_read_other_values_depend_on_them() {
        let schema = lodestar_domain::FeatureSchema::standard();
        let none = |_: &str| None;
        let some = |_: &str| Some(7.0);
        for f in &schema.features {
            for value in [None, Some(0.0), Some(1.0), Some(2.5), Some(12.0)] {
                let alone = describe(&f.name, value, 3.0, &none);
                let with = describe(&f.name, value, 3.0, &some);
                if !reads_other_values(&f.name) {
                    assert_eq!(alone, with, "{} = {value:?}", f.name);
                }
            }
        }
        for name in ["assessments_missing", "assessments_submitted"] {
            assert_ne!(
                describe(name, Some(1.0), 0.0, &none),
                describe(name, Some(1.0), 0.0, &some)
            );
        }
    }

    #[test]
    fn factors_read_as_an_advisor_would_say_them() {
        let get = |n: &str| (n == "assessments_due").then_some(3.0);
        assert_eq!(
            describe("days_since_last_activity", Some(12.0), 2.0, &get),
            "no activity for 12 days (typical: 2)"
        );
        assert_eq!(
            describe("assessments_missing", Some(2.0), 0.0, &get),
            "2 of 3 assessments due so far missing"
        );
        assert_eq!(
            describe("clicks_forum_total", Some(0.0), 40.0, &get),
            "no forum activity so far (typical: 40 clicks)"
        );
        assert_eq!(
            describe("score_mean", None, 70.0, &get),
            "no marked assessment yet"
        );
        assert_eq!(
            describe("trend_vs_cohort", Some(0.3), 1.0, &get),
            "activity over the last two weeks at 30% of the course's median student"
        );
    }

    #[test]
    fn reference_weeks_clamp_to_the_last() {
        let r = Reference {
            by_week: vec![vec![1.0], vec![2.0]],
        };
        assert_eq!(r.at(0.0), Some(&[1.0][..]));
        assert_eq!(r.at(7.0), Some(&[2.0][..]));
    }
}
