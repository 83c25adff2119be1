DROP INDEX audit_log_resource_idx;
ALTER TABLE audit_log DROP COLUMN user_agent;
ALTER TABLE audit_log DROP COLUMN ip_address;
ALTER TABLE audit_log DROP COLUMN resource_id;
ALTER TABLE audit_log DROP COLUMN resource_type;
ALTER TABLE audit_log DROP COLUMN after_state;
ALTER TABLE audit_log DROP COLUMN before_state;
