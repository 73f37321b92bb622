-- Tonight's rows go into one index fewer: the presentation-and-week index now leads with the
-- row's batch, and takes the place of the batch index. A night's rows then land in their own
-- part of the index, beside each other, instead of among every earlier night's, and PostgreSQL
-- maintains three indexes per staged row instead of four (about a tenth of the score step at
-- full scale). Readers find a presentation's week through the published batches: the view
-- names them as an array, which the index takes one batch at a time; rows stored before
-- batches (batch NULL) sort first in the same index.
DROP INDEX predictions_cohort;
DROP INDEX prediction_rows_batch;
CREATE INDEX prediction_rows_batch_cohort
    ON prediction_rows (batch_id, code_module, code_presentation, as_of_week);
DROP VIEW predictions;
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
   OR p.batch_id = ANY (ARRAY(SELECT id FROM score_batches WHERE published_at IS NOT NULL));
