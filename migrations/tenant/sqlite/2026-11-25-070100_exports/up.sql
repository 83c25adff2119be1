-- Phase 7 / audit_exports: exports requested by staff (audit log, sales, ...).
-- kind names what is exported (e.g. 'audit_log', 'sales'); params is the JSON
-- filter of the request; export_token is the unguessable download token
-- (unique); status: 'pending' | 'running' | 'ready' | 'failed' | 'expired';
-- file_path is set when ready; the download is refused after expires_at.
-- (Backup metadata is NOT here: it lives in the control database.)
CREATE TABLE exports (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    requested_by  BIGINT    NOT NULL REFERENCES users (id),
    shop_id       BIGINT    REFERENCES shop_profile (id) ON DELETE CASCADE,
    kind          TEXT      NOT NULL,
    params        TEXT,
    export_token  TEXT      NOT NULL,
    status        TEXT      NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'running', 'ready', 'failed', 'expired')),
    file_path     TEXT,
    error         TEXT,
    expires_at    TIMESTAMP NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at  TIMESTAMP
);

CREATE UNIQUE INDEX exports_export_token_key ON exports (export_token);
CREATE INDEX exports_requested_by_idx ON exports (requested_by);
CREATE INDEX exports_shop_id_idx ON exports (shop_id);
CREATE INDEX exports_status_expires_at_idx ON exports (status, expires_at);
