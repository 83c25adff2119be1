-- Phase 0 baseline: the shops (branches) of the business. One row per shop;
-- almost every other table carries a shop_id pointing here.
CREATE TABLE shop_profile (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT      NOT NULL,
    legal_name  TEXT,
    address     TEXT,
    phone       TEXT,
    email       TEXT,
    tax_number  TEXT,
    timezone    TEXT      NOT NULL DEFAULT 'UTC',
    is_active   BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
