//! The prediction API for campus systems (`lodestar api`, and inside `lodestar up`): stored risk
//! with explanations by student and cohort, live scoring of posted feature rows against the
//! champion's schema, feedback, the registry read-only, pipeline runs, the KServe v2 inference
//! protocol, and the OpenAPI 3.1 document generated from the handlers' types.
//!
//! - [`v1`]: the `/v1` resources; [`v2`]: KServe v2; [`ops`]: health, readiness, metrics, the
//!   OpenAPI document, and the request middleware (request ids, JSON logs, metrics, problem
//!   bodies for every error status).
//! - [`auth`]: bearer tokens (hashed, cached, revocable) with scopes, and the rate limit.
//! - [`champion`]: the model in memory, swapped without a restart when the alias moves.
//! - [`problem`]: RFC 9457 problem details.

pub mod auth;
pub mod champion;
pub mod ops;
pub mod problem;
pub mod v1;
pub mod v2;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use lodestar_store::{ArtifactStore, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{RateLimiter, TokenCache};
use crate::champion::ChampionSlot;

/// The API's settings (`[api]` in `lodestar.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The registered model whose champion is served.
    pub model: String,
    /// Rows one `POST /v1/predictions` may score.
    pub max_batch_rows: usize,
    /// Largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// A request running longer is cut off with 503.
    pub request_timeout_ms: u64,
    /// Requests per second per token (0: unlimited); 429 above.
    pub rate_per_second: f64,
    /// Requests a token may send at once before the rate applies.
    pub rate_burst: f64,
    /// How long a verified token is trusted without asking the database (a revocation takes
    /// effect within this).
    pub token_cache_seconds: u64,
    /// How often the champion alias is checked, in milliseconds.
    pub watch_interval_ms: u64,
    /// Largest page of `GET /v1/cohorts/{presentation}/risk`.
    pub max_page_size: i64,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            model: "at-risk".into(),
            max_batch_rows: 1000,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 10_000,
            rate_per_second: 1000.0,
            rate_burst: 2000.0,
            token_cache_seconds: 10,
            watch_interval_ms: 2000,
            max_page_size: 500,
        }
    }
}

impl ApiConfig {
    /// Checks the settings, naming the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("api.{key}: {why}"));
        if self.model.trim().is_empty() {
            return bad("model", "name the registered model to serve");
        }
        if self.max_batch_rows == 0 {
            return bad("max_batch_rows", "must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be at least 1");
        }
        if !(self.rate_per_second >= 0.0 && self.rate_per_second.is_finite()) {
            return bad(
                "rate_per_second",
                "must be a non-negative number (0: unlimited)",
            );
        }
        if self.rate_per_second > 0.0 && !(self.rate_burst >= 1.0 && self.rate_burst.is_finite()) {
            return bad("rate_burst", "must be at least 1");
        }
        if self.max_page_size < 1 {
            return bad("max_page_size", "must be at least 1");
        }
        Ok(())
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Where artifacts are.
    pub artifacts: ArtifactStore,
    /// Settings.
    pub config: ApiConfig,
    /// The model serving now.
    pub champion: ChampionSlot,
    /// Verified tokens.
    pub tokens: TokenCache,
    /// Buckets per token.
    pub limiter: RateLimiter,
    /// Whether the database answered the last time it was asked.
    pub db_ok: AtomicBool,
    /// Woken when a run is queued (the scheduler in the same process listens).
    pub wake: Option<Arc<Notify>>,
}

/// Now, RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The API's OpenAPI document description (paths are added from the handlers).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Lodestar prediction API",
        description = "Student-success risk for campus systems: stored weekly risk with explanations, live scoring of feature rows, feedback, the model registry, pipeline runs, and the KServe v2 inference protocol. Errors are RFC 9457 problem details. Authenticate with `Authorization: Bearer TOKEN` (tokens from `lodestar tokens create --scope ...`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "predictions", description = "Risk by student and cohort, live scoring, feedback"),
        (name = "registry", description = "Registered models and versions, read-only"),
        (name = "pipeline", description = "Nightly pipeline runs on demand"),
        (name = "kserve-v2", description = "KServe v2 Open Inference Protocol"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `lodestar tokens create`; scopes: predictions:read, predictions:write, pipeline:run, admin",
                    ))
                    .build(),
            ),
        );
    }
}

fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(v1::student_risk))
        .routes(routes!(v1::cohort_risk))
        .routes(routes!(v1::predict))
        .routes(routes!(v1::feedback))
        .routes(routes!(v1::models))
        .routes(routes!(v1::model_version))
        .routes(routes!(v1::start_run))
        .routes(routes!(v1::get_run))
        .routes(routes!(v2::live))
        .routes(routes!(v2::ready))
        .routes(routes!(v2::metadata))
        .routes(routes!(v2::model_ready))
        .routes(routes!(v2::infer))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
}

/// The OpenAPI 3.1 document, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] lodestar_store::StoreError),
}

/// The API, ready to serve.
#[derive(Debug, Clone)]
pub struct Api {
    state: Arc<AppState>,
}

impl Api {
    /// The API over `store`, with the champion loaded if there is one (the watcher picks one
    /// up later otherwise). `wake` is notified when a run is queued.
    pub async fn new(
        store: Store,
        artifacts: ArtifactStore,
        config: ApiConfig,
        wake: Option<Arc<Notify>>,
    ) -> Result<Api, ApiStartError> {
        config.validate().map_err(ApiStartError::Config)?;
        ops::install_metrics();
        let state = Arc::new(AppState {
            store,
            artifacts,
            config,
            champion: ChampionSlot::default(),
            tokens: TokenCache::default(),
            limiter: RateLimiter::default(),
            db_ok: AtomicBool::new(true),
            wake,
        });
        match champion::refresh(&state).await {
            Ok(champion::Refresh::Swapped { to, .. }) => {
                tracing::info!(model = %state.config.model, version = to, "champion loaded")
            }
            Ok(_) => tracing::warn!(
                model = %state.config.model,
                "no champion yet: /readyz answers 503 until one is promoted"
            ),
            Err(e) => return Err(e.into()),
        }
        Ok(Api { state })
    }

    /// Shared state (tests look at the champion).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The router, with its limits and middleware.
    pub fn router(&self) -> Router {
        let (router, doc) = routes().split_for_parts();
        let doc = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".into()));
        let c = &self.state.config;
        router
            .fallback(ops::not_found)
            .with_state(self.state.clone())
            .layer(axum::Extension(ops::OpenApiText(doc)))
            .layer(DefaultBodyLimit::max(c.max_body_bytes))
            // Refuses a declared oversize body before reading it.
            .layer(RequestBodyLimitLayer::new(c.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_millis(c.request_timeout_ms),
            ))
            .layer(axum::middleware::from_fn(ops::observe))
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the requests in flight;
    /// the champion watcher runs meanwhile.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with(listener, Router::new(), shutdown).await
    }

    /// As [`Api::serve`], with `beside` (another service's routes, e.g. the dashboard's pages
    /// in `lodestar up`) served on the same address.
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        beside: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(champion::watch(self.state.clone(), stop_rx));
        let app = self
            .router()
            .merge(beside)
            .into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = watcher.await;
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_one_at_fault() {
        assert!(ApiConfig::default().validate().is_ok());
        let bad = ApiConfig {
            max_batch_rows: 0,
            ..ApiConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("api.max_batch_rows"));
        let bad = ApiConfig {
            rate_per_second: -1.0,
            ..ApiConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("api.rate_per_second"));
    }
}
