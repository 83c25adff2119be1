-- Phase 1 / invoice_numbering: per-shop invoice numbers on sales.
-- * backfill: existing sales get 1..n per shop in (sold_at, id) order;
-- * invoice_counters keeps the last number handed out per shop, so numbers are
--   never reused even if the newest sale is deleted;
-- * a sale inserted without invoice_number gets counter+1 (AFTER INSERT trigger;
--   SQLite has a single writer, so no two inserts can race);
-- * a sale inserted WITH an explicit number raises the counter to at least it;
-- * once assigned, neither invoice_number nor the sale's shop_id can change
--   (a sale moved to another shop would carry a number from the wrong
--   sequence and could later collide with that shop's counter).
-- The column is nullable here only because the AFTER INSERT trigger fills it in;
-- it is never NULL once the INSERT statement has finished.
ALTER TABLE sales ADD COLUMN invoice_number BIGINT;

UPDATE sales
   SET invoice_number = numbered.rn
  FROM (SELECT id,
               row_number() OVER (PARTITION BY shop_id ORDER BY sold_at, id) AS rn
          FROM sales) AS numbered
 WHERE numbered.id = sales.id;

CREATE UNIQUE INDEX sales_shop_id_invoice_number_key ON sales (shop_id, invoice_number);

CREATE TABLE invoice_counters (
    shop_id      BIGINT NOT NULL PRIMARY KEY REFERENCES shop_profile (id) ON DELETE CASCADE,
    last_number  BIGINT NOT NULL CHECK (last_number >= 0)
);

INSERT INTO invoice_counters (shop_id, last_number)
SELECT shop_id, MAX(invoice_number) FROM sales GROUP BY shop_id ORDER BY shop_id;

CREATE TRIGGER sales_invoice_number_assign
AFTER INSERT ON sales
FOR EACH ROW WHEN NEW.invoice_number IS NULL
BEGIN
    INSERT INTO invoice_counters (shop_id, last_number) VALUES (NEW.shop_id, 1)
        ON CONFLICT (shop_id) DO UPDATE SET last_number = last_number + 1;
    UPDATE sales
       SET invoice_number = (SELECT last_number FROM invoice_counters WHERE shop_id = NEW.shop_id)
     WHERE id = NEW.id;
END;

CREATE TRIGGER sales_invoice_number_explicit
AFTER INSERT ON sales
FOR EACH ROW WHEN NEW.invoice_number IS NOT NULL
BEGIN
    INSERT INTO invoice_counters (shop_id, last_number) VALUES (NEW.shop_id, NEW.invoice_number)
        ON CONFLICT (shop_id) DO UPDATE SET last_number = max(last_number, excluded.last_number);
END;

CREATE TRIGGER sales_invoice_number_immutable
BEFORE UPDATE OF invoice_number, shop_id ON sales
FOR EACH ROW WHEN OLD.invoice_number IS NOT NULL
              AND (NEW.invoice_number IS NOT OLD.invoice_number OR NEW.shop_id IS NOT OLD.shop_id)
BEGIN
    SELECT RAISE(ABORT, 'sales.invoice_number and sales.shop_id cannot change once a number is assigned');
END;
