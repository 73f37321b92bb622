//! The store against both backends (registry and operational tables): every test runs on a
//! fresh SQLite file and, when
//! `LODESTAR_TEST_POSTGRES_URL` is set (CI always sets it), on a fresh PostgreSQL schema.
//!
//! The cases are grouped by subject: the registry and promotion (`registry.rs`), runs and the
//! lease (`runs.rs`), predictions and score batches (`predictions.rs`), users, caseloads and the
//! dashboard (`dashboard.rs`), terms (`terms.rs`); this file holds the databases, the fixtures
//! they share and the list of cases run on both backends.

use lodestar_domain::{AsOfSource, PresentationTerm, TermState};
use lodestar_store::{ArtifactStore, Store};

mod dashboard;
mod predictions;
mod registry;
mod runs;
mod terms;

// The cases, where `both_backends!` finds them (each generated module calls `super::$case`).
use dashboard::*;
use predictions::*;
use registry::*;
use runs::*;
use terms::*;

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
