-- Idempotency keys of POSTs that create or change something
-- (`Idempotency-Key` header): per credential (`scope`: the operator, or a
-- tenant key), the request's fingerprint and, once it finished, the answer
-- to replay. A row without `status` is a request still running. Rows older
-- than a day are replaced (and pruned with the jobs).
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER,
    response      TEXT,
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
