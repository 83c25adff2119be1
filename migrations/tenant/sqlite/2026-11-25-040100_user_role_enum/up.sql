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
--
-- SQLite cannot alter a column's type/CHECK: the table is rebuilt. Other
-- tables reference users(id) (no ON DELETE actions), so foreign-key checks are
-- deferred to COMMIT: DROP TABLE users counts the referencing rows as
-- violations and re-inserting the same ids into the new users table clears
-- them again, so the commit succeeds only if every id came back. The new table
-- is created under its final name (no RENAME), and the AUTOINCREMENT high-water
-- mark in sqlite_sequence is carried over so deleted ids are never reused.
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
    role          TEXT      NOT NULL DEFAULT 'staff'
                            CHECK (role IN ('owner', 'manager', 'cashier', 'staff')),
    is_active     BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    role_legacy          TEXT,
    role_legacy_present  BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE UNIQUE INDEX users_username_key ON users (username);
CREATE INDEX users_email_idx ON users (email);

INSERT INTO users (id, username, full_name, email, phone, password_hash, role,
                   is_active, created_at, updated_at, role_legacy, role_legacy_present)
SELECT id, username, full_name, email, phone, password_hash,
       CASE lower(trim(role, char(32, 9, 13, 10)))
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
       END,
       is_active, created_at, updated_at, role, TRUE
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
