-- Pre-migration backups in rollouts. `rollouts.backup`: each tenant is
-- backed up (reason `pre_migration`) inside its task just before it is
-- migrated; `rollouts.restore_on_failure` (only with `backup`): a tenant
-- whose migration failed for good is restored in place from that backup.
-- `tasks.backup_id`: the backup the task took (kept across the task's own
-- retries, which reuse it); no foreign key, so retention may delete the
-- backup and the task still says which one it was. `tasks.restored`: the
-- tenant was put back to `backup_id` after its migration failed.

ALTER TABLE rollouts ADD COLUMN backup BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE rollouts ADD COLUMN restore_on_failure BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tasks ADD COLUMN backup_id TEXT;
ALTER TABLE tasks ADD COLUMN restored BOOLEAN NOT NULL DEFAULT FALSE;
