//! A fresh store with a registered, promoted champion, stored predictions and tokens, and the
//! API serving it on port 0.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use lodestar_api::{Api, ApiConfig};
use lodestar_domain::{EvaluationReport, FeatureKind, TierThresholds};
use lodestar_model::{
    Artifact, Calibration, Encoder, InputColumn, Lineage, ModelFamily, Predictor, Reference,
};
use lodestar_store::{ArtifactStore, NewPrediction, NewVersion, Promotion, Store};
use serde_json::{Value, json};

/// Weights of the test model version `v`: v1 and v2 score the same row differently.
pub fn weights(v: i64) -> Vec<f64> {
    if v == 1 {
        vec![0.0, 0.2, -0.01, 0.5, -0.5]
    } else {
        vec![0.1, 0.3, -0.02, -0.4, 0.4]
    }
}

/// The test model: week, days since last activity, clicks, region (two categories).
pub fn artifact(v: i64) -> Artifact {
    let columns = vec![
        InputColumn {
            name: "as_of_week".into(),
            kind: FeatureKind::Count,
            categories: vec![],
        },
        InputColumn {
            name: "days_since_last_activity".into(),
            kind: FeatureKind::Numeric,
            categories: vec![],
        },
        InputColumn {
            name: "clicks_total".into(),
            kind: FeatureKind::Count,
            categories: vec![],
        },
        InputColumn {
            name: "region".into(),
            kind: FeatureKind::Categorical,
            categories: vec!["North".into(), "South".into()],
        },
    ];
    Artifact {
        format: Artifact::FORMAT,
        family: ModelFamily::Logistic,
        encoder: Encoder {
            columns,
            impute: vec![0.0, 2.0, 100.0, 0.0, 0.0],
            mean: vec![0.0; 5],
            scale: vec![1.0; 5],
        },
        predictor: Predictor::Linear {
            weights: weights(v),
            bias: 0.0,
        },
        calibration: Calibration::Identity,
        threshold: 0.5,
        tiers: TierThresholds::default(),
        reference: Reference {
            by_week: vec![vec![0.0, 2.0, 100.0, f64::NAN]],
        },
        uses_protected_attributes: false,
        lineage: Lineage {
            snapshot_id: format!("snapshot-{v}"),
            code_version: "test".into(),
            seed: 1,
            fit_presentations: vec![],
            calibration_presentations: vec![],
            training_rows: 2,
            config: Value::Null,
        },
    }
}

/// The probability version `v` gives `row` (week, days, clicks, region index).
pub fn expected(v: i64, week: f64, days: f64, clicks: f64, region: Option<usize>) -> f64 {
    let w = weights(v);
    let mut z = w[0] * week + w[1] * days + w[2] * clicks;
    if let Some(r) = region {
        z += w[3 + r];
    }
    1.0 / (1.0 + (-z).exp())
}

/// A valid row.
pub fn row(week: f64, days: f64, clicks: f64, region: &str) -> Value {
    json!({"as_of_week": week, "days_since_last_activity": days, "clicks_total": clicks, "region": region})
}

pub const MODEL: &str = "at-risk";

/// Registers version `v` of the test model and makes it champion.
pub async fn register_and_promote(store: &Store, artifacts: &ArtifactStore, v: i64) {
    let a = artifact(v);
    let artifact = artifacts.put(MODEL, &a.to_bytes()).await.unwrap();
    let version = store
        .register_version(NewVersion {
            model: MODEL.into(),
            artifact,
            snapshot_hash: a.lineage.snapshot_id.clone(),
            code_version: "test".into(),
            config: json!({"family": "logistic"}),
            seed: 1,
            report: EvaluationReport::default(),
            run_id: None,
            actor: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(version.version, v);
    store
        .promote(&Promotion {
            model: MODEL.into(),
            version: v,
            gate: Default::default(),
            actor: "test".into(),
            reason: "test fixture".into(),
            force: true,
            evidence: None,
        })
        .await
        .unwrap();
}

/// Tokens by scope.
pub struct Tokens {
    pub read: String,
    pub write: String,
    pub run: String,
    pub admin: String,
    pub write_id: i64,
}

pub struct TestApi {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub artifacts: ArtifactStore,
    pub tokens: Tokens,
    pub api: Api,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    pub schema: Option<(String, String)>,
}

impl TestApi {
    /// Stops the server (in-flight requests finish) and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.served.take() {
            h.await.unwrap().unwrap();
        }
        if let Some((base, schema)) = self.schema.take() {
            let admin = sqlx::AnyPool::connect(&base).await.unwrap();
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
}

pub fn config() -> ApiConfig {
    ApiConfig {
        max_batch_rows: 50,
        max_body_bytes: 64 * 1024,
        rate_per_second: 0.0,
        token_cache_seconds: 0,
        watch_interval_ms: 20,
        ..ApiConfig::default()
    }
}

/// A fresh database URL: SQLite in `dir`, or a PostgreSQL schema of its own when `pg_test`
/// names the test (None when PostgreSQL is not configured).
pub async fn database(
    dir: &std::path::Path,
    pg_test: Option<&str>,
) -> Option<(String, Option<(String, String)>)> {
    let Some(test) = pg_test else {
        return Some((
            format!("sqlite://{}?mode=rwc", dir.join("lodestar.db").display()),
            None,
        ));
    };
    let Ok(base) = std::env::var("LODESTAR_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("LODESTAR_REQUIRE_POSTGRES").is_none(),
            "LODESTAR_REQUIRE_POSTGRES is set (CI sets it) but LODESTAR_TEST_POSTGRES_URL is not"
        );
        eprintln!("{test}: PostgreSQL run skipped: LODESTAR_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("api_{}_{}", test, std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base).await.unwrap();
    let reset = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(reset))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some((
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        Some((base, schema)),
    ))
}

/// Starts the API over a fresh store (see [`database`]) with `config`.
pub async fn start(pg_test: Option<&str>, config: ApiConfig) -> Option<TestApi> {
    start_at(pg_test, config, |u| u).await
}

/// As [`start`], with the API connecting to `route(url)` (a proxy in front of the database).
pub async fn start_at(
    pg_test: Option<&str>,
    config: ApiConfig,
    route: impl FnOnce(String) -> String,
) -> Option<TestApi> {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = database(dir.path(), pg_test).await?;
    let store = Store::connect(&url).await.unwrap();
    let artifacts = ArtifactStore::local(dir.path().join("artifacts")).unwrap();
    register_and_promote(&store, &artifacts, 1).await;
    seed_predictions(&store).await;
    let token = |n: &str| format!("lds_test_{n}_0123456789abcdefghijklmnop");
    let ids = [
        ("read", "predictions:read"),
        ("write", "predictions:write"),
        ("run", "pipeline:run"),
        ("admin", "admin"),
    ];
    let mut write_id = 0;
    for (name, scope) in ids {
        let id = store
            .create_token(name, &token(name), &[scope])
            .await
            .unwrap();
        if name == "write" {
            write_id = id;
        }
    }
    let api_store = Store::connect(&route(url)).await.unwrap();
    let api = Api::new(api_store, artifacts.clone(), config, None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(api.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Some(TestApi {
        base,
        client: reqwest::Client::new(),
        store,
        artifacts,
        tokens: Tokens {
            read: token("read"),
            write: token("write"),
            run: token("run"),
            admin: token("admin"),
            write_id,
        },
        api,
        stop: Some(stop),
        served: Some(served),
        _dir: dir,
        schema,
    })
}

/// Student 11 scored at weeks 1 to 3 (week 2 twice: the later counts) in BBB-2013J, and 20
/// students of BBB-2013J at week 3 across the tiers.
pub async fn seed_predictions(store: &Store) {
    let p = |student: i64, week: i64, prob: f64| {
        let tier = TierThresholds::default().tier(prob).as_str().to_owned();
        NewPrediction {
            model: MODEL.into(),
            version: 1,
            code_module: "BBB".into(),
            code_presentation: "2013J".into(),
            id_student: student,
            as_of_week: week,
            probability: prob,
            tier,
            explanation: json!({
                "up": [{"feature": "days_since_last_activity", "value": 12.0, "typical": 2.0, "contribution": 2.0, "text": "no activity for 12 days (typical: 2)"}],
                "down": [{"feature": "clicks_total", "value": 150.0, "typical": 100.0, "contribution": -0.5, "text": "150 clicks so far (typical: 100)"}],
                "flagged": prob >= 0.5,
            }),
            run_id: None,
            context: Value::Null,
        }
    };
    let mut rows = vec![p(11, 1, 0.2), p(11, 2, 0.3), p(11, 2, 0.45), p(11, 3, 0.81)];
    for s in 100..120 {
        rows.push(p(s, 3, f64::from((s - 100) as u32) / 20.0));
    }
    store.insert_predictions(&rows).await.unwrap();
}

pub type Shared = Arc<TestApi>;
