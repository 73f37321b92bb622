-- A staged prediction no longer repeats what its whole batch shares: the model, version, run and
-- time are the batch's (NULL in the row, filled in by the `predictions` view); rows stored
-- before batches, or with other values than their batch, keep their own. The student index
-- drops the week, so a student's rows share one key (PostgreSQL deduplicates it): a student has
-- a few dozen rows, sorted when read. About a fifth of each row with its indexes.
DROP VIEW predictions;
ALTER TABLE prediction_rows
    ALTER COLUMN model DROP NOT NULL,
    ALTER COLUMN version DROP NOT NULL,
    ALTER COLUMN scored_at DROP NOT NULL;
DROP INDEX predictions_student;
CREATE INDEX predictions_student ON prediction_rows (id_student, code_module, code_presentation);

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
