-- Every attempt of a rollout task, recorded with its outcome in the
-- transaction that records the outcome: the console and the API show a
-- task's history (each error with its migration version and duration), not
-- only its last error.
CREATE TABLE task_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    task_id          BIGINT NOT NULL REFERENCES tasks (id),
    attempt          INTEGER NOT NULL,
    worker           TEXT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'failed')),
    error            TEXT,
    error_version    TEXT,
    reached_version  TEXT,
    started_at       TIMESTAMP NOT NULL,
    finished_at      TIMESTAMP NOT NULL,
    duration_ms      BIGINT NOT NULL
);
CREATE INDEX task_attempts_task_id_idx ON task_attempts (task_id, id);
