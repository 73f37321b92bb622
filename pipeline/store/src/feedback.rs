//! Advisors' feedback on a prediction (Moodle's three kinds: acknowledged, not useful,
//! incorrectly flagged): recorded, and read back for the dashboard.

use sqlx::Row;

use crate::{Store, StoreError, now};

impl Store {
    /// Records an advisor's feedback on a prediction (Moodle's three kinds).
    pub async fn add_feedback(
        &self,
        prediction_id: i64,
        kind: &str,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<i64, StoreError> {
        if !["acknowledged", "not_useful", "incorrectly_flagged"].contains(&kind) {
            return Err(StoreError::Invalid(format!(
                "feedback {kind:?}: use acknowledged, not_useful or incorrectly_flagged"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO prediction_feedback (prediction_id, kind, actor, comment, at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(prediction_id)
        .bind(kind)
        .bind(actor)
        .bind(comment)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
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
}
