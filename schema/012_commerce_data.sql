-- Commerce (contracts/commerce.md): sources, batches, rejected records and the canonical
-- records each data_type means (README "Commerce canonical records"). Money is integer
-- ten-thousandths of the currency unit (*_m columns) so sums are exact; times are unix ms.

CREATE TABLE cm_sources (
    tenant_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'api' CHECK (type IN ('api','database','file','stream')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','inactive','error')),
    configuration TEXT NOT NULL DEFAULT '{}',   -- JSON object
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_ingestion INTEGER,
    total_records INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, source_id)
) WITHOUT ROWID;

CREATE TABLE cm_batches (
    tenant_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    format TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',        -- JSON object as sent
    schema_version TEXT,
    status TEXT NOT NULL DEFAULT 'processing'
        CHECK (status IN ('processing','completed','failed','cancelled')),
    validation_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (validation_status IN ('pending','passed','failed')),
    records_received INTEGER NOT NULL,
    processed_records INTEGER NOT NULL DEFAULT 0,   -- records looked at (stored or rejected)
    stored_records INTEGER NOT NULL DEFAULT 0,
    failed_records INTEGER NOT NULL DEFAULT 0,
    duplicate_records INTEGER NOT NULL DEFAULT 0,   -- stored records that updated an existing id
    payload TEXT,                                   -- records (JSON array) until processed
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    PRIMARY KEY (tenant_id, batch_id)
) WITHOUT ROWID;
CREATE INDEX cm_batches_source ON cm_batches(tenant_id, source_id, created_at);

-- Records that failed validation, kept with their reasons for the batch's errors and the
-- data-quality reports. check_type: completeness (required field missing), validity (type,
-- enum, format), accuracy (values that cannot be true), consistency.
CREATE TABLE cm_rejects (
    tenant_id TEXT NOT NULL,
    batch_id TEXT,                                  -- NULL for stream records
    source_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    record_index INTEGER NOT NULL,                  -- position in the batch (0-based)
    record_key TEXT,                                -- the natural id, when the record had one
    field TEXT NOT NULL,                            -- "data[17].total"
    check_type TEXT NOT NULL CHECK (check_type IN ('completeness','validity','accuracy','consistency')),
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX cm_rejects_batch ON cm_rejects(tenant_id, batch_id, record_index);
CREATE INDEX cm_rejects_source ON cm_rejects(tenant_id, source_id, data_type, created_at);

CREATE TABLE cm_orders (
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    total_m INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'placed'
        CHECK (status IN ('placed','paid','shipped','delivered','cancelled','refunded')),
    channel TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    source_id TEXT NOT NULL,
    batch_id TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
) WITHOUT ROWID;
CREATE INDEX cm_orders_time ON cm_orders(tenant_id, created_at);
CREATE INDEX cm_orders_customer ON cm_orders(tenant_id, customer_id, created_at);

CREATE TABLE cm_order_items (
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    line INTEGER NOT NULL,                          -- position in the order's items
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price_m INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, order_id, line)
) WITHOUT ROWID;
CREATE INDEX cm_order_items_product ON cm_order_items(tenant_id, product_id);

CREATE TABLE cm_transactions (
    tenant_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    amount_m INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    type TEXT NOT NULL DEFAULT 'sale' CHECK (type IN ('sale','refund')),
    order_id TEXT,
    customer_id TEXT,
    currency TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    payment_method TEXT,
    source_id TEXT NOT NULL,
    batch_id TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, transaction_id)
) WITHOUT ROWID;
CREATE INDEX cm_transactions_time ON cm_transactions(tenant_id, timestamp);

CREATE TABLE cm_products (
    tenant_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    name TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    price_m INTEGER,
    cost_m INTEGER,
    sku TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    source_id TEXT NOT NULL,
    batch_id TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, product_id)
) WITHOUT ROWID;
CREATE INDEX cm_products_category ON cm_products(tenant_id, category);

CREATE TABLE cm_customers (
    tenant_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_at INTEGER,
    email TEXT,
    name TEXT,
    region TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL DEFAULT '',
    source_id TEXT NOT NULL,
    batch_id TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
) WITHOUT ROWID;

-- Inventory snapshots: natural id is (product_id, warehouse, timestamp).
CREATE TABLE cm_inventory (
    tenant_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    warehouse TEXT NOT NULL DEFAULT '',
    timestamp INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    reorder_level INTEGER,
    source_id TEXT NOT NULL,
    batch_id TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, product_id, warehouse, timestamp)
) WITHOUT ROWID;
CREATE INDEX cm_inventory_time ON cm_inventory(tenant_id, timestamp);

CREATE TABLE cm_events (
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL
        CHECK (type IN ('page_view','product_view','add_to_cart','checkout','purchase')),
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    customer_id TEXT,
    product_id TEXT,
    source_id TEXT NOT NULL,
    batch_id TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
) WITHOUT ROWID;
CREATE INDEX cm_events_time ON cm_events(tenant_id, timestamp);
CREATE INDEX cm_events_product ON cm_events(tenant_id, product_id, type);

-- Per-tenant commerce settings: the currency records without one are in.
CREATE TABLE cm_settings (
    tenant_id TEXT NOT NULL PRIMARY KEY,
    default_currency TEXT NOT NULL DEFAULT 'USD'
) WITHOUT ROWID;
