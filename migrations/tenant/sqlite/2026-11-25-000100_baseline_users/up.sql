-- Phase 0 baseline: staff accounts of the business (tenant-wide, not per shop).
-- `role` is free text at this point (legacy values such as 'Admin', ' cashier ');
-- phase 4 (2026-11-25-040100_user_role_enum) turns it into a constrained role.

-- SQLite creates its internal sqlite_sequence table with the first AUTOINCREMENT
-- table and never drops it. Make it exist before `users` (via a throwaway
-- table) so that it always precedes `users` in sqlite_master: this keeps the
-- .schema dump byte-identical across up / down / up of this migration.
CREATE TABLE tenant_schema_bootstrap (id INTEGER PRIMARY KEY AUTOINCREMENT);
DROP TABLE tenant_schema_bootstrap;
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT      NOT NULL,
    full_name     TEXT,
    email         TEXT,
    phone         TEXT,
    password_hash TEXT      NOT NULL,
    role          TEXT,
    is_active     BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX users_username_key ON users (username);
CREATE INDEX users_email_idx ON users (email);
