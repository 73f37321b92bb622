//! The pages and their forms. Every page checks the session; an advisor sees only their
//! caseload (anything else is "not found"); every form carries the session's CSRF token; every
//! student page view is written to the audit log.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use lodestar_domain::{
    EvaluationReport, PresentationTerm, PromotionGate, TermState, TierThresholds,
};
use lodestar_store::{CHAMPION, CaseloadEntry, OutreachSummary, Promotion, StoreError};
use serde::Deserialize;
use serde_json::Value;

use crate::session::{self, SIGNIN_COOKIE, SignInRefused, SignedIn};
use crate::{AppState, PageError, charts};

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
        include_str!("../static/app.css"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    csrf: String,
    error: Option<String>,
    username: String,
}

fn signin_page(
    state: &AppState,
    status: StatusCode,
    error: Option<String>,
    username: String,
) -> Result<Response, PageError> {
    let csrf = session::random_token();
    let mut response = render(&SignInPage {
        csrf: csrf.clone(),
        error,
        username,
    })?;
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(state, SIGNIN_COOKIE, &csrf, 1800),
    );
    Ok(response)
}

/// The sign-in form.
pub async fn signin_form(State(state): St) -> Result<Response, PageError> {
    signin_page(&state, StatusCode::OK, None, String::new())
}

/// A sign-in.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Checks the form's token against its cookie, then the password.
pub async fn signin(
    State(state): St,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Result<Response, PageError> {
    let cookie = session::cookie(&headers, SIGNIN_COOKIE).unwrap_or("");
    if f.csrf.is_empty() || !session::constant_time_eq(cookie.as_bytes(), f.csrf.as_bytes()) {
        return Err(PageError::Csrf);
    }
    match session::check_password(&state, f.username.trim(), &f.password).await? {
        Ok(user) => {
            tracing::info!(user = %user.username, "signed in");
            session::start(&state, &user).await
        }
        Err(SignInRefused::Wrong) => signin_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password.".into()),
            f.username,
        ),
        Err(SignInRefused::Locked(until)) => signin_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "Too many failed attempts: this account is locked until {} UTC.",
                until.get(..16).unwrap_or(&until).replace('T', " ")
            )),
            f.username,
        ),
    }
}

/// A form that only carries its token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Signs out.
pub async fn signout(
    State(state): St,
    s: SignedIn,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    session::end(&state, &headers).await
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

fn percent(p: f64) -> String {
    format!("{:.0}%", p * 100.0)
}

fn presentation_of(e: &CaseloadEntry) -> String {
    format!("{}-{}", e.code_module, e.code_presentation)
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

fn split_presentation(p: &str) -> Result<(&str, &str), PageError> {
    p.rsplit_once('-')
        .filter(|(m, c)| !m.is_empty() && !c.is_empty())
        .ok_or(PageError::NotFound)
}

/// Refuses (404) a student outside an advisor's caseload.
async fn may_see(
    state: &AppState,
    s: &SignedIn,
    module: &str,
    code: &str,
    id: i64,
) -> Result<(), PageError> {
    if s.is_admin()
        || state
            .store
            .in_caseload(s.user().id, module, code, id)
            .await?
    {
        Ok(())
    } else {
        Err(PageError::NotFound)
    }
}

struct FactorView {
    text: String,
    strength: String,
}

struct WeekView {
    week: i64,
    percent: String,
    tier: String,
    clicks: String,
    active_days: String,
    assessments: String,
    missing: String,
    late: String,
    score: String,
}

struct NoteView {
    id: i64,
    author: String,
    note: String,
    outcome: String,
    when: String,
    mine: bool,
}

#[derive(Template)]
#[template(path = "student.html")]
struct StudentPage {
    nav: Nav,
    presentation: String,
    term: String,
    back: String,
    id_student: i64,
    base: String,
    percent: String,
    tier: String,
    week: i64,
    model_version: i64,
    prediction_id: i64,
    chart: String,
    up: Vec<FactorView>,
    down: Vec<FactorView>,
    weeks: Vec<WeekView>,
    notes: Vec<NoteView>,
    feedback: Vec<String>,
}

fn factor_views(e: &Value, key: &str) -> Vec<FactorView> {
    e.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| FactorView {
                    text: f
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    strength: format!(
                        "{:+.2}",
                        f.get("contribution").and_then(Value::as_f64).unwrap_or(0.0)
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn num(c: &Value, key: &str) -> String {
    c.get(key).and_then(Value::as_f64).map_or_else(
        || "—".to_owned(),
        |v| format!("{}", (v * 10.0).round() / 10.0),
    )
}

/// A student: risk by week, the current explanation, the weekly timeline, notes, feedback.
pub async fn student(
    State(state): St,
    s: SignedIn,
    Path((presentation, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (module, code) = split_presentation(&presentation)?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    may_see(&state, &s, module, code, id).await?;
    let all = state.store.prediction_history(module, code, id).await?;
    let history = lodestar_store::latest_of_each_week(&all);
    let Some(current) = history.last().copied() else {
        return Err(PageError::NotFound);
    };
    state
        .store
        .audit(
            &s.user().username,
            "student.view",
            &format!("{module}-{code}/{id}"),
            &serde_json::json!({"prediction": current.id}),
        )
        .await?;
    let tiers = TierThresholds::default();
    let points: Vec<(i64, f64)> = history
        .iter()
        .map(|p| (p.prediction.as_of_week, p.prediction.probability))
        .collect();
    let notes = state.store.notes(module, code, id).await?;
    let feedback = state.store.feedback_on(current.id).await?;
    let term = state.store.term(module, code).await?;
    let back = match &term {
        Some(t) if t.is_running() => "/caseload",
        _ => "/caseload?term=finished",
    };
    let e = &current.prediction.explanation;
    render(&StudentPage {
        nav: nav(&s),
        term: match &term {
            Some(t) => format!("Term: {}", t.describe()),
            None => "Term: not recorded (scored before the export's terms were kept)".to_owned(),
        },
        back: back.to_owned(),
        base: format!("/students/{module}-{code}/{id}"),
        presentation: format!("{module}-{code}"),
        id_student: id,
        percent: percent(current.prediction.probability),
        tier: current.prediction.tier.clone(),
        week: current.prediction.as_of_week,
        model_version: current.prediction.version,
        prediction_id: current.id,
        chart: charts::risk_by_week(&points, tiers.medium(), tiers.high()),
        up: factor_views(e, "up"),
        down: factor_views(e, "down"),
        weeks: history
            .iter()
            .rev()
            .map(|p| {
                let c = &p.prediction.context;
                WeekView {
                    week: p.prediction.as_of_week,
                    percent: percent(p.prediction.probability),
                    tier: p.prediction.tier.clone(),
                    clicks: num(c, "clicks_this_week"),
                    active_days: num(c, "active_days_this_week"),
                    assessments: format!(
                        "{} of {}",
                        num(c, "assessments_submitted"),
                        num(c, "assessments_due")
                    ),
                    missing: num(c, "assessments_missing"),
                    late: num(c, "assessments_late"),
                    score: num(c, "score_mean"),
                }
            })
            .collect(),
        notes: notes
            .into_iter()
            .map(|n| NoteView {
                mine: n.author_id == s.user().id,
                id: n.id,
                author: n.author,
                note: n.note,
                outcome: n.outcome.unwrap_or_default(),
                when: n.updated_at.get(..16).unwrap_or("").replace('T', " "),
            })
            .collect(),
        feedback: feedback
            .into_iter()
            .map(|(kind, actor, at)| {
                format!(
                    "{} by {actor}, {}",
                    kind.replace('_', " "),
                    at.get(..16).unwrap_or("").replace('T', " ")
                )
            })
            .collect(),
    })
}

/// A note and its outcome.
#[derive(Debug, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    note: String,
    #[serde(default)]
    outcome: String,
}

const OUTCOMES: [&str; 5] = ["", "reached", "no answer", "referred", "declined"];

fn check_note(f: &NoteForm) -> Result<(&str, Option<&str>), PageError> {
    let note = f.note.trim();
    if note.is_empty() || note.len() > 4000 {
        return Err(PageError::BadRequest(
            "A note needs between 1 and 4,000 characters.".into(),
        ));
    }
    if !OUTCOMES.contains(&f.outcome.as_str()) {
        return Err(PageError::BadRequest(format!(
            "Outcome {:?}: choose reached, no answer, referred or declined.",
            f.outcome
        )));
    }
    Ok((note, (!f.outcome.is_empty()).then_some(f.outcome.as_str())))
}

/// Adds an outreach note to a student.
pub async fn add_note(
    State(state): St,
    s: SignedIn,
    Path((presentation, id)): Path<(String, String)>,
    Form(f): Form<NoteForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let (module, code) = split_presentation(&presentation)?;
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    may_see(&state, &s, module, code, id).await?;
    let (note, outcome) = check_note(&f)?;
    let note_id = state
        .store
        .add_note(s.user().id, module, code, id, note, outcome)
        .await?;
    state
        .store
        .audit(
            &s.user().username,
            "note.add",
            &format!("{module}-{code}/{id}"),
            &serde_json::json!({"note": note_id}),
        )
        .await?;
    Ok(Redirect::to(&format!("/students/{module}-{code}/{id}#notes")).into_response())
}

/// Edits one's own note.
pub async fn edit_note(
    State(state): St,
    s: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<NoteForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let (note, outcome) = check_note(&f)?;
    let Some((module, code, student)) = state.store.note_subject(id).await? else {
        return Err(PageError::NotFound);
    };
    may_see(&state, &s, &module, &code, student).await?;
    if !state
        .store
        .edit_note(id, s.user().id, note, outcome)
        .await?
    {
        // Someone else's note: not found, as for anything not the user's.
        return Err(PageError::NotFound);
    }
    state
        .store
        .audit(
            &s.user().username,
            "note.edit",
            &format!("{module}-{code}/{student}"),
            &serde_json::json!({"note": id}),
        )
        .await?;
    Ok(Redirect::to(&format!("/students/{module}-{code}/{student}#notes")).into_response())
}

/// Feedback on a prediction.
#[derive(Debug, Deserialize)]
pub struct FeedbackForm {
    #[serde(default)]
    csrf: String,
    kind: String,
}

/// Records an advisor's feedback on a prediction.
pub async fn feedback(
    State(state): St,
    s: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<FeedbackForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    let Some(p) = state.store.prediction(id).await? else {
        return Err(PageError::NotFound);
    };
    let (module, code, student) = (
        p.prediction.code_module.clone(),
        p.prediction.code_presentation.clone(),
        p.prediction.id_student,
    );
    may_see(&state, &s, &module, &code, student).await?;
    match state
        .store
        .add_feedback(id, &f.kind, &s.user().username, None)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Invalid(why)) => return Err(PageError::BadRequest(why)),
        Err(e) => return Err(e.into()),
    }
    state
        .store
        .audit(
            &s.user().username,
            "prediction.feedback",
            &format!("{module}-{code}/{student}"),
            &serde_json::json!({"prediction": id, "kind": f.kind}),
        )
        .await?;
    Ok(Redirect::to(&format!("/students/{module}-{code}/{student}#feedback")).into_response())
}

struct CohortView {
    presentation: String,
    heading: String,
    chart: String,
    weeks: Vec<(i64, i64, i64, i64)>,
    flagged: i64,
    reached: i64,
}

#[derive(Template)]
#[template(path = "cohorts.html")]
struct CohortsPage {
    nav: Nav,
    title: String,
    history: bool,
    empty: String,
    cohorts: Vec<CohortView>,
}

/// Which cohorts: running terms (the default) or finished ones.
#[derive(Debug, Default, Deserialize)]
pub struct CohortsQuery {
    #[serde(default)]
    term: String,
}

/// Risk per presentation and week of the running terms (or, with `?term=finished`, of the
/// finished ones), and how many flagged students of the population the caseload lists have
/// had outreach.
pub async fn cohorts(
    State(state): St,
    s: SignedIn,
    Query(q): Query<CohortsQuery>,
) -> Result<Response, PageError> {
    let term = term_state(&q.term)?;
    let scope = (!s.is_admin()).then_some(s.user().id);
    let terms = Terms::load(&state).await?;
    let counts = state.store.tier_counts(scope, term).await?;
    let latest = population(&state, scope, term).await?;
    let outreach = state.store.outreach_summary(scope).await?;
    let mut by: BTreeMap<String, BTreeMap<i64, [i64; 3]>> = BTreeMap::new();
    for (m, c, week, tier, n) in counts {
        let slot = match tier.as_str() {
            "high" => 0,
            "medium" => 1,
            _ => 2,
        };
        by.entry(format!("{m}-{c}"))
            .or_default()
            .entry(week)
            .or_default()[slot] += n;
    }
    let mut by: Vec<(String, BTreeMap<i64, [i64; 3]>)> = by.into_iter().collect();
    by.sort_by_key(|(p, _)| terms.rank(p));
    let cohorts = by
        .into_iter()
        .map(|(presentation, weeks)| {
            let flagged: Vec<&CaseloadEntry> = latest
                .iter()
                .filter(|e| presentation_of(e) == presentation && e.tier != "low")
                .collect();
            let reached = flagged
                .iter()
                .filter(|e| {
                    outreach
                        .get(&(
                            e.code_module.clone(),
                            e.code_presentation.clone(),
                            e.id_student,
                        ))
                        .is_some_and(|o| o.notes > 0)
                })
                .count();
            let series: Vec<(i64, [i64; 3])> = weeks.iter().map(|(w, c)| (*w, *c)).collect();
            CohortView {
                chart: charts::tiers_by_week(&series),
                weeks: series.iter().map(|(w, c)| (*w, c[0], c[1], c[2])).collect(),
                flagged: flagged.len() as i64,
                reached: reached as i64,
                heading: terms.heading(&presentation),
                presentation,
            }
        })
        .collect();
    let history = term == TermState::Finished;
    render(&CohortsPage {
        nav: nav(&s),
        title: if history {
            "Cohorts: history (finished terms)".to_owned()
        } else {
            "Cohorts (running terms)".to_owned()
        },
        empty: if history {
            "No finished term has scored students.".to_owned()
        } else if terms.running().is_empty() {
            "No term is running in the latest export; finished terms are under History.".to_owned()
        } else {
            "No student of a running term is scored yet.".to_owned()
        },
        history,
        cohorts,
    })
}

struct VersionView {
    version: i64,
    label: String,
    weeks: Vec<Vec<String>>,
    reliability: String,
    roc: String,
    gaps: Vec<Vec<String>>,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    nav: Nav,
    model: String,
    versions: Vec<VersionView>,
    history: Vec<Vec<String>>,
    drift: Vec<Vec<String>>,
    drift_note: String,
    message: String,
    candidates: Vec<i64>,
    last_run: Option<RunSummary>,
}

/// The latest pipeline run, as its notify step summarised it.
struct RunSummary {
    headline: String,
    steps: Vec<(String, String)>,
    outcome: Vec<String>,
}

fn run_summary(r: &lodestar_store::PipelineRun) -> RunSummary {
    let s = r.summary.clone().unwrap_or(Value::Null);
    let mut steps: Vec<(String, String)> = s["steps"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, v)| {
                    let status = v["status"].as_str().unwrap_or("?").to_owned();
                    let detail = match (v["seconds"].as_f64(), v["error"].as_str()) {
                        (_, Some(e)) => format!("{status}: {e}"),
                        (Some(sec), _) => format!("{status} in {sec:.1} s"),
                        _ => status,
                    };
                    (name.clone(), detail)
                })
                .collect()
        })
        .unwrap_or_default();
    const ORDER: [&str; 9] = [
        "ingest", "features", "train", "evaluate", "register", "gate", "score", "drift", "notify",
    ];
    steps.sort_by_key(|(n, _)| ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()));
    let mut outcome = Vec::new();
    if let Some(g) = s["gate"].as_object() {
        let promoted = g.get("promoted").and_then(Value::as_bool).unwrap_or(false);
        outcome.push(format!(
            "Gate: version {} {}",
            g.get("candidate").map(Value::to_string).unwrap_or_default(),
            if promoted {
                "promoted to champion".to_owned()
            } else {
                format!(
                    "kept out; champion stays version {}",
                    g.get("champion").map(Value::to_string).unwrap_or_default()
                )
            }
        ));
    }
    if let Some(sc) = s["score"].as_object() {
        outcome.push(format!(
            "Scored: {} predictions ({})",
            sc.get("stored").map(Value::to_string).unwrap_or_default(),
            sc.get("by_tier")
                .and_then(Value::as_object)
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        ));
        for p in sc
            .get("presentations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let as_of = match p["as_of_date"].as_str() {
                Some(d) => lodestar_domain::term::date_in_words(d).unwrap_or_else(|| d.to_owned()),
                None => format!("day {}", p["as_of_day"]),
            };
            outcome.push(format!(
                "{} ({}, as of {as_of}): {} students scored at week {} of {}",
                p["presentation"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["students"],
                p["week"],
                p["weeks"]
            ));
        }
        for note in sc
            .get("notes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            outcome.push(format!("Note: {}", note.as_str().unwrap_or("")));
        }
    }
    RunSummary {
        headline: format!(
            "Run {} ({}, started {}): {}{}{}",
            r.id,
            r.trigger,
            r.started_at.get(..16).unwrap_or("").replace('T', " "),
            r.status,
            if r.flagged { ", flagged for drift" } else { "" },
            r.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        steps,
        outcome,
    }
}

fn metric(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "—".into()
    }
}

fn version_view(version: i64, label: &str, r: &EvaluationReport) -> VersionView {
    let first = r.weeks.first();
    VersionView {
        version,
        label: label.to_owned(),
        weeks: r
            .weeks
            .iter()
            .map(|w| {
                vec![
                    w.week.to_string(),
                    w.n.to_string(),
                    metric(w.roc_auc),
                    metric(w.pr_auc),
                    metric(w.brier),
                    metric(w.ece),
                    metric(w.precision),
                    metric(w.recall),
                ]
            })
            .collect(),
        reliability: first.map_or_else(String::new, |w| {
            let bins: Vec<(f64, f64)> = w
                .reliability
                .iter()
                .filter(|b| b.count > 0 && b.mean_predicted.is_finite() && b.observed.is_finite())
                .map(|b| (b.mean_predicted, b.observed))
                .collect();
            charts::reliability(&bins, &format!("Reliability, week {}", w.week))
        }),
        roc: first.map_or_else(String::new, |w| {
            charts::roc(&w.roc_curve, &format!("ROC, week {}", w.week))
        }),
        gaps: r
            .fairness
            .iter()
            .map(|g| {
                vec![
                    format!("{:?}", g.attribute),
                    g.week.to_string(),
                    metric(g.tpr_gap),
                    metric(g.fpr_gap),
                    metric(g.calibration_gap),
                ]
            })
            .collect(),
    }
}

/// What the model page says after a promote or rollback.
#[derive(Debug, Default, Deserialize)]
pub struct ModelsQuery {
    #[serde(default)]
    done: String,
}

/// The model evidence (admins): champion and challenger, drift, alias history, actions.
pub async fn models(
    State(state): St,
    s: SignedIn,
    Query(q): Query<ModelsQuery>,
) -> Result<Response, PageError> {
    s.require_admin()?;
    let model = state.config.model.clone();
    let versions = match state.store.versions(&model).await {
        Ok(v) => v,
        Err(StoreError::UnknownModel(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let champion = state.store.alias(&model, CHAMPION).await?;
    let mut views = Vec::new();
    if let Some(c) = champion.and_then(|c| versions.iter().find(|v| v.version == c)) {
        views.push(version_view(c.version, "champion", &c.report));
    }
    if let Some(latest) = versions.last()
        && Some(latest.version) != champion
    {
        views.push(version_view(
            latest.version,
            "challenger (latest)",
            &latest.report,
        ));
    }
    let history = state
        .store
        .alias_history(&model)
        .await
        .unwrap_or_default()
        .iter()
        .rev()
        .map(|m| {
            vec![
                m.at.get(..16).unwrap_or("").replace('T', " "),
                m.alias.clone(),
                m.kind.clone(),
                m.from_version.map(|v| v.to_string()).unwrap_or_default(),
                m.to_version.map(|v| v.to_string()).unwrap_or_default(),
                m.actor.clone(),
                format!("{}{}", m.reason, if m.forced { " (forced)" } else { "" }),
            ]
        })
        .collect();
    let runs = state.store.runs(20).await?;
    let last_run = runs.first().map(run_summary);
    let run = runs
        .into_iter()
        .find(|r| r.summary.as_ref().is_some_and(|s| !s["drift"].is_null()));
    let drift_summary = run
        .as_ref()
        .and_then(|r| r.summary.as_ref())
        .map(|s| s["drift"].clone());
    let drift = drift_summary
        .as_ref()
        .and_then(|d| d["top"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|f| {
            vec![
                f["feature"].as_str().unwrap_or("").to_owned(),
                metric(f["psi"].as_f64().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    let drift_note = match (&run, &drift_summary) {
        (Some(r), Some(d)) => format!(
            "Run {} ({}): highest PSI {}, {}{}",
            r.id,
            r.started_at.get(..16).unwrap_or("").replace('T', " "),
            metric(d["max_psi"].as_f64().unwrap_or(f64::NAN)),
            if d["flagged"].as_bool().unwrap_or(false) {
                "flagged: the population moved"
            } else {
                "not flagged"
            },
            d["note"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        _ => "No pipeline run has measured drift yet.".into(),
    };
    render(&ModelsPage {
        nav: nav(&s),
        candidates: versions
            .iter()
            .map(|v| v.version)
            .filter(|v| Some(*v) != champion)
            .rev()
            .collect(),
        model,
        versions: views,
        history,
        drift,
        drift_note,
        message: q.done,
        last_run,
    })
}

/// A promotion or rollback.
#[derive(Debug, Deserialize)]
pub struct AliasForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    reason: String,
}

fn done(message: &str) -> Response {
    Redirect::to(&format!("/models?done={}", encode(message))).into_response()
}

/// Promotes a version through the registry's gate (refusals are shown, nothing changes).
pub async fn promote(
    State(state): St,
    s: SignedIn,
    Form(f): Form<AliasForm>,
) -> Result<Response, PageError> {
    s.require_admin()?;
    s.check_csrf(&f.csrf)?;
    let Some(version) = f.version else {
        return Err(PageError::BadRequest("Choose a version to promote.".into()));
    };
    if f.reason.trim().is_empty() {
        return Err(PageError::BadRequest(
            "Say why (the reason is kept in the alias history).".into(),
        ));
    }
    let result = state
        .store
        .promote(&Promotion {
            model: state.config.model.clone(),
            version,
            gate: PromotionGate::default(),
            actor: s.user().username.clone(),
            reason: f.reason.trim().to_owned(),
            force: false,
            // A manual promotion compares the versions' stored reports.
            evidence: None,
        })
        .await;
    let message = match result {
        Ok(_) => format!("Version {version} is now the champion."),
        Err(
            e @ (StoreError::GateRefused(_)
            | StoreError::AlreadyHolds { .. }
            | StoreError::UnknownVersion { .. }
            | StoreError::UnknownModel(_)),
        ) => {
            format!("Not promoted: {e}")
        }
        Err(e) => return Err(e.into()),
    };
    state
        .store
        .audit(
            &s.user().username,
            "model.promote",
            &state.config.model,
            &serde_json::json!({"version": version, "result": message}),
        )
        .await?;
    Ok(done(&message))
}

/// Returns the champion to the version before.
pub async fn rollback(
    State(state): St,
    s: SignedIn,
    Form(f): Form<AliasForm>,
) -> Result<Response, PageError> {
    s.require_admin()?;
    s.check_csrf(&f.csrf)?;
    if f.reason.trim().is_empty() {
        return Err(PageError::BadRequest(
            "Say why (the reason is kept in the alias history).".into(),
        ));
    }
    let message = match state
        .store
        .rollback(&state.config.model, &s.user().username, f.reason.trim())
        .await
    {
        Ok(m) => format!(
            "Rolled back to version {}.",
            m.to_version.map(|v| v.to_string()).unwrap_or_default()
        ),
        Err(e @ (StoreError::NothingToRollBack { .. } | StoreError::UnknownModel(_))) => {
            format!("Not rolled back: {e}")
        }
        Err(e) => return Err(e.into()),
    };
    state
        .store
        .audit(
            &s.user().username,
            "model.rollback",
            &state.config.model,
            &serde_json::json!({"result": message}),
        )
        .await?;
    Ok(done(&message))
}

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
