//! One training interface over a design matrix for every model family. Hyperparameters are
//! checked before any fitting; every random choice comes from the seed, so the same data,
//! configuration and seed give the same model. Each fitted library model is converted to the
//! plain [`Predictor`] that serving runs.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use lodestar_model::{ModelFamily, Node, Predictor, Tree};
use ndarray::{Array1, Array2, ArrayBase, ArrayView2, Data, Ix2};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// A design matrix: finished (imputed, standardised where the family needs it) row-major values.
#[derive(Debug, Clone)]
pub struct Design {
    /// Row-major values.
    pub x: Vec<f64>,
    /// Columns.
    pub width: usize,
    /// Labels (true: at risk).
    pub y: Vec<bool>,
}

impl Design {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.width..(i + 1) * self.width]
    }

    /// Moves the values of rows `keep` (ascending) to the front of the matrix, in that order:
    /// they are then its first `keep.len()` rows, as one matrix, without a copy beside it. The
    /// rows not kept are overwritten; [`Design::move_back`] puts the kept ones back. Labels are
    /// not moved.
    pub(crate) fn move_to_front(&mut self, keep: &[usize]) {
        let w = self.width;
        for (to, from) in keep.iter().enumerate() {
            debug_assert!(*from >= to && keep.get(to + 1).is_none_or(|next| next > from));
            if *from != to {
                self.x.copy_within(from * w..(from + 1) * w, to * w);
            }
        }
    }

    /// Undoes [`Design::move_to_front`] for the kept rows: each goes back to its place. The
    /// other rows are left for the caller to write again (`fill` gives each row's values).
    pub(crate) fn move_back(&mut self, keep: &[usize], mut fill: impl FnMut(usize, &mut [f64])) {
        let w = self.width;
        for (to, from) in keep.iter().enumerate().rev() {
            if *from != to {
                self.x.copy_within(to * w..(to + 1) * w, from * w);
            }
        }
        let mut kept = keep.iter().peekable();
        for (i, row) in self.x.chunks_exact_mut(w.max(1)).enumerate() {
            if kept.next_if_eq(&&i).is_none() {
                fill(i, row);
            }
        }
    }
}

/// The rows a model is fitted on: every row of a design, or some of them (in the order given),
/// or the first rows of a design with their own labels, read in place rather than copied out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    /// Row-major values of the rows that `subset` indexes (every row when there is none).
    x: &'a [f64],
    /// Label of each row of `x`.
    y: &'a [bool],
    width: usize,
    subset: Option<&'a [usize]>,
}

impl<'a> Rows<'a> {
    /// Every row of `design`.
    pub(crate) fn all(design: &'a Design) -> Rows<'a> {
        Rows {
            x: &design.x,
            y: &design.y,
            width: design.width,
            subset: None,
        }
    }

    /// Rows `subset` of `design`, in that order.
    pub(crate) fn subset(design: &'a Design, subset: &'a [usize]) -> Rows<'a> {
        Rows {
            subset: Some(subset),
            ..Rows::all(design)
        }
    }

    /// The first `y.len()` rows of `design`, labelled `y` (rows moved to the front of the
    /// design, see [`Design::move_to_front`]).
    pub(crate) fn front(design: &'a Design, y: &'a [bool]) -> Rows<'a> {
        Rows {
            x: &design.x[..y.len() * design.width],
            y,
            width: design.width,
            subset: None,
        }
    }

    /// Rows.
    pub(crate) fn len(&self) -> usize {
        self.subset.map_or(self.y.len(), <[usize]>::len)
    }

    /// Columns.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    fn at(&self, i: usize) -> usize {
        self.subset.map_or(i, |s| s[i])
    }

    /// Row `i`.
    pub(crate) fn row(&self, i: usize) -> &'a [f64] {
        let at = self.at(i);
        &self.x[at * self.width..(at + 1) * self.width]
    }

    /// Label of row `i`.
    pub(crate) fn y(&self, i: usize) -> bool {
        self.y[self.at(i)]
    }

    /// Every label, in row order.
    fn labels(&self) -> Vec<bool> {
        (0..self.len()).map(|i| self.y(i)).collect()
    }
}

/// Logistic regression settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticParams {
    /// L2 penalty.
    pub alpha: f64,
    /// Most L-BFGS iterations.
    pub max_iterations: u64,
    /// Stop when the gradient of the mean log-loss is below this (as scikit-learn's `tol`;
    /// linfa sums the loss over rows, so it is scaled by the row count).
    pub tolerance: f64,
}

/// Random forest settings (Lodestar's own histogram CART: linfa-trees 0.8 does not give the same
/// tree twice for the same data, see docs/models.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    /// Trees.
    pub trees: usize,
    /// Deepest split.
    pub max_depth: usize,
    /// Rows drawn (with replacement) for each tree; capped at the training rows.
    pub rows_per_tree: usize,
    /// Fraction of features each tree may use.
    pub feature_fraction: f64,
    /// Smallest leaf, in rows.
    pub min_leaf: f32,
}

/// Gradient-boosted trees settings (perpetual).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoostedParams {
    /// Perpetual's complexity budget (more: more, finer trees).
    pub budget: f32,
    /// Histogram bins per feature.
    pub max_bin: u16,
    /// Most boosting rounds.
    pub iteration_limit: usize,
    /// Fit on at most this many rows, drawn without replacement by the seed (perpetual's cost
    /// grows with rows: about 0.1 s per 1,000 rows on 2 cores, see docs/benchmarks.md).
    pub max_rows: usize,
}

/// Multilayer perceptron settings (burn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per gradient step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
}

/// Where the MLP trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainDevice {
    /// burn's pure-Rust CPU backend (flex).
    #[default]
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12); needs the `wgpu` cargo feature.
    Wgpu,
}

impl std::str::FromStr for TrainDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(TrainDevice::Cpu),
            "wgpu" => Ok(TrainDevice::Wgpu),
            _ => Err(format!("unknown device {s:?}: expected cpu or wgpu")),
        }
    }
}

/// Hyperparameters of every family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// Logistic regression.
    pub logistic: LogisticParams,
    /// Random forest.
    pub forest: ForestParams,
    /// Boosted trees.
    pub boosted: BoostedParams,
    /// MLP.
    pub mlp: MlpParams,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Hyperparameters {
            logistic: LogisticParams {
                alpha: 1e-4,
                max_iterations: 100,
                tolerance: 1e-4,
            },
            forest: ForestParams {
                trees: 60,
                max_depth: 10,
                rows_per_tree: 20_000,
                feature_fraction: 0.6,
                min_leaf: 20.0,
            },
            boosted: BoostedParams {
                budget: 0.5,
                max_bin: 63,
                iteration_limit: 100,
                max_rows: 50_000,
            },
            mlp: MlpParams {
                hidden: vec![32, 16],
                epochs: 4,
                batch_size: 256,
                learning_rate: 2e-3,
            },
        }
    }
}

impl Hyperparameters {
    /// Checks every value before anything is fitted; each problem is named.
    pub fn validate(&self) -> Result<(), TrainError> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                problems.push(what.to_owned());
            }
        };
        let l = &self.logistic;
        need(
            l.alpha.is_finite() && l.alpha >= 0.0,
            "logistic.alpha must be a finite number >= 0",
        );
        need(
            l.max_iterations >= 1,
            "logistic.max_iterations must be >= 1",
        );
        let f = &self.forest;
        need(
            (1..=2000).contains(&f.trees),
            "forest.trees must be 1..=2000",
        );
        need(
            (1..=64).contains(&f.max_depth),
            "forest.max_depth must be 1..=64",
        );
        need(f.rows_per_tree >= 10, "forest.rows_per_tree must be >= 10");
        need(
            f.feature_fraction > 0.0 && f.feature_fraction <= 1.0,
            "forest.feature_fraction must be in (0, 1]",
        );
        need(
            f.min_leaf.is_finite() && f.min_leaf >= 1.0,
            "forest.min_leaf must be >= 1",
        );
        let b = &self.boosted;
        need(
            b.budget.is_finite() && b.budget > 0.0 && b.budget <= 3.0,
            "boosted.budget must be in (0, 3]",
        );
        need(
            (2..=255).contains(&b.max_bin),
            "boosted.max_bin must be 2..=255",
        );
        need(
            b.iteration_limit >= 1,
            "boosted.iteration_limit must be >= 1",
        );
        need(b.max_rows >= 10, "boosted.max_rows must be >= 10");
        let m = &self.mlp;
        need(
            !m.hidden.is_empty() && m.hidden.iter().all(|h| (1..=1024).contains(h)),
            "mlp.hidden must list 1 or more widths in 1..=1024",
        );
        need(
            (1..=1000).contains(&m.epochs),
            "mlp.epochs must be 1..=1000",
        );
        need(m.batch_size >= 1, "mlp.batch_size must be >= 1");
        need(
            m.learning_rate.is_finite() && m.learning_rate > 0.0 && m.learning_rate < 1.0,
            "mlp.learning_rate must be in (0, 1)",
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Config(format!(
                "invalid hyperparameters: {}",
                problems.join("; ")
            )))
        }
    }
}

/// Fits `family` on `d`.
pub fn fit(
    family: ModelFamily,
    d: &Design,
    h: &Hyperparameters,
    seed: u64,
    device: TrainDevice,
) -> Result<Predictor, TrainError> {
    fit_rows(family, Rows::all(d), h, seed, device)
}

/// Fits `family` on rows `d` (see [`fit`]).
pub(crate) fn fit_rows(
    family: ModelFamily,
    d: Rows<'_>,
    h: &Hyperparameters,
    seed: u64,
    device: TrainDevice,
) -> Result<Predictor, TrainError> {
    h.validate()?;
    let (pos, rows) = ((0..d.len()).filter(|i| d.y(*i)).count(), d.len());
    if pos == 0 || pos == rows {
        return Err(TrainError::Data(format!(
            "the training rows hold one outcome only ({pos} at risk of {rows})"
        )));
    }
    match family {
        ModelFamily::Logistic => fit_logistic(d, &h.logistic),
        ModelFamily::Forest => fit_forest(d, &h.forest, seed),
        ModelFamily::Boosted => fit_boosted(d, &h.boosted, seed),
        ModelFamily::Mlp => crate::mlp::fit_mlp(d, &h.mlp, seed, device),
        ModelFamily::Ensemble => Err(TrainError::Config(
            "an ensemble is built from the other families' models, not fitted alone".into(),
        )),
    }
}

fn fit_logistic(d: Rows<'_>, p: &LogisticParams) -> Result<Predictor, TrainError> {
    let shape = (d.len(), d.width());
    let y = Array1::from_vec(d.labels());
    // linfa reads a view of the rows in place (every row of a design, or its first rows); a
    // subset is gathered into one matrix.
    let fitted = match d.subset {
        None => {
            let x =
                ArrayView2::from_shape(shape, d.x).map_err(|e| TrainError::Data(e.to_string()))?;
            linfa_logistic(x, y, p)?
        }
        Some(_) => {
            let x: Vec<f64> = (0..d.len())
                .flat_map(|i| d.row(i).iter().copied())
                .collect();
            let x =
                Array2::from_shape_vec(shape, x).map_err(|e| TrainError::Data(e.to_string()))?;
            linfa_logistic(x, y, p)?
        }
    };
    // linfa models the probability of the more frequent class; turn it into P(at risk).
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Predictor::Linear {
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        bias: sign * fitted.intercept(),
    })
}

fn linfa_logistic<D: Data<Elem = f64>>(
    x: ArrayBase<D, Ix2>,
    y: Array1<bool>,
    p: &LogisticParams,
) -> Result<linfa_logistic::FittedLogisticRegression<f64, bool>, TrainError> {
    let rows = x.nrows();
    LogisticRegression::default()
        .alpha(p.alpha)
        .max_iterations(p.max_iterations)
        .gradient_tolerance(p.tolerance * rows as f64)
        .fit(&DatasetBase::new(x, y))
        .map_err(|e| TrainError::Fit(format!("logistic regression: {e}")))
}

fn fit_forest(d: Rows<'_>, p: &ForestParams, seed: u64) -> Result<Predictor, TrainError> {
    let bins = Bins::of(d);
    let y = d.labels();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let per_thread: Vec<Vec<usize>> = (0..threads)
        .map(|t| (t..p.trees).step_by(threads).collect())
        .collect();
    let results: Vec<Vec<(usize, Tree)>> = std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .iter()
            .map(|ids| {
                let (bins, y) = (&bins, &y);
                s.spawn(move || {
                    ids.iter()
                        .map(|i| (*i, fit_tree(bins, y, p, seed, *i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut trees: Vec<(usize, Tree)> = results.into_iter().flatten().collect();
    if trees.len() != p.trees {
        return Err(TrainError::Fit("a forest thread failed".into()));
    }
    trees.sort_by_key(|(i, _)| *i);
    Ok(Predictor::Forest {
        trees: trees.into_iter().map(|(_, t)| t).collect(),
    })
}

/// Most histogram bins per feature.
const MAX_BINS: usize = 64;

/// Every feature cut into at most [`MAX_BINS`] bins at its quantiles: `bin(x)` is the number of
/// cut points at or below `x`, so "bins up to b" is exactly `x < cuts[b]`.
struct Bins {
    cuts: Vec<Vec<f64>>,
    /// Row-major bin index of every cell.
    codes: Vec<u8>,
    /// Columns.
    width: usize,
}

impl Bins {
    fn of(d: Rows<'_>) -> Bins {
        let (rows, width) = (d.len(), d.width());
        let step = (rows / 20_000).max(1);
        let mut cuts = Vec::with_capacity(width);
        for c in 0..width {
            let mut v: Vec<f64> = (0..rows).step_by(step).map(|r| d.row(r)[c]).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            let mut cut: Vec<f64> = if v.len() <= MAX_BINS {
                v.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect()
            } else {
                (1..MAX_BINS)
                    .map(|k| {
                        let i = k * v.len() / MAX_BINS;
                        (v[i - 1] + v[i]) / 2.0
                    })
                    .collect()
            };
            cut.dedup();
            cuts.push(cut);
        }
        let mut codes = vec![0u8; rows * width];
        for (r, out) in codes.chunks_exact_mut(width.max(1)).enumerate() {
            for ((code, x), cut) in out.iter_mut().zip(d.row(r)).zip(&cuts) {
                *code = cut.partition_point(|t| t <= x) as u8;
            }
        }
        Bins { cuts, codes, width }
    }
}

/// One CART tree (Gini) on a bootstrap sample of the binned rows with labels `y`, a random
/// subset of the features tried at each split; leaves hold the at-risk fraction of the sample
/// rows that reach them (as scikit-learn's forests do). Deterministic for a seed and tree index.
fn fit_tree(bins: &Bins, y: &[bool], p: &ForestParams, seed: u64, index: usize) -> Tree {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (available, width) = (y.len(), bins.width);
    let n = p.rows_per_tree.min(available);
    let bag: Vec<usize> = (0..n).map(|_| rng.random_range(0..available)).collect();
    let k = ((width as f64 * p.feature_fraction).ceil() as usize).clamp(1, width);
    let min_leaf = p.min_leaf.ceil() as usize;
    let mut nodes: Vec<Node> = Vec::new();
    // (rows, depth, slot in `nodes`)
    let mut stack = vec![(bag, 0usize, 0usize)];
    nodes.push(Node::leaf(0.0));
    let mut hist = vec![[0u32; 2]; MAX_BINS];
    while let Some((rows, depth, at)) = stack.pop() {
        let pos = rows.iter().filter(|r| y[**r]).count();
        let total = rows.len();
        nodes[at] = Node::leaf(pos as f64 / total.max(1) as f64);
        if depth >= p.max_depth || total < 2 * min_leaf || pos == 0 || pos == total {
            continue;
        }
        let gini = |n: f64, q: f64| {
            if n > 0.0 {
                n - q * q / n - (n - q) * (n - q) / n
            } else {
                0.0
            }
        };
        let parent = gini(total as f64, pos as f64);
        let mut best: Option<(f64, usize, usize)> = None; // (impurity, feature, last left bin)
        for f in sample(&mut rng, width, k).into_iter() {
            let nb = bins.cuts[f].len() + 1;
            if nb < 2 {
                continue;
            }
            hist[..nb].iter_mut().for_each(|h| *h = [0, 0]);
            for r in &rows {
                let b = bins.codes[r * width + f] as usize;
                hist[b][0] += 1;
                hist[b][1] += u32::from(y[*r]);
            }
            let (mut ln, mut lp) = (0usize, 0usize);
            for (b, h) in hist[..nb - 1].iter().enumerate() {
                ln += h[0] as usize;
                lp += h[1] as usize;
                let rn = total - ln;
                if ln < min_leaf {
                    continue;
                }
                if rn < min_leaf {
                    break;
                }
                let impurity = gini(ln as f64, lp as f64) + gini(rn as f64, (pos - lp) as f64);
                if best.is_none_or(|(bi, _, _)| impurity < bi - 1e-12) {
                    best = Some((impurity, f, b));
                }
            }
        }
        let Some((impurity, f, b)) = best else {
            continue;
        };
        if impurity >= parent - 1e-12 {
            continue;
        }
        let (left, right): (Vec<usize>, Vec<usize>) = rows
            .into_iter()
            .partition(|r| (bins.codes[r * width + f] as usize) <= b);
        let (l, r) = (nodes.len(), nodes.len() + 1);
        nodes.push(Node::leaf(0.0));
        nodes.push(Node::leaf(0.0));
        nodes[at] = Node {
            feature: f as i32,
            threshold: bins.cuts[f][b],
            left: l as u32,
            right: r as u32,
            missing: r as u32,
            value: 0.0,
        };
        stack.push((right, depth + 1, r));
        stack.push((left, depth + 1, l));
    }
    Tree { nodes }
}

fn fit_boosted(d: Rows<'_>, p: &BoostedParams, seed: u64) -> Result<Predictor, TrainError> {
    use perpetual::objective::Objective;
    use perpetual::{Matrix, PerpetualBooster};
    // A seeded subsample when there are more rows than `max_rows`, in row order.
    let mut keep: Vec<usize> = if d.len() > p.max_rows {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB005_7ED5);
        sample(&mut rng, d.len(), p.max_rows).into_vec()
    } else {
        (0..d.len()).collect()
    };
    keep.sort_unstable();
    // perpetual reads column-major data.
    let (rows, width) = (keep.len(), d.width());
    let mut columns = vec![0.0; rows * width];
    for (r, i) in keep.iter().enumerate() {
        for (c, x) in d.row(*i).iter().enumerate() {
            columns[c * rows + r] = *x;
        }
    }
    let y: Vec<f64> = keep
        .iter()
        .map(|i| if d.y(*i) { 1.0 } else { 0.0 })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut booster = PerpetualBooster::default()
        .set_objective(Objective::LogLoss)
        .set_budget(p.budget)
        .set_max_bin(p.max_bin)
        .set_seed(seed)
        .set_num_threads(Some(threads))
        .set_iteration_limit(Some(p.iteration_limit));
    booster
        .fit(&Matrix::new(&columns, rows, width), &y, None, None)
        .map_err(|e| TrainError::Fit(format!("boosted trees: {e}")))?;
    if booster.regression_head.is_some() {
        return Err(TrainError::Fit(
            "perpetual added a linear head, which the artifact cannot hold".into(),
        ));
    }
    let trees = booster
        .get_prediction_trees()
        .iter()
        .map(convert_perpetual)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Predictor::Boosted {
        base: booster.base_score,
        trees,
    })
}

/// Renumbers perpetual's node map depth first, so that children follow their parent.
fn convert_perpetual(t: &perpetual::tree::Tree) -> Result<Tree, TrainError> {
    let mut out: Vec<Node> = Vec::with_capacity(t.nodes.len());
    let mut map = std::collections::HashMap::new();
    // (perpetual node number, parent slot to patch with our index, which child)
    let mut stack = vec![(0usize, None::<(usize, u8)>)];
    while let Some((num, parent)) = stack.pop() {
        let idx = match map.get(&num) {
            Some(i) => *i,
            None => {
                let n = t
                    .nodes
                    .get(&num)
                    .ok_or_else(|| TrainError::Fit(format!("boosted tree lacks node {num}")))?;
                let idx = out.len();
                map.insert(num, idx);
                if n.is_leaf {
                    out.push(Node::leaf(f64::from(n.weight_value)));
                } else {
                    if n.left_cats.is_some() {
                        return Err(TrainError::Fit(
                            "categorical splits are not used by Lodestar's boosted trees".into(),
                        ));
                    }
                    out.push(Node {
                        feature: n.split_feature as i32,
                        threshold: n.split_value,
                        left: 0,
                        right: 0,
                        missing: 0,
                        value: f64::from(n.weight_value),
                    });
                    stack.push((n.missing_node, Some((idx, 2))));
                    stack.push((n.right_child, Some((idx, 1))));
                    stack.push((n.left_child, Some((idx, 0))));
                }
                idx
            }
        };
        if let Some((p, which)) = parent {
            let node = &mut out[p];
            match which {
                0 => node.left = idx as u32,
                1 => node.right = idx as u32,
                _ => node.missing = idx as u32,
            }
        }
    }
    Ok(Tree { nodes: out })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two informative features, one noise; at risk when x0 - x1 + noise > 0.
    pub(crate) fn toy(rows: usize, seed: u64) -> Design {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..rows {
            let a: f64 = rng.random_range(-2.0..2.0);
            let b: f64 = rng.random_range(-2.0..2.0);
            let c: f64 = rng.random_range(-2.0..2.0);
            x.extend([a, b, c]);
            y.push(a - b + rng.random_range(-1.0..1.0) > 0.0);
        }
        Design { x, width: 3, y }
    }

    #[test]
    fn hyperparameters_are_checked_before_fitting() {
        let mut h = Hyperparameters::default();
        h.forest.feature_fraction = 0.0;
        h.mlp.hidden.clear();
        let err = fit(ModelFamily::Logistic, &toy(50, 1), &h, 1, TrainDevice::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("forest.feature_fraction") && err.contains("mlp.hidden"),
            "{err}"
        );
        let one_class = Design {
            x: vec![0.0; 3 * 4],
            width: 3,
            y: vec![false; 4],
        };
        let err = fit(
            ModelFamily::Logistic,
            &one_class,
            &Hyperparameters::default(),
            1,
            TrainDevice::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("one outcome only"), "{err}");
    }

    #[test]
    fn converted_models_agree_with_the_libraries() {
        let d = toy(600, 7);
        let h = Hyperparameters::default();
        // Logistic: our plain weights give linfa's probabilities.
        let x = Array2::from_shape_vec((d.rows(), 3), d.x.clone()).unwrap();
        let fitted = LogisticRegression::default()
            .alpha(h.logistic.alpha)
            .max_iterations(h.logistic.max_iterations)
            .gradient_tolerance(h.logistic.tolerance * d.rows() as f64)
            .fit(&Dataset::new(x.clone(), Array1::from_vec(d.y.clone())))
            .unwrap();
        let theirs = fitted.predict_probabilities(&x);
        let ours = fit_logistic(Rows::all(&d), &h.logistic).unwrap();
        let positive_is_at_risk = fitted.labels().pos.class;
        for i in 0..d.rows() {
            let p = if positive_is_at_risk {
                theirs[i]
            } else {
                1.0 - theirs[i]
            };
            assert!((ours.probability(d.row(i)) - p).abs() < 1e-9);
        }
        // With at risk the more frequent class, and the rarer, the weights point the same way.
        let mut rare = d.clone();
        rare.y.iter_mut().for_each(|v| *v = !*v);
        rare.x.iter_mut().for_each(|v| *v = -*v);
        let flipped = fit_logistic(Rows::all(&rare), &h.logistic).unwrap();
        let (Predictor::Linear { weights: a, .. }, Predictor::Linear { weights: b, .. }) =
            (&ours, &flipped)
        else {
            unreachable!()
        };
        assert!(
            a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-6),
            "{a:?} vs {b:?}"
        );
        // Boosted: the converted trees reproduce perpetual's log-odds.
        use perpetual::objective::Objective;
        let rows = d.rows();
        let mut columns = vec![0.0; d.x.len()];
        for r in 0..rows {
            for c in 0..3 {
                columns[c * rows + r] = d.x[r * 3 + c];
            }
        }
        let y: Vec<f64> = d.y.iter().map(|v| f64::from(u8::from(*v))).collect();
        let mut booster = perpetual::PerpetualBooster::default()
            .set_objective(Objective::LogLoss)
            .set_budget(0.5)
            .set_seed(3);
        let m = perpetual::Matrix::new(&columns, rows, 3);
        booster.fit(&m, &y, None, None).unwrap();
        let theirs = booster.predict(&m, false);
        let ours = Predictor::Boosted {
            base: booster.base_score,
            trees: booster
                .get_prediction_trees()
                .iter()
                .map(|t| convert_perpetual(t).unwrap())
                .collect(),
        };
        ours.check(3).unwrap();
        for (i, logit) in theirs.iter().enumerate() {
            let p = lodestar_model::sigmoid(*logit);
            assert!((ours.probability(d.row(i)) - p).abs() < 1e-9);
        }
    }

    #[test]
    fn every_family_learns_the_toy_signal() {
        let train = toy(1500, 11);
        let test = toy(500, 12);
        let mut h = Hyperparameters::default();
        h.forest.trees = 12;
        h.mlp.epochs = 8;
        h.mlp.batch_size = 64;
        for family in ModelFamily::ALL {
            let m = fit(family, &train, &h, 5, TrainDevice::Cpu).unwrap();
            m.check(3).unwrap();
            let p: Vec<f64> = (0..test.rows())
                .map(|i| m.probability(test.row(i)))
                .collect();
            let auc = crate::metrics::roc_auc(&p, &test.y);
            assert!(auc > 0.85, "{family}: AUC {auc}");
        }
    }

    #[test]
    fn a_subset_of_rows_fits_as_the_same_rows_copied_out() {
        let d = toy(500, 4);
        let keep: Vec<usize> = (0..d.rows()).filter(|i| i % 3 != 1).collect();
        let copied = Design {
            x: keep
                .iter()
                .flat_map(|i| d.row(*i).iter().copied())
                .collect(),
            width: d.width,
            y: keep.iter().map(|i| d.y[*i]).collect(),
        };
        let mut h = Hyperparameters::default();
        h.forest.trees = 6;
        h.boosted.max_rows = 200;
        h.mlp.epochs = 2;
        for family in ModelFamily::ALL {
            let a = fit_rows(family, Rows::subset(&d, &keep), &h, 9, TrainDevice::Cpu).unwrap();
            let b = fit(family, &copied, &h, 9, TrainDevice::Cpu).unwrap();
            assert_eq!(a, b, "{family}");
        }
    }

    #[test]
    fn rows_moved_to_the_front_fit_as_the_same_rows_copied_out_and_go_back() {
        let d = toy(500, 6);
        let keep: Vec<usize> = (0..d.rows()).filter(|i| i % 4 != 2 && *i != 0).collect();
        let h = Hyperparameters::default();
        let copied = fit_rows(
            ModelFamily::Logistic,
            Rows::subset(&d, &keep),
            &h,
            9,
            TrainDevice::Cpu,
        )
        .unwrap();
        let mut moved = d.clone();
        let y: Vec<bool> = keep.iter().map(|i| d.y[*i]).collect();
        moved.move_to_front(&keep);
        for (to, from) in keep.iter().enumerate() {
            assert_eq!(moved.row(to), d.row(*from));
        }
        let front = fit_rows(
            ModelFamily::Logistic,
            Rows::front(&moved, &y),
            &h,
            9,
            TrainDevice::Cpu,
        )
        .unwrap();
        assert_eq!(front, copied);
        let mut filled = Vec::new();
        moved.move_back(&keep, |i, row| {
            filled.push(i);
            row.copy_from_slice(d.row(i));
        });
        let dropped: Vec<usize> = (0..d.rows()).filter(|i| !keep.contains(i)).collect();
        assert_eq!(filled, dropped);
        assert_eq!(moved.x, d.x);
    }

    #[test]
    fn the_same_seed_gives_the_same_model() {
        let d = toy(400, 3);
        let mut h = Hyperparameters::default();
        h.forest.trees = 6;
        h.mlp.epochs = 2;
        for family in ModelFamily::ALL {
            let a = fit(family, &d, &h, 9, TrainDevice::Cpu).unwrap();
            let b = fit(family, &d, &h, 9, TrainDevice::Cpu).unwrap();
            assert_eq!(a, b, "{family}");
        }
    }
}
