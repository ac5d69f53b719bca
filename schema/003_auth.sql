-- Sessions (refresh-token families), refresh and one-time tokens, API keys, audit log.
ALTER TABLE tenants ADD COLUMN allow_registration INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN default_role TEXT NOT NULL DEFAULT 'viewer';

CREATE TABLE auth_sessions (
    tenant_id      TEXT NOT NULL,
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id),
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions(user_id);

-- Opaque refresh tokens, stored only as BLAKE2b-256 hashes; rotated on every use.
CREATE TABLE refresh_tokens (
    tenant_id   TEXT NOT NULL,
    hash        TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES auth_sessions(id),
    user_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

-- Single-use email confirmation and password reset tokens, hashed at rest.
CREATE TABLE auth_tokens (
    tenant_id   TEXT NOT NULL,
    hash        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('confirm_email', 'reset_password')),
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE api_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    permissions  TEXT NOT NULL,              -- JSON array: read, write, internal
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_by   TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_at);

CREATE TABLE audit_log (
    tenant_id   TEXT NOT NULL,
    id          TEXT PRIMARY KEY,
    actor_id    TEXT,
    actor_kind  TEXT NOT NULL,                -- user | api_key | anonymous
    method      TEXT NOT NULL,
    route       TEXT NOT NULL,
    path        TEXT NOT NULL,
    target      TEXT,
    status      INTEGER NOT NULL,
    request_id  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, created_at);
