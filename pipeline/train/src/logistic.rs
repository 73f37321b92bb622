//! Logistic regression (linfa-logistic): its settings and its fit, converted to a plain
//! [`Predictor::Linear`].

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use lodestar_model::Predictor;
use ndarray::{Array1, Array2, ArrayBase, ArrayView2, Data, Ix2};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::design::Rows;

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

pub(crate) fn fit_logistic(d: Rows<'_>, p: &LogisticParams) -> Result<Predictor, TrainError> {
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
