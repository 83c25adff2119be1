-- Notifications. `outbox`: one row per event, written in the same
-- transaction as the change that causes it; its id is the idempotency key of
-- every delivery (the webhook-id, the e-mail's Message-ID). The worker's
-- relay fans undispatched events out into `deliveries` (one per event,
-- channel and recipient or endpoint) and queues one job per delivery;
-- `delivery_attempts` logs each try. `webhook_endpoints` are the
-- operators' receivers with their signing secrets.

CREATE TABLE outbox (
    id             TEXT PRIMARY KEY NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('tenant.created', 'tenant.suspended', 'tenant.deleted',
                       'plan.changed', 'trial.ending', 'trial.expired', 'rollout.succeeded',
                       'rollout.failed', 'rollout.halted', 'backup.failed', 'restore.completed',
                       'export.ready', 'webhook.endpoint_failing')),
    tenant_id      TEXT,
    body           TEXT NOT NULL,
    -- Events that must happen once per fact (trial.ending) carry a key.
    dedup_key      TEXT UNIQUE,
    created_at     TIMESTAMP NOT NULL,
    dispatched_at  TIMESTAMP
);
-- The relay's scan: undispatched events only.
CREATE INDEX outbox_undispatched_idx ON outbox (created_at) WHERE dispatched_at IS NULL;
-- Replay walks a time range.
CREATE INDEX outbox_created_idx ON outbox (created_at);

CREATE TABLE webhook_endpoints (
    id                   TEXT PRIMARY KEY NOT NULL,
    url                  TEXT NOT NULL,
    description          TEXT,
    -- JSON array of event kinds; empty = every kind.
    event_kinds          TEXT NOT NULL,
    enabled              BOOLEAN NOT NULL,
    disabled_reason      TEXT,
    -- whsec_<base64>: kept as is (it signs every delivery); never logged,
    -- shown once at creation and rotation.
    secret               TEXT NOT NULL,
    previous_secret      TEXT,
    previous_expires_at  TIMESTAMP,
    -- First failure of the current failing streak (NULL after a success).
    failing_since        TIMESTAMP,
    warned_at            TIMESTAMP,
    created_at           TIMESTAMP NOT NULL,
    updated_at           TIMESTAMP NOT NULL,
    deleted_at           TIMESTAMP
);

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    event_id         TEXT NOT NULL REFERENCES outbox (id),
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    -- The recipient's address, or the endpoint's id.
    target           TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'retrying', 'delivered', 'dead', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMP,
    last_error       TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    delivered_at     TIMESTAMP,
    UNIQUE (event_id, channel, target)
);
CREATE INDEX deliveries_state_idx ON deliveries (state, id);
CREATE INDEX deliveries_target_idx ON deliveries (channel, target, id);

CREATE TABLE delivery_attempts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    delivery_id       BIGINT NOT NULL REFERENCES deliveries (id),
    attempt           INTEGER NOT NULL,
    started_at        TIMESTAMP NOT NULL,
    -- HTTP status or SMTP reply code; NULL when no answer came.
    status            INTEGER,
    latency_ms        BIGINT NOT NULL,
    outcome           TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    error             TEXT,
    -- At most 1 KiB of the answer.
    response_excerpt  TEXT
);
CREATE INDEX delivery_attempts_delivery_idx ON delivery_attempts (delivery_id, id);
