//! The audit log page (admins): who viewed or changed what, when.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Nav, St, nav, render};
use crate::PageError;
use crate::session::SignedIn;

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    events: Vec<(String, String, String, String)>,
}

/// The audit log (admins): who viewed or changed what, when.
pub async fn audit(State(state): St, s: SignedIn) -> Result<Response, PageError> {
    s.require_admin()?;
    let events = state
        .store
        .audit_events(500)
        .await?
        .into_iter()
        .map(|(actor, action, subject, at)| {
            (
                at.get(..19).unwrap_or("").replace('T', " "),
                actor,
                action,
                subject,
            )
        })
        .collect();
    render(&AuditPage {
        nav: nav(&s),
        events,
    })
}
