-- The scheduler: which cron slot (or inbox export) a run serves, each step's recorded output
-- (what the step cache replays), and the lease that keeps one run at a time across replicas.

ALTER TABLE pipeline_runs ADD COLUMN scheduled_for TEXT;
ALTER TABLE pipeline_runs ADD COLUMN export_dir TEXT;
ALTER TABLE pipeline_runs ADD COLUMN holder TEXT;
-- One run per cron slot, whichever replica starts it (NULLs, on-demand runs, never collide).
CREATE UNIQUE INDEX pipeline_runs_slot ON pipeline_runs (scheduled_for);

ALTER TABLE step_runs ADD COLUMN output_json TEXT;

CREATE TABLE pipeline_lease (
    name         TEXT PRIMARY KEY,
    holder       TEXT,
    host         TEXT,
    pid          BIGINT,
    acquired_at  TEXT,
    heartbeat_at TEXT
);
INSERT INTO pipeline_lease (name) VALUES ('pipeline');
