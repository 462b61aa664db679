-- Payments the bot made for customers: one row per idempotency key,
-- committed (state 'confirmed') before the bank is called. The reconciler
-- finishes rows left confirmed, submitted, accepted or unknown.
CREATE TABLE payments (
    idempotency_key TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    from_account    TEXT NOT NULL,
    payee           TEXT NOT NULL,
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN
                        ('confirmed', 'submitted', 'accepted', 'settled', 'rejected', 'unknown')),
    -- The bank's reference (accepted, settled) or reason (rejected).
    detail          TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX payments_open ON payments (state, updated_at);
CREATE INDEX payments_by_conversation ON payments (conversation_id);
