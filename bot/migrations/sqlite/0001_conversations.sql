-- Conversations, their messages and their event log (SQLite).
-- Times are Unix milliseconds; JSON columns hold domain values.
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL,
    channel       TEXT NOT NULL,
    locale        TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    state         TEXT NOT NULL,
    dialog_state  TEXT NOT NULL DEFAULT '',
    last_sequence INTEGER NOT NULL,
    turns         INTEGER NOT NULL DEFAULT 0,
    end_reason    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX conversations_by_customer ON conversations (customer_id, created_at);

CREATE TABLE messages (
    id                TEXT PRIMARY KEY,
    conversation_id   TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sequence          INTEGER NOT NULL,
    author            TEXT NOT NULL,
    text              TEXT NOT NULL,
    quick_replies     TEXT NOT NULL DEFAULT '[]',
    client_message_id TEXT,
    text_sha256       TEXT,
    reply_to          TEXT,
    nlu               TEXT,
    state_after       TEXT,
    created_at        INTEGER NOT NULL,
    UNIQUE (conversation_id, sequence),
    UNIQUE (conversation_id, client_message_id)
);

CREATE TABLE events (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sequence        INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    message_id      TEXT REFERENCES messages (id) ON DELETE CASCADE,
    payload         TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, sequence)
);

CREATE TABLE feedback (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    rating          INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
