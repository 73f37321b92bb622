//! Tonight's scores, stored in bulk without holding the database.
//!
//! The nightly run opens a *score batch*, stages its predictions into it in chunks (each chunk
//! one short transaction of multi-row inserts), then publishes it in one short transaction that
//! makes the whole batch visible and moves each student's current risk set-wise. Readers query
//! the `predictions` view, which holds published rows only: they see last night's complete set
//! or tonight's, never half, and the pipeline's lease renewal and the dashboard are never
//! blocked for longer than one chunk. A run killed while staging leaves an unpublished batch;
//! the next run that scores the same rows (same model version, same snapshot, same number of
//! rows) resumes it after the rows already staged, and a batch that will never be resumed is
//! deleted in chunks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::explanation::{encode, encode_context, encode_scored};
use crate::{NewPrediction, Store, StoreError, now};

/// Predictions per multi-row `INSERT` on SQLite (14 parameters each at most: under its limit on
/// bound parameters).
const ROWS_PER_STATEMENT: usize = 400;

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

/// Rows deleted per transaction when an abandoned batch is cleared.
const DELETE_CHUNK: i64 = 20_000;

/// Which scores a batch holds: a batch is resumed only by a run scoring the same rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey {
    /// Model.
    pub model: String,
    /// Version that scores.
    pub version: i64,
    /// The feature snapshot scored.
    pub snapshot: String,
    /// How many predictions the batch will hold once complete.
    pub rows: u64,
}

/// An open, unpublished batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreBatch {
    /// Id.
    pub id: i64,
    /// Rows already staged (by an interrupted earlier run when `resumed`): the caller stages
    /// the rest, in the same order.
    pub rows_done: u64,
    /// An earlier run's batch of the same rows, taken up where it stopped.
    pub resumed: bool,
    /// Rows of abandoned batches (other rows, never to be resumed) deleted on opening.
    pub discarded: u64,
}

/// A prediction in its stored form: made by [`Store::staged_form`].
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    model: String,
    version: i64,
    code_module: String,
    code_presentation: String,
    id_student: i64,
    as_of_week: i64,
    probability: f64,
    tier: String,
    explanation: String,
    run_id: Option<i64>,
    context: Option<String>,
}

/// A scored prediction, borrowed from the model's output: see [`Store::staged_scored`].
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// Model.
    pub model: &'a str,
    /// Version that scored.
    pub version: i64,
    /// Module.
    pub code_module: &'a str,
    /// Presentation.
    pub code_presentation: &'a str,
    /// Student.
    pub id_student: i64,
    /// As-of week.
    pub as_of_week: i64,
    /// Calibrated probability.
    pub probability: f64,
    /// Tier.
    pub tier: &'a str,
    /// Factors raising the risk, as the model wrote them (their words are `describe`'s for
    /// their numbers).
    pub up: &'a [lodestar_model::Factor],
    /// Factors lowering it, the same.
    pub down: &'a [lodestar_model::Factor],
    /// At or above the operating threshold.
    pub flagged: bool,
    /// The student's week: feature and value (finite values only).
    pub context: &'a [(&'a str, f64)],
    /// The run that scored it.
    pub run_id: Option<i64>,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Predictions made visible.
    pub rows: u64,
    /// Students whose current risk moved.
    pub students: u64,
    /// How long the publishing transaction held the database.
    pub transaction: Duration,
}

/// Students' current-risk rows: (module, presentation, student) to (latest id, latest week,
/// previous id, previous week).
type RiskRows = BTreeMap<(String, String, i64), (i64, i64, Option<i64>, Option<i64>)>;

/// Applies one newly stored prediction `(week, id)` to a student's current-risk row, exactly as
/// storing predictions one by one always has: a later week becomes the latest (the latest
/// becomes the previous), the same week replaces its score, an earlier week becomes the previous
/// if it is more recent than the previous.
fn apply(
    row: Option<(i64, i64, Option<i64>, Option<i64>)>,
    week: i64,
    id: i64,
) -> (i64, i64, Option<i64>, Option<i64>) {
    let Some((cur_id, cur_week, prev_id, prev_week)) = row else {
        return (id, week, None, None);
    };
    if week > cur_week {
        (id, week, Some(cur_id), Some(cur_week))
    } else if week == cur_week {
        (id, week, prev_id, prev_week)
    } else if prev_week.is_none_or(|p| week >= p) {
        (cur_id, cur_week, Some(id), Some(week))
    } else {
        (cur_id, cur_week, prev_id, prev_week)
    }
}

/// What this process staged into one batch: how many rows, and each student's two latest weeks
/// with their row ids (the latest id of each week). Publishing applies these to the current
/// risk instead of reading the whole batch back: [`apply`] keeps a student's latest week and
/// the one before, each with the last prediction stored for it, so of a batch only each
/// student's two latest weeks can change it, and applying those two in id order moves it as
/// applying every row would (a test checks). Used only when it covers every row the batch holds
/// (a batch taken up from an interrupted run is read back).
#[derive(Debug, Default)]
pub(crate) struct Staged {
    rows: u64,
    presentations: Vec<((String, String), rustc_hash::FxHashMap<i64, Latest>)>,
}

/// A student's two latest weeks in a batch: (week, id), the later week first.
type Latest = [Option<(i64, i64)>; 2];

impl Staged {
    /// Records one staged row (not counted: see `merge`).
    fn offer(&mut self, module: &str, presentation: &str, student: i64, week: i64, id: i64) {
        let at = match self
            .presentations
            .iter()
            .rposition(|((m, p), _)| m == module && p == presentation)
        {
            Some(at) => at,
            None => {
                self.presentations.push((
                    (module.to_owned(), presentation.to_owned()),
                    Default::default(),
                ));
                self.presentations.len() - 1
            }
        };
        offer(
            self.presentations[at].1.entry(student).or_default(),
            week,
            id,
        );
    }

    /// Adds what `other` staged after this.
    fn merge(&mut self, other: Staged) {
        self.rows += other.rows;
        for ((module, presentation), students) in other.presentations {
            for (student, latest) in students {
                for (week, id) in latest.into_iter().flatten() {
                    self.offer(&module, &presentation, student, week, id);
                }
            }
        }
    }

    /// The rows to apply per student, in id order.
    fn by_student(self) -> BTreeMap<(String, String, i64), Vec<(i64, i64)>> {
        let mut out = BTreeMap::new();
        for ((module, presentation), students) in self.presentations {
            for (student, latest) in students {
                let mut rows: Vec<(i64, i64)> = latest.into_iter().flatten().collect();
                rows.sort_by_key(|(_, id)| *id);
                out.insert((module.clone(), presentation.clone(), student), rows);
            }
        }
        out
    }
}

/// Keeps `(week, id)` in `latest` if its week is one of the two latest seen (a week seen again
/// keeps the larger id).
fn offer(latest: &mut Latest, week: i64, id: i64) {
    for (w, i) in latest.iter_mut().flatten() {
        if *w == week {
            *i = (*i).max(id);
            return;
        }
    }
    let new = Some((week, id));
    match latest[0] {
        None => latest[0] = new,
        Some((w0, _)) if week > w0 => {
            latest[1] = latest[0];
            latest[0] = new;
        }
        Some(_) => {
            if latest[1].is_none_or(|(w1, _)| week > w1) {
                latest[1] = new;
            }
        }
    }
}

impl Store {
    /// Appends `rows` tuples of `columns` parameters to a multi-row `VALUES`. SQLite gets
    /// anonymous `?` (its driver resolves each numbered parameter by a linear search of the
    /// statement's names: quadratic in a statement of thousands), PostgreSQL `$1, $2, ...`.
    fn placeholders(&self, sql: &mut String, rows: usize, columns: usize) {
        let numbered = self.backend() == crate::Backend::Postgres;
        for i in 0..rows {
            sql.push_str(if i > 0 { ",(" } else { "(" });
            for c in 0..columns {
                if c > 0 {
                    sql.push(',');
                }
                if numbered {
                    sql.push('$');
                    sql.push_str(itoa::Buffer::new().format(1 + i * columns + c));
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
    }

    /// Opens the batch tonight's scores are staged into: an unpublished batch of the same key
    /// is resumed; unpublished batches of other keys (runs that will never finish them) are
    /// deleted in chunks.
    pub async fn open_score_batch(
        &self,
        key: &BatchKey,
        run_id: Option<i64>,
    ) -> Result<ScoreBatch, StoreError> {
        let open = sqlx::query(
            "SELECT id, model, version, snapshot, rows_planned, rows_done FROM score_batches \
             WHERE published_at IS NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        let mut resume = None;
        let mut discarded = 0;
        for r in &open {
            let id: i64 = r.try_get("id")?;
            let same = r.try_get::<String, _>("model")? == key.model
                && r.try_get::<i64, _>("version")? == key.version
                && r.try_get::<String, _>("snapshot")? == key.snapshot
                && r.try_get::<i64, _>("rows_planned")? == key.rows as i64;
            if same && resume.is_none() {
                resume = Some((id, r.try_get::<i64, _>("rows_done")?));
            } else {
                discarded += self.discard_batch(id).await?;
            }
        }
        if let Some((id, done)) = resume {
            sqlx::query("UPDATE score_batches SET run_id = $1 WHERE id = $2")
                .bind(run_id)
                .bind(id)
                .execute(self.pool())
                .await?;
            return Ok(ScoreBatch {
                id,
                rows_done: done.max(0) as u64,
                resumed: true,
                discarded,
            });
        }
        let id = self.new_batch(key, run_id).await?;
        Ok(ScoreBatch {
            id,
            rows_done: 0,
            resumed: false,
            discarded,
        })
    }

    async fn new_batch(&self, key: &BatchKey, run_id: Option<i64>) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO score_batches (model, version, snapshot, run_id, rows_planned, rows_done, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) RETURNING id",
        )
        .bind(&key.model)
        .bind(key.version)
        .bind(&key.snapshot)
        .bind(run_id)
        .bind(key.rows as i64)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Deletes an unpublished batch's rows, a chunk per transaction, then the batch.
    async fn discard_batch(&self, id: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM prediction_rows WHERE id IN \
                 (SELECT id FROM prediction_rows WHERE batch_id = $1 LIMIT $2)",
            )
            .bind(id)
            .bind(DELETE_CHUNK)
            .execute(self.pool())
            .await?;
            deleted += done.rows_affected();
            if done.rows_affected() == 0 {
                break;
            }
        }
        sqlx::query("DELETE FROM score_batches WHERE id = $1 AND published_at IS NULL")
            .bind(id)
            .execute(self.pool())
            .await?;
        self.staged_batches().remove(&id);
        Ok(deleted)
    }

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

    /// What this process staged into each open batch.
    fn staged_batches(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, Staged>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what a committed staging transaction put into `batch`.
    fn remember_staged(&self, batch: i64, here: Staged) {
        self.staged_batches().entry(batch).or_default().merge(here);
    }

    /// A batch's rows per student, in id order, read back (for a batch this process did not
    /// stage whole). The rows are immutable once staged.
    async fn staged_by_student(
        &self,
        batch: i64,
    ) -> Result<(u64, BTreeMap<(String, String, i64), Vec<(i64, i64)>>), StoreError> {
        let staged = sqlx::query(
            "SELECT id, code_module, code_presentation, id_student, as_of_week FROM prediction_rows \
             WHERE batch_id = $1 ORDER BY id",
        )
        .bind(batch)
        .fetch_all(self.pool())
        .await?;
        let mut by_student: BTreeMap<(String, String, i64), Vec<(i64, i64)>> = BTreeMap::new();
        for r in &staged {
            by_student
                .entry((
                    r.try_get("code_module")?,
                    r.try_get("code_presentation")?,
                    r.try_get("id_student")?,
                ))
                .or_default()
                .push((r.try_get("as_of_week")?, r.try_get("id")?));
        }
        Ok((staged.len() as u64, by_student))
    }

    /// Publishes a staged batch: in one short transaction its rows become visible and each of
    /// its students' current risk (latest week and the one before) moves, set-wise. Publishing
    /// a batch twice does nothing the second time.
    pub async fn publish_score_batch(&self, batch: i64) -> Result<Published, StoreError> {
        let tracked = self.staged_batches().remove(&batch);
        let done: Option<i64> = sqlx::query("SELECT rows_done FROM score_batches WHERE id = $1")
            .bind(batch)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get("rows_done"))
            .transpose()?;
        let (staged_rows, by_student) = match tracked {
            // This process staged every row the batch holds.
            Some(t) if done == Some(t.rows as i64) => (t.rows, t.by_student()),
            _ => self.staged_by_student(batch).await?,
        };
        let presentations: std::collections::BTreeSet<(String, String)> = by_student
            .keys()
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect();
        let started = Instant::now();
        let mut tx = self.pool().begin().await?;
        // The write first, so SQLite takes its write lock before anything is read.
        let marked = sqlx::query(
            "UPDATE score_batches SET published_at = $1 WHERE id = $2 AND published_at IS NULL",
        )
        .bind(now())
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Published {
                rows: 0,
                students: 0,
                transaction: started.elapsed(),
            });
        }
        let mut current: RiskRows = BTreeMap::new();
        for (module, presentation) in &presentations {
            let rows = sqlx::query(
                "SELECT id_student, prediction_id, week, previous_id, previous_week FROM current_risk \
                 WHERE code_module = $1 AND code_presentation = $2",
            )
            .bind(module)
            .bind(presentation)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                current.insert(
                    (
                        module.clone(),
                        presentation.clone(),
                        r.try_get("id_student")?,
                    ),
                    (
                        r.try_get("prediction_id")?,
                        r.try_get("week")?,
                        r.try_get("previous_id")?,
                        r.try_get("previous_week")?,
                    ),
                );
            }
        }
        let mut moved = Vec::with_capacity(by_student.len());
        for (key, scores) in &by_student {
            let mut row = current.get(key).copied();
            for (week, id) in scores {
                row = Some(apply(row, *week, *id));
            }
            if let Some(row) = row
                && current.get(key) != Some(&row)
            {
                moved.push((key, row));
            }
        }
        for chunk in moved.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO current_risk (code_module, code_presentation, id_student, prediction_id, week, \
                 previous_id, previous_week) VALUES ",
            );
            self.placeholders(&mut sql, chunk.len(), 7);
            sql.push_str(
                " ON CONFLICT (code_module, code_presentation, id_student) DO UPDATE SET \
                 prediction_id = excluded.prediction_id, week = excluded.week, \
                 previous_id = excluded.previous_id, previous_week = excluded.previous_week",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((module, presentation, student), (id, week, prev_id, prev_week)) in chunk {
                q = q
                    .bind(module.clone())
                    .bind(presentation.clone())
                    .bind(*student)
                    .bind(*id)
                    .bind(*week)
                    .bind(*prev_id)
                    .bind(*prev_week);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Published {
            rows: staged_rows,
            students: moved.len() as u64,
            transaction: started.elapsed(),
        })
    }

    /// A batch's predictions per tier.
    pub async fn batch_tiers(&self, batch: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tier, COUNT(*) AS n FROM prediction_rows WHERE batch_id = $1 GROUP BY tier ORDER BY tier",
        )
        .bind(batch)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tier")?, r.try_get::<i64, _>("n")?.max(0) as u64)))
            .collect()
    }

    /// Stores predictions at once (a batch of their own, staged in chunks and published): for
    /// callers that score a few rows; the nightly run stages its own batch chunk by chunk.
    pub async fn insert_predictions(&self, rows: &[NewPrediction]) -> Result<u64, StoreError> {
        let key = BatchKey {
            model: rows.first().map(|p| p.model.clone()).unwrap_or_default(),
            version: rows.first().map_or(0, |p| p.version),
            snapshot: String::new(),
            rows: rows.len() as u64,
        };
        // A row whose run is not its batch's keeps its own, unless it has none: that would read
        // as the batch's, so a batch of several runs has none.
        let run_id = rows.first().and_then(|p| p.run_id);
        let run_id = if rows.iter().all(|p| p.run_id == run_id) {
            run_id
        } else {
            None
        };
        let batch = self.new_batch(&key, run_id).await?;
        let stored = async {
            for chunk in rows.chunks(STAGE_CHUNK) {
                self.stage_predictions(batch, chunk).await?;
            }
            self.publish_score_batch(batch).await
        }
        .await;
        if stored.is_err() {
            // No run takes this batch up (a nightly discards it): forget what it staged here.
            self.staged_batches().remove(&batch);
        }
        stored?;
        Ok(rows.len() as u64)
    }
}

/// Predictions per staging transaction: a few hundredths of a second of writing.
pub const STAGE_CHUNK: usize = 5_000;

#[cfg(test)]
mod tests {
    use super::{Staged, apply, copy_text};

    #[test]
    fn a_students_two_latest_weeks_move_the_current_risk_as_all_their_rows_do() {
        // Every order of a batch's rows, from every kind of current row: applying only each
        // student's two latest weeks (their last ids) gives what applying every row gives.
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..20_000 {
            let start = match next(3) {
                0 => None,
                1 => Some((1, next(8) as i64, None, None)),
                _ => {
                    let w = 1 + next(8) as i64;
                    Some((2, w, Some(3), Some(next(w as u64) as i64)))
                }
            };
            let rows: Vec<(i64, i64)> = (0..1 + next(8))
                .map(|k| (next(9) as i64, 100 + k as i64))
                .collect();
            let mut all = start;
            for (week, id) in &rows {
                all = Some(apply(all, *week, *id));
            }
            let mut staged = Staged::default();
            for (week, id) in &rows {
                staged.offer("AAA", "2013J", 1, *week, *id);
            }
            let mut latest = start;
            for (week, id) in &staged.by_student()[&("AAA".to_owned(), "2013J".to_owned(), 1)] {
                latest = Some(apply(latest, *week, *id));
            }
            assert_eq!(latest, all, "from {start:?} with {rows:?}");
        }
    }

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

    #[test]
    fn current_risk_moves_as_predictions_arrive_in_any_order() {
        let r = apply(None, 3, 10);
        assert_eq!(r, (10, 3, None, None));
        let r = apply(Some(r), 5, 11);
        assert_eq!(r, (11, 5, Some(10), Some(3)));
        // The same week rescored replaces it, the previous stays.
        let r = apply(Some(r), 5, 12);
        assert_eq!(r, (12, 5, Some(10), Some(3)));
        // An earlier week more recent than the previous becomes the previous.
        let r = apply(Some(r), 4, 13);
        assert_eq!(r, (12, 5, Some(13), Some(4)));
        // An older one changes nothing.
        assert_eq!(apply(Some(r), 1, 14), r);
    }
}
