-- Commerce rollups (README "### Metrics and rollups"): per-day (and per-hour) sums of the
-- canonical records that the metric engine and product analytics read instead of scanning
-- millions of rows, kept exact by a dirty-day protocol:
--
--   * triggers on the base tables mark every UTC day whose figures a change touches in
--     cm_rollup_dirty, bumping its version (one small upsert per changed row);
--   * the durable job "commerce.rollup" (src/surfaces/commerce/rollup.c) reads a dirty day's
--     version and the day's base rows in one read transaction, recomputes every rollup row of
--     the day, and writes them through job_write only if the version is still the one it read
--     (then deletes the dirty row); otherwise the day stays dirty for the next run;
--   * readers take the rollup rows of clean days and the base tables for dirty days in one
--     read transaction, so a figure is exact whatever the job has done so far.
--
-- day = floor(unix ms / 86400000) (UTC day number), hour = floor(unix ms / 3600000).
-- "Counted" orders are those whose status is neither cancelled nor refunded; every rollup of
-- orders holds only them. Money is ten-thousandths (*_m), as in the base tables.
-- last_ingested_at = newest ingested_at of the base rows behind the rollup row.

CREATE TABLE cm_rollup_dirty (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;

-- Counted orders per UTC day and (region, channel, currency). min/max_order_m: the smallest
-- and largest order total of the group.
CREATE TABLE cm_rollup_orders_day (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    region TEXT NOT NULL,
    channel TEXT NOT NULL,
    currency TEXT NOT NULL,
    orders INTEGER NOT NULL,
    revenue_m INTEGER NOT NULL,
    min_order_m INTEGER NOT NULL,
    max_order_m INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, region, channel, currency)
) WITHOUT ROWID;

-- The same per UTC day and currency only (every region and channel): what queries without
-- region/channel filters read, a row or two per day however many dimensions there are.
CREATE TABLE cm_rollup_orders_currency_day (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    currency TEXT NOT NULL,
    orders INTEGER NOT NULL,
    revenue_m INTEGER NOT NULL,
    min_order_m INTEGER NOT NULL,
    max_order_m INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, currency)
) WITHOUT ROWID;

-- Counted orders per UTC hour and currency (every region and channel): hourly buckets and
-- days in time zones other than UTC without region/channel filters.
CREATE TABLE cm_rollup_orders_hour (
    tenant_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    currency TEXT NOT NULL,
    orders INTEGER NOT NULL,
    revenue_m INTEGER NOT NULL,
    min_order_m INTEGER NOT NULL,
    max_order_m INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, hour, currency)
) WITHOUT ROWID;

-- Counted orders' items per UTC day, product category (cm_products.category at recompute
-- time; '' for products without one or not ingested yet) and (region, channel, currency):
-- orders = orders with at least one item of the category, revenue_m = Σ quantity × unit_price
-- of those items, quantity = Σ quantity, min/max_order_m = the smallest/largest such per-order
-- sum. A product's category change marks its days dirty (trigger below).
CREATE TABLE cm_rollup_category_day (
    tenant_id TEXT NOT NULL,
    category TEXT NOT NULL,
    day INTEGER NOT NULL,
    region TEXT NOT NULL,
    channel TEXT NOT NULL,
    currency TEXT NOT NULL,
    orders INTEGER NOT NULL,
    revenue_m INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    min_order_m INTEGER NOT NULL,
    max_order_m INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, category, day, region, channel, currency)
) WITHOUT ROWID;
CREATE INDEX cm_rollup_category_day_day ON cm_rollup_category_day(tenant_id, day);

-- Per product × UTC day × currency, from the items of counted orders (for product analytics):
--   orders     counted orders containing the product that day
--   quantity   Σ item quantity
--   revenue_m  Σ quantity × unit_price_m (ten-thousandths)
--   cost_m     quantity × cm_products.cost_m at recompute time; NULL when the product or its
--              cost is unknown. A change of a product's cost (or category) marks every day
--              with its items dirty, so this stays equal to a recomputation.
--   last_ingested_at  newest ingested_at of those orders
-- Read clean days from here and dirty days (cm_rollup_dirty) from the base tables, in one
-- read transaction, to stay exact.
CREATE TABLE cm_rollup_product_day (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    orders INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    revenue_m INTEGER NOT NULL,
    cost_m INTEGER,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, product_id, currency)
) WITHOUT ROWID;
CREATE INDEX cm_rollup_product_day_product ON cm_rollup_product_day(tenant_id, product_id, day);

-- Distinct customers with a counted order per UTC day, per currency, and over every currency
-- (currency ''); orders and revenue_m of the same orders.
CREATE TABLE cm_rollup_customers_day (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    currency TEXT NOT NULL,
    customers INTEGER NOT NULL,
    orders INTEGER NOT NULL,
    revenue_m INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, currency)
) WITHOUT ROWID;

-- Web events per UTC day: distinct sessions with any event, distinct sessions with a purchase
-- event, and events.
CREATE TABLE cm_rollup_events_day (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    sessions INTEGER NOT NULL,
    purchase_sessions INTEGER NOT NULL,
    events INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;

-- Inventory per UTC day as a change: delta = Σ over the day's snapshots of (quantity − the
-- previous snapshot's quantity of the same product and warehouse, 0 for the first), so the
-- stock at any instant is the sum of the deltas before it. snapshots = the day's snapshots.
-- A snapshot changes its own day and the day of the next snapshot of its product and
-- warehouse (whose "previous" it is): the triggers mark both.
CREATE TABLE cm_rollup_inventory_day (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    snapshots INTEGER NOT NULL,
    last_ingested_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;

-- Base-table reads (dirty days, distinct counts over several days, customer segments, zones
-- whose day edges are not on UTC hours) scan time ranges: these indexes cover them, so those
-- reads never look up the table. Same names and leading columns as in 012, so every query
-- that used the narrower index uses these.
DROP INDEX cm_orders_time;
CREATE INDEX cm_orders_time ON cm_orders(tenant_id, created_at, status, currency, region,
                                         channel, customer_id, total_m, ingested_at);
DROP INDEX cm_events_time;
CREATE INDEX cm_events_time ON cm_events(tenant_id, timestamp, session_id, type, ingested_at);
DROP INDEX cm_inventory_time;
CREATE INDEX cm_inventory_time ON cm_inventory(tenant_id, timestamp, quantity, ingested_at);

-- ---- dirty marking ----
-- The day of unix ms t, floored (also before 1970): (t - ((t % D) + D) % D) / D.

CREATE TRIGGER cm_orders_dirty_ins AFTER INSERT ON cm_orders BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.created_at - ((new.created_at % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_orders_dirty_upd AFTER UPDATE ON cm_orders BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.created_at - ((new.created_at % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT old.tenant_id,
           (old.created_at - ((old.created_at % 86400000) + 86400000) % 86400000) / 86400000
    WHERE old.tenant_id IS NOT new.tenant_id
       OR (old.created_at - ((old.created_at % 86400000) + 86400000) % 86400000) / 86400000
          <> (new.created_at - ((new.created_at % 86400000) + 86400000) % 86400000) / 86400000
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_orders_dirty_del AFTER DELETE ON cm_orders BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (old.tenant_id,
            (old.created_at - ((old.created_at % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

-- Items mark their order's day (items written before their order mark nothing: the order's
-- own insert does).
CREATE TRIGGER cm_order_items_dirty_ins AFTER INSERT ON cm_order_items BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (created_at - ((created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_orders WHERE tenant_id = new.tenant_id AND order_id = new.order_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_order_items_dirty_upd AFTER UPDATE ON cm_order_items BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (created_at - ((created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_orders
    WHERE tenant_id IN (new.tenant_id, old.tenant_id) AND order_id IN (new.order_id, old.order_id)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_order_items_dirty_del AFTER DELETE ON cm_order_items BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (created_at - ((created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_orders WHERE tenant_id = old.tenant_id AND order_id = old.order_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

-- A product's category and cost are part of the category and product rollups of every day
-- with its items.
CREATE TRIGGER cm_products_dirty_ins AFTER INSERT ON cm_products BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT DISTINCT o.tenant_id,
           (o.created_at - ((o.created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_order_items i JOIN cm_orders o ON o.tenant_id = i.tenant_id AND o.order_id = i.order_id
    WHERE i.tenant_id = new.tenant_id AND i.product_id = new.product_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_products_dirty_upd AFTER UPDATE OF tenant_id, product_id, category, cost_m
ON cm_products
WHEN old.category IS NOT new.category OR old.cost_m IS NOT new.cost_m
  OR old.product_id IS NOT new.product_id OR old.tenant_id IS NOT new.tenant_id
BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT DISTINCT o.tenant_id,
           (o.created_at - ((o.created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_order_items i JOIN cm_orders o ON o.tenant_id = i.tenant_id AND o.order_id = i.order_id
    WHERE (i.tenant_id = new.tenant_id AND i.product_id = new.product_id)
       OR (i.tenant_id = old.tenant_id AND i.product_id = old.product_id)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_products_dirty_del AFTER DELETE ON cm_products BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT DISTINCT o.tenant_id,
           (o.created_at - ((o.created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_order_items i JOIN cm_orders o ON o.tenant_id = i.tenant_id AND o.order_id = i.order_id
    WHERE i.tenant_id = old.tenant_id AND i.product_id = old.product_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_events_dirty_ins AFTER INSERT ON cm_events BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.timestamp - ((new.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_events_dirty_upd AFTER UPDATE ON cm_events BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.timestamp - ((new.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (old.tenant_id,
            (old.timestamp - ((old.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_events_dirty_del AFTER DELETE ON cm_events BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (old.tenant_id,
            (old.timestamp - ((old.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

-- A snapshot marks its day and the day of the next snapshot of its product and warehouse.
CREATE TRIGGER cm_inventory_dirty_ins AFTER INSERT ON cm_inventory BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.timestamp - ((new.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (timestamp - ((timestamp % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_inventory
    WHERE tenant_id = new.tenant_id AND product_id = new.product_id
      AND warehouse = new.warehouse AND timestamp > new.timestamp
    ORDER BY timestamp LIMIT 1
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_inventory_dirty_upd AFTER UPDATE ON cm_inventory BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.timestamp - ((new.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (old.tenant_id,
            (old.timestamp - ((old.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (timestamp - ((timestamp % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_inventory
    WHERE tenant_id = new.tenant_id AND product_id = new.product_id
      AND warehouse = new.warehouse AND timestamp > new.timestamp
    ORDER BY timestamp LIMIT 1
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (timestamp - ((timestamp % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_inventory
    WHERE tenant_id = old.tenant_id AND product_id = old.product_id
      AND warehouse = old.warehouse AND timestamp > old.timestamp
    ORDER BY timestamp LIMIT 1
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER cm_inventory_dirty_del AFTER DELETE ON cm_inventory BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (old.tenant_id,
            (old.timestamp - ((old.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (timestamp - ((timestamp % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_inventory
    WHERE tenant_id = old.tenant_id AND product_id = old.product_id
      AND warehouse = old.warehouse AND timestamp > old.timestamp
    ORDER BY timestamp LIMIT 1
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

-- Records stored before this migration: every day with data is dirty, so the first job run
-- builds its rollups (and readers use the base tables until then).
INSERT INTO cm_rollup_dirty(tenant_id, day)
SELECT DISTINCT tenant_id, (created_at - ((created_at % 86400000) + 86400000) % 86400000) / 86400000
FROM cm_orders WHERE true
ON CONFLICT DO NOTHING;
INSERT INTO cm_rollup_dirty(tenant_id, day)
SELECT DISTINCT tenant_id, (timestamp - ((timestamp % 86400000) + 86400000) % 86400000) / 86400000
FROM cm_events WHERE true
ON CONFLICT DO NOTHING;
INSERT INTO cm_rollup_dirty(tenant_id, day)
SELECT DISTINCT tenant_id, (timestamp - ((timestamp % 86400000) + 86400000) % 86400000) / 86400000
FROM cm_inventory WHERE true
ON CONFLICT DO NOTHING;
