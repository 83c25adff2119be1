-- Phase 2 / recommendations: cache of heuristic results per shop. One live
-- entry per (shop_id, kind, subject_key); kind names the heuristic (e.g.
-- 'restock', 'slow_movers', 'win_back'), subject_key narrows it ('' = whole
-- shop, or e.g. a customer phone). payload is JSON text. Entries are
-- recomputed (upserted) when expires_at has passed.
CREATE TABLE recommendations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    shop_id      BIGINT    NOT NULL REFERENCES shop_profile (id) ON DELETE CASCADE,
    kind         TEXT      NOT NULL,
    subject_key  TEXT      NOT NULL DEFAULT '',
    payload      TEXT      NOT NULL,
    computed_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expires_at   TIMESTAMP NOT NULL
);

CREATE UNIQUE INDEX recommendations_shop_id_kind_subject_key_key ON recommendations (shop_id, kind, subject_key);
CREATE INDEX recommendations_expires_at_idx ON recommendations (expires_at);
