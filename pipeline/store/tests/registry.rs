//! The registry against both backends: every test runs on a fresh SQLite file and, when
//! `LODESTAR_TEST_POSTGRES_URL` is set (CI always sets it), on a fresh PostgreSQL schema.

use std::fs;

use lodestar_domain::evaluation::{SubgroupGaps, WeekMetrics};
use lodestar_domain::features::ProtectedAttribute;
use lodestar_domain::{EvaluationReport, PromotionGate};
use lodestar_store::{ArtifactStore, CHAMPION, NewVersion, Promotion, Store, StoreError};

/// A store on a fresh database, and the folder its artifacts go to.
struct TestDb {
    store: Store,
    artifacts: ArtifactStore,
    url: String,
    /// PostgreSQL only: the admin URL and the test's schema, dropped when the case passes.
    schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    async fn cleanup(admin_url: &str, schema: &str) {
        let admin = sqlx::AnyPool::connect(admin_url).await.unwrap();
        let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await
            .unwrap();
    }
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lodestar.db").display()
    );
    TestDb {
        store: Store::connect(&url).await.unwrap(),
        artifacts: ArtifactStore::local(dir.path().join("artifacts")),
        url,
        schema: None,
        _dir: dir,
    }
}

async fn postgres(test: &str) -> Option<TestDb> {
    let Ok(base) = std::env::var("LODESTAR_TEST_POSTGRES_URL") else {
        eprintln!("{test}: PostgreSQL run skipped: LODESTAR_TEST_POSTGRES_URL is not set");
        return None;
    };
    // A schema of its own per test, so tests run in parallel on one database.
    let schema = format!("t_{}_{}", test, std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base).await.unwrap();
    // The schema name is built here from the test's own name: safe to splice in.
    let reset = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(reset))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let dir = tempfile::tempdir().unwrap();
    Some(TestDb {
        store: Store::connect(&url).await.unwrap(),
        artifacts: ArtifactStore::local(dir.path().join("artifacts")),
        url,
        schema: Some((base, schema)),
        _dir: dir,
    })
}

/// Runs `$case` once per backend.
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(super::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::postgres(stringify!($case)).await {
                    let schema = db.schema.clone();
                    super::$case(db).await;
                    if let Some((admin, name)) = schema {
                        super::TestDb::cleanup(&admin, &name).await;
                    }
                }
            }
        }
    )*};
}

both_backends!(
    versions_are_numbered_and_keep_their_lineage,
    promotion_passes_the_gate_and_records_who_and_why,
    a_refused_promotion_changes_nothing_and_says_why,
    forcing_needs_a_reason_and_is_recorded,
    rollback_returns_to_the_previous_champion,
    two_promoters_at_once_leave_one_winner,
    other_aliases_move_freely_with_history,
    a_corrupted_artifact_is_never_loaded,
);

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
            })
            .to_vec(),
        fairness: vec![SubgroupGaps {
            attribute: ProtectedAttribute::Gender,
            week: 10,
            tpr_gap: 0.03,
            fpr_gap: 0.02,
            calibration_gap: 0.01,
        }],
    }
}

async fn register(db: &TestDb, model: &str, auc: f64) -> i64 {
    let artifact = db
        .artifacts
        .put(model, format!("weights auc={auc}").as_bytes())
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
    }
}

async fn versions_are_numbered_and_keep_their_lineage(db: TestDb) {
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

async fn promotion_passes_the_gate_and_records_who_and_why(db: TestDb) {
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

async fn a_refused_promotion_changes_nothing_and_says_why(db: TestDb) {
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

async fn forcing_needs_a_reason_and_is_recorded(db: TestDb) {
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

async fn rollback_returns_to_the_previous_champion(db: TestDb) {
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

async fn two_promoters_at_once_leave_one_winner(db: TestDb) {
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

async fn other_aliases_move_freely_with_history(db: TestDb) {
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

async fn a_corrupted_artifact_is_never_loaded(db: TestDb) {
    let v1 = register(&db, "m", 0.80).await;
    let version = db.store.version("m", v1).await.unwrap();
    assert_eq!(
        db.artifacts.load(&version.artifact).unwrap(),
        b"weights auc=0.8"
    );
    let path = version
        .artifact
        .uri
        .strip_prefix("file://")
        .unwrap()
        .to_owned();
    fs::write(&path, b"weights auc=0.9").unwrap();
    let err = db.artifacts.load(&version.artifact).unwrap_err();
    assert!(matches!(err, StoreError::ArtifactCorrupted { .. }), "{err}");
    assert!(err.to_string().contains("will not be served"));
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        db.artifacts.load(&version.artifact),
        Err(StoreError::ArtifactMissing { .. })
    ));
}
