UPDATE database_servers SET status = 'draining' WHERE status = 'retired';
ALTER TABLE database_servers DROP CONSTRAINT database_servers_status_check;
ALTER TABLE database_servers ADD CONSTRAINT database_servers_status_check
    CHECK (status IN ('active', 'draining'));
