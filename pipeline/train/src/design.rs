//! The design matrix every family is fitted on, and the rows of it a fit reads in place
//! (shared by the fitting dispatcher in `fit.rs` and each family's module).

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
    pub(crate) x: &'a [f64],
    /// Label of each row of `x`.
    y: &'a [bool],
    width: usize,
    pub(crate) subset: Option<&'a [usize]>,
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
    pub(crate) fn labels(&self) -> Vec<bool> {
        (0..self.len()).map(|i| self.y(i)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

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
}
