-- Rollout progress without counting task rows: `rollout_counters` holds the
-- number of tasks per (rollout, wave, state), kept by triggers on `tasks`, so
-- every path that changes a task (claims, completions, reclaims, controls,
-- retries, tenant deletion) keeps it right in the same transaction, and a
-- read costs the same at 100 and 100,000 tasks. Inserts have no trigger:
-- tasks are inserted only by rollout creation, which writes the counters of
-- its tasks itself (one row per wave and state instead of one upsert per
-- task). `first_started_at` and
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

CREATE FUNCTION rollout_counter_add(r TEXT, w INTEGER, s TEXT, d BIGINT,
                                    started TIMESTAMP, finished TIMESTAMP)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO rollout_counters (rollout_id, wave, state, n, first_started_at, last_finished_at)
    VALUES (r, w, s, d, started, finished)
    ON CONFLICT (rollout_id, wave, state) DO UPDATE SET
        n = rollout_counters.n + EXCLUDED.n,
        first_started_at = LEAST(rollout_counters.first_started_at, EXCLUDED.first_started_at),
        last_finished_at = GREATEST(rollout_counters.last_finished_at, EXCLUDED.last_finished_at);
$$;

-- The two rows a task's change touches are locked in one global order
-- (wave, state), whichever way the task moves, so a claim (pending →
-- running) and a retried completion (running → pending) in two workers
-- cannot deadlock on them.
CREATE FUNCTION tasks_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM rollout_counter_add(OLD.rollout_id, OLD.wave, OLD.state, -1, NULL, NULL);
    ELSIF (OLD.wave, OLD.state) < (NEW.wave, NEW.state) THEN
        PERFORM rollout_counter_add(OLD.rollout_id, OLD.wave, OLD.state, -1, NULL, NULL);
        PERFORM rollout_counter_add(NEW.rollout_id, NEW.wave, NEW.state, 1,
            CASE WHEN NEW.finished_at IS NOT NULL THEN NEW.started_at END, NEW.finished_at);
    ELSE
        PERFORM rollout_counter_add(NEW.rollout_id, NEW.wave, NEW.state, 1,
            CASE WHEN NEW.finished_at IS NOT NULL THEN NEW.started_at END, NEW.finished_at);
        PERFORM rollout_counter_add(OLD.rollout_id, OLD.wave, OLD.state, -1, NULL, NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_counted();
CREATE TRIGGER tasks_counted_update AFTER UPDATE OF state, wave ON tasks
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.wave IS DISTINCT FROM NEW.wave)
    EXECUTE FUNCTION tasks_counted();

-- A wave that holds (`hold_s` or `manual` in its spec) keeps the next one
-- closed: `wave_done_at` is when the current wave's last task finished.
ALTER TABLE rollouts ADD COLUMN wave_done_at TIMESTAMP;

-- Steps a retry found applied in the tenant's own history but never
-- recorded (the worker died between the tenant's commit and the control
-- DB's): written from the tenant's `run_on`, marked recovered.
ALTER TABLE migration_runs ADD COLUMN recovered BOOLEAN NOT NULL DEFAULT FALSE;
