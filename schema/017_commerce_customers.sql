-- Customer analytics (src/surfaces/commerce/customers.c): a profile reads one customer's web
-- events (sessions, product views); without this index that is a scan of the tenant's events.
CREATE INDEX cm_events_customer ON cm_events(tenant_id, customer_id, timestamp);
