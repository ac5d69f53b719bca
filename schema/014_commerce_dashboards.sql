-- Commerce dashboards and alerts (contracts/commerce.md sections 3.1-3.3): dashboards with their
-- widgets (each widget's configuration is a metric query), alert rules over metric queries, and
-- the alerts they open. Times are unix ms.

CREATE TABLE cm_dashboards (
    tenant_id TEXT NOT NULL,
    dashboard_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL CHECK (category IN ('executive','operations','finance','marketing')),
    is_public INTEGER NOT NULL DEFAULT 0,
    created_by TEXT,                                -- user id (NULL for demo data)
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, dashboard_id)
) WITHOUT ROWID;

-- A dashboard's widgets in display order (seq). configuration: the metric query as JSON text,
-- plus an optional "group_by" (region, channel or currency).
CREATE TABLE cm_widgets (
    tenant_id TEXT NOT NULL,
    dashboard_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    widget_id TEXT NOT NULL,
    type TEXT NOT NULL
        CHECK (type IN ('metric_card','line_chart','bar_chart','pie_chart','table','map')),
    title TEXT NOT NULL,
    pos_x INTEGER NOT NULL,
    pos_y INTEGER NOT NULL,
    pos_w INTEGER NOT NULL,
    pos_h INTEGER NOT NULL,
    configuration TEXT NOT NULL,
    refresh_interval INTEGER NOT NULL CHECK (refresh_interval >= 5),
    PRIMARY KEY (tenant_id, dashboard_id, seq),
    UNIQUE (tenant_id, dashboard_id, widget_id),
    FOREIGN KEY (tenant_id, dashboard_id) REFERENCES cm_dashboards(tenant_id, dashboard_id)
        ON DELETE CASCADE
) WITHOUT ROWID;

-- query: a metric query with a relative time_window (ending at evaluation time). The last
-- evaluation's figure or error is kept for GET /alerts/rules.
CREATE TABLE cm_alert_rules (
    tenant_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL,
    metric_type TEXT NOT NULL,
    comparison TEXT NOT NULL CHECK (comparison IN ('gt','gte','lt','lte','eq')),
    threshold REAL NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('low','medium','high','critical')),
    enabled INTEGER NOT NULL DEFAULT 1,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_evaluated_at INTEGER,
    last_value REAL,
    last_error TEXT,
    PRIMARY KEY (tenant_id, rule_id)
) WITHOUT ROWID;
CREATE INDEX cm_alert_rules_enabled ON cm_alert_rules(enabled, tenant_id);

-- Alerts keep a copy of what their rule said when they opened, so they read the same after the
-- rule changes or goes. rule_id is not a foreign key for that reason.
CREATE TABLE cm_alerts (
    tenant_id TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('low','medium','high','critical')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','acknowledged','resolved')),
    metric_type TEXT NOT NULL,
    comparison TEXT NOT NULL,
    threshold_value REAL NOT NULL,
    current_value REAL NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    acknowledged_at INTEGER,
    acknowledged_by TEXT,                           -- the caller's email, or api_key:<name>
    acknowledged_by_id TEXT,                        -- user id or API key id
    resolved_at INTEGER,
    PRIMARY KEY (tenant_id, alert_id)
) WITHOUT ROWID;
CREATE INDEX cm_alerts_time ON cm_alerts(tenant_id, created_at);
-- At most one open (active or acknowledged) alert per rule.
CREATE UNIQUE INDEX cm_alerts_open ON cm_alerts(tenant_id, rule_id)
    WHERE status IN ('active','acknowledged');
