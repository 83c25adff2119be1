-- Phase 3 / credit_reminders: reminder state on each credit (WhatsApp
-- reminders). reminder_count counts reminders actually sent; a customer who
-- opted out (reminder_opt_out) is never reminded.
ALTER TABLE credits ADD COLUMN last_reminder_at TIMESTAMP;
ALTER TABLE credits ADD COLUMN reminder_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE credits ADD COLUMN reminder_opt_out BOOLEAN NOT NULL DEFAULT FALSE;
