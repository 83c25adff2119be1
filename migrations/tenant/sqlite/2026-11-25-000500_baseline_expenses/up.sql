-- Phase 0 baseline: money going out of a shop. `category` is free text here;
-- phase 2 (2026-11-25-020100_expense_categories) adds category_id.
CREATE TABLE expenses (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    shop_id       BIGINT    NOT NULL REFERENCES shop_profile (id),
    user_id       BIGINT    REFERENCES users (id),
    amount_minor  BIGINT    NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT      NOT NULL CHECK (length(currency) = 3),
    description   TEXT,
    category      TEXT,
    spent_at      TIMESTAMP NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX expenses_shop_id_spent_at_idx ON expenses (shop_id, spent_at);
CREATE INDEX expenses_user_id_idx ON expenses (user_id);
