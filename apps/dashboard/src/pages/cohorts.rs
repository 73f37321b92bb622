//! The cohorts page: risk tiers per presentation and week, and the outreach to flagged students.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use lodestar_domain::TermState;
use lodestar_store::CaseloadEntry;
use serde::Deserialize;

use super::{Nav, St, Terms, nav, population, presentation_of, render, term_state};
use crate::session::SignedIn;
use crate::{PageError, charts};

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
