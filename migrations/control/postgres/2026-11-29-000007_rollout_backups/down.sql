ALTER TABLE tasks
    DROP COLUMN restored,
    DROP COLUMN backup_id;
ALTER TABLE rollouts
    DROP COLUMN restore_on_failure,
    DROP COLUMN backup;
