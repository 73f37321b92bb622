//! The fast explanation path against the reference per-feature re-evaluation, on synthetic
//! artifacts of every model family: same probabilities, tiers and flags, same factors (names,
//! order, values, typical values, texts) and contributions within 1e-9.

mod support;

use lodestar_model::encode::Cell;
use lodestar_model::{Artifact, Factor, ModelFamily, Prediction};
use support::{Rng, Spec};

const TOLERANCE: f64 = 1e-9;

fn same_factors(what: &str, fast: &[Factor], reference: &[Factor]) {
    let names = |f: &[Factor]| f.iter().map(|f| f.feature.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(fast),
        names(reference),
        "{what}: factors or their order"
    );
    for (f, r) in fast.iter().zip(reference) {
        assert_eq!(
            f.value.map(f64::to_bits),
            r.value.map(f64::to_bits),
            "{what}: value"
        );
        assert_eq!(f.typical.to_bits(), r.typical.to_bits(), "{what}: typical");
        assert_eq!(f.text, r.text, "{what}: text");
        assert!(
            (f.contribution - r.contribution).abs() <= TOLERANCE,
            "{what}: {} contributes {} against {}",
            f.feature,
            f.contribution,
            r.contribution
        );
    }
}

fn same_prediction(what: &str, fast: &Prediction, reference: &Prediction) {
    assert_eq!(
        fast.uncalibrated.to_bits(),
        reference.uncalibrated.to_bits(),
        "{what}: uncalibrated"
    );
    assert_eq!(
        fast.probability.to_bits(),
        reference.probability.to_bits(),
        "{what}: probability"
    );
    assert_eq!(fast.tier, reference.tier, "{what}: tier");
    assert_eq!(fast.flagged, reference.flagged, "{what}: flagged");
    same_factors(
        &format!("{what} up"),
        &fast.factors_up,
        &reference.factors_up,
    );
    same_factors(
        &format!("{what} down"),
        &fast.factors_down,
        &reference.factors_down,
    );
}

/// Compares both paths on `rows` of `a`; returns how many factors were compared.
fn compare(what: &str, a: &Artifact, rows: &[Vec<Cell>]) -> usize {
    let mut compared = 0;
    for (r, cells) in rows.iter().enumerate() {
        let what = format!("{what}, row {r}");
        let reference = support::score_cells(a, cells);
        let fast = a.score_cells(cells);
        same_prediction(&what, &fast, &reference);
        let all = support::explain(a, cells, reference.uncalibrated);
        same_factors(
            &format!("{what} explain"),
            &a.explain(cells, reference.uncalibrated),
            &all,
        );
        // A probability the model did not give shifts every contribution alike.
        let shifted = 0.8 * reference.uncalibrated + 0.1;
        same_factors(
            &format!("{what} explain at another base"),
            &a.explain(cells, shifted),
            &support::explain(a, cells, shifted),
        );
        compared += all.len();
    }
    compared
}

fn check_family(family: ModelFamily, spec: &Spec, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = support::artifact(&mut rng, family, spec);
    let rows = support::rows(&mut rng, &a.encoder.columns, 150);
    let what = format!("{family} (standardised: {})", spec.standardise);
    let compared = compare(&what, &a, &rows);
    let numeric = a
        .encoder
        .columns
        .iter()
        .filter(|c| c.kind != lodestar_domain::FeatureKind::Categorical)
        .count();
    assert!(
        compared > rows.len() * numeric / 4,
        "{what}: only {compared} factors compared: the synthetic model explains too little"
    );
}

#[test]
fn every_family_explains_as_the_reference_does() {
    for standardise in [true, false] {
        let spec = Spec {
            standardise,
            ..Spec::small()
        };
        for (i, family) in ModelFamily::ALL
            .into_iter()
            .chain([ModelFamily::Ensemble])
            .enumerate()
        {
            check_family(family, &spec, 11 + i as u64);
        }
    }
}

#[test]
fn served_ensemble_and_deep_networks_explain_as_the_reference_does() {
    let mut spec = Spec::served();
    spec.trees = 30;
    check_family(ModelFamily::Ensemble, &spec, 5);
    // One hidden layer, and three.
    for (seed, hidden) in [(6, vec![7]), (7, vec![12, 8, 4])] {
        let spec = Spec {
            hidden,
            ..Spec::small()
        };
        check_family(ModelFamily::Mlp, &spec, seed);
    }
    // A nested ensemble: its middle member an ensemble of its own.
    let spec = Spec {
        members: vec![
            ModelFamily::Boosted,
            ModelFamily::Logistic,
            ModelFamily::Forest,
        ],
        ..Spec::small()
    };
    let mut inner = spec.clone();
    inner.members = vec![ModelFamily::Logistic, ModelFamily::Mlp];
    let mut rng = Rng::new(8);
    let mut a = support::artifact(&mut rng, ModelFamily::Ensemble, &spec);
    let b = support::artifact(&mut rng, ModelFamily::Ensemble, &inner);
    let lodestar_model::Predictor::Ensemble { members } = &mut a.predictor else {
        unreachable!()
    };
    members[1] = b.predictor;
    let rows = support::rows(&mut rng, &a.encoder.columns, 80);
    assert!(compare("nested ensemble", &a, &rows) > 0);
}

#[test]
fn rows_without_typical_values_or_at_them_have_no_factors() {
    let mut rng = Rng::new(3);
    let mut a = support::artifact(&mut rng, ModelFamily::Ensemble, &Spec::small());
    let rows = support::rows(&mut rng, &a.encoder.columns, 5);
    // The row itself as the typical values: nothing to explain.
    let row = &rows[0];
    let typical: Vec<f64> = row
        .iter()
        .map(|c| match c {
            Cell::Num(v) if !v.is_nan() => *v,
            _ => f64::NAN,
        })
        .collect();
    a.reference.by_week = vec![typical];
    let p = a.score_cells(row);
    assert!(p.factors_up.is_empty() && p.factors_down.is_empty());
    same_prediction("at typical", &p, &support::score_cells(&a, row));
    a.reference.by_week.clear();
    for cells in &rows {
        let p = a.score_cells(cells);
        assert!(p.factors_up.is_empty() && p.factors_down.is_empty());
        assert!(a.explain(cells, p.uncalibrated).is_empty());
        same_prediction("no reference", &p, &support::score_cells(&a, cells));
    }
}
