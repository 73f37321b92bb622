//! Exact what-ifs for explanations, fast. An explanation asks, for every numeric input of one
//! row, what the model would say with that one input at its typical value. Evaluating the whole
//! model again for each input repeats almost all of the work, so each family is evaluated once
//! and then updated for each changed input:
//!
//! - linear: the change of the one input times its weight;
//! - trees (forest, boosted): only features on the row's path through a tree can move its leaf,
//!   so each tree is walked once and, where a changed value would turn off the path, walked
//!   again from that node; the leaf differences add up per input;
//! - MLP: the first layer's pre-activations move by the input's change times its weight row,
//!   the second layer's by the changes of the hidden units that moved, and the rest runs as is;
//! - ensemble: each member the same way, then the mean of the members' log-odds.
//!
//! The probabilities equal [`Predictor::probability`] of the changed vector up to the order of
//! floating-point sums; tree leaves are exactly the same.

use std::cell::RefCell;

use crate::predictor::{Dense, Node, Predictor, Tree};
use crate::{logit, sigmoid};

/// One what-if: encoded input `input` set to `value`, the rest of the row unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Probe {
    /// Index in the encoded (finished) vector.
    pub(crate) input: usize,
    /// Its finished value in the what-if.
    pub(crate) value: f64,
}

/// No probe changes this input.
const NONE: u32 = u32::MAX;

/// Buffers reused from row to row: once a thread has scored a row, the what-ifs of the next
/// allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The row's encoded vector, for the caller to fill.
    pub(crate) x: Vec<f64>,
    /// The row's what-ifs, for the caller to fill.
    pub(crate) probes: Vec<Probe>,
    /// Per explained column: the column and its probe (None when it changes nothing).
    pub(crate) owners: Vec<(usize, Option<usize>)>,
    /// Per probe, its probability.
    pub(crate) out: Vec<f64>,
    /// Per encoded input, the probe that changes it, or [`NONE`].
    probe_of: Vec<u32>,
    /// Per probe, the last tree in which it already turned off the row's path.
    settled: Vec<u32>,
    /// Per probe, the change of the sum of tree outputs.
    delta: Vec<f64>,
    /// Leaves the probes reach in the current tree, where they differ from the row's.
    pending: Vec<(u32, f64)>,
    /// MLP: the row's first and second layers' pre-activations, the first's activations.
    h1: Vec<f64>,
    a1: Vec<f64>,
    h2: Vec<f64>,
    /// MLP: one probe's activations through the remaining layers.
    ping: Vec<f64>,
    pong: Vec<f64>,
    /// MLP: how much a probe moves each hidden unit, the units it moves, the row's active and
    /// inactive units, and the second layer's weights as f64 (see [`blocked`]).
    by: Vec<f64>,
    moved: Vec<u32>,
    active: Vec<u32>,
    inactive: Vec<u32>,
    w2: Vec<f64>,
    /// Trees: the row's leaf outputs, tree by tree.
    leaves: Vec<f64>,
    /// Spare per-probe buffers for ensembles (one pair per level of nesting).
    spare: Vec<Vec<f64>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Writes to `out[k]` the probability `p` gives the finished vector `x` with probe `k` applied,
/// and returns the probability it gives `x` itself: bit for bit [`Predictor::probability`] (the
/// same operations in the same order). Each probe changes a different input.
pub(crate) fn probabilities(
    p: &Predictor,
    x: &[f64],
    probes: &[Probe],
    out: &mut [f64],
    s: &mut Scratch,
) -> f64 {
    debug_assert_eq!(probes.len(), out.len());
    match p {
        Predictor::Linear { weights, bias } => {
            let z = weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>();
            for (o, pr) in out.iter_mut().zip(probes) {
                let j = pr.input;
                *o = sigmoid(bias + (z + weights[j] * (pr.value - x[j])));
            }
            sigmoid(bias + z)
        }
        Predictor::Forest { trees } => {
            let sum = tree_sums(trees, x, probes, s);
            let n = trees.len().max(1) as f64;
            for (o, d) in out.iter_mut().zip(&s.delta) {
                *o = (sum + d) / n;
            }
            sum / n
        }
        Predictor::Boosted { base, trees } => {
            let sum = tree_sums(trees, x, probes, s);
            for (o, d) in out.iter_mut().zip(&s.delta) {
                *o = sigmoid(base + (sum + d));
            }
            sigmoid(base + sum)
        }
        Predictor::Mlp { layers } => mlp(layers, x, probes, out, s),
        Predictor::Ensemble { members } => {
            let mut each = s.spare.pop().unwrap_or_default();
            let mut z = s.spare.pop().unwrap_or_default();
            each.clear();
            each.resize(probes.len(), 0.0);
            z.clear();
            z.resize(probes.len(), 0.0);
            let n = members.len().max(1) as f64;
            let own = members
                .iter()
                .map(|m| {
                    let own = probabilities(m, x, probes, &mut each, s);
                    for (z, p) in z.iter_mut().zip(&each) {
                        *z += logit(*p);
                    }
                    logit(own)
                })
                .sum::<f64>()
                / n;
            for (o, z) in out.iter_mut().zip(&z) {
                *o = sigmoid(z / n);
            }
            s.spare.push(z);
            s.spare.push(each);
            sigmoid(own)
        }
    }
}

/// The sum of the trees' outputs for `x` (summed as [`Predictor::probability`] sums them);
/// `s.delta[k]` gets how much probe `k` changes it.
fn tree_sums(trees: &[Tree], x: &[f64], probes: &[Probe], s: &mut Scratch) -> f64 {
    s.probe_of.clear();
    s.probe_of.resize(x.len(), NONE);
    for (k, p) in probes.iter().enumerate() {
        s.probe_of[p.input] = k as u32;
    }
    s.settled.clear();
    s.settled.resize(probes.len(), NONE);
    s.delta.clear();
    s.delta.resize(probes.len(), 0.0);
    s.leaves.clear();
    for (t, tree) in trees.iter().enumerate() {
        let t = t as u32;
        let nodes = &tree.nodes;
        s.pending.clear();
        let mut i = 0;
        let leaf = loop {
            let n = &nodes[i];
            if n.feature < 0 {
                break n.value;
            }
            let f = n.feature as usize;
            let next = n.child(x[f]);
            let k = s.probe_of[f];
            // A probe of this feature that has stayed on the path so far leaves it here when its
            // value goes the other way; below this node it is walked on its own.
            if k != NONE && s.settled[k as usize] != t {
                let v = probes[k as usize].value;
                let other = n.child(v);
                if other != next {
                    s.settled[k as usize] = t;
                    s.pending.push((k, walk(nodes, other, x, f, v)));
                }
            }
            i = next;
        };
        s.leaves.push(leaf);
        for &(k, l) in &s.pending {
            s.delta[k as usize] += l - leaf;
        }
    }
    s.leaves.iter().copied().sum::<f64>()
}

/// The output of the leaf reached from node `i` with `x[f]` taken as `v`.
fn walk(nodes: &[Node], mut i: usize, x: &[f64], f: usize, v: f64) -> f64 {
    loop {
        let n = &nodes[i];
        if n.feature < 0 {
            return n.value;
        }
        let g = n.feature as usize;
        i = n.child(if g == f { v } else { x[g] });
    }
}

fn relu(h: &mut [f64]) {
    h.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// The logit of the layers `tail` after a hidden layer whose pre-activations are in `h` (used
/// up); `spare` is a buffer.
fn finish(tail: &[Dense], h: &mut Vec<f64>, spare: &mut Vec<f64>) -> f64 {
    let (mut cur, mut next) = (h, spare);
    for layer in tail {
        relu(cur);
        dense(layer, cur, next);
        std::mem::swap(&mut cur, &mut next);
    }
    cur.first().copied().unwrap_or(0.0)
}

/// As [`finish`], for a what-if: a single output is summed in four interleaved parts, which is
/// faster and differs only by rounding.
fn finish_probe(tail: &[Dense], h: &mut Vec<f64>, spare: &mut Vec<f64>) -> f64 {
    let (mut cur, mut next) = (h, spare);
    for layer in tail {
        relu(cur);
        if layer.outputs == 1 {
            let z = layer.bias.first().map_or(0.0, |b| f64::from(*b)) + dot(cur, &layer.weights);
            next.clear();
            next.push(z);
        } else {
            dense(layer, cur, next);
        }
        std::mem::swap(&mut cur, &mut next);
    }
    cur.first().copied().unwrap_or(0.0)
}

/// `x · w` in four interleaved partial sums.
fn dot(x: &[f64], w: &[f32]) -> f64 {
    let (xs, x_rest) = x.as_chunks::<4>();
    let (ws, w_rest) = w.as_chunks::<4>();
    let mut acc = [0.0; 4];
    for (x, w) in xs.iter().zip(ws) {
        for ((a, x), w) in acc.iter_mut().zip(x).zip(w) {
            *a += x * f64::from(*w);
        }
    }
    let rest: f64 = x_rest
        .iter()
        .zip(w_rest)
        .map(|(x, w)| x * f64::from(*w))
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// Writes `x W + b` of `layer` into `y`, bit for bit as [`Dense`]'s own forward pass: each
/// output is its bias plus the inputs' terms in input order; only the loops are arranged so
/// that 16 outputs at a time stay in registers.
fn dense(layer: &Dense, x: &[f64], y: &mut Vec<f64>) {
    let m = layer.outputs;
    y.clear();
    y.extend(layer.bias.iter().map(|b| f64::from(*b)));
    let mut start = 0;
    while start + BLOCK <= m {
        let mut acc = [0.0; BLOCK];
        acc.copy_from_slice(&y[start..start + BLOCK]);
        for (i, xi) in x.iter().enumerate() {
            let row: &[f32; BLOCK] = layer.weights[i * m + start..i * m + start + BLOCK]
                .try_into()
                .expect("a block of the row");
            for (a, w) in acc.iter_mut().zip(row) {
                *a += xi * f64::from(*w);
            }
        }
        y[start..start + BLOCK].copy_from_slice(&acc);
        start += BLOCK;
    }
    for (o, yo) in y.iter_mut().enumerate().skip(start) {
        let mut acc = *yo;
        for (xi, w) in x.iter().zip(layer.weights[o..].iter().step_by(m)) {
            acc += xi * f64::from(*w);
        }
        *yo = acc;
    }
}

/// Outputs of the second layer kept in registers at a time.
const BLOCK: usize = 16;

/// The second layer's weights as f64, laid out for [`second_layer`]: for each block of
/// [`BLOCK`] outputs, every unit's weights to them side by side; then every unit's weights to
/// the outputs left over.
fn blocked(layer: &Dense, w: &mut Vec<f64>) {
    let m = layer.outputs;
    w.clear();
    let full = m / BLOCK * BLOCK;
    for start in (0..full).step_by(BLOCK) {
        for u in 0..layer.inputs {
            w.extend(
                layer.row(u)[start..start + BLOCK]
                    .iter()
                    .map(|w| f64::from(*w)),
            );
        }
    }
    for u in 0..layer.inputs {
        w.extend(layer.row(u)[full..].iter().map(|w| f64::from(*w)));
    }
}

/// Adds to `y` (the second layer's pre-activations, `m` of them) the moves `by[u]` of the hidden
/// units `u` in `units` times their weights `w` (as [`blocked`] lays them out), [`BLOCK`]
/// outputs at a time in registers.
fn second_layer(units: &[u32], by: &[f64], w: &[f64], m: usize, y: &mut [f64]) {
    let inputs = by.len();
    let full = m / BLOCK * BLOCK;
    let (blocks, rest) = w.split_at(full * inputs);
    for (start, block) in (0..full)
        .step_by(BLOCK)
        .zip(blocks.chunks_exact(BLOCK * inputs))
    {
        let (rows, _) = block.as_chunks::<BLOCK>();
        let mut acc = [0.0; BLOCK];
        acc.copy_from_slice(&y[start..start + BLOCK]);
        for &u in units {
            let b = by[u as usize];
            for (a, w) in acc.iter_mut().zip(&rows[u as usize]) {
                *a += b * w;
            }
        }
        y[start..start + BLOCK].copy_from_slice(&acc);
    }
    let left = m - full;
    if left > 0 {
        for &u in units {
            let b = by[u as usize];
            let at = u as usize * left;
            for (a, w) in y[full..].iter_mut().zip(&rest[at..at + left]) {
                *a += b * w;
            }
        }
    }
}

fn mlp(layers: &[Dense], x: &[f64], probes: &[Probe], out: &mut [f64], s: &mut Scratch) -> f64 {
    let Some((first, rest)) = layers.split_first() else {
        // No layers: the input's first value is the logit.
        for (o, p) in out.iter_mut().zip(probes) {
            let z = if p.input == 0 {
                p.value
            } else {
                x.first().copied().unwrap_or(0.0)
            };
            *o = sigmoid(z);
        }
        return sigmoid(x.first().copied().unwrap_or(0.0));
    };
    let Scratch {
        h1,
        a1,
        h2,
        ping,
        pong,
        by,
        moved,
        active,
        inactive,
        w2,
        ..
    } = s;
    dense(first, x, h1);
    let Some((second, tail)) = rest.split_first() else {
        let z = h1.first().copied().unwrap_or(0.0);
        for (o, p) in out.iter_mut().zip(probes) {
            let d = p.value - x[p.input];
            *o = sigmoid(z + d * first.row(p.input).first().map_or(0.0, |w| f64::from(*w)));
        }
        return sigmoid(z);
    };
    a1.clear();
    a1.extend_from_slice(h1);
    relu(a1);
    dense(second, a1, h2);
    ping.clear();
    ping.extend_from_slice(h2);
    let own = sigmoid(finish(tail, ping, pong));
    // The second layer's weights as f64, and the row's active and inactive hidden units. A
    // change moves every active unit, and an inactive one only if it turns it on; the second
    // layer's pre-activations move by those units' rows.
    let m = second.outputs;
    blocked(second, w2);
    // Sorted without branches: each unit is written to both lists and kept in one.
    let units = a1.len();
    active.resize(units, 0);
    inactive.resize(units, 0);
    let (mut na, mut ni) = (0, 0);
    {
        let (active, inactive) = (&mut active[..], &mut inactive[..]);
        for (u, a) in a1.iter().enumerate() {
            let on = usize::from(*a > 0.0);
            active[na] = u as u32;
            inactive[ni] = u as u32;
            na += on;
            ni += 1 - on;
        }
    }
    let (active, inactive) = (&active[..na], &inactive[..ni]);
    for (o, p) in out.iter_mut().zip(probes) {
        let d = p.value - x[p.input];
        by.clear();
        by.extend(
            h1.iter()
                .zip(a1.iter())
                .zip(first.row(p.input))
                .map(|((h, a), w)| (h + d * f64::from(*w)).max(0.0) - a),
        );
        moved.resize(units, 0);
        let moved = &mut moved[..];
        moved[..na].copy_from_slice(active);
        let mut n = na;
        // Written every time, kept when the unit turns on: no branch to mispredict.
        for &u in inactive {
            moved[n] = u;
            n += usize::from(by[u as usize] != 0.0);
        }
        ping.clear();
        ping.extend_from_slice(h2);
        second_layer(&moved[..n], by, w2, m, ping);
        *o = sigmoid(finish_probe(tail, ping, pong));
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each probe against the whole model evaluated on the changed vector.
    fn agrees(p: &Predictor, x: &[f64], probes: &[Probe]) {
        let mut out = vec![0.0; probes.len()];
        let own = probabilities(p, x, probes, &mut out, &mut Scratch::default());
        assert_eq!(own.to_bits(), p.probability(x).to_bits());
        for (pr, o) in probes.iter().zip(&out) {
            let mut changed = x.to_vec();
            changed[pr.input] = pr.value;
            let full = p.probability(&changed);
            assert!(
                (logit(*o) - logit(full)).abs() <= 1e-12,
                "{pr:?}: {o} against {full}"
            );
        }
    }

    fn split(feature: i32, threshold: f64, left: u32, right: u32, missing: u32) -> Node {
        Node {
            feature,
            threshold,
            left,
            right,
            missing,
            value: 0.0,
        }
    }

    #[test]
    fn a_tree_changes_only_where_a_feature_turns_off_the_path() {
        // x0 < 0.5 → (x0 < 0.2 → (x1 < 0 → 0.1 | 0.2) | 0.3) | 0.9; NaN x0 → 0.6.
        let tree = Tree {
            nodes: vec![
                split(0, 0.5, 1, 6, 7),
                split(0, 0.2, 2, 5, 5),
                split(1, 0.0, 3, 4, 4),
                Node::leaf(0.1),
                Node::leaf(0.2),
                Node::leaf(0.3),
                Node::leaf(0.9),
                Node::leaf(0.6),
            ],
        };
        let x = [0.1, -1.0, 5.0];
        let probe = |input, value| Probe { input, value };
        let probes = [probe(0, 0.3), probe(1, 2.0), probe(2, -5.0)];
        let mut out = [0.0; 3];
        let forest = Predictor::Forest {
            trees: vec![
                tree.clone(),
                Tree {
                    nodes: vec![Node::leaf(0.5)],
                },
            ],
        };
        probabilities(&forest, &x, &probes, &mut out, &mut Scratch::default());
        // x0 = 0.3 stays left at the root and turns right at the second split; x2 is unused.
        let expected = [(0.3 + 0.5) / 2.0, (0.2 + 0.5) / 2.0, (0.1 + 0.5) / 2.0];
        assert!(out.iter().zip(expected).all(|(o, e)| (o - e).abs() < 1e-15));
        agrees(&forest, &x, &probes);
        agrees(&forest, &x, &[probe(0, 0.7), probe(1, f64::NAN)]);
        agrees(&forest, &[f64::NAN, 1.0, 0.0], &[probe(0, 0.0)]);
        let boosted = Predictor::Boosted {
            base: -0.3,
            trees: vec![tree.clone(), tree],
        };
        agrees(&boosted, &x, &probes);
    }

    #[test]
    fn networks_and_ensembles_agree_with_a_full_evaluation() {
        let layer = |inputs: usize, outputs: usize, seed: f32| Dense {
            inputs,
            outputs,
            weights: (0..inputs * outputs)
                .map(|k| ((k as f32 * 0.37 + seed).sin()) * 0.8)
                .collect(),
            bias: (0..outputs)
                .map(|k| (k as f32 + seed).cos() * 0.1)
                .collect(),
        };
        let x = [0.5, -1.2, 0.0, 2.0];
        let probes: Vec<Probe> = (0..4)
            .map(|input| Probe {
                input,
                value: 1.0 - input as f64,
            })
            .collect();
        for widths in [
            vec![4, 1],
            vec![4, 3, 1],
            vec![4, 20, 17, 1],
            vec![4, 5, 4, 3, 1],
        ] {
            let mlp = Predictor::Mlp {
                layers: widths
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| layer(w[0], w[1], i as f32))
                    .collect(),
            };
            agrees(&mlp, &x, &probes);
        }
        let ensemble = Predictor::Ensemble {
            members: vec![
                Predictor::Linear {
                    weights: vec![0.3, -0.2, 0.0, 1.0],
                    bias: 0.1,
                },
                Predictor::Mlp {
                    layers: vec![layer(4, 6, 1.0), layer(6, 1, 2.0)],
                },
            ],
        };
        agrees(&ensemble, &x, &probes);
    }
}
