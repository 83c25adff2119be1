-- Phase 4 / staff_roles: time (UTC) of the user's last successful login.
ALTER TABLE users ADD COLUMN last_login_at TIMESTAMP;
