//! Each presentation's term as of the latest export (running or finished, its as-of day and
//! current week): recorded by the nightly pipeline before it stores predictions, read by the
//! caseload and the API so that both speak of the running term first.

use std::str::FromStr;

use lodestar_domain::{AsOfSource, AsOfWeek, PresentationId, PresentationTerm, TermState};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, now};

/// The columns of `presentation_terms` a term is read from.
macro_rules! term_columns {
    () => {
        "code_module, code_presentation, state, length_days, start_date, as_of_day, as_of_source, \
         current_week, students, outcomes_known"
    };
}

/// The word an as-of source is stored as: its serde name, so the domain type stays the one
/// spelling.
fn source_word(source: AsOfSource) -> Result<String, StoreError> {
    match serde_json::to_value(source) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(StoreError::Invalid(format!(
            "as-of source {source:?} does not serialize to a word: {other:?}"
        ))),
    }
}

fn source_of(word: &str) -> Result<AsOfSource, StoreError> {
    serde_json::from_value(serde_json::Value::String(word.to_owned()))
        .map_err(|e| StoreError::Invalid(format!("stored as-of source {word:?} is not known: {e}")))
}

fn id_of(term: &PresentationTerm) -> Result<PresentationId, StoreError> {
    PresentationId::from_str(&term.presentation).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn count(what: &str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Invalid(format!("stored {what} {n} is negative")))
}

fn term_from(row: &AnyRow) -> Result<(PresentationId, PresentationTerm), StoreError> {
    let module: String = row.try_get("code_module")?;
    let presentation: String = row.try_get("code_presentation")?;
    let id = PresentationId::parse(&module, &presentation)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let state: String = row.try_get("state")?;
    let state = TermState::from_str(&state).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let source: String = row.try_get("as_of_source")?;
    let length: i64 = row.try_get("length_days")?;
    let as_of_day: i64 = row.try_get("as_of_day")?;
    let week: Option<i64> = row.try_get("current_week")?;
    let current_week = week
        .map(|w| {
            u16::try_from(w).map(AsOfWeek).map_err(|_| {
                StoreError::Invalid(format!("stored current week {w} is out of range"))
            })
        })
        .transpose()?;
    let term = PresentationTerm {
        presentation: format!("{module}-{presentation}"),
        state,
        length_days: u16::try_from(length)
            .map_err(|_| StoreError::Invalid(format!("stored length {length} is out of range")))?,
        start_date: row.try_get("start_date")?,
        as_of_day: i32::try_from(as_of_day).map_err(|_| {
            StoreError::Invalid(format!("stored as-of day {as_of_day} is out of range"))
        })?,
        as_of_source: source_of(&source)?,
        current_week,
        students: count("students", row.try_get("students")?)?,
        outcomes_known: count("outcomes known", row.try_get("outcomes_known")?)?,
    };
    Ok((id, term))
}

impl Store {
    /// Records each presentation's term as of the export of `snapshot_id`, in one transaction:
    /// a presentation already recorded is updated, a new one added, and one no longer in the
    /// export keeps its last row.
    pub async fn record_terms(
        &self,
        terms: &[PresentationTerm],
        snapshot_id: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.pool().begin().await?;
        for term in terms {
            let id = id_of(term)?;
            let i64_of = |n: u64, what: &str| {
                i64::try_from(n)
                    .map_err(|_| StoreError::Invalid(format!("{what} {n} is too large")))
            };
            sqlx::query(concat!(
                "INSERT INTO presentation_terms (",
                term_columns!(),
                ", snapshot_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (code_module, code_presentation) DO UPDATE SET state = excluded.state, \
                 length_days = excluded.length_days, start_date = excluded.start_date, \
                 as_of_day = excluded.as_of_day, as_of_source = excluded.as_of_source, \
                 current_week = excluded.current_week, students = excluded.students, \
                 outcomes_known = excluded.outcomes_known, snapshot_id = excluded.snapshot_id, \
                 updated_at = excluded.updated_at"
            ))
            .bind(id.module.to_string())
            .bind(id.presentation.to_string())
            .bind(term.state.as_str())
            .bind(i64::from(term.length_days))
            .bind(term.start_date.clone())
            .bind(i64::from(term.as_of_day))
            .bind(source_word(term.as_of_source)?)
            .bind(term.current_week.map(|w| i64::from(w.0)))
            .bind(i64_of(term.students, "students")?)
            .bind(i64_of(term.outcomes_known, "outcomes known")?)
            .bind(snapshot_id)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every recorded presentation's term: running ones first, then finished ones, each in
    /// presentation order (module, then chronologically).
    pub async fn terms(&self) -> Result<Vec<PresentationTerm>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            term_columns!(),
            " FROM presentation_terms"
        ))
        .fetch_all(self.pool())
        .await?;
        let mut terms = rows.iter().map(term_from).collect::<Result<Vec<_>, _>>()?;
        terms.sort_by(|(a, ta), (b, tb)| ta.state.cmp(&tb.state).then_with(|| a.cmp(b)));
        Ok(terms.into_iter().map(|(_, t)| t).collect())
    }

    /// One presentation's term, if recorded.
    pub async fn term(
        &self,
        code_module: &str,
        code_presentation: &str,
    ) -> Result<Option<PresentationTerm>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            term_columns!(),
            " FROM presentation_terms WHERE code_module = $1 AND code_presentation = $2"
        ))
        .bind(code_module)
        .bind(code_presentation)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(term_from).transpose()?.map(|(_, t)| t))
    }
}
