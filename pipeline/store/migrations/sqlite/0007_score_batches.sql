-- Tonight's scores are written in short transactions to a batch that readers do not see, then
-- published at once: the `predictions` readers query is a view of the published rows, so the
-- dashboard and the API see last night's complete set or tonight's, never half, and no write
-- holds the database for longer than one chunk. A batch interrupted before it was published is
-- resumed by the next run that scores the same rows (same model version and snapshot).

CREATE TABLE score_batches (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    model        TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    snapshot     TEXT   NOT NULL,
    run_id       BIGINT,
    rows_planned BIGINT NOT NULL,
    rows_done    BIGINT NOT NULL DEFAULT 0,
    created_at   TEXT   NOT NULL,
    published_at TEXT
);

ALTER TABLE predictions RENAME TO prediction_rows;
ALTER TABLE prediction_rows ADD COLUMN batch_id BIGINT;
CREATE INDEX prediction_rows_batch ON prediction_rows (batch_id);
-- Retention finds old scores by their batch; only rows stored before batches need their own
-- timestamp indexed (about 40 bytes less per prediction).
DROP INDEX predictions_scored_at;
CREATE INDEX prediction_rows_unbatched_scored_at ON prediction_rows (scored_at) WHERE batch_id IS NULL;

-- Rows stored before batches (batch_id NULL) and rows of published batches.
CREATE VIEW predictions AS
SELECT id, model, version, code_module, code_presentation, id_student, as_of_week, probability,
       tier, explanation_json, run_id, scored_at, context_json
FROM prediction_rows
WHERE batch_id IS NULL
   OR batch_id IN (SELECT id FROM score_batches WHERE published_at IS NOT NULL);

-- Explanations name their features by id (see pipeline/store/src/explanation.rs).
CREATE TABLE feature_names (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
