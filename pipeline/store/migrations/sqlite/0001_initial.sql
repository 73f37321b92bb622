-- Lodestar store, SQLite. Timestamps are RFC 3339 UTC text so both backends share one store API.

CREATE TABLE registered_models (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE model_versions (
    model            TEXT    NOT NULL REFERENCES registered_models (name),
    version          BIGINT  NOT NULL,
    artifact_uri     TEXT    NOT NULL,
    artifact_sha256  TEXT    NOT NULL,
    artifact_bytes   BIGINT  NOT NULL,
    snapshot_hash    TEXT    NOT NULL,
    code_version     TEXT    NOT NULL,
    config_json      TEXT    NOT NULL,
    seed             BIGINT  NOT NULL,
    report_json      TEXT    NOT NULL,
    run_id           BIGINT,
    created_by       TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    PRIMARY KEY (model, version)
);

CREATE TABLE aliases (
    model      TEXT   NOT NULL REFERENCES registered_models (name),
    alias      TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    updated_at TEXT   NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);

CREATE TABLE alias_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    model        TEXT   NOT NULL REFERENCES registered_models (name),
    alias        TEXT   NOT NULL,
    kind         TEXT   NOT NULL CHECK (kind IN ('promote', 'rollback', 'set', 'remove')),
    from_version BIGINT,
    to_version   BIGINT,
    actor        TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    forced       BIGINT NOT NULL DEFAULT 0,
    gate_json    TEXT,
    at           TEXT   NOT NULL
);
CREATE INDEX alias_history_model ON alias_history (model, alias, id);

CREATE TABLE pipeline_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT,
    flagged     BIGINT NOT NULL DEFAULT 0,
    summary_json TEXT
);

CREATE TABLE step_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      BIGINT NOT NULL REFERENCES pipeline_runs (id),
    step        TEXT   NOT NULL,
    attempt     BIGINT NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'cached')),
    started_at  TEXT   NOT NULL,
    finished_at TEXT,
    input_hash  TEXT,
    output_hash TEXT,
    error       TEXT
);
CREATE INDEX step_runs_cache ON step_runs (step, input_hash, status);

CREATE TABLE predictions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    model            TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    code_module      TEXT   NOT NULL,
    code_presentation TEXT  NOT NULL,
    id_student       BIGINT NOT NULL,
    as_of_week       BIGINT NOT NULL,
    probability      REAL NOT NULL,
    tier             TEXT   NOT NULL CHECK (tier IN ('low', 'medium', 'high')),
    explanation_json TEXT   NOT NULL,
    run_id           BIGINT,
    scored_at        TEXT   NOT NULL
);
CREATE INDEX predictions_student ON predictions (id_student, code_module, code_presentation, as_of_week);
CREATE INDEX predictions_cohort ON predictions (code_module, code_presentation, as_of_week, tier);
CREATE INDEX predictions_scored_at ON predictions (scored_at);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('advisor', 'admin')),
    password_hash TEXT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until  TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE caseloads (
    user_id           BIGINT NOT NULL REFERENCES users (id),
    code_module       TEXT   NOT NULL,
    code_presentation TEXT   NOT NULL,
    id_student        BIGINT NOT NULL,
    PRIMARY KEY (user_id, code_module, code_presentation, id_student)
);

CREATE TABLE outreach_notes (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    author_id         BIGINT NOT NULL REFERENCES users (id),
    code_module       TEXT   NOT NULL,
    code_presentation TEXT   NOT NULL,
    id_student        BIGINT NOT NULL,
    note              TEXT   NOT NULL,
    outcome           TEXT,
    created_at        TEXT   NOT NULL,
    updated_at        TEXT   NOT NULL
);
CREATE INDEX outreach_student ON outreach_notes (id_student, code_module, code_presentation);

CREATE TABLE prediction_feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id BIGINT NOT NULL REFERENCES predictions (id),
    kind          TEXT   NOT NULL CHECK (kind IN ('acknowledged', 'not_useful', 'incorrectly_flagged')),
    actor         TEXT   NOT NULL,
    comment       TEXT,
    at            TEXT   NOT NULL
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    detail_json TEXT NOT NULL,
    at          TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
);
