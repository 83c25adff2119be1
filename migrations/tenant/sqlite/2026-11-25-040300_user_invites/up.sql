-- Phase 4 / user_invites: pending invitations of new staff. Only a hash of the
-- invitation token is stored (token_hash, e.g. hex SHA-256). An invite is
-- pending while accepted_at and revoked_at are NULL and expires_at is in the
-- future; accepting it creates the users row referenced by accepted_user_id.
-- role uses the same closed set as users.role (PostgreSQL: the user_role enum
-- from 2026-11-25-040100_user_role_enum; SQLite: the same CHECK).
CREATE TABLE user_invites (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    email             TEXT      NOT NULL,
    role              TEXT      NOT NULL DEFAULT 'staff'
                          CHECK (role IN ('owner', 'manager', 'cashier', 'staff')),
    token_hash        TEXT      NOT NULL,
    invited_by        BIGINT    NOT NULL REFERENCES users (id),
    expires_at        TIMESTAMP NOT NULL,
    accepted_at       TIMESTAMP,
    accepted_user_id  BIGINT    REFERENCES users (id),
    revoked_at        TIMESTAMP,
    created_at        TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX user_invites_token_hash_key ON user_invites (token_hash);
CREATE INDEX user_invites_email_idx ON user_invites (email);
CREATE INDEX user_invites_invited_by_idx ON user_invites (invited_by);
CREATE INDEX user_invites_accepted_user_id_idx ON user_invites (accepted_user_id);
