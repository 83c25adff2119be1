-- Phase 7 / sale_locks: a sale locked after a report (or an override) records
-- who locked it and when. locked_by references users WITHOUT an ON DELETE
-- action; locked_by may be NULL with locked_at set for automatic (system)
-- locks. Both NULL = not locked.
ALTER TABLE sales ADD COLUMN locked_by BIGINT REFERENCES users (id);
ALTER TABLE sales ADD COLUMN locked_at TIMESTAMP;

CREATE INDEX sales_locked_by_idx ON sales (locked_by);
