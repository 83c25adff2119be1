-- The trials each tenant has started, one row per (tenant, plan): a tenant
-- key starts a trial of a plan once; an operator may grant more (the row
-- then records the newest start).
CREATE TABLE tenant_trials (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    plan_id     TEXT NOT NULL REFERENCES plans (id),
    started_at  TIMESTAMP NOT NULL,
    started_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
);
