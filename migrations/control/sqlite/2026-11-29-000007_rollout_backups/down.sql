ALTER TABLE tasks DROP COLUMN restored;
ALTER TABLE tasks DROP COLUMN backup_id;
ALTER TABLE rollouts DROP COLUMN restore_on_failure;
ALTER TABLE rollouts DROP COLUMN backup;
