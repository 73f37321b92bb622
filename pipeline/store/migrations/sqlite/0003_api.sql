-- The prediction API: a run asked for over the API waits as `queued` (with who asked) until a
-- scheduler claims it, so the caller has its id at once. SQLite cannot alter a CHECK
-- constraint: the table is rebuilt, with foreign keys from step_runs checked at commit.

PRAGMA defer_foreign_keys = ON;

CREATE TABLE pipeline_runs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped')),
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    error         TEXT,
    flagged       BIGINT NOT NULL DEFAULT 0,
    summary_json  TEXT,
    scheduled_for TEXT,
    export_dir    TEXT,
    holder        TEXT,
    requested_by  TEXT,
    no_cache      BIGINT NOT NULL DEFAULT 0
);
INSERT INTO pipeline_runs_new (id, trigger, status, started_at, finished_at, error, flagged, summary_json, scheduled_for, export_dir, holder)
    SELECT id, trigger, status, started_at, finished_at, error, flagged, summary_json, scheduled_for, export_dir, holder FROM pipeline_runs;
DROP TABLE pipeline_runs;
ALTER TABLE pipeline_runs_new RENAME TO pipeline_runs;
CREATE UNIQUE INDEX pipeline_runs_slot ON pipeline_runs (scheduled_for);
CREATE INDEX pipeline_runs_status ON pipeline_runs (status, id);

CREATE INDEX prediction_feedback_prediction ON prediction_feedback (prediction_id);
