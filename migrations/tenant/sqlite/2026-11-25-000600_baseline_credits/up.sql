-- Phase 0 baseline: customer credit (IOUs) - money a customer owes the shop.
-- status: 'open' (outstanding, possibly partly paid), 'paid', 'written_off'.
CREATE TABLE credits (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    shop_id         BIGINT    NOT NULL REFERENCES shop_profile (id),
    sale_id         BIGINT    REFERENCES sales (id),
    user_id         BIGINT    REFERENCES users (id),
    customer_name   TEXT      NOT NULL,
    customer_phone  TEXT,
    amount_minor    BIGINT    NOT NULL CHECK (amount_minor >= 0),
    paid_minor      BIGINT    NOT NULL DEFAULT 0 CHECK (paid_minor >= 0),
    currency        TEXT      NOT NULL CHECK (length(currency) = 3),
    due_date        DATE,
    status          TEXT      NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'written_off')),
    note            TEXT,
    created_at      TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at      TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX credits_shop_id_status_due_date_idx ON credits (shop_id, status, due_date);
CREATE INDEX credits_shop_id_customer_phone_idx ON credits (shop_id, customer_phone);
CREATE INDEX credits_sale_id_idx ON credits (sale_id);
CREATE INDEX credits_user_id_idx ON credits (user_id);
