//! The gate judges subgroup gaps with their uncertainty: on the genuine sample an honest model's
//! gaps pass the default gate, and the same model with one group's true-positive rate halved
//! (a planted unfairness) is refused, naming the group sizes and the interval.

use std::path::Path;

use lodestar_domain::features::ProtectedAttribute;
use lodestar_domain::{EvaluationReport, PromotionGate, WeekMetrics};
use lodestar_ingest::{IngestOptions, ingest};
use lodestar_model::ModelFamily;
use lodestar_train::batch::score_rows;
use lodestar_train::evaluate::{Protocol, TrainOptions, fairness};
use lodestar_train::{Snapshot, evaluate};

#[test]
fn an_honest_model_passes_and_a_planted_unfair_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let export = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-samples/oulad");
    let out = ingest(
        &export,
        root.path(),
        &IngestOptions::default(),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let s = Snapshot::read(&out.dir).unwrap();
    let protocol = Protocol::Temporal {
        train: vec!["2013B".into()],
        test: vec!["2013J".into()],
    };
    let e = evaluate(
        &s,
        &protocol,
        &[ModelFamily::Logistic],
        &[10],
        &TrainOptions::default(),
        false,
        &mut |_| {},
    )
    .unwrap();
    let artifact = &e.results[0].artifact;
    let tested = s.select_presentations(&["2013J".to_owned()]).unwrap();
    let rows: Vec<usize> = (0..s.len())
        .filter(|r| {
            tested.contains(&s.presentation[*r])
                && s.week[*r] == 10
                && s.active[*r]
                && s.label[*r].is_some()
        })
        .collect();
    let honest: Vec<f64> = score_rows(&s, artifact, &rows)
        .unwrap()
        .iter()
        .map(|p| p.probability)
        .collect();
    let y: Vec<bool> = rows.iter().map(|r| s.label[*r] == Some(true)).collect();
    let t = artifact.threshold;

    let gate = PromotionGate {
        weeks: vec![10],
        max_ece: 1.0,
        ..PromotionGate::default()
    };
    let verdict = |p: &[f64]| {
        let (subgroups, gaps) = fairness(&s, 10, &rows, p, &y, t);
        let report = EvaluationReport {
            weeks: vec![WeekMetrics {
                week: 10,
                ece: 0.0,
                ..WeekMetrics::default()
            }],
            subgroups,
            fairness: gaps,
            ..EvaluationReport::default()
        };
        gate.evaluate(&report, None)
    };
    // Regions differ for real on the sample (its two modules draw from different regions), so
    // the planted bias is judged on gender, which the honest model passes.
    let gender_reasons = |d: &lodestar_domain::GateDecision| -> Vec<String> {
        d.reasons
            .iter()
            .filter(|r| r.contains("Gender"))
            .cloned()
            .collect()
    };
    let d = verdict(&honest);
    assert!(
        gender_reasons(&d).is_empty(),
        "the honest model: {:?}",
        d.reasons
    );

    // Plant: the largest gender group's true positives, every other one pushed below the
    // threshold, so its TPR halves while the other group's stays.
    let gender = &s
        .groups
        .iter()
        .find(|(a, _)| *a == ProtectedAttribute::Gender)
        .unwrap()
        .1;
    let count = |g: &str| rows.iter().filter(|r| gender[**r] == g).count();
    let largest = if count("F") >= count("M") { "F" } else { "M" };
    let mut planted = honest.clone();
    let mut flip = false;
    for (k, r) in rows.iter().enumerate() {
        if gender[*r] == largest && y[k] && planted[k] >= t {
            if flip {
                planted[k] = 0.0;
            }
            flip = !flip;
        }
    }
    let d = verdict(&planted);
    assert!(!d.passed);
    let reason = d
        .reasons
        .iter()
        .find(|r| r.contains("Gender TPR gap"))
        .unwrap_or_else(|| panic!("{:?}", d.reasons));
    assert!(
        reason.contains("95% interval") && reason.contains(&format!("{largest} (")),
        "{reason}"
    );
}
