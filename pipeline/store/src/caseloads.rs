//! Caseloads: the students assigned to each user, and what the dashboard reads over them: the
//! caseload view over `current_risk` (each student's latest score beside the week before) and
//! the tier counts, over the presentations of one term state.

use lodestar_domain::TermState;
use sqlx::Row;

use crate::{Store, StoreError};

/// One student of a caseload: the latest score and the one of the week before.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseloadEntry {
    /// Module.
    pub code_module: String,
    /// Presentation.
    pub code_presentation: String,
    /// Student.
    pub id_student: i64,
    /// The latest prediction's id.
    pub prediction_id: i64,
    /// Its week.
    pub week: i64,
    /// Its probability.
    pub probability: f64,
    /// Its tier.
    pub tier: String,
    /// The strongest factor raising the risk, in words.
    pub top_reason: Option<String>,
    /// Days without activity at the end of its week.
    pub days_since_last_activity: Option<f64>,
    /// The previous scored week's probability and tier.
    pub previous: Option<(i64, f64, String)>,
}

/// How a query keeps only the presentations of one term state (bound as `$2`).
struct TermFilter {
    join: String,
    filter: &'static str,
}

/// The join on `presentation_terms` (alias `t`) for presentations in state `term` (`$2`):
/// running ones only at their current week (`week`, when not empty); finished ones together
/// with presentations whose term was never recorded.
fn term_filter(term: TermState, module: &str, presentation: &str, week: &str) -> TermFilter {
    let on = format!("t.code_module = {module} AND t.code_presentation = {presentation}");
    match term {
        TermState::Running => TermFilter {
            join: if week.is_empty() {
                format!("JOIN presentation_terms t ON {on} AND t.state = $2")
            } else {
                format!(
                    "JOIN presentation_terms t ON {on} AND t.state = $2 AND t.current_week = {week}"
                )
            },
            filter: "",
        },
        TermState::Finished => TermFilter {
            join: format!("LEFT JOIN presentation_terms t ON {on}"),
            filter: "AND (t.state IS NULL OR t.state = $2)",
        },
    }
}

impl Store {
    /// Assigns students to a user's caseload in one transaction (existing ones are kept).
    pub async fn assign_many(
        &self,
        user_id: i64,
        students: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for (module, presentation, student) in students {
            sqlx::query(
                "INSERT INTO caseloads (user_id, code_module, code_presentation, id_student) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(module)
            .bind(presentation)
            .bind(student)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Puts a student in a user's caseload (idempotent).
    pub async fn assign(
        &self,
        user_id: i64,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO caseloads (user_id, code_module, code_presentation, id_student) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(code_module)
        .bind(code_presentation)
        .bind(id_student)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A user's caseload: (module, presentation, student).
    pub async fn caseload(&self, user_id: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT code_module, code_presentation, id_student FROM caseloads WHERE user_id = $1 \
             ORDER BY code_module, code_presentation, id_student",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("code_module")?,
                    r.try_get("code_presentation")?,
                    r.try_get("id_student")?,
                ))
            })
            .collect()
    }

    /// Whether a student is in a user's caseload.
    pub async fn in_caseload(
        &self,
        user_id: i64,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM caseloads WHERE user_id = $1 AND code_module = $2 \
             AND code_presentation = $3 AND id_student = $4",
        )
        .bind(user_id)
        .bind(code_module)
        .bind(code_presentation)
        .bind(id_student)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The caseload view: for each student of `user`'s caseload (every scored student when
    /// `None`), the latest prediction and the previous scored week's, over the presentations
    /// recorded (by [`Store::record_terms`]) in state `term`. `Running`: only students scored at
    /// their presentation's current week (tonight's students; one who withdrew has no score
    /// there). `Finished`: history, each student's latest score, including presentations whose
    /// term was never recorded (predictions stored before terms were).
    pub async fn caseload_view(
        &self,
        user: Option<i64>,
        term: TermState,
    ) -> Result<Vec<CaseloadEntry>, StoreError> {
        let terms = term_filter(term, "cr.code_module", "cr.code_presentation", "cr.week");
        let scope = if user.is_some() {
            "JOIN caseloads c ON c.code_module = cr.code_module AND c.code_presentation = cr.code_presentation \
             AND c.id_student = cr.id_student AND c.user_id = $1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT cr.code_module, cr.code_presentation, cr.id_student, p.id, p.as_of_week, p.probability, \
               p.tier, p.explanation_json, p.context_json, q.as_of_week AS previous_week, \
               q.probability AS previous_probability, q.tier AS previous_tier \
             FROM current_risk cr {scope} {join} JOIN predictions p ON p.id = cr.prediction_id \
             LEFT JOIN predictions q ON q.id = cr.previous_id WHERE $1 = $1 {filter} \
             ORDER BY cr.code_module, cr.code_presentation, cr.id_student",
            join = terms.join,
            filter = terms.filter,
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.unwrap_or(0))
            .bind(term.as_str())
            .fetch_all(self.pool())
            .await?;
        self.with_features(|d| caseload_entries(&rows, d)).await
    }

    /// Students per presentation, week and tier (each student's latest score of the week), in
    /// `user`'s caseload or everyone's, over the presentations in state `term` as
    /// [`Store::caseload_view`] reads them (running: weeks up to the current one; finished: also
    /// presentations never recorded): (module, presentation, week, tier, count).
    pub async fn tier_counts(
        &self,
        user: Option<i64>,
        term: TermState,
    ) -> Result<Vec<(String, String, i64, String, i64)>, StoreError> {
        let terms = term_filter(term, "p.code_module", "p.code_presentation", "");
        let scope = if user.is_some() {
            "JOIN caseloads c ON c.code_module = p.code_module AND c.code_presentation = p.code_presentation \
             AND c.id_student = p.id_student AND c.user_id = $1"
        } else {
            "WHERE $1 = $1"
        };
        let sql = format!(
            "SELECT p.code_module, p.code_presentation, p.as_of_week, p.tier, COUNT(*) AS n FROM predictions p \
             {join} WHERE p.id IN (SELECT MAX(p.id) FROM predictions p {scope} \
               GROUP BY p.code_module, p.code_presentation, p.id_student, p.as_of_week) {filter} {upto} \
             GROUP BY p.code_module, p.code_presentation, p.as_of_week, p.tier \
             ORDER BY p.code_module, p.code_presentation, p.as_of_week, p.tier",
            join = terms.join,
            filter = terms.filter,
            upto = if term == TermState::Running {
                "AND p.as_of_week <= t.current_week"
            } else {
                ""
            },
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.unwrap_or(0))
            .bind(term.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("code_module")?,
                    r.try_get("code_presentation")?,
                    r.try_get("as_of_week")?,
                    r.try_get("tier")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }
}

/// Caseload rows with the top reason and days idle read from each stored explanation and
/// context.
fn caseload_entries(
    rows: &[sqlx::any::AnyRow],
    dict: &crate::explanation::Dictionary,
) -> Result<Vec<CaseloadEntry>, StoreError> {
    let mut out: Vec<CaseloadEntry> = Vec::with_capacity(rows.len());
    for r in rows {
        let context = match crate::json_column(r, "context_json")? {
            Some(c) => crate::explanation::decode_context(c, dict)?,
            None => serde_json::Value::Null,
        };
        let explanation = match crate::json_column(r, "explanation_json")? {
            Some(e) => crate::explanation::decode(e, &context, dict)?,
            None => serde_json::Value::Null,
        };
        let previous_week: Option<i64> = r.try_get("previous_week")?;
        let previous = match previous_week {
            Some(w) => Some((
                w,
                r.try_get::<f64, _>("previous_probability")?,
                r.try_get::<String, _>("previous_tier")?,
            )),
            None => None,
        };
        out.push(CaseloadEntry {
            code_module: r.try_get("code_module")?,
            code_presentation: r.try_get("code_presentation")?,
            id_student: r.try_get("id_student")?,
            prediction_id: r.try_get("id")?,
            week: r.try_get("as_of_week")?,
            probability: r.try_get("probability")?,
            tier: r.try_get("tier")?,
            top_reason: explanation
                .pointer("/up/0/text")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            days_since_last_activity: context
                .get("days_since_last_activity")
                .and_then(serde_json::Value::as_f64),
            previous,
        });
    }
    Ok(out)
}
