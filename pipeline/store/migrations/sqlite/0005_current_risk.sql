-- Each student's latest scored week and the one before, kept as predictions are stored, so the
-- dashboard's caseload reads one row per student instead of ranking every stored week.

CREATE TABLE current_risk (
    code_module       TEXT   NOT NULL,
    code_presentation TEXT   NOT NULL,
    id_student        BIGINT NOT NULL,
    prediction_id     BIGINT NOT NULL,
    week              BIGINT NOT NULL,
    previous_id       BIGINT,
    previous_week     BIGINT,
    PRIMARY KEY (code_module, code_presentation, id_student)
);

WITH per_week AS (
    SELECT MAX(id) AS id FROM predictions
    GROUP BY id_student, code_module, code_presentation, as_of_week
), ranked AS (
    SELECT p.id, p.code_module, p.code_presentation, p.id_student, p.as_of_week,
        ROW_NUMBER() OVER (PARTITION BY p.id_student, p.code_module, p.code_presentation
                           ORDER BY p.as_of_week DESC) AS rn
    FROM predictions p JOIN per_week w ON w.id = p.id
)
INSERT INTO current_risk (code_module, code_presentation, id_student, prediction_id, week, previous_id, previous_week)
SELECT a.code_module, a.code_presentation, a.id_student, a.id, a.as_of_week, b.id, b.as_of_week
FROM ranked a LEFT JOIN ranked b ON b.id_student = a.id_student AND b.code_module = a.code_module
    AND b.code_presentation = a.code_presentation AND b.rn = 2
WHERE a.rn = 1;
