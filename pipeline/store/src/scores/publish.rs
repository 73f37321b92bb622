//! Publishing a score batch: in one short transaction its rows become visible and each of its
//! students' current risk moves, set-wise, from what this process staged (the `Staged` record)
//! or from the batch's rows read back.

use std::collections::BTreeMap;
use std::time::Instant;

use sqlx::Row;

use super::{Published, ROWS_PER_STATEMENT};
use crate::{Store, StoreError, now};

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
    pub(super) rows: u64,
    presentations: Vec<((String, String), rustc_hash::FxHashMap<i64, Latest>)>,
}

/// A student's two latest weeks in a batch: (week, id), the later week first.
type Latest = [Option<(i64, i64)>; 2];

impl Staged {
    /// Records one staged row (not counted: see `merge`).
    pub(super) fn offer(
        &mut self,
        module: &str,
        presentation: &str,
        student: i64,
        week: i64,
        id: i64,
    ) {
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
    /// What this process staged into each open batch.
    pub(super) fn staged_batches(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, Staged>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what a committed staging transaction put into `batch`.
    pub(super) fn remember_staged(&self, batch: i64, here: Staged) {
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
}

#[cfg(test)]
mod tests {
    use super::{Staged, apply};

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
