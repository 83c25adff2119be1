DROP TRIGGER sales_invoice_number_immutable ON sales;
DROP FUNCTION sales_invoice_number_immutable();
DROP TRIGGER sales_invoice_number_assign ON sales;
DROP FUNCTION sales_invoice_number_assign();
DROP TABLE invoice_counters;
ALTER TABLE sales DROP CONSTRAINT sales_shop_id_invoice_number_key;
ALTER TABLE sales DROP COLUMN invoice_number;
