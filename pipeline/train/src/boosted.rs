//! Gradient-boosted trees (perpetual): their settings, the fit on a seeded subsample, and
//! perpetual's trees converted to plain [`Tree`]s.

use lodestar_model::{Node, Predictor, Tree};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::design::Rows;

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

pub(crate) fn fit_boosted(
    d: Rows<'_>,
    p: &BoostedParams,
    seed: u64,
) -> Result<Predictor, TrainError> {
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
pub(crate) fn convert_perpetual(t: &perpetual::tree::Tree) -> Result<Tree, TrainError> {
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
