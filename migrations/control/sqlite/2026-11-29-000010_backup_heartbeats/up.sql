-- A backup in progress proves it is alive: the process taking it sets
-- `heartbeat_at` every few seconds. The sweep marks a `pending`/`running`
-- backup interrupted once its heartbeat (or, before the first one, its
-- start) is older than a couple of minutes, instead of waiting hours for
-- a grace that has to cover the largest tenant.
ALTER TABLE backups ADD COLUMN heartbeat_at TIMESTAMP;
