DROP INDEX sales_locked_by_idx;
ALTER TABLE sales DROP COLUMN locked_at;
ALTER TABLE sales DROP COLUMN locked_by;
