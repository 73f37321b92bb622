//! Staging a score batch's rows: each chunk in one short transaction, by multi-row inserts on
//! SQLite and by `COPY` on PostgreSQL, the rows' ids taken in staging order; and the rows'
//! stored form (explanation and context compact), made without the database.

use std::time::{Duration, Instant};

use sqlx::Row;

use super::{ROWS_PER_STATEMENT, Scored, Staged, StagedRow};
use crate::explanation::{encode, encode_context, encode_scored};
use crate::{NewPrediction, Store, StoreError, now};

/// Appends `s` as a value of `COPY`'s text format (backslash, tab, newline and carriage return
/// escaped).
fn copy_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if memchr::memchr3(b'\\', b'\t', b'\n', bytes).is_none()
        && memchr::memchr(b'\r', bytes).is_none()
    {
        out.extend_from_slice(bytes);
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

impl Store {
    /// Gives these feature names ids (every feature a model version's explanations and the
    /// weekly context can name), so that [`Store::staged_form`] can run on any thread without
    /// the database.
    pub async fn intern_feature_names(&self, names: &[String]) -> Result<(), StoreError> {
        let missing: Vec<&String> = {
            let d = self.features();
            names.iter().filter(|n| !d.ids.contains_key(*n)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        for name in missing {
            sqlx::query(
                "INSERT INTO feature_names (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .execute(self.pool())
            .await?;
        }
        self.reload_features().await
    }

    /// A prediction in the form it is stored (explanation and context compact), made without
    /// the database: a feature without an id yet leaves that explanation or context as given.
    pub fn staged_form(&self, p: NewPrediction) -> StagedRow {
        let d = self.features();
        let explanation =
            encode(&p.explanation, &p.context, &d).unwrap_or_else(|| p.explanation.to_string());
        let context = (!p.context.is_null())
            .then(|| encode_context(&p.context, &d).unwrap_or_else(|| p.context.to_string()));
        StagedRow {
            model: p.model,
            version: p.version,
            code_module: p.code_module,
            code_presentation: p.code_presentation,
            id_student: p.id_student,
            as_of_week: p.as_of_week,
            probability: p.probability,
            tier: p.tier,
            explanation,
            run_id: p.run_id,
            context,
        }
    }

    /// A scored prediction in its stored form, straight from the model's factors and the
    /// student's week (`context`: feature and value, finite values only); the same stored text
    /// [`Store::staged_form`] gives for the same prediction as JSON. A feature without an id
    /// leaves the explanation or context as JSON.
    pub fn staged_scored(&self, p: Scored<'_>) -> StagedRow {
        let d = self.features();
        let (explanation, context) = encode_scored(p.up, p.down, p.flagged, p.context, &d);
        let explanation = explanation.unwrap_or_else(|| {
            serde_json::json!({"up": p.up, "down": p.down, "flagged": p.flagged}).to_string()
        });
        let context = context.unwrap_or_else(|| {
            serde_json::Value::Object(
                p.context
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), serde_json::json!(v)))
                    .collect(),
            )
            .to_string()
        });
        StagedRow {
            model: p.model.to_owned(),
            version: p.version,
            code_module: p.code_module.to_owned(),
            code_presentation: p.code_presentation.to_owned(),
            id_student: p.id_student,
            as_of_week: p.as_of_week,
            probability: p.probability,
            tier: p.tier.to_owned(),
            explanation,
            run_id: p.run_id,
            context: Some(context),
        }
    }

    /// Stages one chunk of `batch`'s predictions in one transaction (multi-row inserts and the
    /// batch's progress): readers do not see them until the batch is published. Returns how
    /// long the transaction held the database.
    pub async fn stage_predictions(
        &self,
        batch: i64,
        rows: &[NewPrediction],
    ) -> Result<Duration, StoreError> {
        self.intern_features(rows).await?;
        let staged: Vec<StagedRow> = rows.iter().map(|p| self.staged_form(p.clone())).collect();
        self.stage_rows(batch, staged).await
    }

    /// Stages rows already in their stored form (see [`Store::stage_predictions`]).
    pub async fn stage_rows(
        &self,
        batch: i64,
        rows: Vec<StagedRow>,
    ) -> Result<Duration, StoreError> {
        match self.copy_pool() {
            Some(pg) => self.stage_rows_by_copy(pg, batch, rows).await,
            None => self.stage_rows_by_insert(batch, rows).await,
        }
    }

    /// [`Store::stage_rows`] on SQLite: multi-row inserts in one transaction that takes the
    /// write lock first, the rows' ids given in staging order.
    async fn stage_rows_by_insert(
        &self,
        batch: i64,
        rows: Vec<StagedRow>,
    ) -> Result<Duration, StoreError> {
        let at = now();
        let started = Instant::now();
        let staged = rows.len() as i64;
        let mut rows = rows.into_iter().peekable();
        let mut tx = self.pool().begin().await?;
        // The write first, so SQLite takes its write lock before the ids are read.
        let progressed =
            sqlx::query("UPDATE score_batches SET rows_done = rows_done + $1 WHERE id = $2")
                .bind(staged)
                .bind(batch)
                .execute(&mut *tx)
                .await?;
        if progressed.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!("no score batch {batch}")));
        }
        let of_batch =
            sqlx::query("SELECT model, version, run_id FROM score_batches WHERE id = $1")
                .bind(batch)
                .fetch_one(&mut *tx)
                .await?;
        let (model, version, run_id): (String, i64, Option<i64>) = (
            of_batch.try_get("model")?,
            of_batch.try_get("version")?,
            of_batch.try_get("run_id")?,
        );
        // The rows' ids are taken here, in staging order, so that publishing knows each
        // student's latest rows without reading the batch back.
        let mut next_id = self.next_prediction_id(&mut tx).await?;
        let mut here = Staged::default();
        while rows.peek().is_some() {
            // The rows' text is moved into the statement's arguments, not copied.
            let chunk: Vec<StagedRow> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            // Rows of the batch's own model, version and run leave them (and the time) to the
            // batch; the rest comes from a VALUES list (its columns are named column1, column2,
            // ... by SQLite and PostgreSQL alike).
            let shared = chunk
                .iter()
                .all(|p| p.model == model && p.version == version && p.run_id == run_id);
            let mut sql = String::with_capacity(512 + chunk.len() * 20);
            let mut q = if shared {
                sql.push_str(
                    "INSERT INTO prediction_rows (id, batch_id, code_module, code_presentation, id_student, \
                     as_of_week, probability, tier, explanation_json, context_json) SELECT v.column1, ",
                );
                sql.push_str(
                    "?, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
                     v.column9 FROM (VALUES ",
                );
                self.placeholders(&mut sql, chunk.len(), 9);
                sql.push_str(") AS v");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(batch)
            } else {
                sql.push_str(
                    "INSERT INTO prediction_rows (id, model, version, run_id, scored_at, batch_id, code_module, \
                     code_presentation, id_student, as_of_week, probability, tier, explanation_json, context_json) \
                     VALUES ",
                );
                self.placeholders(&mut sql, chunk.len(), 14);
                sqlx::query(sqlx::AssertSqlSafe(sql))
            };
            for p in chunk {
                let id = next_id;
                next_id += 1;
                here.rows += 1;
                here.offer(
                    &p.code_module,
                    &p.code_presentation,
                    p.id_student,
                    p.as_of_week,
                    id,
                );
                q = q.bind(id);
                if !shared {
                    q = q
                        .bind(p.model)
                        .bind(p.version)
                        .bind(p.run_id)
                        .bind(at.clone())
                        .bind(batch);
                }
                q = q
                    .bind(p.code_module)
                    .bind(p.code_presentation)
                    .bind(p.id_student)
                    .bind(p.as_of_week)
                    .bind(p.probability)
                    .bind(p.tier)
                    .bind(p.explanation)
                    .bind(p.context);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let held = started.elapsed();
        self.remember_staged(batch, here);
        Ok(held)
    }

    /// [`Store::stage_rows`] on PostgreSQL: the same transaction (the batch's progress, ids from
    /// the table's sequence in staging order), the rows sent by `COPY` in its text format rather
    /// than as bound parameters of multi-row inserts, which the server parses and plans again
    /// for every statement.
    async fn stage_rows_by_copy(
        &self,
        pg: &sqlx::PgPool,
        batch: i64,
        rows: Vec<StagedRow>,
    ) -> Result<Duration, StoreError> {
        let at = now();
        let started = Instant::now();
        let staged = rows.len() as i64;
        let mut tx = pg.begin().await?;
        let progressed =
            sqlx::query("UPDATE score_batches SET rows_done = rows_done + $1 WHERE id = $2")
                .bind(staged)
                .bind(batch)
                .execute(&mut *tx)
                .await?;
        if progressed.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!("no score batch {batch}")));
        }
        let (model, version, run_id): (String, i64, Option<i64>) =
            sqlx::query_as("SELECT model, version, run_id FROM score_batches WHERE id = $1")
                .bind(batch)
                .fetch_one(&mut *tx)
                .await?;
        // The sequence is looked up once (a function of constant text is still called per row:
        // parsing its name for every id was a tenth of the server's work).
        // One array rather than a row per id.
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "WITH s AS MATERIALIZED \
             (SELECT pg_get_serial_sequence('prediction_rows', 'id')::regclass AS seq) \
             SELECT array_agg(nextval(s.seq)) FROM s, generate_series(1, $1)",
        )
        .bind(staged)
        .fetch_one(&mut *tx)
        .await?;
        ids.sort_unstable();
        if ids.len() != rows.len() {
            return Err(StoreError::Invalid(
                "fewer prediction ids than rows".to_owned(),
            ));
        }
        let mut here = Staged::default();
        let mut data: Vec<u8> = Vec::with_capacity(rows.len() * 420);
        let mut ints = itoa::Buffer::new();
        let mut floats = ryu::Buffer::new();
        for (p, id) in rows.iter().zip(&ids) {
            here.rows += 1;
            here.offer(
                &p.code_module,
                &p.code_presentation,
                p.id_student,
                p.as_of_week,
                *id,
            );
            data.extend_from_slice(ints.format(*id).as_bytes());
            // Rows of the batch's own model, version and run leave them (and the time) to the
            // batch, as the inserts do.
            if p.model == model && p.version == version && p.run_id == run_id {
                data.extend_from_slice(b"\t\\N\t\\N\t\\N\t\\N\t");
            } else {
                data.push(b'\t');
                copy_text(&mut data, &p.model);
                data.push(b'\t');
                data.extend_from_slice(ints.format(p.version).as_bytes());
                data.push(b'\t');
                match p.run_id {
                    Some(r) => data.extend_from_slice(ints.format(r).as_bytes()),
                    None => data.extend_from_slice(b"\\N"),
                }
                data.push(b'\t');
                copy_text(&mut data, &at);
                data.push(b'\t');
            }
            data.extend_from_slice(ints.format(batch).as_bytes());
            data.push(b'\t');
            copy_text(&mut data, &p.code_module);
            data.push(b'\t');
            copy_text(&mut data, &p.code_presentation);
            data.push(b'\t');
            data.extend_from_slice(ints.format(p.id_student).as_bytes());
            data.push(b'\t');
            data.extend_from_slice(ints.format(p.as_of_week).as_bytes());
            data.push(b'\t');
            if p.probability.is_finite() {
                data.extend_from_slice(floats.format_finite(p.probability).as_bytes());
            } else {
                data.extend_from_slice(b"NaN");
            }
            data.push(b'\t');
            copy_text(&mut data, &p.tier);
            data.push(b'\t');
            copy_text(&mut data, &p.explanation);
            data.push(b'\t');
            match &p.context {
                Some(c) => copy_text(&mut data, c),
                None => data.extend_from_slice(b"\\N"),
            }
            data.push(b'\n');
        }
        drop(rows);
        let mut copy = tx
            .copy_in_raw(
                "COPY prediction_rows (id, model, version, run_id, scored_at, batch_id, code_module, \
                 code_presentation, id_student, as_of_week, probability, tier, explanation_json, \
                 context_json) FROM STDIN",
            )
            .await?;
        copy.send(data).await?;
        copy.finish().await?;
        tx.commit().await?;
        let held = started.elapsed();
        self.remember_staged(batch, here);
        Ok(held)
    }

    /// The first id for new prediction rows inside `tx`, which holds SQLite for writing: the
    /// next after every id ever given (AUTOINCREMENT never reuses one), so the rows staged in
    /// `tx` take it and those after it.
    async fn next_prediction_id(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<i64, StoreError> {
        let last: Option<i64> = sqlx::query(
            "SELECT MAX(m) AS m FROM (SELECT MAX(id) AS m FROM prediction_rows \
             UNION ALL SELECT seq AS m FROM sqlite_sequence WHERE name = 'prediction_rows')",
        )
        .fetch_one(&mut **tx)
        .await?
        .try_get("m")?;
        Ok(last.unwrap_or(0) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_copys_text_format_reads_as_separators() {
        let mut out = Vec::new();
        copy_text(&mut out, r#"[3,1,[[2,1,0,0.2,"say \"hi\"\tthen\nbye"]]]"#);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[3,1,[[2,1,0,0.2,"say \\"hi\\"\\tthen\\nbye"]]]"#
        );
        let mut out = Vec::new();
        copy_text(&mut out, "a\tb\nc\rd");
        assert_eq!(out, b"a\\tb\\nc\\rd");
    }
}
