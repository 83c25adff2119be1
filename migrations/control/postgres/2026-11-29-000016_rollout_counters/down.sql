ALTER TABLE migration_runs DROP COLUMN recovered;
ALTER TABLE rollouts DROP COLUMN wave_done_at;
DROP TRIGGER tasks_counted_update ON tasks;
DROP TRIGGER tasks_counted_delete ON tasks;
DROP FUNCTION tasks_counted();
DROP FUNCTION rollout_counter_add(TEXT, INTEGER, TEXT, BIGINT, TIMESTAMP, TIMESTAMP);
DROP TABLE rollout_counters;
