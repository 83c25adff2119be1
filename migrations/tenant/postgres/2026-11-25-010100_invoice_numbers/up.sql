-- Phase 1 / invoice_numbering: per-shop invoice numbers on sales.
-- * backfill: existing sales get 1..n per shop in (sold_at, id) order;
-- * invoice_counters keeps the last number handed out per shop. The BEFORE
--   INSERT trigger bumps it with INSERT ... ON CONFLICT DO UPDATE, which locks
--   the shop's counter row until the inserting transaction ends, so concurrent
--   inserts into the same shop are serialised and never get the same number
--   (numbers are never reused; a rolled-back insert does not consume one);
-- * a sale inserted WITH an explicit number raises the counter to at least it;
-- * once assigned, neither invoice_number nor the sale's shop_id can change
--   (a sale moved to another shop would carry a number from the wrong
--   sequence and could later collide with that shop's counter).
-- Nothing is schema-qualified in this file: the tables land in the schema the
-- migration runs in (search_path), and the trigger function finds
-- invoice_counters next to the sales table that fired it (TG_TABLE_SCHEMA).
ALTER TABLE sales ADD COLUMN invoice_number BIGINT;

UPDATE sales
   SET invoice_number = numbered.rn
  FROM (SELECT id,
               row_number() OVER (PARTITION BY shop_id ORDER BY sold_at, id) AS rn
          FROM sales) AS numbered
 WHERE numbered.id = sales.id;

ALTER TABLE sales ALTER COLUMN invoice_number SET NOT NULL;
ALTER TABLE sales ADD CONSTRAINT sales_shop_id_invoice_number_key UNIQUE (shop_id, invoice_number);

CREATE TABLE invoice_counters (
    shop_id      BIGINT NOT NULL PRIMARY KEY REFERENCES shop_profile (id) ON DELETE CASCADE,
    last_number  BIGINT NOT NULL CHECK (last_number >= 0)
);

INSERT INTO invoice_counters (shop_id, last_number)
SELECT shop_id, MAX(invoice_number) FROM sales GROUP BY shop_id ORDER BY shop_id;

CREATE FUNCTION sales_invoice_number_assign() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- invoice_counters is taken from the schema of the table that fired the
    -- trigger (TG_TABLE_SCHEMA), not from the session's search_path, so a
    -- session pointed at another tenant can never bump this tenant's numbers.
    IF NEW.invoice_number IS NULL THEN
        EXECUTE format(
            'INSERT INTO %I.invoice_counters AS c (shop_id, last_number) VALUES ($1, 1)
             ON CONFLICT (shop_id) DO UPDATE SET last_number = c.last_number + 1
             RETURNING c.last_number', TG_TABLE_SCHEMA)
        INTO NEW.invoice_number
        USING NEW.shop_id;
    ELSE
        EXECUTE format(
            'INSERT INTO %I.invoice_counters AS c (shop_id, last_number) VALUES ($1, $2)
             ON CONFLICT (shop_id) DO UPDATE SET last_number = GREATEST(c.last_number, EXCLUDED.last_number)',
            TG_TABLE_SCHEMA)
        USING NEW.shop_id, NEW.invoice_number;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER sales_invoice_number_assign
BEFORE INSERT ON sales
FOR EACH ROW EXECUTE FUNCTION sales_invoice_number_assign();

CREATE FUNCTION sales_invoice_number_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sales.invoice_number and sales.shop_id cannot change once a number is assigned'
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER sales_invoice_number_immutable
BEFORE UPDATE OF invoice_number, shop_id ON sales
FOR EACH ROW WHEN (NEW.invoice_number IS DISTINCT FROM OLD.invoice_number
                   OR NEW.shop_id IS DISTINCT FROM OLD.shop_id)
EXECUTE FUNCTION sales_invoice_number_immutable();
