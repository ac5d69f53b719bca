-- Indexes the ticket list's sorts and filter combinations use (measured by tools/bench/desk).
CREATE INDEX tickets_tenant_updated ON tickets(tenant_id, updated_at);
CREATE INDEX tickets_tenant_filters ON tickets(tenant_id, status, priority, type, assignee_id);
CREATE INDEX tickets_tenant_priority ON tickets(tenant_id, priority, created_at);
CREATE INDEX tickets_tenant_type ON tickets(tenant_id, type, created_at);
