-- The prediction API: a run asked for over the API waits as `queued` (with who asked) until a
-- scheduler claims it, so the caller has its id at once.

ALTER TABLE pipeline_runs DROP CONSTRAINT pipeline_runs_status_check;
ALTER TABLE pipeline_runs ADD CONSTRAINT pipeline_runs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped'));
ALTER TABLE pipeline_runs ADD COLUMN requested_by TEXT;
ALTER TABLE pipeline_runs ADD COLUMN no_cache BIGINT NOT NULL DEFAULT 0;
CREATE INDEX pipeline_runs_status ON pipeline_runs (status, id);

CREATE INDEX prediction_feedback_prediction ON prediction_feedback (prediction_id);
