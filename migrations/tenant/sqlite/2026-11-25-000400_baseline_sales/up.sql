-- Phase 0 baseline: one row per sale (receipt). Money in integer minor units.
-- The customer is referenced by free text (phone is the customer key used by
-- customer_metrics); walk-in sales have no customer.
CREATE TABLE sales (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    shop_id         BIGINT    NOT NULL REFERENCES shop_profile (id),
    user_id         BIGINT    REFERENCES users (id),
    customer_name   TEXT,
    customer_phone  TEXT,
    subtotal_minor  BIGINT    NOT NULL DEFAULT 0,
    discount_minor  BIGINT    NOT NULL DEFAULT 0,
    tax_minor       BIGINT    NOT NULL DEFAULT 0,
    total_minor     BIGINT    NOT NULL,
    item_count      INTEGER   NOT NULL DEFAULT 0,
    payment_method  TEXT      NOT NULL DEFAULT 'cash',
    currency        TEXT      NOT NULL CHECK (length(currency) = 3),
    note            TEXT,
    sold_at         TIMESTAMP NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX sales_shop_id_sold_at_idx ON sales (shop_id, sold_at);
CREATE INDEX sales_shop_id_customer_phone_idx ON sales (shop_id, customer_phone);
CREATE INDEX sales_user_id_idx ON sales (user_id);
