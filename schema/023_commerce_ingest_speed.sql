-- Commerce ingestion speed (README "### Ingestion", "Throughput"), with every figure as exact
-- as before (README "Exact at all times").
--
-- 1. Batch chunks mark their rollup days dirty themselves. The ingest path (records.c,
--    cm_chunk_store) inserts the one row of cm_ingest_marking, writes a chunk of orders (with
--    their items) or events, upserts each distinct UTC day of the chunk into cm_rollup_dirty
--    once, and deletes the row again, all inside the chunk's savepoint: the row never outlives
--    that savepoint, so no other write (and no other connection) ever sees it. While it exists
--    the per-row INSERT triggers below do nothing, instead of one upsert per order, per item
--    (each with a lookup of its order) and per event. Every other write fires them as before,
--    and the UPDATE and DELETE triggers of 013 are untouched: a re-sent record that replaces a
--    stored one marks its old day through them, whichever path wrote it.
CREATE TABLE cm_ingest_marking (
    one INTEGER PRIMARY KEY CHECK (one = 1)
);

DROP TRIGGER cm_orders_dirty_ins;
CREATE TRIGGER cm_orders_dirty_ins AFTER INSERT ON cm_orders
WHEN NOT EXISTS (SELECT 1 FROM cm_ingest_marking)
BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.created_at - ((new.created_at % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

DROP TRIGGER cm_order_items_dirty_ins;
CREATE TRIGGER cm_order_items_dirty_ins AFTER INSERT ON cm_order_items
WHEN NOT EXISTS (SELECT 1 FROM cm_ingest_marking)
BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, (created_at - ((created_at % 86400000) + 86400000) % 86400000) / 86400000
    FROM cm_orders WHERE tenant_id = new.tenant_id AND order_id = new.order_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

DROP TRIGGER cm_events_dirty_ins;
CREATE TRIGGER cm_events_dirty_ins AFTER INSERT ON cm_events
WHEN NOT EXISTS (SELECT 1 FROM cm_ingest_marking)
BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    VALUES (new.tenant_id,
            (new.timestamp - ((new.timestamp % 86400000) + 86400000) % 86400000) / 86400000)
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

-- 2. No index of order items by product. cm_order_items_product (012) served only the product
--    triggers of 013 (the days with a product's items, when its category or cost changes); every
--    other read of items goes through their order. It cost more than any other part of storing
--    an order: each new item lands on a random page of it (thousands of products, each with its
--    own insertion point), which the chunk's savepoint copies and its commit writes to the WAL.
--    The product triggers now find the days another way, which marks at least every day whose
--    rollups a product's category or cost is part of:
--      * clean days: the rollups of a clean day were computed from all of its counted orders,
--        and every product with an item in one of them has a cm_rollup_product_day row for the
--        day (products not ingested yet included), read by cm_rollup_product_day_product
--        (013). Items of orders that are not counted are in no rollup.
--      * dirty days: every dirty day of the tenant gets its version bumped, so a rollup run that
--        read such a day before this change cannot write what it computed from the old
--        category or cost (readers take dirty days from the base tables, which are current).
--    The bump of every dirty day is written as an upsert of cm_rollup_dirty's own days, so each
--    of these triggers is a trigger that only marks days dirty (what commerce_demo_seed drops
--    during a bulk load and makes up for by marking every day with data afterwards).
DROP INDEX cm_order_items_product;

DROP TRIGGER cm_products_dirty_ins;
CREATE TRIGGER cm_products_dirty_ins AFTER INSERT ON cm_products BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, day FROM cm_rollup_dirty WHERE tenant_id = new.tenant_id
    UNION
    SELECT tenant_id, day FROM cm_rollup_product_day
    WHERE tenant_id = new.tenant_id AND product_id = new.product_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

DROP TRIGGER cm_products_dirty_upd;
CREATE TRIGGER cm_products_dirty_upd AFTER UPDATE OF tenant_id, product_id, category, cost_m
ON cm_products
WHEN old.category IS NOT new.category OR old.cost_m IS NOT new.cost_m
  OR old.product_id IS NOT new.product_id OR old.tenant_id IS NOT new.tenant_id
BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, day FROM cm_rollup_dirty WHERE tenant_id IN (new.tenant_id, old.tenant_id)
    UNION
    SELECT tenant_id, day FROM cm_rollup_product_day
    WHERE tenant_id = new.tenant_id AND product_id = new.product_id
    UNION
    SELECT tenant_id, day FROM cm_rollup_product_day
    WHERE tenant_id = old.tenant_id AND product_id = old.product_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

DROP TRIGGER cm_products_dirty_del;
CREATE TRIGGER cm_products_dirty_del AFTER DELETE ON cm_products BEGIN
    INSERT INTO cm_rollup_dirty(tenant_id, day)
    SELECT tenant_id, day FROM cm_rollup_dirty WHERE tenant_id = old.tenant_id
    UNION
    SELECT tenant_id, day FROM cm_rollup_product_day
    WHERE tenant_id = old.tenant_id AND product_id = old.product_id
    ON CONFLICT DO UPDATE SET version = version + 1;
END;

-- 3. No index of events by product. cm_events_product (012) is in no query's plan since 017's
--    cm_events_type_time covers the per-product views and purchases of a time range (products.c),
--    and every event stored landed on a random page of it (by product), which the stream path
--    pays for in each tick's commit.
DROP INDEX cm_events_product;

-- 4. cm_events_customer (017) holds only events with a customer: its one reader (a customer's
--    profile, customers.c) asks for customer_id = ?, which implies IS NOT NULL, so the planner
--    uses the partial index as before; anonymous events (a shop's page views before anyone
--    logs in, every event of the stream benchmark) no longer each write a random page of it.
DROP INDEX cm_events_customer;
CREATE INDEX cm_events_customer ON cm_events(tenant_id, customer_id, timestamp)
WHERE customer_id IS NOT NULL;
