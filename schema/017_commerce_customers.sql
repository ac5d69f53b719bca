-- Customer and product analytics (src/surfaces/commerce/rfm.c, customers.c, products.c).

-- A profile reads one customer's web events (sessions, product views); without this index that
-- is a scan of the tenant's events.
CREATE INDEX cm_events_customer ON cm_events(tenant_id, customer_id, timestamp);

-- Product performance (src/surfaces/commerce/products.c) counts, per product, the sessions that
-- viewed it and those that bought it in a time range: covered by this index (two range scans,
-- product_view and purchase), instead of looking up every event of the range.
CREATE INDEX cm_events_type_time ON cm_events(tenant_id, type, timestamp, product_id, session_id);

-- Per customer and currency, their counted orders (status neither cancelled nor refunded):
-- orders, Σ total_m, first and last created_at. Kept equal to a recomputation by the triggers
-- below, in the same transaction as the order change, so RFM "as of now" reads one row per
-- customer instead of every order. A customer without counted orders in a currency has no row.
CREATE TABLE cm_customer_orders (
    tenant_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    orders INTEGER NOT NULL,
    monetary_m INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, currency, customer_id)
) WITHOUT ROWID;

INSERT INTO cm_customer_orders(tenant_id, currency, customer_id, orders, monetary_m, first_at,
                               last_at)
SELECT tenant_id, currency, customer_id, count(*), sum(total_m), min(created_at), max(created_at)
FROM cm_orders WHERE status NOT IN ('cancelled', 'refunded')
GROUP BY tenant_id, currency, customer_id;

-- A new counted order adds to its customer's row.
CREATE TRIGGER cm_customer_orders_ins AFTER INSERT ON cm_orders
WHEN new.status NOT IN ('cancelled', 'refunded')
BEGIN
    INSERT INTO cm_customer_orders(tenant_id, currency, customer_id, orders, monetary_m, first_at,
                                   last_at)
    VALUES (new.tenant_id, new.currency, new.customer_id, 1, new.total_m, new.created_at,
            new.created_at)
    ON CONFLICT DO UPDATE SET orders = orders + 1, monetary_m = monetary_m + excluded.monetary_m,
        first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at);
END;

-- A changed or deleted order: its old (and new) customer row is recomputed from the orders
-- (first/last cannot be taken back incrementally): one customer's orders each, through
-- cm_orders_customer (012). Each key gets its own statements with plain equalities, and the
-- index is named: without statistics the planner prefers the primary key's tenant_id prefix,
-- which is a scan of all the tenant's orders for every changed order.
CREATE TRIGGER cm_customer_orders_upd AFTER UPDATE OF tenant_id, customer_id, currency, status,
    total_m, created_at ON cm_orders
WHEN old.tenant_id IS NOT new.tenant_id OR old.customer_id IS NOT new.customer_id
  OR old.currency IS NOT new.currency OR old.status IS NOT new.status
  OR old.total_m IS NOT new.total_m OR old.created_at IS NOT new.created_at
BEGIN
    DELETE FROM cm_customer_orders
    WHERE tenant_id = old.tenant_id AND currency = old.currency AND customer_id = old.customer_id;
    INSERT INTO cm_customer_orders(tenant_id, currency, customer_id, orders, monetary_m, first_at,
                                   last_at)
    SELECT tenant_id, currency, customer_id, count(*), sum(total_m), min(created_at),
           max(created_at)
    FROM cm_orders INDEXED BY cm_orders_customer
    WHERE tenant_id = old.tenant_id AND customer_id = old.customer_id AND currency = old.currency
      AND status NOT IN ('cancelled', 'refunded')
    GROUP BY tenant_id, currency, customer_id;
    DELETE FROM cm_customer_orders
    WHERE tenant_id = new.tenant_id AND currency = new.currency AND customer_id = new.customer_id
      AND (old.tenant_id IS NOT new.tenant_id OR old.currency IS NOT new.currency
           OR old.customer_id IS NOT new.customer_id);
    INSERT INTO cm_customer_orders(tenant_id, currency, customer_id, orders, monetary_m, first_at,
                                   last_at)
    SELECT tenant_id, currency, customer_id, count(*), sum(total_m), min(created_at),
           max(created_at)
    FROM cm_orders INDEXED BY cm_orders_customer
    WHERE tenant_id = new.tenant_id AND customer_id = new.customer_id AND currency = new.currency
      AND status NOT IN ('cancelled', 'refunded')
      AND (old.tenant_id IS NOT new.tenant_id OR old.currency IS NOT new.currency
           OR old.customer_id IS NOT new.customer_id)
    GROUP BY tenant_id, currency, customer_id;
END;

CREATE TRIGGER cm_customer_orders_del AFTER DELETE ON cm_orders
WHEN old.status NOT IN ('cancelled', 'refunded')
BEGIN
    DELETE FROM cm_customer_orders
    WHERE tenant_id = old.tenant_id AND currency = old.currency AND customer_id = old.customer_id;
    INSERT INTO cm_customer_orders(tenant_id, currency, customer_id, orders, monetary_m, first_at,
                                   last_at)
    SELECT tenant_id, currency, customer_id, count(*), sum(total_m), min(created_at),
           max(created_at)
    FROM cm_orders INDEXED BY cm_orders_customer
    WHERE tenant_id = old.tenant_id AND customer_id = old.customer_id AND currency = old.currency
      AND status NOT IN ('cancelled', 'refunded')
    GROUP BY tenant_id, currency, customer_id;
END;
