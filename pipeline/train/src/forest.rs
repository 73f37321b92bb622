//! The random forest: Lodestar's own histogram CART trees (Gini), bagged and fitted in
//! parallel, each deterministic for the seed and its index.

use lodestar_model::{Node, Predictor, Tree};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::design::Rows;

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

pub(crate) fn fit_forest(
    d: Rows<'_>,
    p: &ForestParams,
    seed: u64,
) -> Result<Predictor, TrainError> {
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
