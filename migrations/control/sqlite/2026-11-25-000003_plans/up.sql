-- Plans and per-tenant feature overrides: the seed's phase 5, placed in the
-- control plane (one source of truth, evaluated without touching tenant DBs).

CREATE TABLE plans (
    id                TEXT PRIMARY KEY NOT NULL,
    slug              TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL,
    price_cents       BIGINT NOT NULL CHECK (price_cents >= 0),
    currency          TEXT NOT NULL CHECK (length(currency) = 3),
    active            BOOLEAN NOT NULL DEFAULT TRUE,
    fallback_plan_id  TEXT REFERENCES plans (id),
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL
);

CREATE TABLE plan_features (
    plan_id  TEXT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    feature  TEXT NOT NULL,
    PRIMARY KEY (plan_id, feature)
);

CREATE TABLE feature_overrides (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    feature     TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    reason      TEXT,
    actor       TEXT NOT NULL,
    expires_at  TIMESTAMP,
    created_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, feature)
);

-- Bumped by every change that affects feature evaluation or tenant keys;
-- API processes poll it to know when their in-memory copy is stale.
CREATE TABLE change_counter (
    id     INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    value  BIGINT NOT NULL
);
INSERT INTO change_counter (id, value) VALUES (1, 0);

CREATE INDEX tenants_plan_id_idx ON tenants (plan_id);
CREATE INDEX tenants_trial_ends_at_idx ON tenants (trial_ends_at);
