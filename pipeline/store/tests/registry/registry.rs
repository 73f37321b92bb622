//! The model registry and promotion: numbered versions and their lineage, the gate (margins,
//! tonight's rows, fairness gaps), forced promotion, rollback, aliases, and corrupted artifacts.

use std::fs;

use lodestar_domain::evaluation::{SubgroupGaps, WeekMetrics};
use lodestar_domain::features::ProtectedAttribute;
use lodestar_domain::{EvaluationReport, PromotionGate};
use lodestar_store::{CHAMPION, GateEvidence, NewVersion, Promotion, Store, StoreError};

use crate::TestDb;

fn report(auc: f64) -> EvaluationReport {
    EvaluationReport {
        model: "logistic".into(),
        protocol: "temporal: train BBB-2013B, test BBB-2013J".into(),
        train_presentations: vec!["BBB-2013B".into()],
        test_presentations: vec!["BBB-2013J".into()],
        weeks: [5u16, 10, 20]
            .map(|week| WeekMetrics {
                week,
                n: 1000,
                positives: 400,
                roc_auc: auc,
                pr_auc: auc - 0.1,
                brier: 0.18,
                ece: 0.04,
                f1: 0.6,
                precision: 0.62,
                recall: 0.58,
                ..WeekMetrics::default()
            })
            .to_vec(),
        fairness: vec![SubgroupGaps {
            attribute: ProtectedAttribute::Gender,
            week: 10,
            tpr_gap: 0.03,
            fpr_gap: 0.02,
            calibration_gap: 0.01,
            tpr_interval: None,
            fpr_interval: None,
            calibration_interval: None,
            measured: vec![],
        }],
        ..EvaluationReport::default()
    }
}

async fn register(db: &TestDb, model: &str, auc: f64) -> i64 {
    let artifact = db
        .artifacts
        .put(model, format!("weights auc={auc}").as_bytes())
        .await
        .unwrap();
    let v = db
        .store
        .register_version(NewVersion {
            model: model.into(),
            artifact,
            snapshot_hash: "cfb2319c8a3c4a8133a96e8a1ed15efc".into(),
            code_version: "0.1.0+abc123".into(),
            config: serde_json::json!({"model": "logistic", "l2": 1.0}),
            seed: 42,
            report: report(auc),
            run_id: None,
            actor: "data-team".into(),
        })
        .await
        .unwrap();
    v.version
}

fn promotion(model: &str, version: i64) -> Promotion {
    Promotion {
        model: model.into(),
        version,
        gate: PromotionGate {
            margin: 0.01,
            ..PromotionGate::default()
        },
        actor: "alice".into(),
        reason: "nightly evaluation".into(),
        force: false,
        evidence: None,
    }
}

pub(crate) async fn versions_are_numbered_and_keep_their_lineage(db: TestDb) {
    assert_eq!(register(&db, "at-risk", 0.80).await, 1);
    assert_eq!(register(&db, "at-risk", 0.81).await, 2);
    assert_eq!(
        register(&db, "other", 0.70).await,
        1,
        "numbering is per model"
    );
    let v2 = db.store.version("at-risk", 2).await.unwrap();
    assert_eq!(v2.snapshot_hash, "cfb2319c8a3c4a8133a96e8a1ed15efc");
    assert_eq!(v2.seed, 42);
    assert_eq!(v2.config["l2"], 1.0);
    assert_eq!(v2.report, report(0.81));
    assert_eq!(v2.artifact.sha256.len(), 64);
    assert_eq!(db.store.versions("at-risk").await.unwrap().len(), 2);
    assert_eq!(
        db.store.models().await.unwrap(),
        vec!["at-risk".to_owned(), "other".to_owned()]
    );
    let err = db.store.version("at-risk", 9).await.unwrap_err();
    assert!(err.to_string().contains("no version 9"), "{err}");
    // Migrations run again on every start and change nothing.
    let again = Store::connect(&db.url).await.unwrap();
    assert_eq!(again.versions("at-risk").await.unwrap().len(), 2);
}

pub(crate) async fn promotion_passes_the_gate_and_records_who_and_why(db: TestDb) {
    let v1 = register(&db, "m", 0.80).await;
    let v2 = register(&db, "m", 0.85).await;
    let first = db.store.promote(&promotion("m", v1)).await.unwrap();
    assert_eq!((first.from_version, first.to_version), (None, Some(v1)));
    let second = db.store.promote(&promotion("m", v2)).await.unwrap();
    assert_eq!(
        (second.from_version, second.to_version),
        (Some(v1), Some(v2))
    );
    assert_eq!(db.store.alias("m", CHAMPION).await.unwrap(), Some(v2));
    let history = db.store.alias_history("m").await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].actor, "alice");
    assert_eq!(history[1].reason, "nightly evaluation");
    assert!(
        history[1]
            .gate
            .as_deref()
            .unwrap()
            .contains("\"passed\":true")
    );
    assert!(!history[1].forced);
}

pub(crate) async fn a_refused_promotion_changes_nothing_and_says_why(db: TestDb) {
    let v1 = register(&db, "m", 0.85).await;
    let v2 = register(&db, "m", 0.855).await;
    db.store.promote(&promotion("m", v1)).await.unwrap();
    let before = db.store.alias_history("m").await.unwrap();
    let err = db.store.promote(&promotion("m", v2)).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::GateRefused(_)), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(
        message.contains("week 5: roc_auc 0.8550 does not beat the champion's 0.8500 by 0.01"),
        "{message}"
    );
    assert_eq!(db.store.alias("m", CHAMPION).await.unwrap(), Some(v1));
    assert_eq!(db.store.alias_history("m").await.unwrap(), before);
    assert_eq!(db.store.versions("m").await.unwrap().len(), 2);
}

pub(crate) async fn forcing_needs_a_reason_and_is_recorded(db: TestDb) {
    let v1 = register(&db, "m", 0.85).await;
    let v2 = register(&db, "m", 0.70).await;
    db.store.promote(&promotion("m", v1)).await.unwrap();
    let mut forced = promotion("m", v2);
    forced.force = true;
    forced.reason = "  ".into();
    assert!(matches!(
        db.store.promote(&forced).await,
        Err(StoreError::ForceWithoutReason)
    ));
    forced.reason = "v1 scores the wrong cohort; incident 42".into();
    let m = db.store.promote(&forced).await.unwrap();
    assert!(m.forced);
    assert!(
        m.gate.as_deref().unwrap().contains("\"passed\":false"),
        "the overridden verdict is kept"
    );
    assert_eq!(db.store.alias("m", CHAMPION).await.unwrap(), Some(v2));
}

pub(crate) async fn rollback_returns_to_the_previous_champion(db: TestDb) {
    let v1 = register(&db, "m", 0.80).await;
    let v2 = register(&db, "m", 0.85).await;
    let v3 = register(&db, "m", 0.90).await;
    let err = db
        .store
        .rollback("m", "bob", "nothing yet")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NothingToRollBack { .. }), "{err}");
    for v in [v1, v2, v3] {
        db.store.promote(&promotion("m", v)).await.unwrap();
    }
    let back = db
        .store
        .rollback("m", "bob", "v3 flags too many")
        .await
        .unwrap();
    assert_eq!(
        (back.kind.as_str(), back.from_version, back.to_version),
        ("rollback", Some(v3), Some(v2))
    );
    db.store.rollback("m", "bob", "v2 too").await.unwrap();
    assert_eq!(db.store.alias("m", CHAMPION).await.unwrap(), Some(v1));
    assert!(db.store.rollback("m", "bob", "no more").await.is_err());
    assert_eq!(db.store.alias_history("m").await.unwrap().len(), 5);
}

pub(crate) async fn two_promoters_at_once_leave_one_winner(db: TestDb) {
    let v1 = register(&db, "m", 0.80).await;
    let v2 = register(&db, "m", 0.85).await;
    let v3 = register(&db, "m", 0.85).await;
    db.store.promote(&promotion("m", v1)).await.unwrap();
    // Two processes: separate pools on the same database.
    let other = Store::connect(&db.url).await.unwrap();
    let (p2, p3) = (promotion("m", v2), promotion("m", v3));
    let (a, b) = tokio::join!(db.store.promote(&p2), other.promote(&p3));
    let loser = match (a, b) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        other => panic!("exactly one promoter must win: {other:?}"),
    };
    assert!(
        matches!(loser, StoreError::GateRefused(_)),
        "the second promoter sees the first's champion: {loser}"
    );
    let history = db.store.alias_history("m").await.unwrap();
    assert_eq!(history.len(), 2);
    let champion = db.store.alias("m", CHAMPION).await.unwrap();
    assert_eq!(history[1].to_version, champion);
    assert_eq!(history[1].from_version, Some(v1));
}

pub(crate) async fn other_aliases_move_freely_with_history(db: TestDb) {
    let v1 = register(&db, "m", 0.80).await;
    let v2 = register(&db, "m", 0.70).await;
    db.store
        .set_alias("m", "challenger", v2, "carol", "shadow scoring")
        .await
        .unwrap();
    db.store
        .set_alias("m", "challenger", v1, "carol", "back")
        .await
        .unwrap();
    assert_eq!(db.store.alias("m", "challenger").await.unwrap(), Some(v1));
    let err = db
        .store
        .set_alias("m", CHAMPION, v2, "carol", "sneaky")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only through promotion"), "{err}");
    assert!(
        db.store
            .set_alias("m", "challenger", 99, "carol", "x")
            .await
            .is_err()
    );
    let kinds: Vec<_> = db
        .store
        .alias_history("m")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.kind, m.from_version))
        .collect();
    assert_eq!(
        kinds,
        vec![("set".to_owned(), None), ("set".to_owned(), Some(v2))]
    );
}

pub(crate) async fn a_corrupted_artifact_is_never_loaded(db: TestDb) {
    let v1 = register(&db, "m", 0.80).await;
    let version = db.store.version("m", v1).await.unwrap();
    assert_eq!(
        db.artifacts.load(&version.artifact).await.unwrap(),
        b"weights auc=0.8"
    );
    let path = version
        .artifact
        .uri
        .strip_prefix("file://")
        .unwrap()
        .to_owned();
    fs::write(&path, b"weights auc=0.9").unwrap();
    let err = db.artifacts.load(&version.artifact).await.unwrap_err();
    assert!(matches!(err, StoreError::ArtifactCorrupted { .. }), "{err}");
    assert!(err.to_string().contains("will not be served"));
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        db.artifacts.load(&version.artifact).await,
        Err(StoreError::ArtifactMissing { .. })
    ));
}

pub(crate) async fn the_gate_on_tonights_rows_compares_the_same_champion(db: TestDb) {
    let v1 = register(&db, "m", 0.70).await;
    // v2's stored report is far better than v1's, but on tonight's rows the comparison differs.
    let v2 = register(&db, "m", 0.90).await;
    let v3 = register(&db, "m", 0.60).await;
    // The first champion: evidence naming a champion while there is none refuses.
    let mut first = promotion("m", v1);
    first.evidence = Some(GateEvidence {
        candidate: report(0.80),
        champion: Some((v3, report(0.7))),
    });
    let err = db.store.promote(&first).await.unwrap_err();
    assert!(matches!(err, StoreError::GateRefused(_)), "{err}");
    first.evidence = Some(GateEvidence {
        candidate: report(0.80),
        champion: None,
    });
    db.store.promote(&first).await.unwrap();
    let history = db.store.alias_history("m").await.unwrap();
    let gate: serde_json::Value =
        serde_json::from_str(history[0].gate.as_deref().unwrap()).unwrap();
    assert_eq!(gate["compared_on"], "tonight");
    assert_eq!(gate["test_presentations"][0], "BBB-2013J");

    // Tonight's rows: v2 scores 0.86, the champion v1 0.855: not better by the margin,
    // although v2's stored report (0.90) beats v1's (0.70).
    let mut p = promotion("m", v2);
    p.evidence = Some(GateEvidence {
        candidate: report(0.86),
        champion: Some((v1, report(0.855))),
    });
    let err = db.store.promote(&p).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not beat the champion's 0.8550"),
        "{err}"
    );
    // A gate week missing on the champion's side refuses; it never passes by default.
    let mut no_week_10 = report(0.70);
    no_week_10.weeks.retain(|w| w.week != 10);
    p.evidence = Some(GateEvidence {
        candidate: report(0.86),
        champion: Some((v1, no_week_10)),
    });
    let err = db.store.promote(&p).await.unwrap_err();
    let StoreError::GateRefused(decision) = &err else {
        panic!("{err}")
    };
    assert!(!decision.passed);
    assert!(err.to_string().contains("week 10"), "{err}");
    // Evidence about another champion than the current one (it moved meanwhile) refuses.
    p.evidence = Some(GateEvidence {
        candidate: report(0.86),
        champion: Some((v3, report(0.5))),
    });
    let err = db.store.promote(&p).await.unwrap_err();
    assert!(matches!(err, StoreError::GateRefused(_)), "{err}");
    assert!(err.to_string().contains("version 1"), "{err}");
    // Evidence without the champion while there is one refuses.
    p.evidence = Some(GateEvidence {
        candidate: report(0.86),
        champion: None,
    });
    let err = db.store.promote(&p).await.unwrap_err();
    assert!(matches!(err, StoreError::GateRefused(_)), "{err}");
    // Nothing moved, and no stored report changed.
    assert_eq!(db.store.alias("m", CHAMPION).await.unwrap(), Some(v1));
    assert_eq!(db.store.alias_history("m").await.unwrap().len(), 1);
    assert_eq!(
        db.store.version("m", v2).await.unwrap().report,
        report(0.90)
    );
    // On the same rows, a real improvement passes; the move says what was compared.
    p.evidence = Some(GateEvidence {
        candidate: report(0.90),
        champion: Some((v1, report(0.85))),
    });
    let m = db.store.promote(&p).await.unwrap();
    let gate: serde_json::Value = serde_json::from_str(m.gate.as_deref().unwrap()).unwrap();
    assert_eq!(gate["passed"], true);
    assert_eq!(gate["compared_on"], "tonight");
    assert_eq!(gate["champion_version"], v1);
    assert_eq!(
        db.store.version("m", v1).await.unwrap().report,
        report(0.70)
    );
    // Without evidence the stored reports decide, as the command line promotes.
    let err = db.store.promote(&promotion("m", v3)).await.unwrap_err();
    assert!(err.to_string().contains("0.6000"), "{err}");
}

/// A report whose week-10 gender TPR gap (adjusted for course mix) is `gap` with the interval
/// `[low, high]`, over groups of the given sizes.
fn report_with_gap(gap: f64, low: f64, high: f64, sizes: [u64; 2]) -> EvaluationReport {
    use lodestar_domain::evaluation::{FairnessMethod, Interval};
    let mut r = report(0.80);
    let interval = |low: f64, high: f64| Some(Interval { low, high });
    r.fairness_method = FairnessMethod::CourseMixAdjusted;
    r.fairness = vec![SubgroupGaps {
        attribute: ProtectedAttribute::Gender,
        week: 10,
        tpr_gap: gap,
        fpr_gap: 0.02,
        calibration_gap: 0.01,
        tpr_interval: interval(low, high),
        fpr_interval: interval(0.0, 0.05),
        calibration_interval: interval(0.0, 0.03),
        measured: vec![("F".into(), sizes[0]), ("M".into(), sizes[1])],
    }];
    r.fairness_pooled = vec![SubgroupGaps {
        tpr_gap: 0.1,
        ..r.fairness[0].clone()
    }];
    r
}

pub(crate) async fn a_first_version_is_refused_on_a_credible_gap_and_promoted_despite_a_noisy_one(
    db: TestDb,
) {
    let mut versions = Vec::new();
    for (n, report) in [
        // A planted unfairness: the whole interval above the 0.2 limit.
        report_with_gap(0.30, 0.25, 0.35, [1203, 1544]),
        // As wide a gap, measured on a few dozen students: mostly noise.
        report_with_gap(0.30, 0.05, 0.52, [41, 97]),
    ]
    .into_iter()
    .enumerate()
    {
        let artifact = db
            .artifacts
            .put("g", format!("weights {n}").as_bytes())
            .await
            .unwrap();
        let v = db
            .store
            .register_version(NewVersion {
                model: "g".into(),
                artifact,
                snapshot_hash: "cfb2319c8a3c4a8133a96e8a1ed15efc".into(),
                code_version: "0.1.0".into(),
                config: serde_json::json!({}),
                seed: 42,
                report,
                run_id: None,
                actor: "scheduler".into(),
            })
            .await
            .unwrap();
        versions.push(v.version);
    }
    let gate = |version| Promotion {
        gate: PromotionGate::default(),
        ..promotion("g", version)
    };
    let err = db.store.promote(&gate(versions[0])).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::GateRefused(_)), "{message}");
    for part in [
        "week 10: Gender TPR gap adjusted for course mix 0.300",
        "95% interval 0.250 to 0.350",
        "F (1203), M (1544)",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert_eq!(db.store.alias("g", CHAMPION).await.unwrap(), None);
    db.store.promote(&gate(versions[1])).await.unwrap();
    assert_eq!(
        db.store.alias("g", CHAMPION).await.unwrap(),
        Some(versions[1])
    );
}
