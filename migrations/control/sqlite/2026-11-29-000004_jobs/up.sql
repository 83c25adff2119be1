-- Durable jobs: everything the worker does besides rollout tasks (backups,
-- retention, exports, deliveries, sweeps), claimed with leases like tasks.

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind              TEXT NOT NULL,
    payload           TEXT NOT NULL,
    dedup_key         TEXT,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_at            TIMESTAMP NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMP,
    last_error        TEXT,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP
);
-- One open job per (kind, dedup key): enqueueing a key that is already
-- pending or running is a no-op; once that job finished the key is free.
CREATE UNIQUE INDEX jobs_dedup_open_idx ON jobs (kind, dedup_key)
    WHERE state IN ('pending', 'running');
-- The claim walks due pending jobs in (run_at, id) order and looks among the
-- running ones for expired leases.
CREATE INDEX jobs_claim_idx ON jobs (state, run_at, id);
