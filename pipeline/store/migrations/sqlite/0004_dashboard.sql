-- The advisor dashboard: server-side sessions (the cookie holds a random id; its hash is stored,
-- with the session's CSRF token), and each prediction's weekly context (activity and assessments
-- as of its week) for the student page's timeline.

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

ALTER TABLE predictions ADD COLUMN context_json TEXT;
CREATE INDEX caseloads_student ON caseloads (code_module, code_presentation, id_student);
CREATE INDEX audit_events_subject ON audit_events (subject, id);
