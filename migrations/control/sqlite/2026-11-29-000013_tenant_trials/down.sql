DROP TABLE tenant_trials;
