-- A server's lifecycle: `active` takes new tenants, `draining` takes none
-- (its tenants are being moved off), `retired` takes none and holds no live
-- tenant.
--
-- SQLite cannot alter a CHECK constraint: the table is rebuilt. Control
-- migrations run inside one transaction, where `PRAGMA foreign_keys` cannot
-- be switched off, so the foreign keys of `tenants` are deferred instead:
-- dropping the old table orphans the tenants for a moment, and putting the
-- rows back into the renamed table (after the rename, so they count as the
-- parents) settles them before the commit checks.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE database_servers_new (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('sqlite', 'postgres')),
    url         TEXT NOT NULL,
    isolation   TEXT NOT NULL CHECK (isolation IN ('file', 'schema', 'database')),
    capacity    INTEGER NOT NULL CHECK (capacity > 0),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining', 'retired')),
    created_at  TIMESTAMP NOT NULL
);
CREATE TEMP TABLE database_servers_copy AS SELECT * FROM database_servers;
DROP TABLE database_servers;
ALTER TABLE database_servers_new RENAME TO database_servers;
INSERT INTO database_servers (id, name, kind, url, isolation, capacity, status, created_at)
    SELECT id, name, kind, url, isolation, capacity, status, created_at FROM database_servers_copy;
DROP TABLE database_servers_copy;
