//! Training and evaluation on an export with running presentations (the genuine sample cut as
//! if exported mid-term): finished presentations only are trained and tested on; with no
//! finished presentation later than the training ones, the report says so instead of failing.

use std::path::Path;

use lodestar_domain::EvaluationReport;
use lodestar_ingest::{IngestOptions, ingest};
use lodestar_model::ModelFamily;
use lodestar_train::evaluate::{Protocol, TrainOptions};
use lodestar_train::{Snapshot, evaluate};

/// The sample with `running` cut on day 76, ingested.
fn snapshot(dir: &Path, running: &[&str]) -> Snapshot {
    let export = dir.join("export");
    let running: Vec<String> = running.iter().map(|s| (*s).to_owned()).collect();
    lodestar_samples::cut::cut_running(
        &lodestar_samples::oulad_slice_dir(),
        &export,
        &running,
        76,
        None,
    )
    .unwrap();
    let out = ingest(
        &export,
        &dir.join("snapshots"),
        &IngestOptions::default(),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    Snapshot::read(&out.dir).unwrap()
}

/// The report of a logistic model evaluated at weeks 5 and 10 under `protocol`.
fn logistic_report(s: &Snapshot, protocol: &Protocol) -> EvaluationReport {
    let e = evaluate(
        s,
        protocol,
        &[ModelFamily::Logistic],
        &[5, 10],
        &TrainOptions::default(),
        false,
        &mut |_| {},
    )
    .unwrap();
    e.results[0].report.clone()
}

#[test]
fn a_running_presentation_is_neither_trained_nor_tested_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshot(dir.path(), &["GGG-2013J"]);
    let ggg = s
        .presentations
        .iter()
        .position(|p| p == "GGG-2013J")
        .unwrap() as u32;
    assert!(s.is_running(ggg));
    assert_eq!(s.running_presentations(), vec![ggg]);
    // The defaults pick the latest finished code to test on: 2013J, without its running GGG.
    let protocol = Protocol::temporal(&s, &[], &[]).unwrap();
    assert_eq!(
        protocol,
        Protocol::Temporal {
            train: vec!["2013B".into()],
            test: vec!["2013J".into()]
        }
    );
    let r = &logistic_report(&s, &protocol);
    assert_eq!(r.train_presentations, vec!["BBB-2013B".to_owned()]);
    assert_eq!(r.test_presentations, vec!["BBB-2013J".to_owned()]);
    // Tested on exactly BBB-2013J's registered students with an outcome.
    let bbb_j = s
        .presentations
        .iter()
        .position(|p| p == "BBB-2013J")
        .unwrap() as u32;
    for w in &r.weeks {
        let expected = (0..s.len())
            .filter(|i| s.presentation[*i] == bbb_j && s.week[*i] == w.week && s.active[*i])
            .count() as u64;
        assert_eq!(w.n, expected, "week {}", w.week);
    }
    assert!(r.weeks.iter().all(|w| w.roc_auc > 0.6), "{:?}", r.weeks);
}

#[test]
fn with_no_later_finished_presentation_the_report_says_it_is_untested() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshot(dir.path(), &["BBB-2013J", "GGG-2013J"]);
    let protocol = Protocol::temporal(&s, &[], &[]).unwrap();
    assert_eq!(
        protocol,
        Protocol::Temporal {
            train: vec!["2013B".into()],
            test: vec![]
        }
    );
    let r = &logistic_report(&s, &protocol);
    assert!(r.weeks.is_empty(), "{:?}", r.weeks);
    assert!(r.test_presentations.is_empty());
    assert!(
        r.notes.iter().any(|n| n.starts_with("Not evaluated")),
        "{:?}",
        r.notes
    );
    assert!(r.protocol.contains("not tested"), "{}", r.protocol);
}

#[test]
fn an_export_with_every_presentation_running_has_nothing_to_train_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshot(dir.path(), &["BBB-2013B", "BBB-2013J", "GGG-2013J"]);
    let err = Protocol::temporal(&s, &[], &[]).unwrap_err().to_string();
    assert!(
        err.contains("no finished presentation to train on"),
        "{err}"
    );
}
