-- Drift checks: the last check of each tenant (a tenant whose schema differs
-- from the reference of its recorded version is `drifted`, with the
-- differences as a JSON array), and the rollout setting that lets a rollout
-- migrate drifted tenants anyway.
CREATE TABLE tenant_drift (
    tenant_id        TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    schema_version   TEXT,
    drifted          BOOLEAN NOT NULL,
    difference_count INTEGER NOT NULL,
    differences      TEXT NOT NULL,
    checked_at       TIMESTAMP NOT NULL
);
CREATE INDEX tenant_drift_drifted_idx ON tenant_drift (drifted);

ALTER TABLE rollouts ADD COLUMN allow_drift BOOLEAN NOT NULL DEFAULT FALSE;
