-- Recommendations (contracts/recs.md): catalog, interactions, content embeddings, models and
-- their vectors, usage counters. Vectors are BLOBs of little-endian float32, `dim` values.

CREATE TABLE rc_items (
    ix INTEGER PRIMARY KEY,                    -- dense-ish row number: matrix rows follow it
    tenant_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',           -- JSON array of strings
    metadata TEXT NOT NULL DEFAULT '{}',       -- JSON object
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, item_id)
);
CREATE INDEX rc_items_category ON rc_items(tenant_id, category);

-- Content embedding of each item (hashed word and character n-grams through a fixed seeded
-- projection, L2-normalised), recomputed in the pool whenever the item is written.
CREATE TABLE rc_item_content (
    tenant_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    features_hash TEXT NOT NULL,               -- of the features it was computed from
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, item_id)
) WITHOUT ROWID;

CREATE TABLE rc_interactions (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    interaction_id TEXT NOT NULL,              -- UUIDv7, returned to the caller
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('view','click','purchase','like','dislike',
                                       'add_to_cart','remove_from_cart')),
    timestamp INTEGER NOT NULL,
    session_id TEXT,
    device_type TEXT,
    context TEXT,                              -- JSON object or NULL
    metadata TEXT,                             -- JSON object or NULL
    created_at INTEGER NOT NULL
);
CREATE INDEX rc_interactions_user ON rc_interactions(tenant_id, user_id, timestamp);
CREATE INDEX rc_interactions_time ON rc_interactions(tenant_id, timestamp);
CREATE UNIQUE INDEX rc_interactions_id ON rc_interactions(tenant_id, interaction_id);

-- A trained (or content+popularity) model: model_version like 'mf-3', 'tt-1', 'gnn-2',
-- numbered per tenant and type. status: training -> ready | failed. One current per tenant.
CREATE TABLE rc_models (
    tenant_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_type TEXT NOT NULL
        CHECK (model_type IN ('matrix_factorization','two_tower','gnn','content_popularity')),
    seq INTEGER NOT NULL,                      -- the N in mf-N
    status TEXT NOT NULL DEFAULT 'training' CHECK (status IN ('training','ready','failed')),
    job_id TEXT,
    dim INTEGER NOT NULL,
    hyperparameters TEXT NOT NULL DEFAULT '{}',
    data_range TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',        -- {"recall_at_10","ndcg_at_10","popularity_recall_at_10",...}
    losses TEXT NOT NULL DEFAULT '[]',         -- per-epoch training loss
    users INTEGER NOT NULL DEFAULT 0,
    items INTEGER NOT NULL DEFAULT 0,
    interactions INTEGER NOT NULL DEFAULT 0,
    is_current INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    PRIMARY KEY (tenant_id, model_version)
) WITHOUT ROWID;

-- A model's vectors: one row per user and per item (kind 'user' / 'item').
CREATE TABLE rc_model_vectors (
    tenant_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user','item')),
    entity_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (tenant_id, model_version, kind, entity_id)
) WITHOUT ROWID;

-- Usage per tenant per UTC day (GET /api/v1/usage), counted as calls are served.
CREATE TABLE rc_usage_daily (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,                         -- YYYY-MM-DD
    api_calls INTEGER NOT NULL DEFAULT 0,
    recommendations_served INTEGER NOT NULL DEFAULT 0,
    items_indexed INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum REAL NOT NULL DEFAULT 0,
    latency_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;
