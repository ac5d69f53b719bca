-- desk SLA: per-tenant rules and business calendar, and each ticket's deadlines and breaches.
CREATE TABLE sla_rules (
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    ticket_type           TEXT NOT NULL CHECK (ticket_type IN ('bug','feature','support','incident','question','task')),
    priority              TEXT CHECK (priority IS NULL OR priority IN ('low','medium','high','critical')),  -- NULL: any
    response_time_hours   REAL NOT NULL CHECK (response_time_hours >= 0.001),
    resolution_time_hours REAL NOT NULL CHECK (resolution_time_hours >= response_time_hours AND resolution_time_hours <= 8760),
    updated_at            INTEGER NOT NULL
);
CREATE UNIQUE INDEX sla_rules_key ON sla_rules(tenant_id, ticket_type, coalesce(priority, ''));

-- no row: 24x7 in UTC. Times are minutes of the local day; the zone is a fixed UTC offset.
CREATE TABLE sla_calendars (
    tenant_id          TEXT PRIMARY KEY REFERENCES tenants(id),
    utc_offset_minutes INTEGER NOT NULL DEFAULT 0 CHECK (utc_offset_minutes BETWEEN -840 AND 840),
    working_days       INTEGER NOT NULL DEFAULT 127 CHECK (working_days BETWEEN 1 AND 127),  -- bit 0 Sunday .. bit 6 Saturday
    start_minute       INTEGER NOT NULL DEFAULT 0,
    end_minute         INTEGER NOT NULL DEFAULT 1440 CHECK (start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute),
    holidays           TEXT NOT NULL DEFAULT '[]',   -- JSON array of "YYYY-MM-DD", ascending
    updated_at         INTEGER NOT NULL
);

-- Deadlines are unix ms. The resolution clock stops while paused_since is set (pending,
-- waiting_on_customer, resolved, closed); resuming moves resolution_deadline on by the
-- business time spent stopped, which paused_ms accumulates.
CREATE TABLE ticket_sla (
    ticket_id              TEXT PRIMARY KEY REFERENCES tickets(id) ON DELETE CASCADE,
    tenant_id              TEXT NOT NULL,
    created_at             INTEGER NOT NULL,        -- the ticket's creation
    response_hours         REAL NOT NULL,           -- the rule in force at creation
    resolution_hours       REAL NOT NULL,
    response_deadline      INTEGER NOT NULL,
    resolution_deadline    INTEGER NOT NULL,
    paused_since           INTEGER,
    paused_ms              INTEGER NOT NULL DEFAULT 0,
    first_response_at      INTEGER,
    resolved_at            INTEGER,
    response_breached_at   INTEGER,
    resolution_breached_at INTEGER
);
CREATE INDEX ticket_sla_tenant_created ON ticket_sla(tenant_id, created_at);
CREATE INDEX ticket_sla_response_due ON ticket_sla(response_deadline)
    WHERE first_response_at IS NULL AND resolved_at IS NULL AND response_breached_at IS NULL;
CREATE INDEX ticket_sla_resolution_due ON ticket_sla(resolution_deadline)
    WHERE paused_since IS NULL AND resolution_breached_at IS NULL;
CREATE INDEX ticket_sla_response_breaches ON ticket_sla(tenant_id, response_breached_at)
    WHERE response_breached_at IS NOT NULL;
CREATE INDEX ticket_sla_resolution_breaches ON ticket_sla(tenant_id, resolution_breached_at)
    WHERE resolution_breached_at IS NOT NULL;
