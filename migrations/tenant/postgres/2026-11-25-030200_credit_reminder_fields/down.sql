ALTER TABLE credits DROP COLUMN reminder_opt_out;
ALTER TABLE credits DROP COLUMN reminder_count;
ALTER TABLE credits DROP COLUMN last_reminder_at;
