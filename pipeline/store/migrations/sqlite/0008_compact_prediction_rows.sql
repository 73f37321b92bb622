-- no-transaction
-- A staged prediction no longer repeats what its whole batch shares: the model, version, run and
-- time are the batch's (NULL in the row, filled in by the `predictions` view); rows stored
-- before batches, or with other values than their batch, keep their own. About a tenth of each
-- row.
--
-- SQLite cannot drop a NOT NULL constraint in place, so the table is rebuilt as SQLite documents
-- it: foreign keys off around one transaction. Every row keeps its id, so the feedback on a
-- prediction still finds it.
PRAGMA foreign_keys = OFF;
BEGIN;
DROP VIEW predictions;
CREATE TABLE prediction_rows_compact (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    model            TEXT,
    version          BIGINT,
    code_module      TEXT   NOT NULL,
    code_presentation TEXT  NOT NULL,
    id_student       BIGINT NOT NULL,
    as_of_week       BIGINT NOT NULL,
    probability      REAL NOT NULL,
    tier             TEXT   NOT NULL CHECK (tier IN ('low', 'medium', 'high')),
    explanation_json TEXT   NOT NULL,
    run_id           BIGINT,
    scored_at        TEXT,
    context_json     TEXT,
    batch_id         BIGINT
);
INSERT INTO prediction_rows_compact (id, model, version, code_module, code_presentation, id_student,
    as_of_week, probability, tier, explanation_json, run_id, scored_at, context_json, batch_id)
SELECT id, model, version, code_module, code_presentation, id_student, as_of_week, probability,
       tier, explanation_json, run_id, scored_at, context_json, batch_id
FROM prediction_rows;
-- Ids are never reused, even those of rows since deleted.
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'prediction_rows')
WHERE name = 'prediction_rows_compact'
  AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'prediction_rows');
DROP TABLE prediction_rows;
ALTER TABLE prediction_rows_compact RENAME TO prediction_rows;
CREATE INDEX predictions_student ON prediction_rows (id_student, code_module, code_presentation, as_of_week);
CREATE INDEX predictions_cohort ON prediction_rows (code_module, code_presentation, as_of_week, tier);
CREATE INDEX prediction_rows_batch ON prediction_rows (batch_id);
CREATE INDEX prediction_rows_unbatched_scored_at ON prediction_rows (scored_at) WHERE batch_id IS NULL;

-- Rows stored before batches (batch_id NULL) and rows of published batches; what a row leaves
-- out is its batch's (the time is when the batch was published).
CREATE VIEW predictions AS
SELECT p.id AS id,
       COALESCE(p.model, (SELECT b.model FROM score_batches b WHERE b.id = p.batch_id)) AS model,
       COALESCE(p.version, (SELECT b.version FROM score_batches b WHERE b.id = p.batch_id)) AS version,
       p.code_module AS code_module, p.code_presentation AS code_presentation,
       p.id_student AS id_student, p.as_of_week AS as_of_week, p.probability AS probability,
       p.tier AS tier, p.explanation_json AS explanation_json,
       COALESCE(p.run_id, (SELECT b.run_id FROM score_batches b WHERE b.id = p.batch_id)) AS run_id,
       COALESCE(p.scored_at, (SELECT COALESCE(b.published_at, b.created_at) FROM score_batches b
                              WHERE b.id = p.batch_id)) AS scored_at,
       p.context_json AS context_json
FROM prediction_rows p
WHERE p.batch_id IS NULL
   OR p.batch_id IN (SELECT id FROM score_batches WHERE published_at IS NOT NULL);
COMMIT;
PRAGMA foreign_keys = ON;
