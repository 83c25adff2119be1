-- Phase 2 / customer_metrics: precomputed per-customer figures per shop.
-- The customer key is sales.customer_phone exactly as stored (sales with a
-- NULL or '' phone are walk-ins and are not counted). For every key:
--   lifetime_value_minor = SUM(total_minor), visit_count = COUNT(*),
--   first_purchase_at = MIN(sold_at), last_purchase_at = MAX(sold_at)
-- over the shop's sales. Backfilled below; kept current by an AFTER trigger on
-- sales INSERT (incremental upsert: concurrency-safe, the upsert locks the
-- metrics row), DELETE and UPDATE of the columns involved.
CREATE TABLE customer_metrics (
    shop_id               BIGINT    NOT NULL REFERENCES shop_profile (id) ON DELETE CASCADE,
    customer_phone        TEXT      NOT NULL,
    lifetime_value_minor  BIGINT    NOT NULL DEFAULT 0,
    visit_count           INTEGER   NOT NULL DEFAULT 0,
    first_purchase_at     TIMESTAMP NOT NULL,
    last_purchase_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (shop_id, customer_phone)
);

CREATE INDEX customer_metrics_shop_id_ltv_idx ON customer_metrics (shop_id, lifetime_value_minor);

INSERT INTO customer_metrics
       (shop_id, customer_phone, lifetime_value_minor, visit_count, first_purchase_at, last_purchase_at)
SELECT shop_id, customer_phone, SUM(total_minor), COUNT(*), MIN(sold_at), MAX(sold_at)
  FROM sales
 WHERE customer_phone <> ''
 GROUP BY shop_id, customer_phone
 ORDER BY shop_id, customer_phone;

-- The function finds customer_metrics and sales in the schema of the table
-- that fired it (TG_TABLE_SCHEMA), not through the session's search_path, so a
-- session pointed at another tenant can never update this tenant's metrics.
CREATE FUNCTION customer_metrics_apply_sale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF OLD.customer_phone <> '' THEN
            EXECUTE format(
                'UPDATE %I.customer_metrics AS m
                    SET lifetime_value_minor = m.lifetime_value_minor - $3,
                        visit_count          = m.visit_count - 1
                  WHERE m.shop_id = $1 AND m.customer_phone = $2', TG_TABLE_SCHEMA)
            USING OLD.shop_id, OLD.customer_phone, OLD.total_minor;
            EXECUTE format(
                'DELETE FROM %I.customer_metrics AS m
                  WHERE m.shop_id = $1 AND m.customer_phone = $2 AND m.visit_count <= 0', TG_TABLE_SCHEMA)
            USING OLD.shop_id, OLD.customer_phone;
            -- the removed sale may have been the first or the last purchase
            EXECUTE format(
                'UPDATE %1$I.customer_metrics AS m
                    SET first_purchase_at = agg.first_at,
                        last_purchase_at  = agg.last_at
                   FROM (SELECT MIN(s.sold_at) AS first_at, MAX(s.sold_at) AS last_at
                           FROM %1$I.sales AS s
                          WHERE s.shop_id = $1 AND s.customer_phone = $2) AS agg
                  WHERE m.shop_id = $1 AND m.customer_phone = $2
                    AND ($3 <= m.first_purchase_at OR $3 >= m.last_purchase_at)', TG_TABLE_SCHEMA)
            USING OLD.shop_id, OLD.customer_phone, OLD.sold_at;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.customer_phone <> '' THEN
            EXECUTE format(
                'INSERT INTO %I.customer_metrics AS m
                        (shop_id, customer_phone, lifetime_value_minor, visit_count, first_purchase_at, last_purchase_at)
                 VALUES ($1, $2, $3, 1, $4, $4)
                 ON CONFLICT (shop_id, customer_phone) DO UPDATE SET
                     lifetime_value_minor = m.lifetime_value_minor + EXCLUDED.lifetime_value_minor,
                     visit_count          = m.visit_count + 1,
                     first_purchase_at    = LEAST(m.first_purchase_at, EXCLUDED.first_purchase_at),
                     last_purchase_at     = GREATEST(m.last_purchase_at, EXCLUDED.last_purchase_at)',
                TG_TABLE_SCHEMA)
            USING NEW.shop_id, NEW.customer_phone, NEW.total_minor, NEW.sold_at;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER customer_metrics_sale_change
AFTER INSERT OR DELETE OR UPDATE OF shop_id, customer_phone, total_minor, sold_at ON sales
FOR EACH ROW EXECUTE FUNCTION customer_metrics_apply_sale();
