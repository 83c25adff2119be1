-- Rollouts: one fleet migration each; tasks: one per tenant, claimed by
-- workers with leases; migration_runs: every step a worker applied.

CREATE TABLE rollouts (
    id                      TEXT PRIMARY KEY NOT NULL,
    target                  TEXT NOT NULL,
    target_version          TEXT,
    selector                TEXT NOT NULL,
    waves                   TEXT NOT NULL,
    state                   TEXT NOT NULL CHECK (state IN ('running', 'paused', 'halted', 'succeeded', 'failed', 'cancelled')),
    current_wave            INTEGER NOT NULL DEFAULT 0,
    wave_count              INTEGER NOT NULL,
    concurrency             INTEGER NOT NULL,
    per_server_concurrency  INTEGER NOT NULL,
    max_attempts            INTEGER NOT NULL,
    backoff_base_ms         BIGINT NOT NULL,
    backoff_max_ms          BIGINT NOT NULL,
    timeout_s               INTEGER NOT NULL,
    max_failed              INTEGER,
    max_failed_percent      INTEGER,
    failures_forgiven       INTEGER NOT NULL DEFAULT 0,
    verify                  BOOLEAN NOT NULL,
    priority                INTEGER NOT NULL,
    total                   INTEGER NOT NULL,
    halt_reason             TEXT,
    created_by              TEXT NOT NULL,
    created_at              TIMESTAMP NOT NULL,
    updated_at              TIMESTAMP NOT NULL,
    finished_at             TIMESTAMP
);
CREATE INDEX rollouts_state_idx ON rollouts (state);

CREATE TABLE tasks (
    id                INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    rollout_id        TEXT NOT NULL REFERENCES rollouts (id),
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    server_id         TEXT NOT NULL,
    wave              INTEGER NOT NULL,
    priority          INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    from_version      TEXT,
    to_version        TEXT,
    reached_version   TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    next_attempt_at   TIMESTAMP NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMP,
    last_error        TEXT,
    error_version     TEXT,
    started_at        TIMESTAMP,
    finished_at       TIMESTAMP,
    duration_ms       BIGINT,
    UNIQUE (rollout_id, tenant_id)
);
-- The claim walks pending tasks in (priority DESC, id) order.
CREATE INDEX tasks_claim_idx ON tasks (state, priority DESC, id);
CREATE INDEX tasks_rollout_id_state_idx ON tasks (rollout_id, state, wave);
CREATE INDEX tasks_tenant_id_idx ON tasks (tenant_id);

CREATE TABLE migration_runs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    tenant_id  TEXT NOT NULL,
    task_id    BIGINT,
    version    TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('up', 'down')),
    worker     TEXT NOT NULL,
    ran_at     TIMESTAMP NOT NULL
);
CREATE INDEX migration_runs_tenant_id_idx ON migration_runs (tenant_id, id);
