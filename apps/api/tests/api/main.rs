//! The API as a campus system sees it: started on port 0 against a fresh database (SQLite, and
//! PostgreSQL when `LODESTAR_TEST_POSTGRES_URL` is set), every route, every error status, token
//! scopes, revocation, the rate limit, the champion swapped under concurrent requests, the
//! database going away and coming back, the OpenAPI document, malformed bodies, and the
//! running or finished term that risk and cohort responses carry.
//!
//! One module per resource, as in `src/v1/`: [`access`] (tokens and the rate limit),
//! [`operations`], [`risk`], [`scoring`], [`feedback`], [`registry`], [`runs`] and [`kserve`].
//! Here: [`call`], which every request of a check goes through, and the API that checks
//! leaving it as they found it share per backend ([`shared_checks!`]); a check that changes
//! what another would see gets an API of its own ([`fresh_checks!`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::{TestApi, config, start};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// For each `check` (an `async fn(&TestApi)` of the calling module) a module of two tests,
/// `on_sqlite` and `on_postgres` (skipped unless `LODESTAR_TEST_POSTGRES_URL` is set), that run
/// it on the API these checks share per backend ([`shared`]); and `SHARED_CHECKS`, how many.
macro_rules! shared_checks {
    ($($check:ident),+ $(,)?) => {
        /// How many checks of this module run on the shared API.
        pub(crate) const SHARED_CHECKS: usize = [$(stringify!($check)),+].len();
        $(
            mod $check {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    let t = crate::shared(crate::Backend::Sqlite).await.unwrap();
                    super::$check(&t).await;
                    crate::done(crate::Backend::Sqlite, t).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    let Some(t) = crate::shared(crate::Backend::Postgres).await else {
                        return;
                    };
                    super::$check(&t).await;
                    crate::done(crate::Backend::Postgres, t).await;
                }
            }
        )+
    };
}

/// For each `check => "name"` (an `async fn(&TestApi)` of the calling module, and a short name
/// for its PostgreSQL schema) a module of two tests, `on_sqlite` and `on_postgres` (skipped
/// unless `LODESTAR_TEST_POSTGRES_URL` is set), that run it on an API of its own.
macro_rules! fresh_checks {
    ($($check:ident => $schema:literal),+ $(,)?) => {
        $(
            mod $check {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    let t = crate::common::start(None, crate::common::config()).await.unwrap();
                    super::$check(&t).await;
                    t.stop().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    let Some(t) = crate::common::start(Some($schema), crate::common::config()).await
                    else {
                        return;
                    };
                    super::$check(&t).await;
                    t.stop().await;
                }
            }
        )+
    };
}

mod access;
mod common;
mod feedback;
mod kserve;
mod operations;
mod registry;
mod risk;
mod runs;
mod scoring;

/// Sends a request and checks what every response must have: a problem body on any error
/// status, and a request id.
async fn call(
    t: &TestApi,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut r = t.client.request(method, format!("{}{path}", t.base));
    if let Some(token) = token {
        r = r.bearer_auth(token);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{path}: {status} without a problem body: {value}"
        );
        assert_eq!(value["status"], status.as_u16(), "{value}");
    }
    assert!(headers.contains_key("x-request-id"), "{path}");
    (status, value, headers)
}

/// The checks that run on the shared API, every module's.
const SHARED_CHECKS: usize = access::SHARED_CHECKS
    + feedback::SHARED_CHECKS
    + kserve::SHARED_CHECKS
    + operations::SHARED_CHECKS
    + registry::SHARED_CHECKS
    + risk::SHARED_CHECKS
    + runs::SHARED_CHECKS
    + scoring::SHARED_CHECKS;

/// Where the shared API keeps its store.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One backend's shared API (started by the first check that asks for it) and how many checks
/// have yet to finish with it: the last one stops it, dropping its PostgreSQL schema. (A run
/// that filters some of them out leaves that schema behind, as a failed check leaves its own.)
struct SharedApi {
    api: tokio::sync::Mutex<Option<Arc<TestApi>>>,
    left: AtomicUsize,
}

static SHARED: [SharedApi; 2] = [
    SharedApi {
        api: tokio::sync::Mutex::const_new(None),
        left: AtomicUsize::new(SHARED_CHECKS),
    },
    SharedApi {
        api: tokio::sync::Mutex::const_new(None),
        left: AtomicUsize::new(SHARED_CHECKS),
    },
];

/// The shared APIs serve on a runtime of their own: each test's runtime ends with the test.
fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The API shared by the checks of `backend` that leave it as they found it: the same fixture
/// as [`common::start`] gives (champion, stored predictions, tokens), started once per backend
/// (None when PostgreSQL is not configured).
async fn shared(backend: Backend) -> Option<Arc<TestApi>> {
    let mut api = SHARED[backend as usize].api.lock().await;
    if api.is_none() {
        let pg_test = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some("shared"),
        };
        let started = server_runtime()
            .spawn(start(pg_test, config()))
            .await
            .unwrap();
        *api = started.map(|mut t| {
            // A pooled connection would be served by the runtime of the test that opened it,
            // which ends with that test: each request opens its own.
            t.client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            Arc::new(t)
        });
    }
    api.clone()
}

/// A check is finished with the shared API `t`; the last one stops it.
async fn done(backend: Backend, t: Arc<TestApi>) {
    drop(t);
    let slot = &SHARED[backend as usize];
    if slot.left.fetch_sub(1, Ordering::SeqCst) == 1
        && let Some(api) = slot.api.lock().await.take()
    {
        Arc::into_inner(api)
            .expect("every check has let go of the shared API")
            .stop()
            .await;
    }
}
