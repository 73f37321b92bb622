//! The fitted model families as plain data: a linear model, tree ensembles (a random forest's
//! averaged leaf probabilities, or boosted trees' summed log-odds) and a small multilayer
//! perceptron. Training converts each library's fitted model into these, so serving needs no
//! machine-learning crate; tests in the training crate check that both give the same outputs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ModelError, sigmoid};

/// A model family Lodestar trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// Logistic regression (linfa-logistic) on standardised features.
    Logistic,
    /// Random forest of CART trees (linfa-trees), bootstrap rows and per-tree feature subsets.
    Forest,
    /// Gradient-boosted trees (perpetual).
    Boosted,
    /// A multilayer perceptron (burn).
    Mlp,
    /// The mean log-odds of the other families' models.
    Ensemble,
}

impl ModelFamily {
    /// Every family that fits a model of its own, in the order reports list them.
    pub const ALL: [ModelFamily; 4] = [
        ModelFamily::Logistic,
        ModelFamily::Forest,
        ModelFamily::Boosted,
        ModelFamily::Mlp,
    ];

    /// Name as written on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Logistic => "logistic",
            ModelFamily::Forest => "forest",
            ModelFamily::Boosted => "boosted",
            ModelFamily::Mlp => "mlp",
            ModelFamily::Ensemble => "ensemble",
        }
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelFamily {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelFamily::ALL
            .into_iter()
            .chain([ModelFamily::Ensemble])
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown model {s:?}: expected logistic, forest, boosted, mlp or ensemble")
            })
    }
}

/// A tree node: a split (`feature >= 0`) or a leaf (`feature < 0`, `value` its output).
/// A split sends `x[feature] < threshold` left, otherwise right, and NaN to `missing`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Feature index, or -1 for a leaf.
    pub feature: i32,
    /// Split threshold.
    pub threshold: f64,
    /// Child for values below the threshold.
    pub left: u32,
    /// Child for values at or above it.
    pub right: u32,
    /// Child for a missing value.
    pub missing: u32,
    /// Output of a leaf (probability for a forest, log-odds for boosted trees).
    pub value: f64,
}

impl Node {
    /// A leaf with output `value`.
    pub fn leaf(value: f64) -> Node {
        Node {
            feature: -1,
            threshold: 0.0,
            left: 0,
            right: 0,
            missing: 0,
            value,
        }
    }

    /// The child a split sends `v` to: below the threshold left, at or above right, NaN to
    /// `missing`.
    #[inline]
    pub(crate) fn child(&self, v: f64) -> usize {
        (if v.is_nan() {
            self.missing
        } else if v < self.threshold {
            self.left
        } else {
            self.right
        }) as usize
    }
}

/// A binary tree, root first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Nodes; index 0 is the root.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Index of the leaf `x` falls in.
    pub fn leaf_of(&self, x: &[f64]) -> usize {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.feature < 0 {
                return i;
            }
            i = n.child(x[n.feature as usize]);
        }
    }

    /// Output of the leaf `x` falls in.
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.nodes[self.leaf_of(x)].value
    }

    fn check(&self, width: usize) -> Result<(), String> {
        let n = self.nodes.len() as u32;
        if n == 0 {
            return Err("an empty tree".into());
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.feature >= 0 {
                let children = [node.left, node.right, node.missing];
                if node.feature as usize >= width
                    || children.iter().any(|c| *c >= n || *c as usize <= i)
                {
                    return Err(format!("tree node {i} points outside the tree or input"));
                }
            }
        }
        Ok(())
    }
}

/// A dense layer: `y = x W + b`, `weights` row-major `[inputs][outputs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    /// Inputs.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// Row-major `[inputs][outputs]`.
    pub weights: Vec<f32>,
    /// One per output.
    pub bias: Vec<f32>,
}

impl Dense {
    fn forward(&self, x: &[f64]) -> Vec<f64> {
        let mut y = Vec::with_capacity(self.outputs);
        self.forward_into(x, &mut y);
        y
    }

    /// Writes `x W + b` into `y` (resized to the outputs).
    pub(crate) fn forward_into(&self, x: &[f64], y: &mut Vec<f64>) {
        y.clear();
        y.extend(self.bias.iter().map(|b| f64::from(*b)));
        for (i, xi) in x.iter().enumerate() {
            let row = self.row(i);
            for (yo, w) in y.iter_mut().zip(row) {
                *yo += xi * f64::from(*w);
            }
        }
    }

    /// The weights from input `i` to every output.
    #[inline]
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.weights[i * self.outputs..(i + 1) * self.outputs]
    }
}

/// A fitted model as plain data. Its input is the encoder's finished vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Predictor {
    /// `sigmoid(w·x + b)`.
    Linear {
        /// One weight per input.
        weights: Vec<f64>,
        /// Intercept.
        bias: f64,
    },
    /// The mean of the trees' leaf probabilities.
    Forest {
        /// Trees.
        trees: Vec<Tree>,
    },
    /// `sigmoid(base + Σ tree outputs)`.
    Boosted {
        /// Starting log-odds.
        base: f64,
        /// Trees.
        trees: Vec<Tree>,
    },
    /// ReLU between layers, one logit out.
    Mlp {
        /// Layers, input first.
        layers: Vec<Dense>,
    },
    /// `sigmoid(mean of the members' log-odds)`.
    Ensemble {
        /// Member models (on the same input).
        members: Vec<Predictor>,
    },
}

impl Predictor {
    /// The uncalibrated probability of an at-risk outcome for an encoded vector.
    pub fn probability(&self, x: &[f64]) -> f64 {
        match self {
            Predictor::Linear { weights, bias } => {
                sigmoid(bias + weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>())
            }
            Predictor::Forest { trees } => {
                trees.iter().map(|t| t.predict(x)).sum::<f64>() / trees.len().max(1) as f64
            }
            Predictor::Boosted { base, trees } => {
                sigmoid(base + trees.iter().map(|t| t.predict(x)).sum::<f64>())
            }
            Predictor::Mlp { layers } => {
                let mut h = x.to_vec();
                for (i, layer) in layers.iter().enumerate() {
                    h = layer.forward(&h);
                    if i + 1 < layers.len() {
                        h.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                }
                sigmoid(h.first().copied().unwrap_or(0.0))
            }
            Predictor::Ensemble { members } => sigmoid(
                members
                    .iter()
                    .map(|m| crate::logit(m.probability(x)))
                    .sum::<f64>()
                    / members.len().max(1) as f64,
            ),
        }
    }

    /// Checks sizes against the input width.
    pub fn check(&self, width: usize) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Inconsistent(m));
        match self {
            Predictor::Linear { weights, .. } if weights.len() != width => {
                bad(format!("{} weights for {width} inputs", weights.len()))
            }
            Predictor::Forest { trees } | Predictor::Boosted { trees, .. } => trees
                .iter()
                .try_for_each(|t| t.check(width))
                .map_err(ModelError::Inconsistent),
            Predictor::Mlp { layers } => {
                let mut inputs = width;
                for l in layers {
                    if l.inputs != inputs
                        || l.weights.len() != l.inputs * l.outputs
                        || l.bias.len() != l.outputs
                    {
                        return bad(format!(
                            "a layer of {}x{} does not fit {inputs} inputs",
                            l.inputs, l.outputs
                        ));
                    }
                    inputs = l.outputs;
                }
                if inputs != 1 {
                    return bad(format!("the network ends in {inputs} outputs, not 1"));
                }
                Ok(())
            }
            Predictor::Ensemble { members } if members.is_empty() => {
                bad("an ensemble without members".into())
            }
            Predictor::Ensemble { members } => members.iter().try_for_each(|m| m.check(width)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_route_below_left_at_or_above_right_and_missing_apart() {
        let split = Node {
            feature: 0,
            threshold: 2.0,
            left: 1,
            right: 2,
            missing: 3,
            value: 0.0,
        };
        let t = Tree {
            nodes: vec![split, Node::leaf(0.1), Node::leaf(0.9), Node::leaf(0.5)],
        };
        assert_eq!(t.predict(&[1.9]), 0.1);
        assert_eq!(t.predict(&[2.0]), 0.9);
        assert_eq!(t.predict(&[f64::NAN]), 0.5);
        let forest = Predictor::Forest {
            trees: vec![
                t.clone(),
                Tree {
                    nodes: vec![Node::leaf(0.3)],
                },
            ],
        };
        assert!((forest.probability(&[5.0]) - 0.6).abs() < 1e-12);
        assert!(forest.check(1).is_ok());
        assert!(forest.check(0).is_err());
    }

    #[test]
    fn linear_and_mlp_compute_logits() {
        let lin = Predictor::Linear {
            weights: vec![2.0, -1.0],
            bias: 0.5,
        };
        assert!((lin.probability(&[1.0, 2.5]) - 0.5).abs() < 1e-12);
        // relu(x0 - x1) * 2 - 1
        let mlp = Predictor::Mlp {
            layers: vec![
                Dense {
                    inputs: 2,
                    outputs: 1,
                    weights: vec![1.0, -1.0],
                    bias: vec![0.0],
                },
                Dense {
                    inputs: 1,
                    outputs: 1,
                    weights: vec![2.0],
                    bias: vec![-1.0],
                },
            ],
        };
        assert!((mlp.probability(&[1.0, 3.0]) - sigmoid(-1.0)).abs() < 1e-12);
        assert!((mlp.probability(&[3.0, 1.0]) - sigmoid(3.0)).abs() < 1e-12);
        assert!(mlp.check(2).is_ok() && mlp.check(3).is_err());
    }
}
