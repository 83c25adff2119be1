-- Phase 4 / webhooks: outgoing webhook subscriptions and their delivery log.
-- api_webhooks.event is the event name subscribed to (e.g. 'sale.created');
-- secret signs the payloads (HMAC) so it is stored retrievable;
-- status: 'active' | 'paused' | 'disabled'.
-- webhook_events is one row per event to deliver, with retry metadata:
-- status 'pending' (waiting for its next attempt at next_attempt_at),
-- 'delivering' (claimed by a worker), 'delivered', 'failed' (gave up);
-- attempts counts attempts made, last_error / last_response_code describe the
-- last failed attempt.
CREATE TABLE api_webhooks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event        TEXT      NOT NULL,
    target_url   TEXT      NOT NULL,
    secret       TEXT      NOT NULL,
    status       TEXT      NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'disabled')),
    created_by   BIGINT    REFERENCES users (id),
    created_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX api_webhooks_event_status_idx ON api_webhooks (event, status);
CREATE INDEX api_webhooks_created_by_idx ON api_webhooks (created_by);

CREATE TABLE webhook_events (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id          BIGINT    NOT NULL REFERENCES api_webhooks (id) ON DELETE CASCADE,
    event               TEXT      NOT NULL,
    payload             TEXT      NOT NULL,
    status              TEXT      NOT NULL DEFAULT 'pending'
                                  CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts            INTEGER   NOT NULL DEFAULT 0,
    next_attempt_at     TIMESTAMP,
    last_error          TEXT,
    last_response_code  INTEGER,
    delivered_at        TIMESTAMP,
    created_at          TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX webhook_events_status_next_attempt_at_idx ON webhook_events (status, next_attempt_at);
CREATE INDEX webhook_events_webhook_id_created_at_idx ON webhook_events (webhook_id, created_at);
