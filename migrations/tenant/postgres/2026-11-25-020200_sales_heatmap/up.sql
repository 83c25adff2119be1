-- Phase 2 / sales_heatmap: sales per shop by UTC day of week (0 = Sunday ..
-- 6 = Saturday) and UTC hour (0..23), as a MATERIALIZED VIEW. The unique
-- index makes `REFRESH MATERIALIZED VIEW CONCURRENTLY sales_heatmap` possible
-- (readers are not blocked during a refresh). The view is populated here and
-- is only as fresh as its last REFRESH.
CREATE MATERIALIZED VIEW sales_heatmap AS
SELECT shop_id,
       CAST(EXTRACT(DOW FROM sold_at) AS INTEGER)  AS day_of_week,
       CAST(EXTRACT(HOUR FROM sold_at) AS INTEGER) AS hour_of_day,
       COUNT(*)                                    AS sale_count,
       CAST(COALESCE(SUM(total_minor), 0) AS BIGINT) AS total_minor
  FROM sales
 GROUP BY 1, 2, 3
WITH DATA;

CREATE UNIQUE INDEX sales_heatmap_key ON sales_heatmap (shop_id, day_of_week, hour_of_day);
