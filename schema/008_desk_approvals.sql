-- desk: feature approval requests, staging environments, deployments and their history.

-- one row per request; its decision is written into the same row (status, comments, decided_*)
CREATE TABLE approval_requests (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT PRIMARY KEY,
    ticket_id    TEXT NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    description  TEXT NOT NULL,
    requester_id TEXT NOT NULL REFERENCES users(id),
    approver_id  TEXT NOT NULL REFERENCES users(id),
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','approved','rejected')),
    comments     TEXT,
    decided_by   TEXT REFERENCES users(id),
    created_at   INTEGER NOT NULL,
    decided_at   INTEGER
);
-- at most one pending request per ticket
CREATE UNIQUE INDEX approval_requests_one_pending ON approval_requests(tenant_id, ticket_id)
    WHERE status = 'pending';
CREATE INDEX approval_requests_ticket ON approval_requests(tenant_id, ticket_id, created_at);
CREATE INDEX approval_requests_approver ON approval_requests(tenant_id, approver_id, status);
CREATE INDEX approval_requests_status ON approval_requests(tenant_id, status, created_at);

CREATE TABLE staging_environments (
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    status                TEXT NOT NULL DEFAULT 'available'
                          CHECK (status IN ('available','deploying','in_use','maintenance')),
    url                   TEXT,
    current_deployment_id TEXT,             -- the deployment in progress on it or live on it
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE staging_deployments (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    id               TEXT PRIMARY KEY,
    ticket_id        TEXT NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    environment_id   TEXT NOT NULL REFERENCES staging_environments(id),
    approval_id      TEXT NOT NULL REFERENCES approval_requests(id) ON DELETE CASCADE,
    version          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending','in_progress','completed','failed','rolled_back')),
    deployment_notes TEXT,
    requested_by     TEXT NOT NULL REFERENCES users(id),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    completed_at     INTEGER,                -- when it finished: completed or failed
    rollback_reason  TEXT
);
-- at most one active (pending or in progress) deployment per environment
CREATE UNIQUE INDEX staging_deployments_one_active ON staging_deployments(tenant_id, environment_id)
    WHERE status IN ('pending','in_progress');
CREATE INDEX staging_deployments_created ON staging_deployments(tenant_id, created_at);
CREATE INDEX staging_deployments_env ON staging_deployments(tenant_id, environment_id, created_at);

-- one row per status change: who, from, to, notes, when
CREATE TABLE staging_deployment_history (
    tenant_id     TEXT NOT NULL,
    id            TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES staging_deployments(id) ON DELETE CASCADE,
    actor_id      TEXT,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    notes         TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX staging_deployment_history_dep ON staging_deployment_history(deployment_id, created_at);

-- a deleted deployment (its ticket was deleted) frees the environment it occupied
CREATE TRIGGER staging_deployments_delete AFTER DELETE ON staging_deployments BEGIN
    UPDATE staging_environments SET status = 'available', current_deployment_id = NULL
     WHERE id = old.environment_id AND current_deployment_id = old.id;
END;
