-- Tenants (lms customer, learning organization, recs tenant, desk organization) and users.
CREATE TABLE tenants (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    domain              TEXT NOT NULL UNIQUE COLLATE NOCASE,
    plan                TEXT NOT NULL DEFAULT 'starter',
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','suspended')),
    features_enabled    TEXT NOT NULL DEFAULT '[]',     -- JSON array
    data_retention_days INTEGER NOT NULL DEFAULT 365,
    settings            TEXT NOT NULL DEFAULT '{}',     -- JSON object
    created_at          INTEGER NOT NULL
);

CREATE TABLE users (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    id               TEXT NOT NULL PRIMARY KEY,
    email            TEXT NOT NULL COLLATE NOCASE,
    name             TEXT NOT NULL,
    password_hash    TEXT NOT NULL,                 -- argon2id (libsodium crypto_pwhash_str)
    roles            TEXT NOT NULL DEFAULT '[]',    -- JSON array of role names
    department       TEXT,
    manager_id       TEXT REFERENCES users(id),
    avatar_url       TEXT,
    active           INTEGER NOT NULL DEFAULT 1,
    email_confirmed  INTEGER NOT NULL DEFAULT 0,
    last_login       INTEGER,
    preferences      TEXT NOT NULL DEFAULT '{}',    -- JSON object
    created_at       INTEGER NOT NULL,
    UNIQUE (tenant_id, email)
);
CREATE INDEX users_email ON users(email);
