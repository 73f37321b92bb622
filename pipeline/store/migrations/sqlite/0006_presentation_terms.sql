-- Each presentation of the latest export, finished or running, and as of which day: recorded by
-- the nightly pipeline before it stores predictions, read by the caseload and the API so they
-- speak of the running term first. A presentation no longer exported keeps its last row.

CREATE TABLE presentation_terms (
    code_module       TEXT   NOT NULL,
    code_presentation TEXT   NOT NULL,
    state             TEXT   NOT NULL,
    length_days       BIGINT NOT NULL,
    start_date        TEXT,
    as_of_day         BIGINT NOT NULL,
    as_of_source      TEXT   NOT NULL,
    current_week      BIGINT,
    students          BIGINT NOT NULL,
    outcomes_known    BIGINT NOT NULL,
    snapshot_id       TEXT   NOT NULL,
    updated_at        TEXT   NOT NULL,
    PRIMARY KEY (code_module, code_presentation)
);

CREATE INDEX presentation_terms_state ON presentation_terms (state);
