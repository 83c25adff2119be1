-- Phase 1 / day_end_lock: end-of-day lock per shop. Sales, expenses and credits
-- of the shop dated before locked_until (UTC) are closed and must not be edited
-- (enforced by the application; NULL = nothing locked yet).
ALTER TABLE settings ADD COLUMN locked_until TIMESTAMP;
