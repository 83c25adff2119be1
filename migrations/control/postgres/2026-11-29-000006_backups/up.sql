-- Backups of tenant databases: one row per snapshot, whatever its outcome.
-- The artifact (a compressed snapshot) lives in the artifact store under
-- the store-relative key `artifact`; `manifest` is its JSON manifest (schema
-- version, per-table row counts and checksums, size, SHA-256). A row is
-- `completed` only once its artifact is durably in the store. Deleting a
-- backup removes the artifact, then the row (the audit log keeps it).

CREATE TABLE backups (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    server_kind     TEXT NOT NULL CHECK (server_kind IN ('sqlite', 'pg_schema', 'pg_database')),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'verified', 'failed')),
    reason          TEXT NOT NULL CHECK (reason IN ('manual', 'scheduled', 'pre_migration', 'pre_restore')),
    schema_version  TEXT,
    artifact        TEXT NOT NULL,
    size_bytes      BIGINT,
    sha256          TEXT,
    manifest        TEXT,
    pinned          BOOLEAN NOT NULL DEFAULT FALSE,
    error           TEXT,
    created_at      TIMESTAMP NOT NULL,
    started_at      TIMESTAMP,
    completed_at    TIMESTAMP,
    verified_at     TIMESTAMP,
    verify_error    TEXT
);
-- A tenant's backups by state, newest first (lists, "newest verified").
CREATE INDEX backups_tenant_state_idx ON backups (tenant_id, state, created_at);
-- The sweep (running rows past their grace) and the scheduled verification
-- (completed rows not verified yet) look rows up by state.
CREATE INDEX backups_state_idx ON backups (state, created_at);
