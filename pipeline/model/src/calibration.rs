//! Calibration of a model's probability so that, among students scored 0.7, seven in ten turn
//! out at risk: Platt scaling (a logistic curve on the log-odds) or isotonic regression (a
//! monotone step function, interpolated), fitted on presentations held out of the model's fit.

use serde::{Deserialize, Serialize};

use crate::{logit, sigmoid};

/// A fitted calibration map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibration {
    /// The model's probability as is.
    Identity,
    /// `sigmoid(a · logit(p) + b)`.
    Platt {
        /// Slope on the log-odds.
        a: f64,
        /// Intercept.
        b: f64,
    },
    /// Linear interpolation through increasing points `(x, y)`, constant beyond the ends.
    Isotonic {
        /// Uncalibrated probabilities, increasing.
        x: Vec<f64>,
        /// Calibrated probabilities, non-decreasing.
        y: Vec<f64>,
    },
}

impl Calibration {
    /// The calibrated probability.
    pub fn apply(&self, p: f64) -> f64 {
        match self {
            Calibration::Identity => p,
            Calibration::Platt { a, b } => sigmoid(a * logit(p) + b),
            Calibration::Isotonic { x, y } => {
                if x.is_empty() {
                    return p;
                }
                let i = x.partition_point(|v| *v <= p);
                if i == 0 {
                    y[0]
                } else if i == x.len() {
                    y[x.len() - 1]
                } else {
                    let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                    if x1 > x0 {
                        y0 + (y1 - y0) * (p - x0) / (x1 - x0)
                    } else {
                        y1
                    }
                }
            }
        }
    }

    /// Name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Calibration::Identity => "none",
            Calibration::Platt { .. } => "Platt scaling",
            Calibration::Isotonic { .. } => "isotonic regression",
        }
    }

    /// Fits Platt scaling by Newton's method on the log-loss (with Platt's target smoothing).
    pub fn fit_platt(p: &[f64], y: &[bool]) -> Calibration {
        let n1 = y.iter().filter(|v| **v).count() as f64;
        let n0 = y.len() as f64 - n1;
        let (t1, t0) = ((n1 + 1.0) / (n1 + 2.0), 1.0 / (n0 + 2.0));
        let z: Vec<f64> = p.iter().map(|p| logit(*p)).collect();
        let targets: Vec<f64> = y.iter().map(|v| if *v { t1 } else { t0 }).collect();
        // Cross-entropy against the smoothed targets, computed stably.
        let loss = |a: f64, b: f64| -> f64 {
            z.iter()
                .zip(&targets)
                .map(|(zi, t)| {
                    let f = a * zi + b;
                    // log(1 + e^f) - t f
                    f.max(0.0) + (-f.abs()).exp().ln_1p() - t * f
                })
                .sum()
        };
        let (mut a, mut b) = (1.0, 0.0);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
            for (zi, t) in z.iter().zip(&targets) {
                let q = sigmoid(a * zi + b);
                let d = q - t;
                let w = q * (1.0 - q);
                ga += d * zi;
                gb += d;
                haa += w * zi * zi;
                hab += w * zi;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-15 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Newton's step, halved until the loss goes down.
            let mut step = 1.0;
            let mut moved = false;
            while step > 1e-8 {
                let (na, nb) = (a - step * da, b - step * db);
                let l = loss(na, nb);
                if l < current {
                    (a, b, current) = (na, nb, l);
                    moved = true;
                    break;
                }
                step /= 2.0;
            }
            if !moved || (step * da).abs() < 1e-10 && (step * db).abs() < 1e-10 {
                break;
            }
        }
        Calibration::Platt { a, b }
    }

    /// Fits isotonic regression by pool-adjacent-violators.
    pub fn fit_isotonic(p: &[f64], y: &[bool]) -> Calibration {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|i, j| p[*i].total_cmp(&p[*j]));
        // Blocks: (sum of x, sum of y, count).
        let mut blocks: Vec<(f64, f64, f64)> = Vec::with_capacity(p.len());
        for i in order {
            blocks.push((p[i], if y[i] { 1.0 } else { 0.0 }, 1.0));
            while blocks.len() > 1 {
                let (x1, y1, n1) = blocks[blocks.len() - 1];
                let (x0, y0, n0) = blocks[blocks.len() - 2];
                if y0 / n0 >= y1 / n1 {
                    blocks.pop();
                    let last = blocks.len() - 1;
                    blocks[last] = (x0 + x1, y0 + y1, n0 + n1);
                } else {
                    break;
                }
            }
        }
        let (x, y) = blocks.iter().map(|(sx, sy, n)| (sx / n, sy / n)).unzip();
        Calibration::Isotonic { x, y }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let y = [false, true, false, true];
        let Calibration::Isotonic { x, y: fitted } = Calibration::fit_isotonic(&p, &y) else {
            unreachable!()
        };
        // 0.2 (1) and 0.3 (0) violate order and pool to 0.5 at x 0.25.
        assert_eq!(fitted, [0.0, 0.5, 1.0]);
        assert!((x[1] - 0.25).abs() < 1e-12);
        let c = Calibration::Isotonic { x, y: fitted };
        assert_eq!(c.apply(0.05), 0.0);
        assert!((c.apply(0.175) - 0.25).abs() < 1e-12);
        assert_eq!(c.apply(0.9), 1.0);
    }

    #[test]
    fn platt_recovers_an_overconfident_model() {
        // True probability sigmoid(z / 2) while the model says sigmoid(z).
        let mut p = Vec::new();
        let mut y = Vec::new();
        for i in 0..400 {
            let z = (i as f64 / 400.0 - 0.5) * 12.0;
            let truth = sigmoid(z / 2.0);
            // A deterministic sample: the fraction `truth` of 100 copies is at risk.
            let positives = (truth * 100.0).round() as usize;
            for k in 0..100 {
                p.push(sigmoid(z));
                y.push(k < positives);
            }
        }
        let Calibration::Platt { a, b } = Calibration::fit_platt(&p, &y) else {
            unreachable!()
        };
        assert!((a - 0.5).abs() < 0.03, "a = {a}");
        assert!(b.abs() < 0.05, "b = {b}");
    }
}
