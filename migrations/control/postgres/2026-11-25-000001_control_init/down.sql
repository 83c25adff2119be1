DROP TABLE audit_log;
DROP TABLE api_tokens;
DROP TABLE tenant_labels;
DROP TABLE tenants;
DROP TABLE database_servers;
