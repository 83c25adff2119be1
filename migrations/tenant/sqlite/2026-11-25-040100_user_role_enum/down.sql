-- Restore users.role as free TEXT (nullable, no CHECK) by rebuilding the table
-- exactly as created by 2026-11-25-000100_baseline_users.
-- role becomes role_legacy (the exact original string, NULL included) for rows
-- that existed before the up AND whose role still equals the mapping of that
-- string; otherwise (users created after the up, or whose role was changed
-- since) it becomes the current role name as text.
PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE users_rebuild_rows AS SELECT * FROM users;
CREATE TEMP TABLE users_rebuild_seq AS SELECT seq FROM sqlite_sequence WHERE name = 'users';

DROP TABLE users;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT      NOT NULL,
    full_name     TEXT,
    email         TEXT,
    phone         TEXT,
    password_hash TEXT      NOT NULL,
    role          TEXT,
    is_active     BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX users_username_key ON users (username);
CREATE INDEX users_email_idx ON users (email);

INSERT INTO users (id, username, full_name, email, phone, password_hash, role,
                   is_active, created_at, updated_at)
SELECT id, username, full_name, email, phone, password_hash,
       CASE
           WHEN role_legacy_present
            AND role = (CASE lower(trim(role_legacy, char(32, 9, 13, 10)))
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
                        END)
           THEN role_legacy
           ELSE role
       END,
       is_active, created_at, updated_at
  FROM temp.users_rebuild_rows
 ORDER BY id;

UPDATE sqlite_sequence
   SET seq = max(seq, COALESCE((SELECT seq FROM temp.users_rebuild_seq), 0))
 WHERE name = 'users';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'users', seq FROM temp.users_rebuild_seq
 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'users');

DROP TABLE temp.users_rebuild_seq;
DROP TABLE temp.users_rebuild_rows;
