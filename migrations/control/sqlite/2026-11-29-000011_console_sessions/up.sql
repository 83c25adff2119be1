-- Operator console sessions: a signed-in browser holds a random session
-- token in an HttpOnly cookie; only its SHA-256 is kept here (`token_hash`).
-- `csrf_token` is the per-session token every unsafe console request must
-- echo (a hidden form field or the X-CSRF-Token header); it is no secret
-- worth hashing: it only proves the form came from a page of this session.
-- Signing out sets `revoked_at`; past `expires_at` the session is refused.

CREATE TABLE console_sessions (
    id              TEXT PRIMARY KEY NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    csrf_token      TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    last_seen_at    TIMESTAMP NOT NULL,
    revoked_at      TIMESTAMP,
    ip              TEXT,
    user_agent      TEXT
);
-- Sweeping expired sessions.
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
