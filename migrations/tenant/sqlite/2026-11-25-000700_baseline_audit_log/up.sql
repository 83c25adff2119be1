-- Phase 0 baseline: append-only trail of who did what. user_id is NULL for
-- system actions. Phase 1 (2026-11-25-010300_audit_log_diff) adds diff columns.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     BIGINT    REFERENCES users (id),
    action      TEXT      NOT NULL,
    details     TEXT,
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX audit_log_created_at_idx ON audit_log (created_at);
CREATE INDEX audit_log_user_id_created_at_idx ON audit_log (user_id, created_at);
