-- Rollout progress without counting task rows: `rollout_counters` holds the
-- number of tasks per (rollout, wave, state), kept by triggers on `tasks`, so
-- every path that changes a task (claims, completions, reclaims, controls,
-- retries, tenant deletion) keeps it right in the same transaction, and a
-- read costs the same at 100 and 100,000 tasks. Inserts have no trigger:
-- tasks are inserted only by rollout creation, which writes the counters of
-- its tasks itself (one row per wave and state instead of one upsert per
-- task: half the cost of creating a 100,000-task rollout). `first_started_at` and
-- `last_finished_at` (finished tasks only) give the rate without a scan.
CREATE TABLE rollout_counters (
    rollout_id        TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    wave              INTEGER NOT NULL,
    state             TEXT NOT NULL,
    n                 BIGINT NOT NULL,
    first_started_at  TIMESTAMP,
    last_finished_at  TIMESTAMP,
    PRIMARY KEY (rollout_id, wave, state)
);

INSERT INTO rollout_counters (rollout_id, wave, state, n, first_started_at, last_finished_at)
SELECT rollout_id, wave, state, count(*),
       min(CASE WHEN finished_at IS NOT NULL THEN started_at END), max(finished_at)
  FROM tasks GROUP BY rollout_id, wave, state;

CREATE TRIGGER tasks_counted_update AFTER UPDATE OF state, wave ON tasks
WHEN old.state <> new.state OR old.wave <> new.wave
BEGIN
    UPDATE rollout_counters SET n = n - 1
     WHERE rollout_id = old.rollout_id AND wave = old.wave AND state = old.state;
    INSERT INTO rollout_counters (rollout_id, wave, state, n, first_started_at, last_finished_at)
    VALUES (new.rollout_id, new.wave, new.state, 1,
            CASE WHEN new.finished_at IS NOT NULL THEN new.started_at END, new.finished_at)
    ON CONFLICT (rollout_id, wave, state) DO UPDATE SET
        n = n + 1,
        first_started_at = coalesce(min(first_started_at, excluded.first_started_at),
                                    first_started_at, excluded.first_started_at),
        last_finished_at = coalesce(max(last_finished_at, excluded.last_finished_at),
                                    last_finished_at, excluded.last_finished_at);
END;

CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks
BEGIN
    UPDATE rollout_counters SET n = n - 1
     WHERE rollout_id = old.rollout_id AND wave = old.wave AND state = old.state;
END;

-- A wave that holds (`hold_s` or `manual` in its spec) keeps the next one
-- closed: `wave_done_at` is when the current wave's last task finished.
ALTER TABLE rollouts ADD COLUMN wave_done_at TIMESTAMP;

-- Steps a retry found applied in the tenant's own history but never
-- recorded (the worker died between the tenant's commit and the control
-- DB's): written from the tenant's `run_on`, marked recovered.
ALTER TABLE migration_runs ADD COLUMN recovered BOOLEAN NOT NULL DEFAULT FALSE;
