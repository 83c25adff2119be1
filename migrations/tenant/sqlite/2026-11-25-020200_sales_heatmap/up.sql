-- Phase 2 / sales_heatmap: sales per shop by UTC day of week (0 = Sunday ..
-- 6 = Saturday) and UTC hour (0..23). SQLite has no materialized views, so
-- this is the plain-view "SQL fallback": always current, computed on read.
-- Same columns and names as the PostgreSQL materialized view.
CREATE VIEW sales_heatmap AS
SELECT shop_id,
       CAST(strftime('%w', sold_at) AS INTEGER) AS day_of_week,
       CAST(strftime('%H', sold_at) AS INTEGER) AS hour_of_day,
       COUNT(*)                      AS sale_count,
       COALESCE(SUM(total_minor), 0) AS total_minor
  FROM sales
 GROUP BY shop_id, day_of_week, hour_of_day;
