-- Phase 4 / staff_roles: users.role becomes a closed set of roles:
--   owner > manager > cashier > staff   (staff = least privileged).
-- Existing strings are mapped after trimming surrounding blanks (space, tab,
-- CR, LF) and lower-casing:
--   owner   <- owner, admin, administrator, superadmin, super_admin, super admin
--   manager <- manager, supervisor
--   cashier <- cashier, clerk, sales clerk
--   staff   <- staff and ANYTHING ELSE, including NULL and the empty string.
-- The original value is kept verbatim in role_legacy, and role_legacy_present
-- marks the rows that existed before this migration (it distinguishes an
-- original NULL role from a user created afterwards). New rows: role_legacy
-- NULL, role_legacy_present FALSE, role defaults to 'staff'.
CREATE TYPE user_role AS ENUM ('owner', 'manager', 'cashier', 'staff');

ALTER TABLE users ADD COLUMN role_legacy TEXT;
ALTER TABLE users ADD COLUMN role_legacy_present BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE users SET role_legacy = role, role_legacy_present = TRUE;

ALTER TABLE users ALTER COLUMN role TYPE user_role USING (
    CASE lower(btrim(role, E' \t\r\n'))
        WHEN 'owner'         THEN 'owner'
        WHEN 'admin'         THEN 'owner'
        WHEN 'administrator' THEN 'owner'
        WHEN 'superadmin'    THEN 'owner'
        WHEN 'super_admin'   THEN 'owner'
        WHEN 'super admin'   THEN 'owner'
        WHEN 'manager'       THEN 'manager'
        WHEN 'supervisor'    THEN 'manager'
        WHEN 'cashier'       THEN 'cashier'
        WHEN 'clerk'         THEN 'cashier'
        WHEN 'sales clerk'   THEN 'cashier'
        ELSE 'staff'
    END
)::user_role;
ALTER TABLE users ALTER COLUMN role SET DEFAULT 'staff';
ALTER TABLE users ALTER COLUMN role SET NOT NULL;
