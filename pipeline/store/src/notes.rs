//! Outreach notes on a student: written and edited by their author, listed, and summed up per
//! student for the caseload view.

use std::collections::HashMap;

use sqlx::Row;

use crate::{Store, StoreError, now};

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

impl Store {
    /// Adds an outreach note.
    pub async fn add_note(
        &self,
        author_id: i64,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
        note: &str,
        outcome: Option<&str>,
    ) -> Result<i64, StoreError> {
        let at = now();
        let row = sqlx::query(
            "INSERT INTO outreach_notes (author_id, code_module, code_presentation, id_student, note, outcome, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(author_id)
        .bind(code_module)
        .bind(code_presentation)
        .bind(id_student)
        .bind(note)
        .bind(outcome)
        .bind(&at)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Edits a note; only its author may. Returns false when the note is not theirs (or gone).
    pub async fn edit_note(
        &self,
        note_id: i64,
        author_id: i64,
        note: &str,
        outcome: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outreach_notes SET note = $1, outcome = $2, updated_at = $3 WHERE id = $4 AND author_id = $5",
        )
        .bind(note)
        .bind(outcome)
        .bind(now())
        .bind(note_id)
        .bind(author_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
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
}
