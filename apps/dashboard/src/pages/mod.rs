//! The pages and their forms. Every page checks the session; an advisor sees only their
//! caseload (anything else is "not found"); every form carries the session's CSRF token; every
//! student page view is written to the audit log.
//!
//! One module per page, each handler beside its template and the helpers only it uses:
//! `sign_in` (sign-in and sign-out), `caseload` (the caseload, its search and CSV export),
//! `student` (a student, their notes and feedback), `cohorts`, `models` (the model
//! evidence, promote and rollback) and `audit`. Here: what several pages share (rendering, the
//! error page, the navigation, the term a page shows, the population the caseload lists) and the
//! routes with no page of their own (`/`, the stylesheet, anything not routed).

mod audit;
mod caseload;
mod cohorts;
mod models;
mod sign_in;
mod student;

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use lodestar_domain::{PresentationTerm, TermState};
use lodestar_store::CaseloadEntry;

use crate::session::SignedIn;
use crate::{AppState, PageError};

pub use self::audit::audit;
pub use self::caseload::{CaseloadQuery, Row, SearchForm, caseload, caseload_csv, caseload_search};
pub use self::cohorts::{CohortsQuery, cohorts};
pub use self::models::{AliasForm, ModelsQuery, models, promote, rollback};
pub use self::sign_in::{CsrfForm, SignInForm, signin, signin_form, signout};
pub use self::student::{FeedbackForm, NoteForm, add_note, edit_note, feedback, student};

type St = State<Arc<AppState>>;

fn render(t: &impl Template) -> Result<Response, PageError> {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| PageError::Store(format!("template: {e}")))
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Status.
    pub status: u16,
    /// What happened, in words.
    pub text: String,
}

/// Anything not routed.
pub async fn not_found() -> PageError {
    PageError::NotFound
}

/// `/`: the caseload.
pub async fn home(_s: SignedIn) -> Redirect {
    Redirect::to("/caseload")
}

/// The stylesheet (vendored; no CDN).
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
        .into_response()
}

/// The navigation every page shows.
struct Nav {
    user: String,
    admin: bool,
    csrf: String,
}

fn nav(s: &SignedIn) -> Nav {
    Nav {
        user: s.user().username.clone(),
        admin: s.is_admin(),
        csrf: s.0.csrf.clone(),
    }
}

fn percent(p: f64) -> String {
    format!("{:.0}%", p * 100.0)
}

fn presentation_of(e: &CaseloadEntry) -> String {
    format!("{}-{}", e.code_module, e.code_presentation)
}

/// The term state a page shows: running unless `finished` (history) is asked for.
fn term_state(term: &str) -> Result<TermState, PageError> {
    if term.is_empty() {
        return Ok(TermState::Running);
    }
    term.parse().map_err(|_| {
        PageError::BadRequest(format!(
            "Term {term:?}: choose {} or {}.",
            TermState::Running,
            TermState::Finished
        ))
    })
}

/// The recorded terms by presentation, and the presentations in the order pages show them
/// (running first, then by presentation).
struct Terms {
    all: Vec<PresentationTerm>,
}

impl Terms {
    async fn load(state: &AppState) -> Result<Terms, PageError> {
        Ok(Terms {
            all: state.store.terms().await?,
        })
    }

    fn get(&self, presentation: &str) -> Option<&PresentationTerm> {
        self.all.iter().find(|t| t.presentation == presentation)
    }

    fn running(&self) -> Vec<&PresentationTerm> {
        self.all.iter().filter(|t| t.is_running()).collect()
    }

    /// Where a presentation sorts: recorded ones in the store's order, then the rest.
    fn rank(&self, presentation: &str) -> (usize, String) {
        let i = self
            .all
            .iter()
            .position(|t| t.presentation == presentation)
            .unwrap_or(self.all.len());
        (i, presentation.to_owned())
    }

    /// "BBB-2014J — running, as of day 76, week 10 of 38".
    fn heading(&self, presentation: &str) -> String {
        match self.get(presentation) {
            Some(t) => format!("{presentation} — {}", t.describe()),
            None => format!(
                "{presentation} — term not recorded (scored before the export's terms were kept)"
            ),
        }
    }
}

/// The students the caseload lists for `term` (and the cohort page counts): in `user`'s
/// caseload (everyone's when `None`); running terms at their current week, finished ones at
/// each presentation's latest scored week (a student whose latest score is older withdrew and
/// is not the advisor's to call).
async fn population(
    state: &AppState,
    user: Option<i64>,
    term: TermState,
) -> Result<Vec<CaseloadEntry>, PageError> {
    let mut entries = state.store.caseload_view(user, term).await?;
    let mut current: BTreeMap<String, i64> = BTreeMap::new();
    for e in &entries {
        let w = current.entry(presentation_of(e)).or_insert(e.week);
        *w = (*w).max(e.week);
    }
    entries.retain(|e| current.get(&presentation_of(e)) == Some(&e.week));
    Ok(entries)
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
