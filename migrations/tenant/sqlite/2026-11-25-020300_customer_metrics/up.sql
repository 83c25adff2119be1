-- Phase 2 / customer_metrics: precomputed per-customer figures per shop.
-- The customer key is sales.customer_phone exactly as stored (sales with a
-- NULL or '' phone are walk-ins and are not counted). For every key:
--   lifetime_value_minor = SUM(total_minor), visit_count = COUNT(*),
--   first_purchase_at = MIN(sold_at), last_purchase_at = MAX(sold_at)
-- over the shop's sales. Backfilled below; kept current by triggers on sales
-- INSERT (incremental upsert), DELETE and UPDATE of the columns involved.
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

CREATE TRIGGER customer_metrics_sale_insert
AFTER INSERT ON sales
FOR EACH ROW WHEN NEW.customer_phone <> ''
BEGIN
    INSERT INTO customer_metrics
           (shop_id, customer_phone, lifetime_value_minor, visit_count, first_purchase_at, last_purchase_at)
    VALUES (NEW.shop_id, NEW.customer_phone, NEW.total_minor, 1, NEW.sold_at, NEW.sold_at)
    ON CONFLICT (shop_id, customer_phone) DO UPDATE SET
        lifetime_value_minor = lifetime_value_minor + excluded.lifetime_value_minor,
        visit_count          = visit_count + 1,
        first_purchase_at    = min(first_purchase_at, excluded.first_purchase_at),
        last_purchase_at     = max(last_purchase_at, excluded.last_purchase_at);
END;

CREATE TRIGGER customer_metrics_sale_delete
AFTER DELETE ON sales
FOR EACH ROW WHEN OLD.customer_phone <> ''
BEGIN
    UPDATE customer_metrics
       SET lifetime_value_minor = lifetime_value_minor - OLD.total_minor,
           visit_count          = visit_count - 1
     WHERE shop_id = OLD.shop_id AND customer_phone = OLD.customer_phone;
    DELETE FROM customer_metrics
     WHERE shop_id = OLD.shop_id AND customer_phone = OLD.customer_phone AND visit_count <= 0;
    UPDATE customer_metrics
       SET first_purchase_at = (SELECT MIN(s.sold_at) FROM sales AS s
                                 WHERE s.shop_id = OLD.shop_id AND s.customer_phone = OLD.customer_phone),
           last_purchase_at  = (SELECT MAX(s.sold_at) FROM sales AS s
                                 WHERE s.shop_id = OLD.shop_id AND s.customer_phone = OLD.customer_phone)
     WHERE shop_id = OLD.shop_id AND customer_phone = OLD.customer_phone
       AND (OLD.sold_at <= first_purchase_at OR OLD.sold_at >= last_purchase_at);
END;

CREATE TRIGGER customer_metrics_sale_update
AFTER UPDATE OF shop_id, customer_phone, total_minor, sold_at ON sales
FOR EACH ROW WHEN OLD.customer_phone <> '' OR NEW.customer_phone <> ''
BEGIN
    UPDATE customer_metrics
       SET lifetime_value_minor = lifetime_value_minor - OLD.total_minor,
           visit_count          = visit_count - 1
     WHERE OLD.customer_phone <> ''
       AND shop_id = OLD.shop_id AND customer_phone = OLD.customer_phone;
    DELETE FROM customer_metrics
     WHERE OLD.customer_phone <> ''
       AND shop_id = OLD.shop_id AND customer_phone = OLD.customer_phone AND visit_count <= 0;
    UPDATE customer_metrics
       SET first_purchase_at = (SELECT MIN(s.sold_at) FROM sales AS s
                                 WHERE s.shop_id = OLD.shop_id AND s.customer_phone = OLD.customer_phone),
           last_purchase_at  = (SELECT MAX(s.sold_at) FROM sales AS s
                                 WHERE s.shop_id = OLD.shop_id AND s.customer_phone = OLD.customer_phone)
     WHERE OLD.customer_phone <> ''
       AND shop_id = OLD.shop_id AND customer_phone = OLD.customer_phone
       AND (OLD.sold_at <= first_purchase_at OR OLD.sold_at >= last_purchase_at);
    INSERT INTO customer_metrics
           (shop_id, customer_phone, lifetime_value_minor, visit_count, first_purchase_at, last_purchase_at)
    SELECT NEW.shop_id, NEW.customer_phone, NEW.total_minor, 1, NEW.sold_at, NEW.sold_at
     WHERE NEW.customer_phone <> ''
    ON CONFLICT (shop_id, customer_phone) DO UPDATE SET
        lifetime_value_minor = lifetime_value_minor + excluded.lifetime_value_minor,
        visit_count          = visit_count + 1,
        first_purchase_at    = min(first_purchase_at, excluded.first_purchase_at),
        last_purchase_at     = max(last_purchase_at, excluded.last_purchase_at);
END;
