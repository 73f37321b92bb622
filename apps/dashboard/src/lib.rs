//! The advisor dashboard (`lodestar dashboard`, and inside `lodestar up`): server-rendered with
//! askama, working without JavaScript. An advisor signs in and sees their caseload ranked by risk
//! with the reason in words, what changed since last week and the outreach so far; opens a
//! student (risk by week, the explanation, the weekly timeline, notes, feedback); admins also see
//! the cohorts, the model evidence (metrics by week, reliability, ROC, subgroup gaps, drift,
//! alias history) with promote and rollback through the registry's gate, and the audit log.
//!
//! - [`session`]: sign-in with argon2, server-side sessions, CSRF, lockout.
//! - [`pages`]: the pages and forms; [`charts`]: SVG charts.

pub mod charts;
pub mod pages;
pub mod session;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use lodestar_store::Store;
use serde::{Deserialize, Serialize};

/// The dashboard's settings (`[dashboard]` in `lodestar.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// The registered model whose evidence the model page shows.
    pub model: String,
    /// Hours a session lasts.
    pub session_hours: i64,
    /// Failed sign-ins in a row that lock an account.
    pub lockout_failures: i64,
    /// Minutes an account stays locked.
    pub lockout_minutes: i64,
    /// Mark cookies `Secure` (set when served over HTTPS, as in production).
    pub secure_cookies: bool,
    /// Students per caseload page.
    pub page_size: usize,
}

impl Default for DashboardConfig {
    fn default() -> DashboardConfig {
        DashboardConfig {
            model: "at-risk".into(),
            session_hours: 8,
            lockout_failures: 5,
            lockout_minutes: 15,
            secure_cookies: false,
            page_size: 50,
        }
    }
}

impl DashboardConfig {
    /// Checks the settings, naming the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("dashboard.{key}: {why}"));
        if self.model.trim().is_empty() {
            return bad("model", "name the registered model");
        }
        if self.session_hours < 1 {
            return bad("session_hours", "must be at least 1");
        }
        if self.lockout_failures < 1 {
            return bad("lockout_failures", "must be at least 1");
        }
        if self.lockout_minutes < 1 {
            return bad("lockout_minutes", "must be at least 1");
        }
        if self.page_size == 0 {
            return bad("page_size", "must be at least 1");
        }
        Ok(())
    }
}

/// What every page shares.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Settings.
    pub config: DashboardConfig,
    /// Verified against for unknown user names, so they take as long as wrong passwords.
    pub dummy_hash: String,
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// Not there, or not the user's to see (the same answer, so ids cannot be probed).
    NotFound,
    /// A form without this session's token.
    Csrf,
    /// A form or filter that makes no sense, in words.
    BadRequest(String),
    /// The store failed (logged; the page says to try again).
    Store(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found: this page does not exist, or it is not in your caseload.".to_owned(),
            ),
            PageError::Csrf => return session::csrf_refused(),
            PageError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            PageError::Store(e) => {
                tracing::error!(error = %e, "dashboard store error");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database did not answer. Try again in a minute.".to_owned(),
                )
            }
        };
        let page = pages::ErrorPage {
            status: status.as_u16(),
            text,
        };
        (
            status,
            Html(askama::Template::render(&page).unwrap_or_default()),
        )
            .into_response()
    }
}

impl From<lodestar_store::StoreError> for PageError {
    fn from(e: lodestar_store::StoreError) -> PageError {
        PageError::Store(e.to_string())
    }
}

/// Content-Security-Policy: nothing but this origin; no script at all.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    // The route template only: student ids never reach the log.
    tracing::info!(%method, %route, status = response.status().as_u16(), ms = started.elapsed().as_secs_f64() * 1e3, "dashboard request");
    response
}

/// The dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    state: Arc<AppState>,
}

impl Dashboard {
    /// The dashboard over `store`.
    pub fn new(store: Store, config: DashboardConfig) -> Result<Dashboard, String> {
        config.validate()?;
        Ok(Dashboard {
            state: Arc::new(AppState {
                store,
                config,
                dummy_hash: session::dummy_hash(),
            }),
        })
    }

    /// Shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    fn pages(&self) -> Router<Arc<AppState>> {
        Router::new()
            .route("/", get(pages::home))
            .route("/signin", get(pages::signin_form).post(pages::signin))
            .route("/signout", post(pages::signout))
            .route(
                "/caseload",
                get(pages::caseload).post(pages::caseload_search),
            )
            .route("/caseload.csv", get(pages::caseload_csv))
            .route("/students/{presentation}/{id}", get(pages::student))
            .route("/students/{presentation}/{id}/notes", post(pages::add_note))
            .route("/notes/{id}", post(pages::edit_note))
            .route("/predictions/{id}/feedback", post(pages::feedback))
            .route("/cohorts", get(pages::cohorts))
            .route("/models", get(pages::models))
            .route("/models/promote", post(pages::promote))
            .route("/models/rollback", post(pages::rollback))
            .route("/audit", get(pages::audit))
            .route("/static/app.css", get(pages::stylesheet))
    }

    /// Every page with the security headers, and a not-found page for anything else.
    /// `/healthz` is left to the process.
    pub fn router(&self) -> Router {
        self.pages()
            .fallback(pages::not_found)
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn(security_headers))
    }

    /// The pages without a fallback, to merge beside another service's routes (`lodestar up`).
    pub fn routes(&self) -> Router {
        self.pages()
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn(security_headers))
    }

    /// Serves the dashboard alone (with `/healthz`, and `/readyz`: 200 while the store answers,
    /// 503 otherwise, since no page can be shown without it) until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let store = self.state.store.clone();
        let app = self
            .router()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(move || readyz(store.clone())));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn readyz(store: Store) -> Response {
    match store.ping().await {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::json!({
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": format!("store unreachable: {e}"),
            })
            .to_string(),
        )
            .into_response(),
    }
}
