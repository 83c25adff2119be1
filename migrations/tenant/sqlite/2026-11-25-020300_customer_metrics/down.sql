DROP TRIGGER customer_metrics_sale_update;
DROP TRIGGER customer_metrics_sale_delete;
DROP TRIGGER customer_metrics_sale_insert;
DROP TABLE customer_metrics;
