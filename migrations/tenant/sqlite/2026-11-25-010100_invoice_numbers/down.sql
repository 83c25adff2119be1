DROP TRIGGER sales_invoice_number_immutable;
DROP TRIGGER sales_invoice_number_explicit;
DROP TRIGGER sales_invoice_number_assign;
DROP TABLE invoice_counters;
DROP INDEX sales_shop_id_invoice_number_key;
ALTER TABLE sales DROP COLUMN invoice_number;
