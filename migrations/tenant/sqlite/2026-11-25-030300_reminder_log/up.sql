-- Phase 3 / credit_reminders: one row per reminder send ATTEMPT.
-- channel: 'whatsapp' | 'sms' | 'email' (open vocabulary, no CHECK);
-- status:  'queued' | 'sent' | 'delivered' | 'failed' | 'skipped';
-- sent_at: when the attempt was made; error: provider error for failures;
-- triggered_by: the staff user for a manual reminder, NULL for the scheduler.
CREATE TABLE reminder_log (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    credit_id            BIGINT    NOT NULL REFERENCES credits (id) ON DELETE CASCADE,
    channel              TEXT      NOT NULL DEFAULT 'whatsapp',
    recipient            TEXT,
    status               TEXT      NOT NULL,
    error                TEXT,
    provider_message_id  TEXT,
    triggered_by         BIGINT    REFERENCES users (id),
    sent_at              TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX reminder_log_credit_id_sent_at_idx ON reminder_log (credit_id, sent_at);
CREATE INDEX reminder_log_triggered_by_idx ON reminder_log (triggered_by);
