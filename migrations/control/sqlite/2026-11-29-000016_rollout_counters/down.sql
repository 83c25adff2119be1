ALTER TABLE migration_runs DROP COLUMN recovered;
ALTER TABLE rollouts DROP COLUMN wave_done_at;
DROP TRIGGER tasks_counted_delete;
DROP TRIGGER tasks_counted_update;
DROP TABLE rollout_counters;
