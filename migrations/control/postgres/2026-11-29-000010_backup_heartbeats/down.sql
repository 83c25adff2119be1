ALTER TABLE backups DROP COLUMN heartbeat_at;
