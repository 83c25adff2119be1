DROP TRIGGER customer_metrics_sale_change ON sales;
DROP FUNCTION customer_metrics_apply_sale();
DROP TABLE customer_metrics;
