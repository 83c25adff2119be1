ALTER TABLE rollouts DROP COLUMN allow_drift;
DROP TABLE tenant_drift;
