-- Phase 3 / ai_assistant: conversations of a staff user with the assistant.
-- assistant_messages.role is the chat role of the message author
-- ('system', 'user', 'assistant', 'tool'), not the staff role.
-- user_id references users WITHOUT an ON DELETE action (users are deactivated,
-- not deleted); shop_id is the shop the conversation is about, if any.
CREATE TABLE assistant_sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     BIGINT    NOT NULL REFERENCES users (id),
    shop_id     BIGINT    REFERENCES shop_profile (id) ON DELETE SET NULL,
    title       TEXT,
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX assistant_sessions_user_id_updated_at_idx ON assistant_sessions (user_id, updated_at);
CREATE INDEX assistant_sessions_shop_id_idx ON assistant_sessions (shop_id);

CREATE TABLE assistant_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  BIGINT    NOT NULL REFERENCES assistant_sessions (id) ON DELETE CASCADE,
    role        TEXT      NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content     TEXT      NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX assistant_messages_session_id_id_idx ON assistant_messages (session_id, id);
