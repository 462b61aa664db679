-- Hand-overs to human agents (SQLite). One row per ticket; the ticket is
-- inserted in the same transaction as the turn that escalates, so a turn
-- is never stored without its ticket or the other way round.
CREATE TABLE tickets (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    customer_id     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    priority        TEXT NOT NULL CHECK (priority IN ('normal', 'high', 'urgent')),
    skill           TEXT NOT NULL,
    -- Queue order, smallest first: the enqueue time less the priority's
    -- head start (priority aging).
    sort_key        INTEGER NOT NULL,
    auth_level      TEXT NOT NULL,
    -- JSON object: the slots the bot had collected.
    slots           TEXT NOT NULL DEFAULT '{}',
    state           TEXT NOT NULL CHECK (state IN
                        ('queued', 'claimed', 'resolved', 'handed_back', 'cancelled', 'dead_letter')),
    agent_id        TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    deliveries      INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT,
    note            TEXT,
    created_at      INTEGER NOT NULL,
    claimed_at      INTEGER,
    closed_at       INTEGER,
    updated_at      INTEGER NOT NULL
);
-- At most one open ticket per conversation: a second publication of the
-- same hand-over cannot become a second ticket.
CREATE UNIQUE INDEX tickets_one_open ON tickets (conversation_id)
    WHERE state IN ('queued', 'claimed');
CREATE INDEX tickets_waiting ON tickets (state, skill, sort_key);
CREATE INDEX tickets_by_agent ON tickets (agent_id, state);

-- Committed tickets a broker backend has not yet acknowledged (the
-- transactional outbox; the embedded backend reads `tickets` directly).
CREATE TABLE ticket_outbox (
    ticket_id    TEXT PRIMARY KEY REFERENCES tickets (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX ticket_outbox_pending ON ticket_outbox (published_at, created_at);

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    availability   TEXT NOT NULL CHECK (availability IN ('available', 'busy', 'offline')),
    -- JSON array of skill names.
    skills         TEXT NOT NULL,
    max_concurrent INTEGER NOT NULL CHECK (max_concurrent > 0),
    updated_at     INTEGER NOT NULL
);
