-- desk: tickets with per-tenant human numbers, comments, full history, FTS5 search.
CREATE TABLE desk_counters (
    tenant_id   TEXT PRIMARY KEY,
    last_ticket INTEGER NOT NULL DEFAULT 0      -- TKT numbers are never reused
);

CREATE TABLE tickets (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    id               TEXT PRIMARY KEY,
    number           INTEGER NOT NULL,          -- rendered TKT-001
    title            TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    type             TEXT NOT NULL CHECK (type IN ('bug','feature','support','incident','question','task')),
    priority         TEXT NOT NULL CHECK (priority IN ('low','medium','high','critical')),
    status           TEXT NOT NULL CHECK (status IN ('open','in_progress','pending','waiting_on_customer','resolved','closed')),
    requester_id     TEXT NOT NULL REFERENCES users(id),
    assignee_id      TEXT REFERENCES users(id),
    resolution_notes TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    first_response_at INTEGER,                  -- first public comment by someone other than the requester
    resolved_at      INTEGER,
    closed_at        INTEGER,
    UNIQUE (tenant_id, number)
);
CREATE INDEX tickets_tenant_created ON tickets(tenant_id, created_at);
CREATE INDEX tickets_tenant_status ON tickets(tenant_id, status, created_at);
CREATE INDEX tickets_tenant_assignee ON tickets(tenant_id, assignee_id, created_at);
CREATE INDEX tickets_tenant_requester ON tickets(tenant_id, requester_id, created_at);

CREATE TABLE ticket_comments (
    tenant_id    TEXT NOT NULL,
    id           TEXT PRIMARY KEY,
    ticket_id    TEXT NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    author_id    TEXT NOT NULL REFERENCES users(id),
    content      TEXT NOT NULL,
    is_internal  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE INDEX ticket_comments_ticket ON ticket_comments(ticket_id, created_at);

-- one row per changed field: who, field, old, new, when
CREATE TABLE ticket_history (
    tenant_id   TEXT NOT NULL,
    id          TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    actor_id    TEXT,
    field       TEXT NOT NULL,
    old_value   TEXT,
    new_value   TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ticket_history_ticket ON ticket_history(ticket_id, created_at);

-- full-text search over title and description (external content: the tickets table)
CREATE VIRTUAL TABLE tickets_fts USING fts5(title, description, content='tickets', content_rowid='rowid');
CREATE TRIGGER tickets_fts_insert AFTER INSERT ON tickets BEGIN
    INSERT INTO tickets_fts(rowid, title, description) VALUES (new.rowid, new.title, new.description);
END;
CREATE TRIGGER tickets_fts_delete AFTER DELETE ON tickets BEGIN
    INSERT INTO tickets_fts(tickets_fts, rowid, title, description) VALUES ('delete', old.rowid, old.title, old.description);
END;
CREATE TRIGGER tickets_fts_update AFTER UPDATE OF title, description ON tickets BEGIN
    INSERT INTO tickets_fts(tickets_fts, rowid, title, description) VALUES ('delete', old.rowid, old.title, old.description);
    INSERT INTO tickets_fts(rowid, title, description) VALUES (new.rowid, new.title, new.description);
END;
