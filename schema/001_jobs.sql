-- Durable jobs: exports, ingestion, training and embedding runs executed by the worker pool.
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued','running','completed','failed')),
    progress      REAL NOT NULL DEFAULT 0,
    params        TEXT NOT NULL DEFAULT '{}',   -- JSON
    result        TEXT,                         -- JSON
    error         TEXT,
    checkpoint    TEXT,                         -- JSON a kind may save to resume after restart
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,             -- unix ms
    started_at    INTEGER,
    finished_at   INTEGER
);
CREATE INDEX jobs_tenant_status ON jobs(tenant_id, status, created_at);
CREATE INDEX jobs_status ON jobs(status, created_at);
