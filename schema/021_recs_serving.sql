-- Recs serving: a per-tenant catalog version, bumped by triggers on every change to what the
-- in-memory item matrices are built from (items, their categories and creation times, their
-- content embeddings). Serving reads it with one point lookup per request to know whether
-- its loaded matrix is still the catalog's.

CREATE TABLE rc_catalog_version (
    tenant_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER rc_items_catalog_ins AFTER INSERT ON rc_items BEGIN
    INSERT INTO rc_catalog_version(tenant_id, version) VALUES (NEW.tenant_id, 1)
        ON CONFLICT(tenant_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER rc_items_catalog_upd AFTER UPDATE OF category, created_at ON rc_items BEGIN
    INSERT INTO rc_catalog_version(tenant_id, version) VALUES (NEW.tenant_id, 1)
        ON CONFLICT(tenant_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER rc_items_catalog_del AFTER DELETE ON rc_items BEGIN
    INSERT INTO rc_catalog_version(tenant_id, version) VALUES (OLD.tenant_id, 1)
        ON CONFLICT(tenant_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER rc_item_content_catalog_ins AFTER INSERT ON rc_item_content BEGIN
    INSERT INTO rc_catalog_version(tenant_id, version) VALUES (NEW.tenant_id, 1)
        ON CONFLICT(tenant_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER rc_item_content_catalog_upd AFTER UPDATE OF dim, vector ON rc_item_content BEGIN
    INSERT INTO rc_catalog_version(tenant_id, version) VALUES (NEW.tenant_id, 1)
        ON CONFLICT(tenant_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER rc_item_content_catalog_del AFTER DELETE ON rc_item_content BEGIN
    INSERT INTO rc_catalog_version(tenant_id, version) VALUES (OLD.tenant_id, 1)
        ON CONFLICT(tenant_id) DO UPDATE SET version = version + 1;
END;
