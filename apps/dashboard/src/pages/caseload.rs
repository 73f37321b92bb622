//! The caseload page: an advisor's students (everyone's for an admin) by presentation, riskiest
//! first, with filters, pages, the search by student id and the CSV export.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use lodestar_domain::TermState;
use lodestar_store::{CaseloadEntry, OutreachSummary};
use serde::Deserialize;

use super::{
    Nav, St, Terms, encode, nav, percent, population, presentation_of, render, term_state,
};
use crate::session::SignedIn;
use crate::{AppState, PageError};

/// Caseload filters (none is student data).
#[derive(Debug, Default, Deserialize)]
pub struct CaseloadQuery {
    /// Which terms: running (empty: the default) or `finished` (history).
    #[serde(default)]
    term: String,
    /// `MODULE-PRESENTATION`.
    #[serde(default)]
    presentation: String,
    /// `high`, `medium`, `low`.
    #[serde(default)]
    tier: String,
    /// `new` (new this week) or `no_outreach`.
    #[serde(default)]
    show: String,
    /// From 1.
    page: Option<usize>,
}

/// One caseload row.
pub struct Row {
    presentation: String,
    id_student: i64,
    href: String,
    percent: String,
    tier: String,
    change: String,
    reason: String,
    last_activity: String,
    outreach: String,
    new_this_week: bool,
}

/// New this week: at risk (medium or high) now, low or unscored the week before.
fn is_new(e: &CaseloadEntry) -> bool {
    e.tier != "low" && e.previous.as_ref().is_none_or(|p| p.2 == "low")
}

fn row_of(e: &CaseloadEntry, outreach: Option<&OutreachSummary>) -> Row {
    let presentation = presentation_of(e);
    let change = match &e.previous {
        Some((_, p, _)) => {
            let d = (e.probability - p) * 100.0;
            if d.abs() < 0.5 {
                "no change".to_owned()
            } else {
                format!("{}{:.0} pts", if d > 0.0 { "+" } else { "−" }, d.abs())
            }
        }
        None => "first score".to_owned(),
    };
    let reason = e
        .top_reason
        .clone()
        .unwrap_or_else(|| "no factor raises the risk".to_owned());
    let last_activity = match e.days_since_last_activity {
        Some(d) if d < 1.0 => "this week's last day".to_owned(),
        Some(d) => format!("{d:.0} days before week {}'s end", e.week),
        None => "none recorded".to_owned(),
    };
    let outreach = match outreach {
        Some(o) if o.notes > 0 => format!(
            "{} note{}, last: {}",
            o.notes,
            if o.notes == 1 { "" } else { "s" },
            o.last_outcome.as_deref().unwrap_or("no outcome")
        ),
        _ => "none yet".to_owned(),
    };
    Row {
        href: format!("/students/{presentation}/{}", e.id_student),
        presentation,
        id_student: e.id_student,
        percent: percent(e.probability),
        tier: e.tier.clone(),
        change,
        reason,
        last_activity,
        outreach,
        new_this_week: is_new(e),
    }
}

/// A group of caseload rows: one presentation, under a heading saying its term.
struct Section {
    presentation: String,
    heading: String,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "caseload.html")]
struct CaseloadPage {
    nav: Nav,
    title: String,
    history: bool,
    sections: Vec<Section>,
    empty: String,
    total: usize,
    shown_from: usize,
    page: usize,
    pages: usize,
    presentations: Vec<String>,
    presentation: String,
    term: String,
    tier: String,
    show: String,
    search: String,
    query: String,
    prev_href: Option<String>,
    next_href: Option<String>,
}

/// The caseload (the advisor's students of running presentations at their current week, or of
/// finished ones as history; everyone's for an admin), by presentation, riskiest first,
/// filtered; rows are put into words only for what is shown.
async fn caseload_entries(
    state: &AppState,
    s: &SignedIn,
    q: &CaseloadQuery,
    terms: &Terms,
    student: Option<i64>,
) -> Result<(Vec<(CaseloadEntry, Option<OutreachSummary>)>, Vec<String>), PageError> {
    let scope = (!s.is_admin()).then_some(s.user().id);
    let mut entries = population(state, scope, term_state(&q.term)?).await?;
    let mut outreach = state.store.outreach_summary(scope).await?;
    let mut presentations: Vec<String> = entries.iter().map(presentation_of).collect();
    presentations.sort_by_key(|p| terms.rank(p));
    presentations.dedup();
    entries.retain(|e| {
        (q.presentation.is_empty() || presentation_of(e) == q.presentation)
            && (q.tier.is_empty() || e.tier == q.tier)
            && student.is_none_or(|id| e.id_student == id)
    });
    entries.sort_by(|a, b| {
        terms
            .rank(&presentation_of(a))
            .cmp(&terms.rank(&presentation_of(b)))
            .then(b.probability.total_cmp(&a.probability))
            .then(a.id_student.cmp(&b.id_student))
    });
    let listed = entries
        .into_iter()
        .map(|e| {
            let key = (
                e.code_module.clone(),
                e.code_presentation.clone(),
                e.id_student,
            );
            let o = outreach.remove(&key);
            (e, o)
        })
        .filter(|(e, o)| match q.show.as_str() {
            "new" => is_new(e),
            "no_outreach" => o.as_ref().is_none_or(|o| o.notes == 0),
            _ => true,
        })
        .collect();
    Ok((listed, presentations))
}

fn check_filters(q: &CaseloadQuery) -> Result<(), PageError> {
    term_state(&q.term)?;
    if !["", "high", "medium", "low"].contains(&q.tier.as_str()) {
        return Err(PageError::BadRequest(format!(
            "Tier {:?}: choose high, medium or low.",
            q.tier
        )));
    }
    if !["", "new", "no_outreach"].contains(&q.show.as_str()) {
        return Err(PageError::BadRequest(format!(
            "Show {:?}: choose new or no_outreach.",
            q.show
        )));
    }
    Ok(())
}

fn query_string(q: &CaseloadQuery, page: Option<usize>) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("term", &q.term),
        ("presentation", &q.presentation),
        ("tier", &q.tier),
        ("show", &q.show),
    ] {
        if !v.is_empty() {
            parts.push(format!("{k}={}", encode(v)));
        }
    }
    if let Some(p) = page {
        parts.push(format!("page={p}"));
    }
    parts.join("&")
}

async fn caseload_page(
    state: &AppState,
    s: &SignedIn,
    q: CaseloadQuery,
    student: Option<i64>,
) -> Result<Response, PageError> {
    check_filters(&q)?;
    let terms = Terms::load(state).await?;
    let (listed, presentations) = caseload_entries(state, s, &q, &terms, student).await?;
    let history = term_state(&q.term)? == TermState::Finished;
    let size = state.config.page_size;
    let total = listed.len();
    let pages = total.div_ceil(size).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let mut sections: Vec<Section> = Vec::new();
    for (e, o) in listed.iter().skip((page - 1) * size).take(size) {
        let presentation = presentation_of(e);
        if sections
            .last()
            .is_none_or(|s| s.presentation != presentation)
        {
            sections.push(Section {
                heading: terms.heading(&presentation),
                presentation,
                rows: Vec::new(),
            });
        }
        if let Some(section) = sections.last_mut() {
            section.rows.push(row_of(e, o.as_ref()));
        }
    }
    let running = terms.running();
    let empty = if !presentations.is_empty() {
        "No student matches these filters.".to_owned()
    } else if history {
        "No finished term has scored students in your caseload.".to_owned()
    } else if running.is_empty() {
        "No term is running in the latest export; finished terms are under History.".to_owned()
    } else {
        format!(
            "No student of your caseload is scored at the current week of a running term ({}); \
             finished terms are under History.",
            running
                .iter()
                .map(|t| format!("{} — {}", t.presentation, t.describe()))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    let href = |p: usize| format!("/caseload?{}", query_string(&q, Some(p)));
    render(&CaseloadPage {
        nav: nav(s),
        title: if history {
            "History (finished terms)".to_owned()
        } else {
            "Caseload (running terms)".to_owned()
        },
        history,
        sections,
        empty,
        shown_from: (page - 1) * size + 1,
        total,
        prev_href: (page > 1).then(|| href(page - 1)),
        next_href: (page < pages).then(|| href(page + 1)),
        page,
        pages,
        presentations,
        query: query_string(&q, None),
        presentation: q.presentation,
        term: q.term,
        tier: q.tier,
        show: q.show,
        search: student.map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// The caseload page.
pub async fn caseload(
    State(state): St,
    s: SignedIn,
    Query(q): Query<CaseloadQuery>,
) -> Result<Response, PageError> {
    caseload_page(&state, &s, q, None).await
}

/// A search by student id (posted, so the id stays out of URLs and their logs).
#[derive(Debug, Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    student: String,
    /// The view searched: running (empty) or `finished`.
    #[serde(default)]
    term: String,
}

/// The caseload narrowed to one student id.
pub async fn caseload_search(
    State(state): St,
    s: SignedIn,
    Form(f): Form<SearchForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let text = f.student.trim();
    if text.is_empty() {
        let to = if term_state(&f.term)? == TermState::Finished {
            "/caseload?term=finished"
        } else {
            "/caseload"
        };
        return Ok(Redirect::to(to).into_response());
    }
    let id = text.parse::<i64>().map_err(|_| {
        PageError::BadRequest(format!(
            "Student id {text:?}: enter the number only, e.g. 28400."
        ))
    })?;
    let q = CaseloadQuery {
        term: f.term,
        ..CaseloadQuery::default()
    };
    caseload_page(&state, &s, q, Some(id)).await
}

/// The current view as CSV.
pub async fn caseload_csv(
    State(state): St,
    s: SignedIn,
    Query(q): Query<CaseloadQuery>,
) -> Result<Response, PageError> {
    check_filters(&q)?;
    let terms = Terms::load(&state).await?;
    let (listed, _) = caseload_entries(&state, &s, &q, &terms, None).await?;
    let rows: Vec<Row> = listed.iter().map(|(e, o)| row_of(e, o.as_ref())).collect();
    let field = |v: &str| {
        if v.contains([',', '"', '\n']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_owned()
        }
    };
    let mut csv = String::from(
        "presentation,id_student,risk,tier,change_since_last_week,top_reason,last_activity,outreach,new_this_week\n",
    );
    for r in &rows {
        csv.push_str(
            &[
                field(&r.presentation),
                r.id_student.to_string(),
                r.percent.clone(),
                r.tier.clone(),
                field(&r.change),
                field(&r.reason),
                field(&r.last_activity),
                field(&r.outreach),
                r.new_this_week.to_string(),
            ]
            .join(","),
        );
        csv.push('\n');
    }
    state
        .store
        .audit(
            &s.user().username,
            "caseload.export",
            &format!("{} rows", rows.len()),
            &serde_json::json!({"filters": query_string(&q, None)}),
        )
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"caseload.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}
