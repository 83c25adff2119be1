-- A server's lifecycle: `active` takes new tenants, `draining` takes none
-- (its tenants are being moved off), `retired` takes none and holds no live
-- tenant.
ALTER TABLE database_servers DROP CONSTRAINT database_servers_status_check;
ALTER TABLE database_servers ADD CONSTRAINT database_servers_status_check
    CHECK (status IN ('active', 'draining', 'retired'));
