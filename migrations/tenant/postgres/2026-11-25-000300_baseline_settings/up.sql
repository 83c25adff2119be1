-- Phase 0 baseline: per-shop settings, ONE ROW PER SHOP with typed columns
-- (not key/value). Less structured options go into extra_json (a JSON object).
CREATE TABLE settings (
    shop_id            BIGINT    NOT NULL PRIMARY KEY REFERENCES shop_profile (id) ON DELETE CASCADE,
    currency           TEXT      NOT NULL DEFAULT 'USD' CHECK (length(currency) = 3),
    tax_rate_bp        INTEGER   NOT NULL DEFAULT 0 CHECK (tax_rate_bp >= 0),
    prices_include_tax BOOLEAN   NOT NULL DEFAULT TRUE,
    receipt_footer     TEXT,
    extra_json         TEXT,
    updated_at         TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
