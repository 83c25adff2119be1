ALTER TABLE settings DROP COLUMN locked_until;
