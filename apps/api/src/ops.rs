//! Operations: `/healthz` (the process answers), `/readyz` (a champion is loaded and the store
//! answers; degraded, still 200, while the store is away and the loaded model serves),
//! Prometheus metrics, the OpenAPI document, and the middleware every request passes: a request
//! id (the caller's `X-Request-Id` or a new one), a JSON log line with the token id (never the
//! token, never the path's student id: the route template is logged), request counts and
//! latency histograms by route and status, and a problem body for any error status a layer
//! produced without one (404, 405, timeouts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::TokenSlot;
use crate::problem::{ApiError, PROBLEM_JSON, Problem};

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (every API in it shares it).
pub fn install_metrics() {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("lodestar_http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            )
            .ok()?;
        match builder.install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed: /metrics will be empty");
                None
            }
        }
    });
}

/// The serialised OpenAPI document, shared by the router.
#[derive(Debug, Clone)]
pub struct OpenApiText(pub Arc<String>);

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `degraded` while the store is unreachable (the loaded model still serves).
    pub status: String,
    /// `reachable` or `unreachable`.
    pub database: String,
    /// The model serving.
    pub model: String,
    /// Its version.
    pub version: i64,
    /// When this process loaded it.
    pub loaded_at: String,
}

/// A champion is loaded; the store's state.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready, or degraded (store away, model serving)", body = Readiness),
        (status = 503, description = "No champion loaded", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Readiness>, ApiError> {
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await,
        Ok(Ok(()))
    );
    state.db_ok.store(reachable, Ordering::Relaxed);
    let Some(c) = state.champion.current() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no champion of {:?} loaded (store {})",
                state.config.model,
                if reachable {
                    "reachable: promote a version or run the pipeline"
                } else {
                    "unreachable"
                }
            ),
        ));
    };
    Ok(Json(Readiness {
        status: if reachable { "ready" } else { "degraded" }.into(),
        database: if reachable {
            "reachable"
        } else {
            "unreachable"
        }
        .into(),
        model: c.model.clone(),
        version: c.version,
        loaded_at: c.loaded_at.clone(),
    }))
}

/// Prometheus metrics: requests and latency by route and status, predictions by tier, the
/// model version in use.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics() -> Response {
    let text = METRICS
        .get()
        .and_then(|h| h.as_ref())
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiText>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
        .into_response()
}

/// No route here.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource: /openapi.json lists every route")
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static PREFIX: OnceLock<String> = OnceLock::new();

fn request_id(req: &Request) -> String {
    if let Some(given) = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
    {
        return given.to_owned();
    }
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{:x}{:04x}", std::process::id(), (nanos & 0xffff) as u16)
    });
    format!("{prefix}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

fn detail_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such resource: /openapi.json lists every route",
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not take this method: /openapi.json lists the methods"
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "the request took longer than this server allows (request_timeout_ms)"
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the body is larger than this server accepts (max_body_bytes)"
        }
        _ => "the request could not be served",
    }
}

/// The middleware around every request.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let slot = TokenSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if status.as_u16() >= 400 && !is_problem {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError::new(status, detail_for(status)).into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let seconds = started.elapsed().as_secs_f64();
    let status_text = status.as_str().to_owned();
    metrics::counter!("lodestar_http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status_text.clone()).increment(1);
    metrics::histogram!("lodestar_http_request_duration_seconds", "route" => route.clone(), "method" => method.to_string(), "status" => status_text).record(seconds);
    let token = slot.0.get().copied();
    if status.is_server_error() {
        tracing::warn!(request_id = %id, %method, %route, status = status.as_u16(), ms = seconds * 1e3, token_id = token, "request");
    } else {
        tracing::info!(request_id = %id, %method, %route, status = status.as_u16(), ms = seconds * 1e3, token_id = token, "request");
    }
    response
}
