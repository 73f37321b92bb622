//! Fairness by protected subgroup: per-group metrics at one week, the TPR, FPR and calibration
//! gaps adjusted for course mix (and pooled), with bootstrap intervals.

use std::collections::BTreeSet;

use lodestar_domain::{Interval, SubgroupGaps, SubgroupMetrics};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::Snapshot;
use crate::metrics;

/// Smallest subgroup whose rates enter the fairness gaps.
pub const MIN_GROUP: u64 = 30;

/// Reliability bins in reports.
pub(crate) const BINS: usize = 10;

/// Bootstrap replicates behind each gap's interval.
const BOOTSTRAP: usize = 400;

/// Counts at the operating threshold and summed probability of a set of rows.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    tp: u64,
    fn_: u64,
    fp: u64,
    tn: u64,
    sum_p: f64,
}

impl Tally {
    fn add(&mut self, p: f64, y: bool, threshold: f64) {
        self.sum_p += p;
        match (p >= threshold, y) {
            (true, true) => self.tp += 1,
            (false, true) => self.fn_ += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.tp += o.tp;
        self.fn_ += o.fn_;
        self.fp += o.fp;
        self.tn += o.tn;
        self.sum_p += o.sum_p;
    }

    /// The rows each rate is over: at risk (TPR), not at risk (FPR), all (calibration).
    fn weights(&self) -> [u64; 3] {
        let (pos, neg) = (self.tp + self.fn_, self.fp + self.tn);
        [pos, neg, pos + neg]
    }

    /// TPR, FPR and calibration-in-the-large (mean probability minus observed at-risk rate),
    /// NaN where undefined.
    fn rates(&self) -> [f64; 3] {
        let [pos, _, n] = self.weights();
        [
            metrics::ratio(self.tp, pos),
            metrics::ratio(self.fp, self.fp + self.tn),
            if n == 0 {
                f64::NAN
            } else {
                (self.sum_p - pos as f64) / n as f64
            },
        ]
    }
}

/// Most passes of the course-mix adjustment's fixed-point iteration ([`group_effects`]).
const ADJUST_PASSES: usize = 1000;

/// The adjustment stops once no group effect moves by more than this in a pass.
const ADJUST_TOLERANCE: f64 = 1e-10;

/// Each group's pooled and course-mix-adjusted `[TPR, FPR, calibration-in-the-large]`, from
/// the tallies `cells[g][q]` of group `g` in presentation `q`.
///
/// `cells` holds every group of the attribute (small and `unknown` ones included), so the
/// presentations' reference rates are over all their students. The adjusted rate of group `g`
/// is the overall rate plus `g`'s effect from [`group_effects`] (centred so the effects average
/// to zero over all students the rate is taken on): the overall rate plus how far `g`'s observed
/// rate lies from the one expected from the presentations its students are in. With one
/// presentation the adjusted rate is the pooled one.
fn group_rates(cells: &[Vec<Tally>]) -> Vec<([f64; 3], [f64; 3])> {
    let mut all = Tally::default();
    let totals: Vec<Tally> = cells
        .iter()
        .map(|g| {
            let mut t = Tally::default();
            for c in g {
                t.merge(c);
            }
            all.merge(&t);
            t
        })
        .collect();
    let overall = all.rates();
    let mut adjusted = vec![[f64::NAN; 3]; cells.len()];
    for m in 0..3 {
        let weight: Vec<Vec<f64>> = cells
            .iter()
            .map(|g| g.iter().map(|c| c.weights()[m] as f64).collect())
            .collect();
        let rate: Vec<Vec<f64>> = cells
            .iter()
            .map(|g| g.iter().map(|c| c.rates()[m]).collect())
            .collect();
        let effects = group_effects(&weight, &rate, ADJUST_PASSES);
        let (mut sum, mut total) = (0.0, 0.0);
        for (e, t) in effects.iter().zip(&totals) {
            let w = t.weights()[m] as f64;
            if w > 0.0 {
                sum += w * e;
                total += w;
            }
        }
        let centre = if total > 0.0 { sum / total } else { 0.0 };
        for (a, e) in adjusted.iter_mut().zip(&effects) {
            a[m] = overall[m] + e - centre;
        }
    }
    totals
        .iter()
        .zip(adjusted)
        .map(|(t, a)| (t.rates(), a))
        .collect()
}

/// Group effects net of presentation: `beta[g]` for cell rates `rate[g][q]` weighted by
/// `weight[g][q]` (the rows each rate is over; cells without rows ignored), NaN for a group with
/// no rows.
///
/// Indirect standardisation, its presentation references freed of their own group mix. The
/// rate expected of group `g` is the weighted mean, over the presentations of `g`'s rows, of a
/// reference rate `alpha[q]` per presentation, and `beta[g]` is `g`'s observed rate minus that
/// expected rate. The first pass takes `alpha[q]` as presentation `q`'s own rate over all its
/// students, which is textbook indirect standardisation; but that reference contains `g`'s
/// own students, so where `g` is most of a presentation the comparison is largely with itself,
/// and a within-course difference `d` between two groups shrinks to about `d` times the share
/// of the other group in each one's courses (`0.65 d` with 80/20 courses). Later passes take
/// `alpha[q]` as the presentation's rate with each group's effect taken out, and recompute the
/// effects, until they stop moving (at most `passes`): the fixed point is the least-squares fit of
/// `rate = alpha[presentation] + beta[group]` (a linear model with presentation and group
/// effects, fitted over students), which recovers a difference `d` that holds within every
/// presentation whatever the mix, and otherwise gives an average of the within-presentation
/// differences weighted by how many students of both groups each presentation holds. With one
/// presentation the effects are the groups' own rates, less a constant. A presentation holding
/// one group only tells nothing about differences and moves no effect. Groups that share no
/// presentation, directly or through other groups, cannot be compared within courses: each
/// such set of groups keeps effects averaging zero over its own students (the passes preserve
/// that weighted mean, which starts at zero), so as a whole it looks like the average.
fn group_effects(weight: &[Vec<f64>], rate: &[Vec<f64>], passes: usize) -> Vec<f64> {
    let presentations = weight.first().map_or(0, Vec::len);
    let by_group: Vec<f64> = weight.iter().map(|g| g.iter().sum()).collect();
    let by_presentation: Vec<f64> = (0..presentations)
        .map(|q| weight.iter().map(|g| g[q]).sum())
        .collect();
    let mut alpha = vec![0.0; presentations];
    let mut beta = vec![0.0; weight.len()];
    for _ in 0..passes {
        for (q, a) in alpha.iter_mut().enumerate() {
            if by_presentation[q] > 0.0 {
                let mut sum = 0.0;
                for (g, b) in beta.iter().enumerate() {
                    if weight[g][q] > 0.0 {
                        sum += weight[g][q] * (rate[g][q] - b);
                    }
                }
                *a = sum / by_presentation[q];
            }
        }
        let mut moved = 0.0f64;
        for (g, b) in beta.iter_mut().enumerate() {
            if by_group[g] > 0.0 {
                let mut sum = 0.0;
                for (q, a) in alpha.iter().enumerate() {
                    if weight[g][q] > 0.0 {
                        sum += weight[g][q] * (rate[g][q] - a);
                    }
                }
                let next = sum / by_group[g];
                moved = moved.max((next - *b).abs());
                *b = next;
            }
        }
        if moved < ADJUST_TOLERANCE {
            break;
        }
    }
    beta.iter()
        .zip(&by_group)
        .map(|(b, w)| if *w > 0.0 { *b } else { f64::NAN })
        .collect()
}

/// The TPR, FPR and calibration gaps over the groups marked `measured`: largest minus smallest
/// defined rate (the calibration gap over absolute calibration-in-the-large); NaN with fewer
/// than two defined rates.
fn spreads<'a>(rates: impl Iterator<Item = &'a [f64; 3]>, measured: &[bool]) -> [f64; 3] {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    let mut count = [0usize; 3];
    for (r, _) in rates.zip(measured).filter(|(_, m)| **m) {
        for m in 0..3 {
            let v = if m == 2 { r[m].abs() } else { r[m] };
            if !v.is_nan() {
                lo[m] = lo[m].min(v);
                hi[m] = hi[m].max(v);
                count[m] += 1;
            }
        }
    }
    std::array::from_fn(|m| {
        if count[m] < 2 {
            f64::NAN
        } else {
            hi[m] - lo[m]
        }
    })
}

/// The pooled and the adjusted gaps of one set of tallies.
fn both_spreads(cells: &[Vec<Tally>], measured: &[bool]) -> [[f64; 3]; 2] {
    let rates = group_rates(cells);
    [
        spreads(rates.iter().map(|r| &r.0), measured),
        spreads(rates.iter().map(|r| &r.1), measured),
    ]
}

/// The tallies of each (group, presentation) cell of row positions `members[g][q]`.
fn tallies(members: &[Vec<Vec<usize>>], p: &[f64], y: &[bool], threshold: f64) -> Vec<Vec<Tally>> {
    members
        .iter()
        .map(|g| {
            g.iter()
                .map(|cell| {
                    let mut t = Tally::default();
                    for k in cell {
                        t.add(p[*k], y[*k], threshold);
                    }
                    t
                })
                .collect()
        })
        .collect()
}

/// 95 % bootstrap intervals of the pooled and of the course-mix-adjusted TPR, FPR and
/// calibration gaps whose estimates are `estimates`, as `[pooled, adjusted]`.
///
/// Resampling is stratified by presentation and group: each (group, presentation) cell's rows
/// are drawn with replacement, independently, keeping the cell's size. The course mix (how many
/// students of each group sit in each presentation) is the design the adjustment conditions on,
/// not noise: resampling within groups only would let a replicate move a group's students
/// between courses, adding the composition's variation back into an interval meant for how the
/// model treats groups within courses, and could leave a group with no students in a
/// presentation it has. With one presentation this is the within-group resampling used before
/// the adjustment. Every group of the attribute is resampled (not only the measured ones), so
/// the presentations' reference rates vary in each replicate as in the data. A range over noisy
/// rates is biased upwards (the largest of several noisy rates overshoots), and its bootstrap
/// replicates overshoot the estimate by about as much again, so each interval is the basic
/// (reverse-percentile) one, `[2g - q97.5, 2g - q2.5]` around the estimate `g`, clamped to
/// `[0, 1]`. None with fewer than two measured groups, or where fewer than half the replicates
/// define the gap.
fn gap_intervals(
    members: &[Vec<Vec<usize>>],
    measured: &[bool],
    estimates: [[f64; 3]; 2],
    p: &[f64],
    y: &[bool],
    threshold: f64,
    seed: u64,
) -> [[Option<Interval>; 3]; 2] {
    if measured.iter().filter(|m| **m).count() < 2 {
        return [[None; 3]; 2];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
    let mut cells: Vec<Vec<Tally>> = members
        .iter()
        .map(|g| vec![Tally::default(); g.len()])
        .collect();
    for _ in 0..BOOTSTRAP {
        for (g, cell) in members.iter().zip(cells.iter_mut()) {
            for (idx, t) in g.iter().zip(cell.iter_mut()) {
                *t = Tally::default();
                for _ in 0..idx.len() {
                    let k = idx[rng.random_range(0..idx.len())];
                    t.add(p[k], y[k], threshold);
                }
            }
        }
        for (kind, gaps) in both_spreads(&cells, measured).into_iter().enumerate() {
            for (m, v) in gaps.into_iter().enumerate() {
                if !v.is_nan() {
                    samples[kind][m].push(v);
                }
            }
        }
    }
    std::array::from_fn(|kind| {
        std::array::from_fn(|m| {
            let g = estimates[kind][m];
            let v = &mut samples[kind][m];
            if v.len() < BOOTSTRAP / 2 || g.is_nan() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            Some(Interval {
                low: (2.0 * g - at(0.975)).clamp(0.0, 1.0),
                high: (2.0 * g - at(0.025)).clamp(0.0, 1.0),
            })
        })
    })
}

/// The subgroup evaluation of one week (see [`fairness`]).
#[derive(Debug, Clone, Default)]
pub struct WeekFairness {
    /// Metrics per group: pooled rates, and the course-mix-adjusted TPR, FPR and
    /// calibration-in-the-large.
    pub subgroups: Vec<SubgroupMetrics>,
    /// Gaps adjusted for course mix, with their intervals: what the gate judges (the report's
    /// `fairness`).
    pub gaps: Vec<SubgroupGaps>,
    /// The same gaps pooled over presentations, with their intervals (the report's
    /// `fairness_pooled`).
    pub pooled: Vec<SubgroupGaps>,
}

/// Metrics per protected subgroup and the gaps between them (with bootstrap intervals) at one
/// week, for scores `p` of `rows` with labels `y`.
///
/// The gaps are adjusted for course mix ([`FairnessMethod::CourseMixAdjusted`]): modules differ
/// widely in how many students are at risk and how many not at risk get flagged, and groups
/// differ in which modules they take, so a group's rate pooled over courses mostly reflects
/// its courses. Each group's rate is instead compared with the rate expected from the
/// presentations its students are in (indirect standardisation, see [`group_rates`]), and a gap
/// is the largest minus the smallest adjusted rate over the measured groups: those of at least
/// [`MIN_GROUP`] students, `unknown` left out. The pooled gaps are computed as before and
/// returned beside them; with one tested presentation the two are equal. Intervals: see
/// [`gap_intervals`]. A gap with fewer than two measured groups is 0 and has no interval.
pub fn fairness(
    s: &Snapshot,
    week: u16,
    rows: &[usize],
    p: &[f64],
    y: &[bool],
    threshold: f64,
) -> WeekFairness {
    let mut out = WeekFairness::default();
    // Presentation of each row, numbered among the rows' presentations.
    let presentations: BTreeSet<u32> = rows.iter().map(|r| s.presentation[*r]).collect();
    let presentations: Vec<u32> = presentations.into_iter().collect();
    let presentation_of: Vec<usize> = rows
        .iter()
        .map(|r| {
            presentations
                .binary_search(&s.presentation[*r])
                .unwrap_or_default()
        })
        .collect();
    for (attribute, labels) in &s.groups {
        // The groups among the rows, in name order (codes follow the sorted names).
        let codes: Vec<u32> = rows
            .iter()
            .map(|r| labels.codes[*r])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names: Vec<&str> = codes
            .iter()
            .map(|c| {
                labels
                    .values
                    .get(*c as usize)
                    .map_or("unknown", String::as_str)
            })
            .collect();
        // Row positions per group and presentation.
        let mut members = vec![vec![Vec::new(); presentations.len()]; names.len()];
        for (k, r) in rows.iter().enumerate() {
            let g = codes.binary_search(&labels.codes[*r]).unwrap_or_default();
            members[g][presentation_of[k]].push(k);
        }
        let cells = tallies(&members, p, y, threshold);
        let rates = group_rates(&cells);
        let mut these = Vec::with_capacity(names.len());
        for ((name, g), (_, adjusted)) in names.iter().zip(&members).zip(&rates) {
            // The group's rows in row order (ties in the AUC and ECE are then broken as before).
            let mut idx: Vec<usize> = g.iter().flatten().copied().collect();
            idx.sort_unstable();
            let gp: Vec<f64> = idx.iter().map(|k| p[*k]).collect();
            let gy: Vec<bool> = idx.iter().map(|k| y[*k]).collect();
            let c = metrics::confusion(&gp, &gy, threshold);
            let (_, tpr, fpr, _) = metrics::rates(&c);
            let (ece, _) = metrics::reliability(&gp, &gy, BINS);
            let mean_p = gp.iter().sum::<f64>() / gp.len().max(1) as f64;
            let observed = gy.iter().filter(|v| **v).count() as f64 / gy.len().max(1) as f64;
            these.push(SubgroupMetrics {
                attribute: *attribute,
                group: (*name).to_owned(),
                week,
                n: gp.len() as u64,
                positives: gy.iter().filter(|v| **v).count() as u64,
                roc_auc: metrics::roc_auc(&gp, &gy),
                tpr,
                fpr,
                ece,
                calibration_in_the_large: mean_p - observed,
                adjusted_tpr: adjusted[0],
                adjusted_fpr: adjusted[1],
                adjusted_calibration_in_the_large: adjusted[2],
            });
        }
        let measured: Vec<bool> = these
            .iter()
            .map(|g| g.n >= MIN_GROUP && g.group != "unknown")
            .collect();
        let estimates = [
            spreads(rates.iter().map(|r| &r.0), &measured),
            spreads(rates.iter().map(|r| &r.1), &measured),
        ];
        let seed = 0x6a9 ^ (u64::from(week) << 8) ^ (*attribute as u64);
        let intervals = gap_intervals(&members, &measured, estimates, p, y, threshold, seed);
        let sizes: Vec<(String, u64)> = these
            .iter()
            .zip(&measured)
            .filter(|(_, m)| **m)
            .map(|(g, _)| (g.group.clone(), g.n))
            .collect();
        let [pooled, adjusted] = [0, 1].map(|kind| {
            let gap = |m: usize| {
                let v: f64 = estimates[kind][m];
                if v.is_nan() { 0.0 } else { v }
            };
            let [tpr_interval, fpr_interval, calibration_interval] = intervals[kind];
            SubgroupGaps {
                attribute: *attribute,
                week,
                tpr_gap: gap(0),
                fpr_gap: gap(1),
                calibration_gap: gap(2),
                tpr_interval,
                fpr_interval,
                calibration_interval,
                measured: sizes.clone(),
            }
        });
        out.gaps.push(adjusted);
        out.pooled.push(pooled);
        out.subgroups.extend(these);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two presentations, 80/20 and 20/80 by group, the second group's rate `d` above the
    /// first's within each, presentations far apart.
    fn mixed(d: f64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let weight = vec![vec![800.0, 200.0], vec![200.0, 800.0]];
        let rate = vec![vec![0.5, 0.1], vec![0.5 + d, 0.1 + d]];
        (weight, rate)
    }

    #[test]
    fn a_difference_within_every_presentation_is_recovered_whatever_the_mix() {
        let (weight, rate) = mixed(0.3);
        let b = group_effects(&weight, &rate, ADJUST_PASSES);
        assert!((b[1] - b[0] - 0.3).abs() < 1e-9, "{b:?}");
        // Textbook indirect standardisation (one pass, presentation rates over all students)
        // compares each group largely with itself and finds much less.
        let b = group_effects(&weight, &rate, 1);
        assert!(b[1] - b[0] < 0.25, "{b:?}");
        // No difference within presentations: none found, though pooled rates differ by 0.24.
        let (weight, rate) = mixed(0.0);
        let b = group_effects(&weight, &rate, ADJUST_PASSES);
        assert!((b[1] - b[0]).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn groups_without_a_shared_presentation_look_average_and_empty_ones_are_undefined() {
        // Group 0 alone in presentation 0, groups 1 and 2 share presentation 1; group 3 has
        // no rows.
        let weight = vec![
            vec![100.0, 0.0],
            vec![0.0, 50.0],
            vec![0.0, 50.0],
            vec![0.0, 0.0],
        ];
        let rate = vec![
            vec![0.9, f64::NAN],
            vec![f64::NAN, 0.2],
            vec![f64::NAN, 0.4],
            vec![f64::NAN, f64::NAN],
        ];
        let b = group_effects(&weight, &rate, ADJUST_PASSES);
        assert!(b[0].abs() < 1e-12, "{b:?}");
        assert!(
            (b[1] + 0.1).abs() < 1e-9 && (b[2] - 0.1).abs() < 1e-9,
            "{b:?}"
        );
        assert!(b[3].is_nan());
    }

    #[test]
    fn adjusted_rates_centre_on_the_overall_rate() {
        // Cells of 100 students, 50 at risk; flagged: group 1 more than group 0 in both.
        let cell = |tp: u64, fp: u64| Tally {
            tp,
            fn_: 50 - tp,
            fp,
            tn: 50 - fp,
            sum_p: 0.0,
        };
        let cells = vec![
            vec![cell(40, 10), cell(20, 5)],
            vec![cell(45, 20), cell(25, 15)],
        ];
        let rates = group_rates(&cells);
        // Equal weights everywhere: the adjusted TPRs are the overall TPR plus or minus half
        // the within-course difference of 0.1.
        let overall = 130.0 / 200.0;
        assert!((rates[0].1[0] - (overall - 0.05)).abs() < 1e-9, "{rates:?}");
        assert!((rates[1].1[0] - (overall + 0.05)).abs() < 1e-9, "{rates:?}");
        assert!(
            (rates[1].1[1] - rates[0].1[1] - 0.2).abs() < 1e-9,
            "{rates:?}"
        );
        // Pooled rates are the groups' own.
        assert!((rates[0].0[0] - 0.6).abs() < 1e-12);
    }
}
