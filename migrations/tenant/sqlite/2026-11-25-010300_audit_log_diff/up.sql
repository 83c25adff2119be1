-- Phase 1 / audit_diff: structured audit entries for the diff view.
-- before_state / after_state are JSON documents (TEXT) of the resource before
-- and after the action (NULL for create / delete respectively);
-- resource_type is e.g. 'sale', 'expense', 'user'; resource_id is TEXT so that
-- non-numeric keys fit; ip_address is the textual IPv4/IPv6 address.
ALTER TABLE audit_log ADD COLUMN before_state TEXT;
ALTER TABLE audit_log ADD COLUMN after_state TEXT;
ALTER TABLE audit_log ADD COLUMN resource_type TEXT;
ALTER TABLE audit_log ADD COLUMN resource_id TEXT;
ALTER TABLE audit_log ADD COLUMN ip_address TEXT;
ALTER TABLE audit_log ADD COLUMN user_agent TEXT;

CREATE INDEX audit_log_resource_idx ON audit_log (resource_type, resource_id, created_at);
