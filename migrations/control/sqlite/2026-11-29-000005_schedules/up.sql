-- Cron schedules: each starts a job of a fixed kind at its fire times.
-- schedule_runs records every fire time decided; UNIQUE (schedule_id,
-- fire_at) is what lets any number of processes run the scheduler while each
-- fire time is decided (and its job queued) exactly once.

CREATE TABLE schedules (
    id             INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name           TEXT NOT NULL UNIQUE,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL DEFAULT 'UTC',
    job            TEXT NOT NULL,
    selector       TEXT,
    params         TEXT,
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    missed         TEXT NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'run_once')),
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL,
    -- The newest fire time decided (started, missed or skipped); fire times
    -- after it (or after created_at) are due.
    last_fired_at  TIMESTAMP
);

CREATE TABLE schedule_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    schedule_id  BIGINT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_at      TIMESTAMP NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('started', 'missed', 'skipped_overlap')),
    -- The job a started run queued; NULL for the other states, and once the
    -- job prune removed the finished job.
    job_id       BIGINT REFERENCES jobs (id) ON DELETE SET NULL,
    decided_at   TIMESTAMP NOT NULL,
    -- A catch-up summary: the range of fire times missed but not listed.
    note         TEXT,
    UNIQUE (schedule_id, fire_at)
);
-- The overlap check looks up a schedule's newest started run.
CREATE INDEX schedule_runs_started_idx ON schedule_runs (schedule_id, state, fire_at);
-- The runs view pages by id; the job prune sets job_id to NULL.
CREATE INDEX schedule_runs_schedule_id_id_idx ON schedule_runs (schedule_id, id);
CREATE INDEX schedule_runs_job_id_idx ON schedule_runs (job_id);
