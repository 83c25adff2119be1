-- Restore users.role as free TEXT (nullable, no default) and drop the enum.
-- role becomes role_legacy (the exact original string, NULL included) for rows
-- that existed before the up AND whose role still equals the mapping of that
-- string; otherwise (users created after the up, or whose role was changed
-- since) it becomes the current role name as text.
ALTER TABLE users ALTER COLUMN role DROP NOT NULL;
ALTER TABLE users ALTER COLUMN role DROP DEFAULT;
ALTER TABLE users ALTER COLUMN role TYPE TEXT USING (
    CASE
        WHEN role_legacy_present
         AND role = (CASE lower(btrim(role_legacy, E' \t\r\n'))
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
                     END)::user_role
        THEN role_legacy
        ELSE role::text
    END
);
ALTER TABLE users DROP COLUMN role_legacy_present;
ALTER TABLE users DROP COLUMN role_legacy;
DROP TYPE user_role;
