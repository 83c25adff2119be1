-- Tenant data exports: one row per request. The export job reads the
-- tenant's database in one read-only snapshot, writes one file per table
-- (JSON or CSV) into a zip, stores it in the artifact store under
-- `exports/<tenant id>/<export id>.zip` and marks the row `ready`. A
-- download needs only a random token, of which only the SHA-256 is kept
-- (`token_hash`, the newest one issued; issuing a new one invalidates the
-- older). Past `expires_at` the cleanup job deletes the file and marks the
-- row `expired`.

CREATE TABLE exports (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    state           TEXT NOT NULL CHECK (state IN ('requested', 'ready', 'failed', 'expired')),
    format          TEXT NOT NULL CHECK (format IN ('json', 'csv')),
    requested_by    TEXT NOT NULL,
    artifact        TEXT NOT NULL,
    size_bytes      BIGINT,
    sha256          TEXT,
    token_hash      TEXT UNIQUE,
    expires_at      TIMESTAMP,
    error           TEXT,
    created_at      TIMESTAMP NOT NULL,
    ready_at        TIMESTAMP
);
-- A tenant's exports, newest first.
CREATE INDEX exports_tenant_idx ON exports (tenant_id, created_at);
-- The cleanup looks up ready rows past their expiry.
CREATE INDEX exports_state_expires_idx ON exports (state, expires_at);
