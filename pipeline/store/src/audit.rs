//! The audit trail: who did what to which subject, and when; appended to and read back newest
//! first.

use sqlx::Row;

use crate::{Store, StoreError, now};

impl Store {
    /// Appends to the audit trail.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_events (actor, action, subject, detail_json, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(actor)
            .bind(action)
            .bind(subject)
            .bind(detail.to_string())
            .bind(now())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The latest audit events, newest first: (actor, action, subject, at).
    pub async fn audit_events(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT actor, action, subject, at FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("actor")?,
                    r.try_get("action")?,
                    r.try_get("subject")?,
                    r.try_get("at")?,
                ))
            })
            .collect()
    }
}
