DROP TABLE migration_runs;
DROP TABLE tasks;
DROP TABLE rollouts;
