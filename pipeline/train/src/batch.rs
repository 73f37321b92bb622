//! Batch work over a snapshot with a trained artifact: scoring tonight's active students (with
//! explanations) and the population stability index of every feature between two snapshots.

use std::collections::BTreeMap;

use lodestar_model::encode::Cell;
use lodestar_model::{Artifact, Prediction};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::{Numbers, RawColumn, Snapshot};
use crate::evaluate::source_columns;

/// The rows to score: in each of `presentations`, the students still registered at the as-of
/// week, which is `week` when given, else the latest week the presentation has rows for (in a
/// live export, the current week).
pub fn current_rows(s: &Snapshot, presentations: &[u32], week: Option<u16>) -> Vec<usize> {
    let latest = latest_weeks(s, presentations);
    (0..s.len())
        .filter(|r| {
            let p = s.presentation[*r];
            latest.contains_key(&p) && s.active[*r] && s.week[*r] == week.unwrap_or(latest[&p])
        })
        .collect()
}

/// Each of `presentations`' latest week in the snapshot.
fn latest_weeks(s: &Snapshot, presentations: &[u32]) -> BTreeMap<u32, u16> {
    let mut latest: BTreeMap<u32, u16> = BTreeMap::new();
    for r in 0..s.len() {
        let p = s.presentation[r];
        if presentations.contains(&p) {
            let w = latest.entry(p).or_insert(0);
            *w = (*w).max(s.week[r]);
        }
    }
    latest
}

/// Rows of `presentations` for every week up to each one's latest (or `week`), students still
/// registered at each: a first scoring of a course that is under way fills its risk history.
pub fn history_rows(s: &Snapshot, presentations: &[u32], week: Option<u16>) -> Vec<usize> {
    let latest = latest_weeks(s, presentations);
    (0..s.len())
        .filter(|r| {
            let p = s.presentation[*r];
            latest.contains_key(&p) && s.active[*r] && s.week[*r] <= week.unwrap_or(latest[&p])
        })
        .collect()
}

/// The features an advisor reads as a student's week (activity and assessments), stored with
/// each prediction for the dashboard's timeline.
pub const CONTEXT_FEATURES: [&str; 9] = [
    "clicks_this_week",
    "active_days_this_week",
    "clicks_total",
    "days_since_last_activity",
    "assessments_due",
    "assessments_submitted",
    "assessments_missing",
    "assessments_late",
    "score_mean",
];

/// Where a snapshot keeps the [`CONTEXT_FEATURES`] it has (numeric columns only), found once
/// and read for every row.
#[derive(Debug, Clone)]
pub struct ContextColumns(Vec<(&'static str, usize)>);

impl ContextColumns {
    /// The context features `s` has, with their column.
    pub fn of(s: &Snapshot) -> ContextColumns {
        ContextColumns(
            CONTEXT_FEATURES
                .iter()
                .filter_map(|name| {
                    let i = s.schema.features.iter().position(|f| f.name == *name)?;
                    matches!(s.columns.get(i), Some(RawColumn::Num(_))).then_some((*name, i))
                })
                .collect(),
        )
    }

    /// Row `row`'s context into `out`: feature and value, missing values left out.
    pub fn read(&self, s: &Snapshot, row: usize, out: &mut Vec<(&'static str, f64)>) {
        out.clear();
        for (name, i) in &self.0 {
            if let RawColumn::Num(v) = &s.columns[*i]
                && v.get(row).is_finite()
            {
                out.push((name, v.get(row)));
            }
        }
    }
}

/// Scores and explains `rows` with `a` (its inputs matched to the snapshot's columns by name).
pub fn score_rows(
    s: &Snapshot,
    a: &Artifact,
    rows: &[usize],
) -> Result<Vec<Prediction>, TrainError> {
    let source = source_columns(s, a)?;
    let columns = &a.encoder.columns;
    Ok(rows
        .iter()
        .map(|r| {
            let cells: Vec<Cell> = (0..columns.len())
                .map(|c| s.cell(source[c], *r, &columns[c].categories))
                .collect();
            a.score_cells(&cells)
        })
        .collect())
}

/// How far one feature's distribution moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// Feature.
    pub feature: String,
    /// Population stability index: under 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25
    /// a major one.
    pub psi: f64,
    /// Bins compared (deciles of the reference, or categories, plus missing).
    pub bins: usize,
}

/// Smallest share a bin counts with, so an empty bin gives a large but finite index.
const FLOOR: f64 = 1e-4;

fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (rt, ct) = (
        reference.iter().sum::<f64>().max(1.0),
        current.iter().sum::<f64>().max(1.0),
    );
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = ((r / rt).max(FLOOR), (c / ct).max(FLOOR));
            (c - r) * (c / r).ln()
        })
        .sum()
}

fn numeric_counts(values: &Numbers, rows: &[usize], cuts: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; cuts.len() + 2];
    for r in rows {
        let v = values.get(*r);
        let bin = if v.is_nan() {
            cuts.len() + 1
        } else {
            cuts.partition_point(|c| *c < v)
        };
        counts[bin] += 1.0;
    }
    counts
}

/// The population stability index of every feature of `current` against `reference`, over
/// the rows of students still registered (every week), highest first.
pub fn population_stability(reference: &Snapshot, current: &Snapshot) -> Vec<FeatureDrift> {
    let ref_rows: Vec<usize> = (0..reference.len())
        .filter(|r| reference.active[*r])
        .collect();
    let cur_rows: Vec<usize> = (0..current.len()).filter(|r| current.active[*r]).collect();
    let mut out = Vec::new();
    for (i, f) in reference.schema.features.iter().enumerate() {
        let Some(j) = current
            .schema
            .features
            .iter()
            .position(|g| g.name == f.name)
        else {
            continue;
        };
        let (r, c) = match (&reference.columns[i], &current.columns[j]) {
            (RawColumn::Num(a), RawColumn::Num(b)) => {
                let mut sorted: Vec<f64> = ref_rows
                    .iter()
                    .map(|r| a.get(*r))
                    .filter(|v| !v.is_nan())
                    .collect();
                sorted.sort_by(f64::total_cmp);
                let mut cuts: Vec<f64> = (1..10)
                    .filter_map(|d| sorted.get(sorted.len() * d / 10).copied())
                    .collect();
                cuts.dedup();
                (
                    numeric_counts(a, &ref_rows, &cuts),
                    numeric_counts(b, &cur_rows, &cuts),
                )
            }
            (RawColumn::Text(a), RawColumn::Text(b)) => {
                let mut bins: BTreeMap<Option<&str>, (f64, f64)> = BTreeMap::new();
                for r in &ref_rows {
                    bins.entry(a.get(*r)).or_default().0 += 1.0;
                }
                for r in &cur_rows {
                    bins.entry(b.get(*r)).or_default().1 += 1.0;
                }
                bins.values().copied().unzip()
            }
            _ => continue,
        };
        out.push(FeatureDrift {
            feature: f.name.clone(),
            psi: psi(&r, &c),
            bins: r.len(),
        });
    }
    out.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    out
}

#[cfg(test)]
mod tests {
    use super::psi;

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_the_shift() {
        assert!(psi(&[10.0, 20.0, 70.0], &[1.0, 2.0, 7.0]).abs() < 1e-12);
        let small = psi(&[25.0, 25.0, 25.0, 25.0], &[27.0, 23.0, 25.0, 25.0]);
        let large = psi(&[25.0, 25.0, 25.0, 25.0], &[70.0, 10.0, 10.0, 10.0]);
        assert!(small > 0.0 && small < 0.01, "{small}");
        assert!(large > 0.25, "{large}");
        // Shares 0.1/0.9 against 0.5/0.5: (0.5-0.1)ln5 + (0.5-0.9)ln(5/9).
        let expected = 0.4 * 5f64.ln() + (-0.4) * (5.0f64 / 9.0).ln();
        assert!((psi(&[1.0, 9.0], &[5.0, 5.0]) - expected).abs() < 1e-12);
    }
}
