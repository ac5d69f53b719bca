-- Outgoing email: the outbox, written in the caller's transaction and delivered after commit.
CREATE TABLE outbox (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL PRIMARY KEY,       -- UUIDv7; also the Message-ID and .eml name
    to_addr         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,                   -- UTF-8 plain text as given
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued','sending','sent','failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,                -- unix ms; due when <= now
    last_error      TEXT,
    created_at      INTEGER NOT NULL,                -- unix ms; the message's Date
    sent_at         INTEGER
);
-- the delivery scan: status = 'queued' AND next_attempt_at <= now ORDER BY next_attempt_at
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_tenant ON outbox(tenant_id, created_at);
