//! Stored predictions as read back: a student's history, one prediction, a presentation's
//! cohort page, the students a version scored; and their retention (old predictions purged with
//! their feedback, `current_risk` rebuilt). Storing them is `scores`'s.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, json_column};

/// A prediction to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    /// Model.
    pub model: String,
    /// Version that scored.
    pub version: i64,
    /// Module.
    pub code_module: String,
    /// Presentation.
    pub code_presentation: String,
    /// Student.
    pub id_student: i64,
    /// As-of week.
    pub as_of_week: i64,
    /// Calibrated probability of an at-risk outcome.
    pub probability: f64,
    /// `low`, `medium`, `high`.
    pub tier: String,
    /// Explanation (JSON: factors up and down).
    pub explanation: serde_json::Value,
    /// The run that scored it.
    pub run_id: Option<i64>,
    /// The student's week as the features saw it (activity, assessments), for the dashboard's
    /// timeline; `Null` when not recorded.
    pub context: serde_json::Value,
}

/// A stored prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Id.
    pub id: i64,
    /// What was stored.
    pub prediction: NewPrediction,
    /// When (RFC 3339).
    pub scored_at: String,
}

/// One page of a presentation's predictions at one week.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortPage {
    /// The week shown (the latest scored when none was asked for); `None` when nothing is scored.
    pub week: Option<i64>,
    /// Students matching the filter at that week.
    pub total: i64,
    /// This page, riskiest first: each student's latest prediction for the week.
    pub rows: Vec<Prediction>,
}

/// The latest score of each week from predictions ordered by week then id (as
/// [`Store::prediction_history`] returns them): a week scored again counts once, as rescored.
pub fn latest_of_each_week(rows: &[Prediction]) -> Vec<&Prediction> {
    let mut out: Vec<&Prediction> = Vec::new();
    for p in rows {
        match out.last_mut() {
            Some(last) if last.prediction.as_of_week == p.prediction.as_of_week => *last = p,
            _ => out.push(p),
        }
    }
    out
}

pub(crate) fn prediction_from(
    r: &AnyRow,
    dict: &crate::explanation::Dictionary,
) -> Result<Prediction, StoreError> {
    let explanation: String = r.try_get("explanation_json")?;
    let explanation: serde_json::Value = serde_json::from_str(&explanation)
        .map_err(|e| StoreError::Invalid(format!("stored explanation is not JSON: {e}")))?;
    let context = match json_column(r, "context_json")? {
        Some(c) => crate::explanation::decode_context(c, dict)?,
        None => serde_json::Value::Null,
    };
    Ok(Prediction {
        id: r.try_get("id")?,
        prediction: NewPrediction {
            model: r.try_get("model")?,
            version: r.try_get("version")?,
            code_module: r.try_get("code_module")?,
            code_presentation: r.try_get("code_presentation")?,
            id_student: r.try_get("id_student")?,
            as_of_week: r.try_get("as_of_week")?,
            probability: r.try_get("probability")?,
            tier: r.try_get("tier")?,
            explanation: crate::explanation::decode(explanation, &context, dict)?,
            run_id: r.try_get("run_id")?,
            context,
        },
        scored_at: r.try_get("scored_at")?,
    })
}

/// Recomputes `current_risk` from the stored predictions (after a purge).
const CURRENT_RISK_REBUILD: &str = "WITH per_week AS (SELECT MAX(id) AS id FROM predictions \
     GROUP BY id_student, code_module, code_presentation, as_of_week), \
     ranked AS (SELECT p.id, p.code_module, p.code_presentation, p.id_student, p.as_of_week, \
       ROW_NUMBER() OVER (PARTITION BY p.id_student, p.code_module, p.code_presentation ORDER BY p.as_of_week DESC) AS rn \
       FROM predictions p JOIN per_week w ON w.id = p.id) \
     INSERT INTO current_risk (code_module, code_presentation, id_student, prediction_id, week, previous_id, previous_week) \
     SELECT a.code_module, a.code_presentation, a.id_student, a.id, a.as_of_week, b.id, b.as_of_week \
     FROM ranked a LEFT JOIN ranked b ON b.id_student = a.id_student AND b.code_module = a.code_module \
       AND b.code_presentation = a.code_presentation AND b.rn = 2 WHERE a.rn = 1";

const PREDICTION_COLUMNS: &str = "id, model, version, code_module, code_presentation, id_student, as_of_week, \
     probability, tier, explanation_json, run_id, scored_at, context_json";

impl Store {
    /// Whether `version` of `model` already scored this presentation at this week (a rerun of
    /// the scoring step after an interruption does not store the same predictions twice).
    pub async fn has_predictions(
        &self,
        model: &str,
        version: i64,
        code_module: &str,
        code_presentation: &str,
        as_of_week: i64,
    ) -> Result<bool, StoreError> {
        // The first such row answers: the model and version are read through the row's batch.
        let row = sqlx::query(
            "SELECT 1 AS n FROM predictions WHERE code_module = $3 AND code_presentation = $4 \
             AND as_of_week = $5 AND model = $1 AND version = $2 LIMIT 1",
        )
        .bind(model)
        .bind(version)
        .bind(code_module)
        .bind(code_presentation)
        .bind(as_of_week)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// A student's predictions in a presentation, oldest first.
    pub async fn prediction_history(
        &self,
        code_module: &str,
        code_presentation: &str,
        id_student: i64,
    ) -> Result<Vec<Prediction>, StoreError> {
        let sql = format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE code_module = $1 AND code_presentation = $2 \
             AND id_student = $3 ORDER BY as_of_week, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code_module)
            .bind(code_presentation)
            .bind(id_student)
            .fetch_all(self.pool())
            .await?;
        self.predictions_from(&rows).await
    }

    /// One stored prediction.
    pub async fn prediction(&self, id: i64) -> Result<Option<Prediction>, StoreError> {
        let sql = format!("SELECT {PREDICTION_COLUMNS} FROM predictions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(self.predictions_from(row.as_slice()).await?.pop())
    }

    /// Every prediction of a student, in every presentation: by module, presentation, week,
    /// then oldest first.
    pub async fn student_predictions(
        &self,
        id_student: i64,
    ) -> Result<Vec<Prediction>, StoreError> {
        let sql = format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE id_student = $1 \
             ORDER BY code_module, code_presentation, as_of_week, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_student)
            .fetch_all(self.pool())
            .await?;
        self.predictions_from(&rows).await
    }

    /// A page of a presentation's predictions at `week` (default: the latest week scored),
    /// each student's latest prediction for that week, riskiest first, optionally of one tier.
    pub async fn cohort(
        &self,
        code_module: &str,
        code_presentation: &str,
        week: Option<i64>,
        tier: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<CohortPage, StoreError> {
        let week = match week {
            Some(w) => Some(w),
            // Asked of each published batch (and of the rows stored before batches): the
            // index leads with the batch, so each is one probe at the end of its part.
            None => sqlx::query(
                "SELECT MAX(w) AS w FROM (\
                 SELECT (SELECT MAX(p.as_of_week) FROM prediction_rows p WHERE p.batch_id = b.id \
                 AND p.code_module = $1 AND p.code_presentation = $2) AS w \
                 FROM score_batches b WHERE b.published_at IS NOT NULL \
                 UNION ALL SELECT MAX(p.as_of_week) AS w FROM prediction_rows p \
                 WHERE p.batch_id IS NULL AND p.code_module = $1 AND p.code_presentation = $2) t",
            )
            .bind(code_module)
            .bind(code_presentation)
            .fetch_one(self.pool())
            .await?
            .try_get("w")?,
        };
        let Some(w) = week else {
            return Ok(CohortPage {
                week: None,
                total: 0,
                rows: Vec::new(),
            });
        };
        let latest = "id IN (SELECT MAX(id) FROM predictions WHERE code_module = $1 AND code_presentation = $2 \
                      AND as_of_week = $3 GROUP BY id_student) AND ($4 = '' OR tier = $4)";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM predictions WHERE {latest}"
        )))
        .bind(code_module)
        .bind(code_presentation)
        .bind(w)
        .bind(tier.unwrap_or(""))
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE {latest} \
             ORDER BY probability DESC, id_student LIMIT $5 OFFSET $6"
        )))
        .bind(code_module)
        .bind(code_presentation)
        .bind(w)
        .bind(tier.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        Ok(CohortPage {
            week: Some(w),
            total,
            rows: self.predictions_from(&rows).await?,
        })
    }

    /// The students a model version has scored: (module, presentation, student), sorted.
    pub async fn scored_students(
        &self,
        model: &str,
        version: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT code_module, code_presentation, id_student FROM predictions \
             WHERE model = $1 AND version = $2 ORDER BY code_module, code_presentation, id_student",
        )
        .bind(model)
        .bind(version)
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

    /// Deletes predictions scored more than `days` days ago (with their feedback); returns how many.
    pub async fn purge_predictions_older_than(&self, days: u32) -> Result<u64, StoreError> {
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        self.purge_predictions_before(&before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .await
    }

    /// Deletes predictions scored before `before` (RFC 3339); returns how many. Feedback on them
    /// goes with them.
    pub async fn purge_predictions_before(&self, before: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Scores of a batch carry the batch's time (found through the batch), older rows their
        // own.
        let old = "SELECT p.id FROM prediction_rows p WHERE p.batch_id IN \
                   (SELECT b.id FROM score_batches b WHERE COALESCE(b.published_at, b.created_at) < $1) \
                   UNION ALL SELECT p.id FROM prediction_rows p WHERE p.batch_id IS NULL AND p.scored_at < $1";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM prediction_feedback WHERE prediction_id IN ({old})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM prediction_rows WHERE id IN ({old})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM score_batches WHERE COALESCE(published_at, created_at) < $1 \
             AND NOT EXISTS (SELECT 1 FROM prediction_rows p WHERE p.batch_id = score_batches.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            sqlx::query("DELETE FROM current_risk")
                .execute(&mut *tx)
                .await?;
            sqlx::query(CURRENT_RISK_REBUILD).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
