//! What the advisor dashboard reads and writes: server-side sessions (the cookie's id stored as a
//! hash, with the session's CSRF token), sign-in failures and lockout, the caseload view (each
//! student's latest score beside the week before, with outreach), a student's notes and the
//! feedback on a prediction.

use std::collections::HashMap;

use lodestar_domain::TermState;
use sqlx::Row;

use crate::ops::user_from;
use crate::{Store, StoreError, User, now};

/// A signed-in session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it ends (RFC 3339).
    pub expires_at: String,
}

/// A user's sign-in state.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInState {
    /// The user.
    pub user: User,
    /// Failures since the last success.
    pub failed: i64,
    /// Refused until then (RFC 3339).
    pub locked_until: Option<String>,
}

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

/// Outreach to one student so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutreachSummary {
    /// Notes written.
    pub notes: i64,
    /// The latest note's time.
    pub last_at: Option<String>,
    /// The latest note's outcome.
    pub last_outcome: Option<String>,
}

/// An outreach note.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Id.
    pub id: i64,
    /// Author's user id.
    pub author_id: i64,
    /// Author's name.
    pub author: String,
    /// Text.
    pub note: String,
    /// Outcome, e.g. `reached`, `no answer`, `referred`.
    pub outcome: Option<String>,
    /// Written.
    pub created_at: String,
    /// Last edited.
    pub updated_at: String,
}

/// A student key: module, presentation, student.
pub type StudentKey = (String, String, i64);

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
    /// A user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, username, role, password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// A user's sign-in state, by name.
    pub async fn sign_in_state(&self, username: &str) -> Result<Option<SignInState>, StoreError> {
        let Some(user) = self.user(username).await? else {
            return Ok(None);
        };
        let r = sqlx::query("SELECT failed_logins, locked_until FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(self.pool())
            .await?;
        Ok(Some(SignInState {
            failed: r.try_get("failed_logins")?,
            locked_until: r.try_get("locked_until")?,
            user,
        }))
    }

    /// Counts a failed sign-in; at `max_failures` the account is locked until `lock_until`.
    /// Returns the failures so far.
    pub async fn sign_in_failed(
        &self,
        user_id: i64,
        max_failures: i64,
        lock_until: &str,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        let failed: i64 = r.try_get("failed_logins")?;
        if failed >= max_failures {
            sqlx::query("UPDATE users SET locked_until = $1, failed_logins = 0 WHERE id = $2")
                .bind(lock_until)
                .bind(user_id)
                .execute(self.pool())
                .await?;
        }
        Ok(failed)
    }

    /// Clears failures and any lock after a successful sign-in.
    pub async fn sign_in_succeeded(&self, user_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Stores a session (by the hash of its cookie id).
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf)
        .bind(now())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A live session by the hash of its cookie id.
    pub async fn session(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.csrf, s.expires_at, u.id, u.username, u.role, u.password_hash FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| -> Result<Session, StoreError> {
            Ok(Session {
                user: user_from(&r)?,
                csrf: r.try_get("csrf")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a session.
    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
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
}

/// Caseload rows with the top reason and days idle read from each stored explanation and
/// context.
fn caseload_entries(
    rows: &[sqlx::any::AnyRow],
    dict: &crate::explanation::Dictionary,
) -> Result<Vec<CaseloadEntry>, StoreError> {
    let mut out: Vec<CaseloadEntry> = Vec::with_capacity(rows.len());
    for r in rows {
        let context = match crate::ops::json_column(r, "context_json")? {
            Some(c) => crate::explanation::decode_context(c, dict)?,
            None => serde_json::Value::Null,
        };
        let explanation = match crate::ops::json_column(r, "explanation_json")? {
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

impl Store {
    /// Outreach so far per student (of `user`'s caseload, or everyone's).
    pub async fn outreach_summary(
        &self,
        user: Option<i64>,
    ) -> Result<HashMap<StudentKey, OutreachSummary>, StoreError> {
        let scope = if user.is_some() {
            "JOIN caseloads c ON c.code_module = n.code_module AND c.code_presentation = n.code_presentation \
             AND c.id_student = n.id_student AND c.user_id = $1"
        } else {
            "WHERE $1 = $1"
        };
        let sql = format!(
            "SELECT n.code_module, n.code_presentation, n.id_student, n.outcome, n.created_at FROM outreach_notes n \
             {scope} ORDER BY n.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.unwrap_or(0))
            .fetch_all(self.pool())
            .await?;
        let mut out: HashMap<StudentKey, OutreachSummary> = HashMap::new();
        for r in &rows {
            let key = (
                r.try_get("code_module")?,
                r.try_get("code_presentation")?,
                r.try_get("id_student")?,
            );
            let e = out.entry(key).or_default();
            e.notes += 1;
            e.last_at = r.try_get("created_at")?;
            e.last_outcome = r.try_get("outcome")?;
        }
        Ok(out)
    }

    /// A student's outreach notes, oldest first.
    pub async fn notes(
        &self,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
    ) -> Result<Vec<Note>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.id, n.author_id, u.username, n.note, n.outcome, n.created_at, n.updated_at \
             FROM outreach_notes n JOIN users u ON u.id = n.author_id \
             WHERE n.code_module = $1 AND n.code_presentation = $2 AND n.id_student = $3 ORDER BY n.id",
        )
        .bind(code_module)
        .bind(code_presentation)
        .bind(id_student)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Note {
                    id: r.try_get("id")?,
                    author_id: r.try_get("author_id")?,
                    author: r.try_get("username")?,
                    note: r.try_get("note")?,
                    outcome: r.try_get("outcome")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Feedback on a prediction: (kind, actor, at), oldest first.
    pub async fn feedback_on(
        &self,
        prediction_id: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, actor, at FROM prediction_feedback WHERE prediction_id = $1 ORDER BY id",
        )
        .bind(prediction_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("actor")?, r.try_get("at")?)))
            .collect()
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

    /// Whose note: (module, presentation, student).
    pub async fn note_subject(&self, note_id: i64) -> Result<Option<StudentKey>, StoreError> {
        let row = sqlx::query(
            "SELECT code_module, code_presentation, id_student FROM outreach_notes WHERE id = $1",
        )
        .bind(note_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| -> Result<StudentKey, StoreError> {
            Ok((
                r.try_get("code_module")?,
                r.try_get("code_presentation")?,
                r.try_get("id_student")?,
            ))
        })
        .transpose()
    }
}
