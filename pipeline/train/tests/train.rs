//! Training and evaluation on the genuine OULAD slice in `data-samples/oulad`: the temporal
//! protocol and its population rule, reproducible artifacts, one scoring path for batch and API,
//! and the errors a data team meets first.

use std::path::Path;
use std::sync::OnceLock;

use lodestar_ingest::{IngestOptions, ingest};
use lodestar_model::encode::{FeatureRow, Value};
use lodestar_model::{Artifact, ModelFamily};
use lodestar_train::data::RawColumn;
use lodestar_train::evaluate::{Protocol, TrainOptions, split_training, train_families};
use lodestar_train::{Hyperparameters, Snapshot, evaluate};

/// The slice's snapshot, ingested once per test binary into a folder kept for its lifetime.
fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<(tempfile::TempDir, Snapshot)> = OnceLock::new();
    &SNAPSHOT
        .get_or_init(|| {
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
            let s = Snapshot::read(&root.path().join(&out.manifest.snapshot_id)).unwrap();
            (root, s)
        })
        .1
}

/// Small settings so the suite stays quick.
fn options(seed: u64) -> TrainOptions {
    let mut h = Hyperparameters::default();
    h.forest.trees = 8;
    h.forest.rows_per_tree = 5_000;
    h.boosted.iteration_limit = 40;
    h.mlp.epochs = 2;
    TrainOptions {
        hyperparameters: h,
        seed,
        ..TrainOptions::default()
    }
}

fn temporal() -> Protocol {
    Protocol::Temporal {
        train: vec!["2013B".into()],
        test: vec!["2013J".into()],
    }
}

#[test]
fn reading_a_column_at_a_time_gives_the_whole_frame_s_snapshot() {
    use polars::prelude::{ParquetReader, SerReader};
    let s = snapshot();
    let file = std::fs::File::open(s.dir.join(lodestar_ingest::snapshot::FEATURES_FILE)).unwrap();
    let df = ParquetReader::new(file).finish().unwrap();
    let whole = Snapshot::from_frame(&df, s.id.clone(), s.dir.clone()).unwrap();
    // Every field but the manifest's terms, which `from_frame` does not read.
    let fields = |s: &Snapshot| {
        format!(
            "{:?}",
            (
                &s.schema,
                &s.columns,
                &s.presentation,
                &s.presentations,
                &s.student,
                &s.week,
                &s.active,
                &s.label,
                &s.groups,
            )
        )
    };
    assert_eq!(fields(s), fields(&whole));
    assert!(
        s.groups.iter().all(|(_, g)| g.codes.len() == s.len()
            && g.codes.iter().all(|c| (*c as usize) < g.values.len()))
    );
}

#[test]
fn temporal_evaluation_scores_only_students_still_registered() {
    let s = snapshot();
    let e = evaluate(
        s,
        &temporal(),
        &[ModelFamily::Logistic, ModelFamily::Ensemble],
        &[5, 10, 20],
        &options(1),
        true,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(e.results.len(), 2);
    let test: Vec<u32> = s.select_presentations(&["2013J".into()]).unwrap();
    for r in &e.results {
        let report = &r.report;
        assert!(
            report.protocol.starts_with("temporal"),
            "{}",
            report.protocol
        );
        assert_eq!(report.train_presentations, ["BBB-2013B"]);
        assert_eq!(report.test_presentations, ["BBB-2013J", "GGG-2013J"]);
        assert_eq!(report.weeks.len(), 3);
        for w in &report.weeks {
            // The population: test students still registered at the end of week k.
            let expected = (0..s.len())
                .filter(|i| {
                    test.contains(&s.presentation[*i])
                        && s.week[*i] == w.week
                        && s.active[*i]
                        && s.label[*i].is_some()
                })
                .count() as u64;
            assert_eq!(w.n, expected, "week {}", w.week);
            let c = w.confusion;
            assert_eq!(c.tp + c.fp + c.tn + c.fn_, w.n);
            assert_eq!(c.tp + c.fn_, w.positives);
            assert!(
                w.roc_auc > 0.65 && w.roc_auc <= 1.0,
                "{} week {}: {}",
                r.family,
                w.week,
                w.roc_auc
            );
            assert!(w.ece.is_finite() && w.ece_uncalibrated.is_some());
            assert_eq!(w.reliability.iter().map(|b| b.count).sum::<u64>(), w.n);
            assert!(w.roc_curve.len() >= 3);
        }
        // Every protected attribute is grouped by at every week.
        assert_eq!(report.fairness.len(), 5 * 3);
        assert!(
            report.subgroups.iter().any(|g| g.group == "F")
                && report.subgroups.iter().any(|g| g.group == "M")
        );
        assert!(
            report.calibration.contains("cross-fitted"),
            "{}",
            report.calibration
        );
        let md = report.markdown();
        assert!(md.contains("## Metrics by week") && md.contains("## Fairness"));
    }
    // The best model carries what including protected attributes changes.
    let best = &e.results[e.best].report;
    assert_eq!(best.protected_comparison.len(), 3);
    assert!(!e.results[e.best].artifact.uses_protected_attributes);
}

#[test]
fn a_random_split_says_it_is_for_comparison_only() {
    let e = evaluate(
        snapshot(),
        &Protocol::Random {
            presentations: vec!["BBB-2013J".into()],
            test_fraction: 0.25,
        },
        &[ModelFamily::Logistic],
        &[10],
        &options(1),
        false,
        &mut |_| {},
    )
    .unwrap();
    let r = &e.results[0].report;
    assert!(r.protocol.contains("FOR COMPARISON ONLY"), "{}", r.protocol);
    assert!(r.notes[0].starts_with("Random split"));
}

#[test]
fn the_same_snapshot_options_and_seed_give_the_same_artifact_hash() {
    let s = snapshot();
    let train = s.select_presentations(&["2013B".into()]).unwrap();
    let families = [
        ModelFamily::Logistic,
        ModelFamily::Forest,
        ModelFamily::Boosted,
        ModelFamily::Mlp,
        ModelFamily::Ensemble,
    ];
    let hashes = |seed: u64| -> Vec<String> {
        let rows = split_training(s, &train, seed, None).unwrap();
        train_families(s, &families, &rows, &options(seed), &mut |_| {})
            .unwrap()
            .iter()
            .map(|t| t.artifact.hash())
            .collect()
    };
    let first = hashes(7);
    assert_eq!(first.len(), families.len());
    assert_eq!(first, hashes(7), "two trainings with seed 7 differ");
    let other = hashes(8);
    assert_ne!(first[1], other[1], "the forest ignores its seed");
    assert_ne!(first[3], other[3], "the MLP ignores its seed");
}

#[test]
fn the_artifact_scores_a_caller_row_as_batch_scoring_does() {
    let s = snapshot();
    let train = s.select_presentations(&["2013B".into()]).unwrap();
    let rows = split_training(s, &train, 3, None).unwrap();
    let t = train_families(s, &[ModelFamily::Ensemble], &rows, &options(3), &mut |_| {})
        .unwrap()
        .remove(0);
    let a = Artifact::from_bytes(&t.artifact.to_bytes()).unwrap();
    assert_eq!(a.hash(), t.artifact.hash());
    // A week-10 row of a test student, as a campus system would send it (features by name).
    let test = s.select_presentations(&["BBB-2013J".into()]).unwrap();
    let row = (0..s.len())
        .find(|i| test.contains(&s.presentation[*i]) && s.week[*i] == 10 && s.active[*i])
        .unwrap();
    let mut sent = FeatureRow::new();
    for (f, c) in s.schema.features.iter().zip(&s.columns) {
        let v = match c {
            RawColumn::Num(v) => (!v.get(row).is_nan()).then(|| Value::Number(v.get(row))),
            RawColumn::Text(v) => v.get(row).map(|t| Value::Text(t.to_owned())),
        };
        if f.protected.is_none() {
            sent.insert(f.name.clone(), v);
        }
    }
    sent.insert(
        "id_student".into(),
        Some(Value::Number(s.student[row] as f64)),
    );
    let p = a.score(&sent).unwrap();
    let cells: Vec<_> = t
        .source
        .iter()
        .enumerate()
        .map(|(c, src)| s.cell(*src, row, &a.encoder.columns[c].categories))
        .collect();
    let batch = a.calibration.apply(a.uncalibrated(&cells));
    assert!((p.probability - batch).abs() < 1e-12);
    assert!(p.factors_up.len() + p.factors_down.len() > 0);
    assert!(
        p.factors_up
            .iter()
            .all(|f| f.contribution > 0.0 && !f.text.is_empty())
    );
    // A mistyped row is refused with the field named.
    sent.insert("clicks_total".into(), Some(Value::Text("many".into())));
    let err = a.score(&sent).unwrap_err().to_string();
    assert!(err.contains("`clicks_total` must be a number"), "{err}");
}

#[test]
fn overlapping_or_unknown_presentations_are_refused_by_name() {
    let s = snapshot();
    let run = |train: &str, test: &str| {
        evaluate(
            s,
            &Protocol::Temporal {
                train: vec![train.into()],
                test: vec![test.into()],
            },
            &[ModelFamily::Logistic],
            &[5],
            &options(1),
            false,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let e = run("2013J", "BBB-2013J");
    assert!(
        e.contains("BBB-2013J is both a training and a test presentation"),
        "{e}"
    );
    let e = run("2014B", "2013J");
    assert!(
        e.contains("no presentation \"2014B\"") && e.contains("BBB-2013B"),
        "{e}"
    );
}
