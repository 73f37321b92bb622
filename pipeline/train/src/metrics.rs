//! Classification metrics of probabilities against outcomes (at risk = positive): ROC AUC with
//! ties, PR AUC as average precision, Brier score, expected calibration error with its
//! reliability bins, and the confusion matrix at a threshold.

use lodestar_domain::{Confusion, ReliabilityBin};

/// Indexes of `p` in score order (highest first when `descending`) and the runs of equal scores
/// in it, so tied predictions enter every curve together.
fn tied_runs(p: &[f64], descending: bool) -> (Vec<usize>, Vec<std::ops::Range<usize>>) {
    let mut order: Vec<usize> = (0..p.len()).collect();
    if descending {
        order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
    } else {
        order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    }
    let mut runs = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && p[order[j]] == p[order[i]] {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    (order, runs)
}

/// Area under the ROC curve: the probability that a random at-risk student scores above a random
/// other one, ties counting one half. NaN when either class is absent.
pub fn roc_auc(p: &[f64], y: &[bool]) -> f64 {
    let (order, runs) = tied_runs(p, false);
    let (mut rank_sum, mut positives) = (0.0, 0.0);
    for run in runs {
        // Ranks start+1 ..= end share their mean.
        let mean_rank = (run.start + run.end + 1) as f64 / 2.0;
        for k in &order[run] {
            if y[*k] {
                rank_sum += mean_rank;
                positives += 1.0;
            }
        }
    }
    let negatives = p.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Average precision: the mean, over at-risk students, of the precision at their score (tied
/// scores enter together). NaN when there is no positive.
pub fn pr_auc(p: &[f64], y: &[bool]) -> f64 {
    let total_pos = y.iter().filter(|v| **v).count() as f64;
    if total_pos == 0.0 {
        return f64::NAN;
    }
    let (order, runs) = tied_runs(p, true);
    let (mut tp, mut seen, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    for run in runs {
        for k in &order[run] {
            seen += 1.0;
            if y[*k] {
                tp += 1.0;
            }
        }
        let recall = tp / total_pos;
        ap += (recall - last_recall) * (tp / seen);
        last_recall = recall;
    }
    ap
}

/// Mean squared difference between probability and outcome.
pub fn brier(p: &[f64], y: &[bool]) -> f64 {
    if p.is_empty() {
        return f64::NAN;
    }
    p.iter()
        .zip(y)
        .map(|(p, y)| (p - if *y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / p.len() as f64
}

/// Reliability diagram over `bins` equal-width bins (the last includes 1), and the expected
/// calibration error: the count-weighted mean of |mean predicted − observed| over the bins.
pub fn reliability(p: &[f64], y: &[bool], bins: usize) -> (f64, Vec<ReliabilityBin>) {
    let mut sum_p = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    let mut count = vec![0u64; bins];
    for (pi, yi) in p.iter().zip(y) {
        let b = ((pi * bins as f64) as usize).min(bins - 1);
        sum_p[b] += pi;
        sum_y[b] += if *yi { 1.0 } else { 0.0 };
        count[b] += 1;
    }
    let n = p.len() as f64;
    let mut ece = 0.0;
    let out = (0..bins)
        .map(|b| {
            let c = count[b] as f64;
            let (mp, ob) = if count[b] > 0 {
                (sum_p[b] / c, sum_y[b] / c)
            } else {
                (f64::NAN, f64::NAN)
            };
            if count[b] > 0 {
                ece += c / n * (mp - ob).abs();
            }
            ReliabilityBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                mean_predicted: mp,
                observed: ob,
            }
        })
        .collect();
    (if p.is_empty() { f64::NAN } else { ece }, out)
}

/// Counts with `p >= threshold` flagged.
pub fn confusion(p: &[f64], y: &[bool], threshold: f64) -> Confusion {
    let mut c = Confusion::default();
    for (pi, yi) in p.iter().zip(y) {
        match (*pi >= threshold, *yi) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, false) => c.tn += 1,
            (false, true) => c.fn_ += 1,
        }
    }
    c
}

/// `a / b`, NaN when `b` is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Precision, recall (true-positive rate), false-positive rate and F1 of a confusion matrix.
pub fn rates(c: &Confusion) -> (f64, f64, f64, f64) {
    let precision = ratio(c.tp, c.tp + c.fp);
    let recall = ratio(c.tp, c.tp + c.fn_);
    let fpr = ratio(c.fp, c.fp + c.tn);
    let f1 = if c.tp == 0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, fpr, f1)
}

/// The ROC curve as `[fpr, tpr]` points, thinned to at most `points` (plus both ends).
pub fn roc_curve(p: &[f64], y: &[bool], points: usize) -> Vec<[f64; 2]> {
    let pos = y.iter().filter(|v| **v).count() as f64;
    let neg = p.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Vec::new();
    }
    let mut curve = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0.0, 0.0);
    let step = (p.len() / points.max(1)).max(1);
    let (order, runs) = tied_runs(p, true);
    for run in runs {
        // The run's last index, as a position among the sorted scores.
        let j = run.end - 1;
        for k in &order[run] {
            if y[*k] { tp += 1.0 } else { fp += 1.0 }
        }
        if j + 1 == order.len() || (j / step) != ((j + 1) / step) {
            curve.push([fp / neg, tp / pos]);
        }
    }
    if curve.last() != Some(&[1.0, 1.0]) {
        curve.push([1.0, 1.0]);
    }
    curve
}

/// The threshold maximising F1 on `p`, `y` (among the distinct scores; 0.5 when undefined).
pub fn best_f1_threshold(p: &[f64], y: &[bool]) -> f64 {
    let pos = y.iter().filter(|v| **v).count() as f64;
    if pos == 0.0 {
        return 0.5;
    }
    let (order, runs) = tied_runs(p, true);
    let (mut tp, mut seen) = (0.0, 0.0);
    let (mut best, mut best_t) = (-1.0, 0.5);
    for run in runs {
        let score = p[order[run.start]];
        for k in &order[run] {
            seen += 1.0;
            if y[*k] {
                tp += 1.0;
            }
        }
        let f1 = 2.0 * tp / (seen + pos);
        if f1 > best {
            best = f1;
            best_t = score;
        }
    }
    best_t
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: bool = true;
    const F: bool = false;

    #[test]
    fn auc_counts_ties_as_one_half() {
        // Positives 0.8, 0.4; negatives 0.4, 0.1. Pairs: (0.8>0.4) 1, (0.8>0.1) 1,
        // (0.4=0.4) 0.5, (0.4>0.1) 1 → 3.5 / 4.
        let p = [0.8, 0.4, 0.4, 0.1];
        let y = [T, T, F, F];
        assert!((roc_auc(&p, &y) - 0.875).abs() < 1e-12);
        // All tied: 0.5.
        assert!((roc_auc(&[0.3; 4], &y) - 0.5).abs() < 1e-12);
        // Perfect and reversed.
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &y), 1.0);
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &y), 0.0);
        assert!(roc_auc(&[0.1, 0.2], &[T, T]).is_nan());
    }

    #[test]
    fn pr_auc_is_average_precision() {
        // Ranked: 0.9 T, 0.8 F, 0.7 T, 0.1 F. Precision at each positive: 1/1, 2/3.
        let p = [0.9, 0.8, 0.7, 0.1];
        let y = [T, F, T, F];
        assert!((pr_auc(&p, &y) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        // A tie between a positive and a negative enters together: precision 1/2 at recall 1.
        assert!((pr_auc(&[0.5, 0.5], &[T, F]) - 0.5).abs() < 1e-12);
        assert!(pr_auc(&[0.5], &[F]).is_nan());
    }

    #[test]
    fn brier_and_ece_bins_by_hand() {
        let p = [0.05, 0.15, 0.95, 0.85];
        let y = [F, T, T, T];
        assert!((brier(&p, &y) - (0.0025 + 0.7225 + 0.0025 + 0.0225) / 4.0).abs() < 1e-12);
        let (ece, bins) = reliability(&p, &y, 10);
        assert_eq!(bins.len(), 10);
        assert_eq!(
            bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
        );
        // |0.05-0| + |0.15-1| + |0.85-1| + |0.95-1|, each weighted 1/4.
        assert!((ece - (0.05 + 0.85 + 0.15 + 0.05) / 4.0).abs() < 1e-12);
        assert!(bins[3].observed.is_nan());
        // p = 1 falls in the last bin.
        let (_, bins) = reliability(&[1.0], &[T], 10);
        assert_eq!(bins[9].count, 1);
    }

    #[test]
    fn confusion_rates_and_threshold() {
        let p = [0.9, 0.6, 0.4, 0.2];
        let y = [T, F, T, F];
        let c = confusion(&p, &y, 0.5);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (1, 1, 1, 1));
        let (precision, recall, fpr, f1) = rates(&c);
        assert_eq!((precision, recall, fpr, f1), (0.5, 0.5, 0.5, 0.5));
        // Flag everything down to 0.4: tp 2, seen 3 → F1 = 4/5, the best.
        assert_eq!(best_f1_threshold(&p, &y), 0.4);
        let curve = roc_curve(&p, &y, 100);
        assert_eq!(curve.first(), Some(&[0.0, 0.0]));
        assert_eq!(curve.last(), Some(&[1.0, 1.0]));
        assert!(curve.contains(&[0.5, 1.0]));
    }
}
