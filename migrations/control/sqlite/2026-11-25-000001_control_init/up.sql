-- Control database: the registry of database servers, tenants, API tokens and
-- the audit log. Types stay inside the subset SQLite and PostgreSQL share
-- (uuids and JSON as TEXT, UTC TIMESTAMP) so one diesel code path serves both.

CREATE TABLE database_servers (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('sqlite', 'postgres')),
    url         TEXT NOT NULL,
    isolation   TEXT NOT NULL CHECK (isolation IN ('file', 'schema', 'database')),
    capacity    INTEGER NOT NULL CHECK (capacity > 0),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining')),
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY NOT NULL,
    slug            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended')),
    contact_email   TEXT,
    server_id       TEXT NOT NULL REFERENCES database_servers (id),
    schema_version  TEXT,
    plan_id         TEXT,
    trial_ends_at   TIMESTAMP,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    deleted_at      TIMESTAMP
);
CREATE INDEX tenants_server_id_idx ON tenants (server_id);
CREATE INDEX tenants_status_idx ON tenants (status);

-- Labels live in their own table so that `label=k=v` filters and rollout
-- selectors are plain indexed SQL on both backends.
CREATE TABLE tenant_labels (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX tenant_labels_key_value_idx ON tenant_labels (key, value);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('operator', 'tenant')),
    tenant_id     TEXT REFERENCES tenants (id),
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMP NOT NULL,
    revoked_at    TIMESTAMP
);
CREATE INDEX api_tokens_tenant_id_idx ON api_tokens (tenant_id);

CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    tenant_id      TEXT,
    before_state   TEXT,
    after_state    TEXT,
    ip_address     TEXT,
    user_agent     TEXT,
    created_at     TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_tenant_id_idx ON audit_log (tenant_id, id);
