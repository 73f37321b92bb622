//! The store against both backends (registry and operational tables): every test runs on a
//! fresh SQLite file and, when
//! `LODESTAR_TEST_POSTGRES_URL` is set (CI always sets it), on a fresh PostgreSQL schema.

use std::fs;

use lodestar_domain::evaluation::{SubgroupGaps, WeekMetrics};
use lodestar_domain::features::ProtectedAttribute;
use lodestar_domain::{
    AsOfSource, AsOfWeek, EvaluationReport, PresentationTerm, PromotionGate, TermState,
};
use lodestar_store::{
    ArtifactStore, CHAMPION, GateEvidence, NewVersion, Promotion, Store, StoreError,
};

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
    /// A prediction's explanation as the database holds it.
    async fn raw_explanation(&self, id: i64) -> String {
        use sqlx::Row;
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        let row = sqlx::query("SELECT explanation_json FROM predictions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        row.try_get("explanation_json").unwrap()
    }

    async fn raw_execute(&self, sql: &'static str) {
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
    }

    async fn raw_count(&self, sql: &'static str) -> i64 {
        use sqlx::Row;
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
        row.try_get(0).unwrap()
    }

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
        artifacts: ArtifactStore::local(dir.path().join("artifacts")).unwrap(),
        url,
        schema: None,
        _dir: dir,
    }
}

async fn postgres(test: &str) -> Option<TestDb> {
    let Ok(base) = std::env::var("LODESTAR_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("LODESTAR_REQUIRE_POSTGRES").is_none(),
            "LODESTAR_REQUIRE_POSTGRES is set (CI sets it) but LODESTAR_TEST_POSTGRES_URL is not"
        );
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
        artifacts: ArtifactStore::local(dir.path().join("artifacts")).unwrap(),
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
    runs_record_steps_and_find_cached_ones,
    the_pipeline_lease_admits_one_holder,
    predictions_are_kept_with_feedback_until_retention_purges_them,
    users_caseloads_and_notes,
    tokens_are_stored_hashed_and_can_be_revoked,
    sessions_lockout_and_the_caseload_view,
    terms_are_recorded_running_first_and_kept,
    the_caseload_reads_running_terms_at_their_current_week,
    the_gate_on_tonights_rows_compares_the_same_champion,
    staged_scores_are_invisible_until_published_and_resume_after_a_kill,
    stored_text_with_separators_reads_back_as_written,
    a_first_version_is_refused_on_a_credible_gap_and_promoted_despite_a_noisy_one,
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

async fn runs_record_steps_and_find_cached_ones(db: TestDb) {
    let s = &db.store;
    let new = lodestar_store::NewRun {
        trigger: "cron",
        scheduled_for: Some("2026-11-28T02:00:00Z"),
        ..Default::default()
    };
    let run = s.start_run(&new).await.unwrap().unwrap();
    // The same cron slot is served once, whoever asks.
    assert_eq!(s.start_run(&new).await.unwrap(), None);
    assert_eq!(
        s.latest_scheduled_slot().await.unwrap().as_deref(),
        Some("2026-11-28T02:00:00Z")
    );
    let ingest = s.start_step(run, "ingest", 1, Some("in-1")).await.unwrap();
    let output = serde_json::json!({"snapshot": "abc"});
    s.finish_step(ingest, "succeeded", Some(&output), Some("out-1"), None)
        .await
        .unwrap();
    let train = s.start_step(run, "train", 1, Some("in-2")).await.unwrap();
    s.finish_step(train, "failed", None, None, Some("out of memory"))
        .await
        .unwrap();
    s.finish_run(
        run,
        "failed",
        Some("train failed"),
        false,
        &serde_json::json!({"steps": 2}),
    )
    .await
    .unwrap();
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.error.as_deref()),
        ("failed", Some("train failed"))
    );
    assert!(r.finished_at.is_some());
    let steps = s.steps(run).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].error.as_deref(), Some("out of memory"));
    // A rerun finds the finished ingest (same inputs) but not the failed training.
    let cached = s.cached_step("ingest", "in-1").await.unwrap().unwrap();
    assert_eq!(cached.output_hash.as_deref(), Some("out-1"));
    assert_eq!(cached.output, Some(output));
    assert!(s.cached_step("train", "in-2").await.unwrap().is_none());
    assert!(s.cached_step("ingest", "other").await.unwrap().is_none());
}

async fn the_pipeline_lease_admits_one_holder(db: TestDb) {
    let s = &db.store;
    let holder = |pid: i64| lodestar_store::LeaseHolder {
        id: format!("here:{pid}"),
        host: "here".into(),
        pid,
    };
    let long_ago = "2000-01-01T00:00:00.000Z";
    let alive = |_: i64| true;
    let first = s.try_lease(&holder(1), long_ago, &alive).await.unwrap();
    let first = first.expect("a free lease is taken");
    assert!(
        s.try_lease(&holder(2), long_ago, &alive)
            .await
            .unwrap()
            .is_none(),
        "a second scheduler must wait"
    );
    // A second pool (another replica) is refused too.
    let other = Store::connect(&db.url).await.unwrap();
    assert!(
        other
            .try_lease(&holder(3), long_ago, &alive)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.lease_record().await.unwrap().holder.as_deref(),
        Some("here:1")
    );
    first.heartbeat().await.unwrap();
    first.release().await.unwrap();
    let second = other.try_lease(&holder(3), long_ago, &alive).await.unwrap();
    let second = second.expect("a released lease is free");
    if s.backend() == lodestar_store::Backend::Sqlite {
        // The holder's process on this host is gone: the lease is taken over.
        let dead = |pid: i64| pid != 3;
        let taken = s.try_lease(&holder(4), long_ago, &dead).await.unwrap();
        assert!(taken.is_some(), "a dead holder's lease is taken over");
        taken.unwrap().release().await.unwrap();
        drop(second);
    } else {
        // The holder's connection closes (its process died): the advisory lock goes with it.
        drop(second);
        let mut taken = None;
        for _ in 0..50 {
            taken = s.try_lease(&holder(4), long_ago, &alive).await.unwrap();
            if taken.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        taken
            .expect("the lock of a closed connection is free")
            .release()
            .await
            .unwrap();
    }
    // Runs left running by a holder that died are closed by the next one.
    let run = s
        .start_run(&lodestar_store::NewRun {
            trigger: "cli",
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    s.start_step(run, "train", 1, None).await.unwrap();
    assert_eq!(s.close_interrupted_runs("here:5").await.unwrap(), 1);
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!(r.status, "failed");
    assert!(r.error.unwrap().contains("interrupted"));
    assert_eq!(s.steps(run).await.unwrap()[0].status, "failed");
}

fn prediction(student: i64, week: i64, p: f64) -> lodestar_store::NewPrediction {
    lodestar_store::NewPrediction {
        model: "at-risk".into(),
        version: 1,
        code_module: "BBB".into(),
        code_presentation: "2013J".into(),
        id_student: student,
        as_of_week: week,
        probability: p,
        tier: if p >= 0.7 { "high" } else { "low" }.into(),
        explanation: serde_json::json!({"up": ["no activity for 12 days"], "down": []}),
        run_id: None,
        context: serde_json::Value::Null,
    }
}

async fn predictions_are_kept_with_feedback_until_retention_purges_them(db: TestDb) {
    let s = &db.store;
    assert_eq!(
        s.insert_predictions(&[
            prediction(11, 5, 0.8),
            prediction(11, 6, 0.6),
            prediction(12, 5, 0.1)
        ])
        .await
        .unwrap(),
        3
    );
    let history = s.prediction_history("BBB", "2013J", 11).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|p| p.prediction.as_of_week)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert_eq!(history[0].prediction, prediction(11, 5, 0.8));
    assert_eq!(
        s.scored_students("at-risk", 1).await.unwrap(),
        [
            ("BBB".to_owned(), "2013J".to_owned(), 11),
            ("BBB".to_owned(), "2013J".to_owned(), 12)
        ]
    );
    assert!(
        s.has_predictions("at-risk", 1, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    assert!(
        !s.has_predictions("at-risk", 1, "BBB", "2013J", 7)
            .await
            .unwrap()
    );
    assert!(
        !s.has_predictions("at-risk", 2, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    s.add_feedback(
        history[0].id,
        "incorrectly_flagged",
        "advisor-1",
        Some("already withdrawn"),
    )
    .await
    .unwrap();
    assert!(
        s.add_feedback(history[0].id, "meh", "advisor-1", None)
            .await
            .is_err()
    );
    // Retention: nothing is older than an old cutoff; everything is older than a future one.
    assert_eq!(
        s.purge_predictions_before("2000-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.purge_predictions_before("2999-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        3
    );
    assert!(
        s.prediction_history("BBB", "2013J", 11)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn users_caseloads_and_notes(db: TestDb) {
    let s = &db.store;
    let ada = s
        .create_user("ada", "advisor", "$argon2id$v=19$...")
        .await
        .unwrap();
    let bob = s
        .create_user("bob", "admin", "$argon2id$v=19$...")
        .await
        .unwrap();
    assert!(
        s.create_user("ada", "advisor", "x").await.is_err(),
        "usernames are unique"
    );
    assert!(s.create_user("eve", "root", "x").await.is_err());
    assert_eq!(s.user("ada").await.unwrap().unwrap().role, "advisor");
    s.assign(ada, "BBB", "2013J", 11).await.unwrap();
    s.assign(ada, "BBB", "2013J", 11).await.unwrap();
    s.assign(ada, "BBB", "2013J", 12).await.unwrap();
    assert_eq!(s.caseload(ada).await.unwrap().len(), 2);
    assert!(s.caseload(bob).await.unwrap().is_empty());
    let more = [
        ("BBB", "2013J", 12),
        ("BBB", "2013J", 13),
        ("DDD", "2013J", 14),
    ]
    .map(|(m, c, st)| (m.to_owned(), c.to_owned(), st));
    s.assign_many(bob, &more).await.unwrap();
    s.assign_many(bob, &more).await.unwrap();
    assert_eq!(s.caseload(bob).await.unwrap().len(), 3);
    s.set_password_hash(bob, "$argon2id$v=19$new")
        .await
        .unwrap();
    assert_eq!(
        s.user("bob").await.unwrap().unwrap().password_hash,
        "$argon2id$v=19$new"
    );
    let note = s
        .add_note(ada, "BBB", "2013J", 11, "called, left a message", None)
        .await
        .unwrap();
    assert!(
        s.edit_note(note, ada, "called, spoke to the student", Some("reached"))
            .await
            .unwrap()
    );
    assert!(
        !s.edit_note(note, bob, "not mine", None).await.unwrap(),
        "only the author edits a note"
    );
    s.audit(
        "ada",
        "note.edit",
        "BBB-2013J/11",
        &serde_json::json!({"note": note}),
    )
    .await
    .unwrap();
    let events = s.audit_events(10).await.unwrap();
    assert_eq!(events[0].1, "note.edit");
}

async fn tokens_are_stored_hashed_and_can_be_revoked(db: TestDb) {
    let s = &db.store;
    let token = "lsk_0123456789abcdefghijklmnop";
    let id = s
        .create_token("sis", token, &["predictions:read", "pipeline:run"])
        .await
        .unwrap();
    assert!(s.create_token("short", "abc", &[]).await.is_err());
    let found = s.verify_token(token).await.unwrap().unwrap();
    assert_eq!(
        found.scopes,
        vec!["predictions:read".to_owned(), "pipeline:run".to_owned()]
    );
    assert!(
        s.verify_token("lsk_wrong_wrong_wrong_wrong_wrong")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.revoke_token(id).await.unwrap());
    assert!(!s.revoke_token(id).await.unwrap());
    assert!(
        s.verify_token(token).await.unwrap().is_none(),
        "a revoked token no longer works"
    );
    // Only a hash of the token is in the database.
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let rows = sqlx::query("SELECT name, token_hash FROM api_tokens")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = sqlx::Row::get(&rows[0], "token_hash");
    assert_ne!(stored, token);
    assert_eq!(stored.len(), 64, "a SHA-256 in hex");
}

async fn sessions_lockout_and_the_caseload_view(db: TestDb) {
    let s = &db.store;
    let ada = s
        .create_user("ada", "advisor", "$argon2id$x")
        .await
        .unwrap();
    // Lockout after three failures; a success clears the count.
    assert_eq!(
        s.sign_in_failed(ada, 3, "2999-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        1
    );
    s.sign_in_succeeded(ada).await.unwrap();
    for _ in 0..3 {
        s.sign_in_failed(ada, 3, "2999-01-01T00:00:00.000Z")
            .await
            .unwrap();
    }
    let state = s.sign_in_state("ada").await.unwrap().unwrap();
    assert_eq!(
        state.locked_until.as_deref(),
        Some("2999-01-01T00:00:00.000Z")
    );
    assert!(s.sign_in_state("nobody").await.unwrap().is_none());
    // Sessions: found by hash until they expire or are deleted.
    s.create_session("h1", ada, "csrf1", "2999-01-01T00:00:00.000Z")
        .await
        .unwrap();
    s.create_session("h0", ada, "csrf0", "2000-01-01T00:00:00.000Z")
        .await
        .unwrap();
    let session = s.session("h1").await.unwrap().unwrap();
    assert_eq!(
        (session.user.username.as_str(), session.csrf.as_str()),
        ("ada", "csrf1")
    );
    assert!(s.session("h0").await.unwrap().is_none(), "expired");
    s.delete_session("h1").await.unwrap();
    assert!(s.session("h1").await.unwrap().is_none());
    // The caseload view: latest week beside the one before, only the advisor's students.
    let mut rows = vec![
        prediction(11, 1, 0.2),
        prediction(11, 2, 0.3),
        prediction(11, 2, 0.6),
        prediction(12, 2, 0.9),
        prediction(13, 2, 0.1),
    ];
    rows[0].context = serde_json::json!({"clicks_this_week": 4.0});
    s.insert_predictions(&rows).await.unwrap();
    s.assign(ada, "BBB", "2013J", 11).await.unwrap();
    s.assign(ada, "BBB", "2013J", 12).await.unwrap();
    let view = s
        .caseload_view(Some(ada), TermState::Finished)
        .await
        .unwrap();
    assert_eq!(view.len(), 2);
    assert_eq!(
        (view[0].id_student, view[0].week, view[0].probability),
        (11, 2, 0.6),
        "week 2's later score"
    );
    assert_eq!(
        view[0].previous.as_ref().map(|p| (p.0, p.1)),
        Some((1, 0.2))
    );
    assert_eq!(view[1].previous, None);
    assert_eq!(
        s.caseload_view(None, TermState::Finished)
            .await
            .unwrap()
            .len(),
        3,
        "everyone for an admin"
    );
    assert!(s.in_caseload(ada, "BBB", "2013J", 12).await.unwrap());
    assert!(!s.in_caseload(ada, "BBB", "2013J", 13).await.unwrap());
    let history = s.prediction_history("BBB", "2013J", 11).await.unwrap();
    assert_eq!(history[0].prediction.context["clicks_this_week"], 4.0);
    // Outreach and notes.
    s.add_note(ada, "BBB", "2013J", 11, "called", Some("no answer"))
        .await
        .unwrap();
    s.add_note(ada, "BBB", "2013J", 11, "called again", Some("reached"))
        .await
        .unwrap();
    let outreach = s.outreach_summary(Some(ada)).await.unwrap();
    let o = &outreach[&("BBB".to_owned(), "2013J".to_owned(), 11)];
    assert_eq!((o.notes, o.last_outcome.as_deref()), (2, Some("reached")));
    let notes = s.notes("BBB", "2013J", 11).await.unwrap();
    assert_eq!((notes.len(), notes[1].author.as_str()), (2, "ada"));
    let id = view[0].prediction_id;
    s.add_feedback(id, "acknowledged", "ada", None)
        .await
        .unwrap();
    assert_eq!(s.feedback_on(id).await.unwrap()[0].0, "acknowledged");
}

fn term(presentation: &str, state: TermState, as_of_day: i32) -> PresentationTerm {
    match state {
        TermState::Running => PresentationTerm::running(
            presentation.into(),
            269,
            as_of_day,
            AsOfSource::LatestActivity,
            40,
            3,
        ),
        TermState::Finished => PresentationTerm {
            as_of_day,
            ..PresentationTerm::finished(presentation.into(), 269, 40)
        },
    }
}

async fn terms_are_recorded_running_first_and_kept(db: TestDb) {
    let s = &db.store;
    assert!(s.terms().await.unwrap().is_empty());
    assert_eq!(s.term("BBB", "2014J").await.unwrap(), None);
    let mut running = term("BBB-2014J", TermState::Running, 76);
    running.start_date = Some("2014-10-04".into());
    running.as_of_source = AsOfSource::Configured;
    let finished = term("BBB-2013J", TermState::Finished, 268);
    let early = term("AAA-2014J", TermState::Running, 3);
    s.record_terms(
        &[finished.clone(), running.clone(), early.clone()],
        "snap-1",
    )
    .await
    .unwrap();
    let all = s.terms().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|t| t.presentation.as_str())
            .collect::<Vec<_>>(),
        ["AAA-2014J", "BBB-2014J", "BBB-2013J"],
        "running first, then by presentation"
    );
    assert_eq!(all[1], running, "every field round-trips");
    assert_eq!(all[0].current_week, None, "no week complete before day 6");
    assert_eq!(all[2], finished);
    assert_eq!(
        s.term("BBB", "2014J").await.unwrap().unwrap().describe(),
        "running, as of 19 Dec 2014, week 10 of 39"
    );
    // The next night: BBB-2014J moves on a week, AAA-2014J is no longer exported (kept as it
    // was), BBB-2014B appears; one transaction, an upsert.
    let mut later = running.clone();
    later.as_of_day = 83;
    later.current_week = AsOfWeek::completed_by(83);
    later.outcomes_known = 5;
    let b = term("BBB-2014B", TermState::Finished, 268);
    s.record_terms(&[later.clone(), b.clone()], "snap-2")
        .await
        .unwrap();
    assert_eq!(s.term("BBB", "2014J").await.unwrap(), Some(later.clone()));
    assert_eq!(s.term("AAA", "2014J").await.unwrap(), Some(early));
    assert_eq!(s.terms().await.unwrap().len(), 4);
    // The term ends: it is finished from then on.
    let mut ended = later;
    ended.state = TermState::Finished;
    ended.as_of_source = AsOfSource::Finished;
    ended.outcomes_known = ended.students;
    s.record_terms(std::slice::from_ref(&ended), "snap-3")
        .await
        .unwrap();
    let all = s.terms().await.unwrap();
    assert_eq!(all[0].presentation, "AAA-2014J");
    assert_eq!(
        all.iter().filter(|t| t.state == TermState::Running).count(),
        1
    );
    assert_eq!(s.term("BBB", "2014J").await.unwrap(), Some(ended));
    // A presentation id that is not MODULE-PRESENTATION is refused and nothing of the batch
    // is written.
    let new_one = term("CCC-2014J", TermState::Running, 10);
    let bad = term("nodash", TermState::Running, 10);
    let err = s.record_terms(&[new_one, bad], "snap-4").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(s.term("CCC", "2014J").await.unwrap(), None);
}

fn scored(
    module: &str,
    code: &str,
    student: i64,
    week: i64,
    p: f64,
) -> lodestar_store::NewPrediction {
    lodestar_store::NewPrediction {
        code_module: module.into(),
        code_presentation: code.into(),
        ..prediction(student, week, p)
    }
}

async fn the_caseload_reads_running_terms_at_their_current_week(db: TestDb) {
    let s = &db.store;
    let ada = s
        .create_user("ada", "advisor", "$argon2id$x")
        .await
        .unwrap();
    s.insert_predictions(&[
        // BBB-2014J runs, current week 10: students 1 and 2 scored there; 3 withdrew after week 4.
        scored("BBB", "2014J", 1, 9, 0.3),
        scored("BBB", "2014J", 1, 10, 0.8),
        scored("BBB", "2014J", 2, 10, 0.2),
        scored("BBB", "2014J", 3, 4, 0.9),
        // BBB-2013J has ended.
        scored("BBB", "2013J", 7, 38, 0.6),
        // CCC-2013B was scored before terms were recorded: history.
        scored("CCC", "2013B", 8, 20, 0.5),
    ])
    .await
    .unwrap();
    for (m, c, id) in [
        ("BBB", "2014J", 1),
        ("BBB", "2014J", 3),
        ("BBB", "2013J", 7),
    ] {
        s.assign(ada, m, c, id).await.unwrap();
    }
    // No term recorded yet: nothing is running, everything is history.
    assert!(
        s.caseload_view(None, TermState::Running)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.caseload_view(None, TermState::Finished)
            .await
            .unwrap()
            .len(),
        5
    );
    s.record_terms(
        &[
            term("BBB-2014J", TermState::Running, 76),
            term("BBB-2013J", TermState::Finished, 268),
        ],
        "snap",
    )
    .await
    .unwrap();
    let running = s.caseload_view(None, TermState::Running).await.unwrap();
    assert_eq!(
        running
            .iter()
            .map(|e| (e.id_student, e.week, e.probability))
            .collect::<Vec<_>>(),
        [(1, 10, 0.8), (2, 10, 0.2)],
        "tonight's students at week 10; the one who withdrew is not listed"
    );
    assert_eq!(running[0].previous.as_ref().map(|p| p.0), Some(9));
    let mine = s
        .caseload_view(Some(ada), TermState::Running)
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|e| e.id_student).collect::<Vec<_>>(), [1]);
    let history = s.caseload_view(None, TermState::Finished).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| (
                e.code_module.as_str(),
                e.code_presentation.as_str(),
                e.id_student
            ))
            .collect::<Vec<_>>(),
        [("BBB", "2013J", 7), ("CCC", "2013B", 8)]
    );
    // The cohort counts read the same presentations: running ones up to their current week.
    let counts = s.tier_counts(None, TermState::Running).await.unwrap();
    assert!(
        counts
            .iter()
            .all(|(m, c, w, _, _)| (m.as_str(), c.as_str()) == ("BBB", "2014J") && *w <= 10),
        "{counts:?}"
    );
    let at_10: i64 = counts.iter().filter(|r| r.2 == 10).map(|r| r.4).sum();
    assert_eq!(at_10, 2);
    let mine = s.tier_counts(Some(ada), TermState::Finished).await.unwrap();
    assert_eq!(mine, [("BBB".into(), "2013J".into(), 38, "low".into(), 1)]);
}

async fn the_gate_on_tonights_rows_compares_the_same_champion(db: TestDb) {
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

/// A prediction as the nightly run writes it: factors with their numbers and sentences, and
/// the student's week.
fn explained(student: i64, week: i64, p: f64) -> lodestar_store::NewPrediction {
    let idle = (20 - week) as f64;
    let mut n = prediction(student, week, p);
    n.explanation = serde_json::json!({
        "up": [{"feature": "days_since_last_activity", "value": idle, "typical": 2.0,
                "contribution": 0.4213124184,
                "text": format!("no activity for {idle} days (typical: 2)")}],
        "down": [{"feature": "assessments_missing", "value": 0.0, "typical": 1.0,
                  "contribution": -0.125, "text": "all 3 assessments due so far submitted"}],
        "flagged": p >= 0.5,
    });
    n.context = serde_json::json!({"assessments_due": 3.0, "days_since_last_activity": idle,
                                   "clicks_this_week": 4.5});
    n
}

/// Text PostgreSQL's `COPY` and SQLite's inserts must carry as it is: tabs, newlines, carriage
/// returns, backslashes and quotes, in the explanation, the context and the run's model name.
async fn stored_text_with_separators_reads_back_as_written(db: TestDb) {
    let s = &db.store;
    let odd = "tab\there, line\nthere, cr\r, back\\slash \\N, \"quoted\"";
    let mut plain = prediction(21, 3, 0.8);
    plain.explanation = serde_json::json!({"up": [odd], "down": []});
    plain.context = serde_json::json!({"note": odd});
    let mut other_run = prediction(22, 3, 0.2);
    other_run.model = format!("at-risk\t{odd}");
    other_run.run_id = Some(5);
    let mut same_batch = prediction(23, 3, 0.4);
    same_batch.run_id = Some(6);
    s.insert_predictions(&[plain.clone(), other_run.clone(), same_batch])
        .await
        .unwrap();
    let back = s.prediction_history("BBB", "2013J", 21).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].prediction.explanation, plain.explanation);
    assert_eq!(back[0].prediction.context, plain.context);
    let back = s.prediction_history("BBB", "2013J", 22).await.unwrap();
    assert_eq!(back[0].prediction.model, other_run.model);
    assert_eq!(back[0].prediction.run_id, Some(5));
}

async fn staged_scores_are_invisible_until_published_and_resume_after_a_kill(db: TestDb) {
    use lodestar_store::BatchKey;
    let s = &db.store;
    // Last night's scores, published.
    s.insert_predictions(&[explained(11, 4, 0.3), explained(12, 4, 0.6)])
        .await
        .unwrap();
    let key = BatchKey {
        model: "at-risk".into(),
        version: 1,
        snapshot: "snap-a".into(),
        rows: 4,
    };
    let tonight = [
        explained(11, 5, 0.8),
        explained(12, 5, 0.2),
        explained(11, 6, 0.9),
        explained(13, 6, 0.1),
    ];
    let batch = s.open_score_batch(&key, None).await.unwrap();
    assert_eq!((batch.rows_done, batch.resumed), (0, false));
    s.stage_predictions(batch.id, &tonight[..2]).await.unwrap();
    // Staged, not published: readers still see last night's set only.
    assert_eq!(
        s.prediction_history("BBB", "2013J", 11)
            .await
            .unwrap()
            .len(),
        1
    );
    let view = s.caseload_view(None, TermState::Finished).await.unwrap();
    assert_eq!(view.len(), 2);
    assert!(view.iter().all(|e| e.week == 4));
    assert!(
        !s.has_predictions("at-risk", 1, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    // The cohort's latest week is found through the published batches only.
    let cohort = s.cohort("BBB", "2013J", None, None, 50, 0).await.unwrap();
    assert_eq!((cohort.week, cohort.total), (Some(4), 2));
    assert_eq!(
        s.cohort("BBB", "2013J", Some(5), None, 50, 0)
            .await
            .unwrap()
            .total,
        0
    );
    // The process dies here. The next run scoring the same rows takes the batch up after the
    // rows already staged; a batch of other rows would be discarded.
    let other = s
        .open_score_batch(
            &BatchKey {
                snapshot: "snap-b".into(),
                ..key.clone()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(other.discarded, 2, "the abandoned batch's rows are deleted");
    let other_rows = [explained(14, 6, 0.5)];
    s.stage_predictions(other.id, &other_rows).await.unwrap();
    let again = s.open_score_batch(&key, Some(7)).await.unwrap();
    assert_eq!(
        (again.resumed, again.rows_done, again.discarded),
        (false, 0, 1)
    );
    s.stage_predictions(again.id, &tonight[..2]).await.unwrap();
    // Dies again; a new process takes the batch up: it staged only the last rows itself, so
    // publishing reads the batch's rows back.
    let next = Store::connect(&db.url).await.unwrap();
    let resumed = next.open_score_batch(&key, Some(8)).await.unwrap();
    assert_eq!(
        (resumed.id, resumed.resumed, resumed.rows_done),
        (again.id, true, 2)
    );
    next.stage_predictions(resumed.id, &tonight[2..])
        .await
        .unwrap();
    let published = next.publish_score_batch(resumed.id).await.unwrap();
    assert_eq!((published.rows, published.students), (4, 3));
    assert_eq!(
        s.publish_score_batch(resumed.id).await.unwrap().rows,
        0,
        "once"
    );
    let tiers = s.batch_tiers(resumed.id).await.unwrap();
    assert_eq!(tiers, vec![("high".to_owned(), 2), ("low".to_owned(), 2)]);
    // Published at once: current risk moved to each student's latest week and the one before.
    let view = s.caseload_view(None, TermState::Finished).await.unwrap();
    let of = |id: i64| view.iter().find(|e| e.id_student == id).unwrap();
    assert_eq!(
        (of(11).week, of(11).previous.as_ref().map(|p| p.0)),
        (6, Some(5))
    );
    assert_eq!(
        (of(12).week, of(12).previous.as_ref().map(|p| p.0)),
        (5, Some(4))
    );
    assert_eq!(
        (of(13).week, of(13).previous.as_ref().map(|p| p.0)),
        (6, None)
    );
    // The sentences read back as they were written, from the compact stored form.
    assert_eq!(
        of(11).top_reason.as_deref(),
        Some("no activity for 14 days (typical: 2)")
    );
    assert_eq!(of(11).days_since_last_activity, Some(14.0));
    let history = s.prediction_history("BBB", "2013J", 11).await.unwrap();
    assert_eq!(history.len(), 3);
    let latest = &history[2].prediction;
    let (got, want) = (
        &latest.explanation["up"][0],
        &tonight[2].explanation["up"][0],
    );
    for field in ["feature", "value", "typical", "text"] {
        assert_eq!(got[field], want[field], "{field}");
    }
    // Contributions are kept to seven significant digits.
    let c = got["contribution"].as_f64().unwrap();
    assert!((c - 0.4213124184).abs() < 1e-7, "{c}");
    assert_eq!(
        latest.explanation["down"][0]["text"],
        "all 3 assessments due so far submitted"
    );
    assert_eq!(latest.explanation["flagged"], true);
    assert_eq!(latest.context, tonight[2].context);
    assert!(
        s.has_predictions("at-risk", 1, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    let cohort = s.cohort("BBB", "2013J", None, None, 50, 0).await.unwrap();
    assert_eq!((cohort.week, cohort.total), (Some(6), 2));
    let riskiest: Vec<i64> = cohort
        .rows
        .iter()
        .map(|p| p.prediction.id_student)
        .collect();
    assert_eq!(riskiest, vec![11, 13]);
    let week5 = s
        .cohort("BBB", "2013J", Some(5), Some("high"), 50, 0)
        .await
        .unwrap();
    assert_eq!((week5.total, week5.rows[0].prediction.id_student), (1, 11));
    // What the whole batch shares is stored once, with the batch, and read with each row: the
    // model, the version, the run that finished the batch (tonight's rows name none of their
    // own) and the time it was published.
    assert_eq!((latest.model.as_str(), latest.version), ("at-risk", 1));
    assert_eq!(latest.run_id, Some(8));
    assert!(
        history[2].scored_at.starts_with("20"),
        "{}",
        history[2].scored_at
    );
    assert_eq!(
        db.raw_count(
            "SELECT COUNT(*) FROM prediction_rows WHERE batch_id IS NOT NULL AND model IS NULL \
                      AND version IS NULL AND run_id IS NULL AND scored_at IS NULL"
        )
        .await,
        2,
        "last night's rows, of their batch's model, version and run, leave them to it"
    );
    // Rows of several runs stored at once keep their own run (a batch of several runs has
    // none, so a row without one does not read as another's).
    let of_run = |student: i64, run: Option<i64>| {
        let mut p = explained(student, 7, 0.4);
        p.run_id = run;
        p
    };
    s.insert_predictions(&[of_run(21, Some(3)), of_run(22, None), of_run(23, Some(4))])
        .await
        .unwrap();
    for (student, run) in [(21, Some(3)), (22, None), (23, Some(4))] {
        let h = s.prediction_history("BBB", "2013J", student).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].prediction.run_id, run, "student {student}");
        assert!(h[0].scored_at.starts_with("20"));
    }
    // Feature names are ids in the stored row, not text.
    let stored: String = db.raw_explanation(history[2].id).await;
    assert!(
        !stored.contains("days_since_last_activity") && !stored.contains("no activity"),
        "{stored}"
    );
    // Once the presentation is recorded as a term under way at week 6 (day 48), its caseload is
    // tonight's students at that week, read from the published batch.
    s.record_terms(&[term("BBB-2013J", TermState::Running, 48)], "snap-a")
        .await
        .unwrap();
    let running = s.caseload_view(None, TermState::Running).await.unwrap();
    let mut at_week_6: Vec<i64> = running.iter().map(|e| e.id_student).collect();
    at_week_6.sort_unstable();
    assert_eq!(at_week_6, [11, 13]);
    assert!(running.iter().all(|e| e.top_reason.is_some()));
    // A row stored before batches (an upgraded database) is found the same way.
    db.raw_execute(
        "INSERT INTO prediction_rows (model, version, code_module, code_presentation, id_student, \
         as_of_week, probability, tier, explanation_json, scored_at) VALUES ('at-risk', 1, 'BBB', \
         '2013J', 15, 9, 0.5, 'low', '{\"up\": [], \"down\": []}', '2024-01-01T00:00:00Z')",
    )
    .await;
    let cohort = s.cohort("BBB", "2013J", None, None, 50, 0).await.unwrap();
    assert_eq!((cohort.week, cohort.total), (Some(9), 1));
    assert!(
        s.has_predictions("at-risk", 1, "BBB", "2013J", 9)
            .await
            .unwrap()
    );
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

async fn a_first_version_is_refused_on_a_credible_gap_and_promoted_despite_a_noisy_one(db: TestDb) {
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
