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

CREATE FUNCTION customer_metrics_apply_sale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF OLD.customer_phone <> '' THEN
            UPDATE customer_metrics AS m
               SET lifetime_value_minor = m.lifetime_value_minor - OLD.total_minor,
                   visit_count          = m.visit_count - 1
             WHERE m.shop_id = OLD.shop_id AND m.customer_phone = OLD.customer_phone;
            DELETE FROM customer_metrics AS m
             WHERE m.shop_id = OLD.shop_id AND m.customer_phone = OLD.customer_phone
               AND m.visit_count <= 0;
            UPDATE customer_metrics AS m
               SET first_purchase_at = agg.first_at,
                   last_purchase_at  = agg.last_at
              FROM (SELECT MIN(s.sold_at) AS first_at, MAX(s.sold_at) AS last_at
                      FROM sales AS s
                     WHERE s.shop_id = OLD.shop_id AND s.customer_phone = OLD.customer_phone) AS agg
             WHERE m.shop_id = OLD.shop_id AND m.customer_phone = OLD.customer_phone
               AND (OLD.sold_at <= m.first_purchase_at OR OLD.sold_at >= m.last_purchase_at);
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.customer_phone <> '' THEN
            INSERT INTO customer_metrics AS m
                   (shop_id, customer_phone, lifetime_value_minor, visit_count, first_purchase_at, last_purchase_at)
            VALUES (NEW.shop_id, NEW.customer_phone, NEW.total_minor, 1, NEW.sold_at, NEW.sold_at)
            ON CONFLICT (shop_id, customer_phone) DO UPDATE SET
                lifetime_value_minor = m.lifetime_value_minor + EXCLUDED.lifetime_value_minor,
                visit_count          = m.visit_count + 1,
                first_purchase_at    = LEAST(m.first_purchase_at, EXCLUDED.first_purchase_at),
                last_purchase_at     = GREATEST(m.last_purchase_at, EXCLUDED.last_purchase_at);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER customer_metrics_sale_change
AFTER INSERT OR DELETE OR UPDATE OF shop_id, customer_phone, total_minor, sold_at ON sales
FOR EACH ROW EXECUTE FUNCTION customer_metrics_apply_sale();
