//! One training interface over a design matrix for every model family. Hyperparameters are
//! checked before any fitting; every random choice comes from the seed, so the same data,
//! configuration and seed give the same model. Each fitted library model is converted to the
//! plain [`Predictor`] that serving runs.
//!
//! Each family has its own module: `logistic.rs`, `forest.rs`, `boosted.rs` and `mlp.rs`; the
//! design matrix and the rows a fit reads are in `design.rs`.

use lodestar_model::{ModelFamily, Predictor};
use serde::{Deserialize, Serialize};

use crate::TrainError;
pub use crate::boosted::BoostedParams;
pub use crate::design::Design;
use crate::design::Rows;
pub use crate::forest::ForestParams;
pub use crate::logistic::LogisticParams;
pub use crate::mlp::{MlpParams, TrainDevice};
use crate::{boosted::fit_boosted, forest::fit_forest, logistic::fit_logistic};

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

#[cfg(test)]
mod tests {
    use linfa::prelude::*;
    use linfa_logistic::LogisticRegression;
    use ndarray::{Array1, Array2};

    use super::*;
    use crate::boosted::convert_perpetual;
    use crate::design::tests::toy;

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
