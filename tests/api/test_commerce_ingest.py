"""commerce ingestion (contracts/commerce.md section 1): batch request rules, per-record checks
and rejects, upserts and duplicates, CSV / NDJSON / XML bodies (the real UCI Online Retail
export), batch status, stream records, sources, permissions, tenant isolation, rate limits and
a batch resumed after a restart. Every stored figure is compared with a computation here over
the records the test sent, and read back straight from SQLite."""
import csv
import json
import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from accounts import bearer, login, tenant, user
from commerce_data import (RATE_FLAGS, fold, ingest, ingest_body, post_batch, post_body,
                           rollups_stored, wait_batch)
from conftest import SRC, Api, Server

FIXTURES = os.path.join(SRC, "fixtures", "commerce")
UCI_COLUMNS = "order_id,product_id,description,quantity,created_at,unit_price,customer_id,region"
UCI_DATE = "%m-%d-%Y %H:%M"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ms(iso):
    return int((datetime.fromisoformat(iso.replace("Z", "+00:00")) - EPOCH).total_seconds() * 1000)


def money(x):
    """Ten-thousandths, rounded half away from zero, as the server stores money."""
    from decimal import ROUND_HALF_UP, Decimal
    return int((Decimal(str(x)) * 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def order(oid, customer="c1", total=10, created="2025-03-01T10:00:00Z", **kw):
    return {"order_id": oid, "customer_id": customer, "created_at": created, "total": total, **kw}


class World:
    def __init__(self):
        self.server = Server(*RATE_FLAGS)
        self.api = Api(self.server)
        data = self.server.data
        self.acme = tenant(data, "Acme", "acme.example")
        self.globex = tenant(data, "Globex", "globex.example")
        self.tok = {}
        for role, dom in [("admin", "acme"), ("viewer", "acme"), ("manager", "acme"),
                          ("developer", "acme"), ("admin", "globex")]:
            email = f"{role}@{dom}.example"
            user(data, f"{dom}.example", email, role)
            self.tok[f"{dom}_{role}" if dom != "acme" else role] = login(self.api, email)["access_token"]
        keys = {}
        for perms in (["read"], ["read", "write"]):
            r = self.api.post("/api/v1/api-keys", headers=bearer(self.tok["developer"]),
                              json={"name": "+".join(perms), "permissions": perms}, validate=False)
            assert r.status_code == 201, r.text
            keys["+".join(perms)] = r.json()["key"]
        self.read_key, self.write_key = keys["read"], keys["read+write"]

    def db(self):
        c = sqlite3.connect(os.path.join(self.server.data, "tessera.db"))
        c.row_factory = sqlite3.Row
        return c

    def rows(self, sql, *args):
        with self.db() as c:
            return [dict(r) for r in c.execute(sql, args)]

    def count(self, table, where="1", *args):
        return self.rows(f"SELECT count(*) AS n FROM {table} WHERE {where}", *args)[0]["n"]


@pytest.fixture(scope="module")
def w():
    world = World()
    yield world
    world.api.close()
    world.server.stop()


def field_errors(r):
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["code"] == "VALIDATION_ERROR" and e["field_errors"], e
    return {fe["field"]: fe for fe in e["field_errors"]}


# ---- request rules (section 1.1) ----

def test_every_request_violation_in_one_400(w):
    tables = ("cm_batches", "cm_batch_payloads", "cm_orders", "cm_rejects", "jobs")
    before = {t: w.count(t) for t in tables}
    r = w.api.post("/api/v1/ingest/batch", headers=bearer(w.tok["admin"]), json={"data": []})
    fe = field_errors(r)
    assert fe["source_id"] == {"field": "source_id", "message": "Source ID is required",
                               "rejected_value": None}
    assert fe["data_type"]["message"] == "Data type is required"
    assert fe["format"]["message"] == "Format is required"
    assert fe["data"] == {"field": "data", "message": "Data array cannot be empty",
                          "rejected_value": []}
    assert len(fe) == 4
    r = w.api.post("/api/v1/ingest/batch", headers=bearer(w.tok["admin"]),
                   json={"source_id": "x_y", "data_type": "sales", "format": "yaml",
                         "metadata": "v1", "data": [{"order_id": "a"}, 7, "s", None]})
    fe = field_errors(r)
    assert set(fe) == {"source_id", "data_type", "format", "metadata", "data[1]", "data[2]",
                       "data[3]"}
    assert fe["source_id"]["rejected_value"] == "x_y"
    assert "letters, digits and hyphens" in fe["source_id"]["message"]
    assert fe["data_type"]["message"] == ("Data type must be one of: transactions, products, "
                                          "customers, inventory, orders, events")
    assert fe["format"]["message"] == "Format must be one of: json, csv, xml, parquet"
    assert fe["data[1]"]["message"] == "Each record must be a JSON object"
    assert fe["data[1]"]["rejected_value"] == 7
    assert {t: w.count(t) for t in tables} == before  # nothing stored for a rejected batch


@pytest.mark.parametrize("body,field,fragment", [
    ({"source_id": "ab"}, "source_id", "3-50"),
    ({"source_id": "a" * 51}, "source_id", "3-50"),
    ({"source_id": 12345}, "source_id", "3-50"),
    ({"data_type": None}, "data_type", "required"),
    ({"data_type": "ORDERS"}, "data_type", "one of"),
    ({"format": None}, "format", "required"),
    ({"data": None}, "data", "Data is required"),
    ({"data": {"order_id": "o"}}, "data", "must be an array"),
    ({"data": "[]"}, "data", "must be an array"),
    ({"metadata": {"schema_version": 3}}, "metadata.schema_version", "string"),
    ({"metadata": {"extraction_timestamp": "yesterday"}}, "metadata.extraction_timestamp",
     "ISO 8601"),
])
def test_one_rule_at_a_time(w, body, field, fragment):
    good = {"source_id": "rules-src", "data_type": "orders", "format": "json",
            "data": [order("r1")]}
    r = w.api.post("/api/v1/ingest/batch", headers=bearer(w.tok["admin"]), json={**good, **body})
    fe = field_errors(r)
    assert list(fe) == [field]
    assert fragment in fe[field]["message"]


def test_record_limit_and_exactly_ten_thousand(w):
    recs = [{"product_id": f"lim-{i}", "name": f"P{i}"} for i in range(10001)]
    before = w.count("cm_products")
    fe = field_errors(post_batch(w.api, w.tok["admin"], "products", recs))
    assert fe["data"]["message"] == "Data array cannot hold more than 10,000 records"
    assert w.count("cm_products") == before
    st = ingest(w.api, w.tok["admin"], "products", recs[:10000], source_id="limit-src")
    assert st["status"] == "completed" and st["validation_status"] == "passed"
    assert st["stored_records"] == 10000 and st["progress"]["processed_records"] == 10000
    assert st["progress"]["progress_percentage"] == 100 and st["errors"] == []
    assert w.count("cm_products", "product_id LIKE 'lim-%'") == 10000


def test_body_format_errors(w):
    h = bearer(w.tok["admin"])
    r = w.api.post("/api/v1/ingest/batch", headers={**h, "Content-Type": "application/json"},
                   content=b'{"source_id": "x",')
    assert field_errors(r)["body"]["message"] == "invalid JSON"
    r = w.api.post("/api/v1/ingest/batch", headers={**h, "Content-Type": "text/plain"},
                   content=b"hello")
    assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    r = post_batch(w.api, w.tok["admin"], "orders", [order("pq")], format="parquet")
    assert r.status_code == 422
    e = r.json()["error"]
    assert e["code"] == "UNPROCESSABLE_ENTITY" and "Parquet is not supported yet" in e["message"]
    assert e["field_errors"][0]["field"] == "format"


def test_accepted_response_and_metadata(w):
    meta = {"source_system": "shopify", "schema_version": "2.1",
            "extraction_timestamp": "2025-03-01T00:00:00Z", "compression": "none", "extra": [1]}
    r = post_batch(w.api, w.tok["admin"], "orders", [order("m1"), order("m2")],
                   source_id="meta-src", format="csv", metadata=meta)
    assert r.status_code == 201, r.text
    d = r.json()["data"]
    assert d["status"] == "accepted" and d["validation_status"] == "pending"
    assert d["records_received"] == 2 and d["format"] == "csv"
    assert d["estimated_processing_time"].startswith("PT") and d["estimated_processing_time"].endswith("S")
    st = wait_batch(w.api, w.tok["admin"], d["batch_id"])
    assert st["metadata"] == meta and st["schema_version"] == "2.1"
    assert st["completed_at"] >= st["started_at"] >= d["created_at"][:19]
    row = w.rows("SELECT metadata, schema_version FROM cm_batches WHERE batch_id = ?",
                 d["batch_id"])[0]
    assert json.loads(row["metadata"]) == meta and row["schema_version"] == "2.1"
    assert w.count("cm_batch_payloads", "batch_id = ?", d["batch_id"]) == 0  # gone once stored


# ---- per-record checks ----

def test_per_record_rejects_with_reasons(w):
    future = (datetime.now(timezone.utc) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recs = [
        order("ok-1", total="12.345", extra_field={"ignored": True},
              items=[{"product_id": "p1", "quantity": "2", "unit_price": 6.1725}]),  # 0
        {"order_id": "bad-1", "created_at": "2025-03-01T10:00:00Z", "total": 5},   # 1 no customer
        order("bad-2", total="abc"),                                                # 2
        order("bad-3", total=-5),                                                   # 3
        order("bad-4", created=future),                                             # 4
        order("bad-5", currency="usd"),                                             # 5
        order("bad-6", status="lost"),                                              # 6
        order("bad-7", items=[{"product_id": "p1", "quantity": 0, "unit_price": 1},
                              {"product_id": "p2", "quantity": 1.5, "unit_price": 1}]),  # 7
        order(1234, customer=987, total=0.00005, currency="EUR", status="paid",
              channel="web", region="EU"),                                          # 8
        order("bad-8", created="01/03/2025"),                                       # 9
        order("", total=1),                                                         # 10
        order("x" * 129),                                                           # 11
    ]
    st = ingest(w.api, w.tok["admin"], "orders", recs, source_id="reject-src")
    assert st["status"] == "completed" and st["validation_status"] == "failed"
    assert st["stored_records"] == 2 and st["progress"]["failed_records"] == 10
    errs = [(e["record_index"], e["record_id"], e["field"], e["check_type"]) for e in st["errors"]]
    assert errs == [
        (1, "bad-1", "data[1].customer_id", "completeness"),
        (2, "bad-2", "data[2].total", "validity"),
        (3, "bad-3", "data[3].total", "accuracy"),
        (4, "bad-4", "data[4].created_at", "accuracy"),
        (5, "bad-5", "data[5].currency", "validity"),
        (6, "bad-6", "data[6].status", "validity"),
        (7, "bad-7", "data[7].items[0].quantity", "accuracy"),
        (7, "bad-7", "data[7].items[1].quantity", "validity"),
        (9, "bad-8", "data[9].created_at", "validity"),
        (10, None, "data[10].order_id", "completeness"),
        (11, None, "data[11].order_id", "validity"),
    ]
    msgs = {e["field"]: e["message"] for e in st["errors"]}
    assert msgs["data[1].customer_id"] == "customer_id is required"
    assert msgs["data[3].total"] == "total must not be negative"
    assert msgs["data[4].created_at"] == "created_at is more than 24 hours in the future"
    assert msgs["data[7].items[0].quantity"] == "quantity must be greater than 0"
    assert msgs["data[7].items[1].quantity"] == "quantity must be an integer"
    assert msgs["data[6].status"].startswith("status must be one of: placed, paid")
    stored = {r["order_id"]: r for r in w.rows(
        "SELECT * FROM cm_orders WHERE source_id = 'reject-src'")}
    assert set(stored) == {"ok-1", "1234"}
    assert stored["ok-1"]["total_m"] == money("12.345") == 123450
    assert stored["ok-1"]["currency"] == "USD" and stored["ok-1"]["status"] == "placed"
    assert stored["ok-1"]["created_at"] == ms("2025-03-01T10:00:00Z")
    assert stored["ok-1"]["channel"] == "" and stored["ok-1"]["region"] == ""
    assert stored["1234"]["customer_id"] == "987" and stored["1234"]["total_m"] == 1
    assert (stored["1234"]["currency"], stored["1234"]["status"], stored["1234"]["region"]) == \
        ("EUR", "paid", "EU")
    items = w.rows("SELECT line, product_id, quantity, unit_price_m FROM cm_order_items "
                   "WHERE order_id = 'ok-1'")
    assert items == [{"line": 0, "product_id": "p1", "quantity": 2,
                      "unit_price_m": money(6.1725)}]
    rej = w.rows("SELECT DISTINCT record_index FROM cm_rejects r JOIN cm_batches b "
                 "USING (tenant_id, batch_id) WHERE b.source_id = 'reject-src'")
    assert len(rej) == 10


def test_every_data_type_checked_and_stored(w):
    t = "2025-04-01T08:30:00Z"
    cases = {
        "transactions": ([{"transaction_id": "t1", "amount": "19.99", "timestamp": t,
                           "type": "refund", "order_id": "o9", "payment_method": "card"}],
                         [{"transaction_id": "t2", "amount": 1, "timestamp": t, "type": "gift"}],
                         "data[0].type"),
        "products": ([{"product_id": "sku-1", "name": "Mug", "category": "Kitchen",
                       "price": 7.5, "cost": "2.25", "sku": 4711, "active": "false"},
                      {"product_id": "sku-r", "name": "Rounding", "price": 1.00005,
                       "cost": "0.00015e1"}],
                     [{"product_id": "sku-2", "price": 3}], "data[0].name"),
        "customers": ([{"customer_id": "cu1", "email": "ann@example.com", "name": "Ann",
                        "created_at": t, "region": "EU"}],
                      [{"customer_id": "cu2", "email": "not-an-email"}], "data[0].email"),
        "inventory": ([{"product_id": "sku-1", "quantity": 40, "timestamp": t,
                        "warehouse": "LDN", "reorder_level": 10}],
                      [{"product_id": "sku-1", "quantity": -1, "timestamp": t}],
                      "data[0].quantity"),
        "events": ([{"event_id": "e1", "type": "purchase", "timestamp": t, "session_id": "s1",
                     "customer_id": "cu1", "product_id": "sku-1"}],
                   [{"event_id": "e2", "type": "click", "timestamp": t, "session_id": "s1"}],
                   "data[0].type"),
    }
    for dtype, (good, bad, bad_field) in cases.items():
        st = ingest(w.api, w.tok["admin"], dtype, good, source_id="types-src")
        assert st["status"] == "completed" and st["stored_records"] == len(good), (dtype, st)
        st = ingest(w.api, w.tok["admin"], dtype, bad, source_id="types-src")
        assert st["status"] == "failed" and st["stored_records"] == 0, (dtype, st)
        assert st["error"] == "no record passed validation"
        assert [e["field"] for e in st["errors"]] == [bad_field], (dtype, st["errors"])
    tx = w.rows("SELECT * FROM cm_transactions WHERE transaction_id = 't1'")[0]
    assert (tx["amount_m"], tx["type"], tx["currency"], tx["order_id"], tx["payment_method"]) == \
        (199900, "refund", "USD", "o9", "card")
    p = w.rows("SELECT * FROM cm_products WHERE product_id = 'sku-1'")[0]
    assert (p["price_m"], p["cost_m"], p["sku"], p["active"], p["category"]) == \
        (75000, 22500, "4711", 0, "Kitchen")
    p = w.rows("SELECT price_m, cost_m, active FROM cm_products WHERE product_id = 'sku-r'")[0]
    assert (p["price_m"], p["cost_m"], p["active"]) == (money("1.00005"), money("0.0015"), 1)
    assert (p["price_m"], p["cost_m"]) == (10001, 15)
    c = w.rows("SELECT * FROM cm_customers WHERE customer_id = 'cu1'")[0]
    assert (c["email"], c["created_at"], c["channel"]) == ("ann@example.com", ms(t), "")
    inv = w.rows("SELECT * FROM cm_inventory WHERE product_id = 'sku-1'")[0]
    assert (inv["warehouse"], inv["quantity"], inv["reorder_level"], inv["timestamp"]) == \
        ("LDN", 40, 10, ms(t))
    ev = w.rows("SELECT * FROM cm_events WHERE event_id = 'e1'")[0]
    assert (ev["type"], ev["session_id"], ev["product_id"]) == ("purchase", "s1", "sku-1")


def test_duplicates_counted_never_double_stored(w):
    a = [order("d1", total=10, items=[{"product_id": "p1", "quantity": 1, "unit_price": 10}]),
         order("d2", total=20)]
    st = ingest(w.api, w.tok["admin"], "orders", a, source_id="dup-src")
    assert (st["stored_records"], st["duplicate_records"]) == (2, 0)
    b = [order("d1", total=30, status="shipped",
               items=[{"product_id": "p2", "quantity": 3, "unit_price": 5},
                      {"product_id": "p3", "quantity": 1, "unit_price": 15}]),
         order("d3", total=1), order("d3", total=2, customer="c9")]
    st = ingest(w.api, w.tok["admin"], "orders", b, source_id="dup-src")
    assert (st["stored_records"], st["duplicate_records"]) == (3, 2)
    assert st["validation_status"] == "passed"
    rows = {r["order_id"]: r for r in w.rows(
        "SELECT order_id, total_m, status, customer_id FROM cm_orders WHERE source_id = 'dup-src'")}
    assert set(rows) == {"d1", "d2", "d3"}
    # the later record wins, within a batch and across batches
    assert (rows["d1"]["total_m"], rows["d1"]["status"]) == (money(30), "shipped")
    assert (rows["d3"]["total_m"], rows["d3"]["customer_id"]) == (money(2), "c9")
    expected = {"d1": 30, "d2": 20, "d3": 2}
    assert sum(r["total_m"] for r in rows.values()) == sum(money(v) for v in expected.values())
    items = w.rows("SELECT line, product_id, quantity FROM cm_order_items WHERE order_id = 'd1' "
                   "ORDER BY line")
    assert items == [{"line": 0, "product_id": "p2", "quantity": 3},
                     {"line": 1, "product_id": "p3", "quantity": 1}]
    src = [s for s in w.api.get("/api/v1/ingest/sources", headers=bearer(w.tok["admin"]),
                                params={"size": 100}).json()["data"]["content"]
           if s["source_id"] == "dup-src"][0]
    assert src["total_records"] == 3 and src["type"] == "api"  # three ids, each once


# ---- CSV, NDJSON and XML bodies ----

def uci_expected(path):
    """Orders the UCI export should become, computed with the csv module: invoices whose lines
    all have a positive quantity, a non-negative price and a CustomerID are stored."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    inv = {}
    for r in rows:
        inv.setdefault(r[0], []).append(r)
    stored, rejected = {}, {}
    for no, lines in inv.items():
        total = sum(_line_m(r[3], r[5]) for r in lines)
        customer = next((r[6] for r in lines if r[6]), "")
        bad_qty = [i for i, r in enumerate(lines) if int(r[3]) <= 0]
        if not customer or bad_qty or total < 0:
            rejected[no] = (customer, bad_qty, total)
        else:
            stored[no] = total
    return stored, rejected, len(inv)


def _line_m(q, p):
    from decimal import ROUND_HALF_UP, Decimal
    return int((Decimal(q) * Decimal(p) * 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_uci_online_retail_csv(w):
    path = os.path.join(FIXTURES, "online-retail-3000.csv")
    with open(path, "rb") as f:
        body = f.read()
    before = w.count("cm_batches")
    r = post_body(w.api, w.tok["admin"], body, "text/csv", "orders", source_id="uci-src")
    fe = field_errors(r)
    assert "InvoiceNo" in fe["body"]["message"] and "columns=" in fe["body"]["message"]
    assert "line 1" in fe["body"]["message"]
    assert w.count("cm_batches") == before
    st = ingest_body(w.api, w.tok["admin"], body, "text/csv", "orders", source_id="uci-src",
                     columns=UCI_COLUMNS, date_format=UCI_DATE, schema_version="uci-1")
    stored, rejected, invoices = uci_expected(path)
    assert st["format"] == "csv" and st["schema_version"] == "uci-1"
    assert st["records_received"] == invoices
    assert st["stored_records"] == len(stored) and st["progress"]["failed_records"] == len(rejected)
    db = {r["order_id"]: r for r in w.rows(
        "SELECT order_id, total_m, customer_id, region, created_at FROM cm_orders "
        "WHERE source_id = 'uci-src'")}
    assert set(db) == set(stored)
    assert sum(r["total_m"] for r in db.values()) == sum(stored.values())
    assert all(db[k]["total_m"] == v for k, v in stored.items())
    first = db["536365"]
    assert (first["customer_id"], first["region"]) == ("17850", "United Kingdom")
    assert first["created_at"] == ms("2010-12-01T08:26:00Z")
    n_items = w.count("cm_order_items i JOIN cm_orders o USING (tenant_id, order_id)",
                      "o.source_id = 'uci-src'")
    with open(path, newline="", encoding="utf-8") as f:
        assert n_items == sum(1 for r in list(csv.reader(f))[1:] if r[0] in stored)
    # the reasons: cancellations by their negative quantities, the rest by the missing customer
    rej = w.rows("SELECT record_key, field, check_type, reason FROM cm_rejects r JOIN cm_batches b "
                 "USING (tenant_id, batch_id) WHERE b.source_id = 'uci-src'")
    keys = {x["record_key"] for x in rej}
    assert keys == set(rejected)
    for no, (customer, bad_qty, total) in rejected.items():
        mine = [x for x in rej if x["record_key"] == no]
        if not customer:
            assert any(x["field"].endswith(".customer_id") and x["check_type"] == "completeness"
                       for x in mine), mine
        if bad_qty and no.startswith("C"):
            assert any(".items[" in x["field"] and x["field"].endswith(".quantity")
                       and x["reason"] == "quantity must be greater than 0" for x in mine), mine
    assert any(no.startswith("C") for no in rejected)
    src = [s for s in w.api.get("/api/v1/ingest/sources", headers=bearer(w.tok["admin"]),
                                params={"size": 100}).json()["data"]["content"]
           if s["source_id"] == "uci-src"][0]
    assert src["type"] == "file" and src["total_records"] == len(stored)


def test_ndjson_and_xml_bodies(w):
    nd = "\n".join(json.dumps(p) for p in [
        {"product_id": "nd-1", "name": "Lamp", "price": 20},
        {"product_id": "nd-2", "name": "Desk", "price": "120.5", "category": "Office"},
        {"product_id": "nd-3"}]) + "\n"
    st = ingest_body(w.api, w.tok["admin"], nd, "application/x-ndjson", "products",
                     source_id="nd-src")
    assert st["format"] == "ndjson" and st["stored_records"] == 2
    assert [e["field"] for e in st["errors"]] == ["data[2].name"]
    assert w.rows("SELECT price_m FROM cm_products WHERE product_id = 'nd-2'")[0]["price_m"] == 1205000
    xml = ("<?xml version=\"1.0\"?>\n<orders>\n"
           "  <order order_id=\"x-1\"><customer_id>c7</customer_id>"
           "<created_at>2025-02-02T12:00:00Z</created_at><total>9.90</total>"
           "<items><item product_id=\"p1\" quantity=\"2\" unit_price=\"4.95\"/></items></order>\n"
           "  <order order_id=\"x-2\"><customer_id>c8</customer_id>"
           "<created_at>2025-02-02T13:00:00Z</created_at><total>-1</total></order>\n"
           "</orders>\n")
    st = ingest_body(w.api, w.tok["admin"], xml, "application/xml", "orders", source_id="xml-src")
    assert st["format"] == "xml" and st["stored_records"] == 1
    assert [(e["field"], e["check_type"]) for e in st["errors"]] == [("data[1].total", "accuracy")]
    o = w.rows("SELECT total_m FROM cm_orders WHERE order_id = 'x-1'")[0]
    assert o["total_m"] == 99000
    assert w.rows("SELECT quantity, unit_price_m FROM cm_order_items WHERE order_id = 'x-1'") == \
        [{"quantity": 2, "unit_price_m": 49500}]
    st = ingest_body(w.api, w.tok["admin"], xml, "text/xml", "orders", source_id="xml-src")
    assert st["duplicate_records"] == 1


@pytest.mark.parametrize("ctype,body,fragment", [
    ("text/csv", "product_id,name\np1,A\np2,B,extra\n", "line 3"),
    ("text/csv", "", "empty"),
    ("application/x-ndjson", '{"product_id": "a", "name": "A"}\n{"product_id": \n', "line 2"),
    ("application/x-ndjson", '{"product_id": "a"}\n[1]\n', "line 2"),
    ("application/xml", "<r>\n<p><name>A</name>\n<sku>2</p>\n</r>", "line 3"),
    ("text/xml", "<!DOCTYPE r [<!ENTITY x \"y\">]><r><p>&x;</p></r>", "DOCTYPE"),
])
def test_malformed_bodies_name_the_line(w, ctype, body, fragment):
    before = w.count("cm_batches")
    fe = field_errors(post_body(w.api, w.tok["admin"], body, ctype, "products",
                                source_id="bad-body-src"))
    assert list(fe) == ["body"] and fragment in fe["body"]["message"], fe
    assert w.count("cm_batches") == before


def test_query_fields_of_a_csv_body(w):
    r = w.api.post("/api/v1/ingest/batch", headers={**bearer(w.tok["admin"]),
                                                   "Content-Type": "text/csv"},
                   params={"data_type": "stuff", "format": "xml"}, content=b"a,b\n1,2\n")
    fe = field_errors(r)
    assert set(fe) == {"source_id", "data_type", "format"}
    assert fe["source_id"]["message"] == "Source ID is required"
    r = w.api.post("/api/v1/ingest/batch", headers={**bearer(w.tok["admin"]),
                                                   "Content-Type": "text/csv"},
                   params={"data_type": "products", "source_id": "x"},
                   content=b"a,a\n1,2\n")
    assert set(field_errors(r)) == {"source_id", "body"}  # the body's fault joins the others
    st = ingest_body(w.api, w.tok["admin"], "p-1,Chair,Home\n", "text/csv; charset=utf-8",
                     "products", source_id="csv-src", no_header="true",
                     columns="product_id,name,category")
    assert st["stored_records"] == 1
    assert w.rows("SELECT name, category FROM cm_products WHERE product_id = 'p-1'") == \
        [{"name": "Chair", "category": "Home"}]


# ---- batch status ----

def test_status_unknown_and_other_tenant(w):
    r = w.api.get("/api/v1/ingest/batches/nope/status", headers=bearer(w.tok["admin"]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = post_batch(w.api, w.tok["admin"], "orders", [order("iso-1")], source_id="iso-src")
    bid = r.json()["data"]["batch_id"]
    wait_batch(w.api, w.tok["admin"], bid)
    r = w.api.get(f"/api/v1/ingest/batches/{bid}/status", headers=bearer(w.tok["globex_admin"]))
    assert r.status_code == 404
    r = w.api.get("/api/v1/ingest/sources", headers=bearer(w.tok["globex_admin"]))
    assert all(s["source_id"] != "iso-src" for s in r.json()["data"]["content"])
    r = w.api.request("PUT", "/api/v1/ingest/sources/iso-src", headers=bearer(w.tok["globex_admin"]),
                      json={"status": "inactive"})
    assert r.status_code == 404


def test_roles_and_api_keys(w):
    recs = [order("perm-1")]
    r = post_batch(w.api, w.tok["viewer"], "orders", recs)
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = post_batch(w.api, w.read_key, "orders", recs)
    assert r.status_code == 403
    for who in ("manager", "developer"):
        assert ingest(w.api, w.tok[who], "orders", recs)["status"] == "completed"
    st = ingest(w.api, w.write_key, "orders", [order("perm-2")])
    assert st["status"] == "completed"
    r = w.api.get(f"/api/v1/ingest/batches/{st['batch_id']}/status", headers=bearer(w.read_key))
    assert r.status_code == 200 and r.json()["data"]["stored_records"] == 1
    assert w.api.get("/api/v1/ingest/sources", headers=bearer(w.tok["viewer"])).status_code == 200
    r = w.api.post("/api/v1/ingest/stream", headers=bearer(w.read_key),
                   json={"source_id": "s-src", "data_type": "events",
                         "timestamp": "2025-01-01T00:00:00Z", "data": {}})
    assert r.status_code == 403
    assert w.api.get("/api/v1/ingest/sources").status_code == 401


# ---- stream ----

def test_stream_record_stored_and_visible(w):
    h = bearer(w.tok["admin"])
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "live-src", "data_type": "events", "timestamp": "2025-05-05T05:05:05Z",
        "correlation_id": "corr-1",
        "data": {"event_id": "ev-1", "type": "add_to_cart", "session_id": "sess-1"}})
    assert r.status_code == 202, r.text
    d = r.json()["data"]
    assert d["status"] == "accepted" and d["record_id"] == "ev-1"
    assert d["correlation_id"] == "corr-1" and d["duplicate"] is False
    assert 0 <= d["processing_latency_ms"] < 5000
    ev = w.rows("SELECT type, timestamp, session_id, source_id, batch_id FROM cm_events "
                "WHERE event_id = 'ev-1'")
    assert ev == [{"type": "add_to_cart", "timestamp": ms("2025-05-05T05:05:05Z"),
                   "session_id": "sess-1", "source_id": "live-src", "batch_id": None}]
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "live-src", "data_type": "orders", "timestamp": "2025-05-05T06:00:00Z",
        "data": order("so-1", created="2025-05-05T06:00:00Z", total="3.50")})
    assert r.status_code == 202 and r.json()["data"]["record_id"] == "so-1"
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "live-src", "data_type": "orders", "timestamp": "2025-05-05T06:00:00Z",
        "data": order("so-1", total="4.50")})
    assert r.json()["data"]["duplicate"] is True
    assert w.rows("SELECT total_m FROM cm_orders WHERE order_id = 'so-1'") == [{"total_m": 45000}]
    src = [s for s in w.api.get("/api/v1/ingest/sources", headers=h).json()["data"]["content"]
           if s["source_id"] == "live-src"][0]
    assert src["type"] == "stream" and src["total_records"] == 2
    assert src["last_ingestion"] is not None


def test_stream_validation_and_rejects(w):
    h = bearer(w.tok["admin"])
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={"data": 5, "correlation_id": 3})
    fe = field_errors(r)
    assert set(fe) == {"source_id", "data_type", "timestamp", "data", "correlation_id"}
    before = w.count("cm_rejects", "batch_id IS NULL AND source_id = 'live-src'")
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "live-src", "data_type": "orders", "timestamp": "2025-05-05T06:00:00Z",
        "data": {"order_id": "so-bad", "customer_id": "c1", "total": -2, "currency": "eur"}})
    fe = field_errors(r)
    assert set(fe) == {"data.total", "data.currency"}
    assert fe["data.total"]["message"] == "total must not be negative"
    rej = w.rows("SELECT record_key, field, check_type FROM cm_rejects WHERE batch_id IS NULL "
                 "AND source_id = 'live-src' ORDER BY rowid")[before:]
    assert rej == [{"record_key": "so-bad", "field": "data.total", "check_type": "accuracy"},
                   {"record_key": "so-bad", "field": "data.currency", "check_type": "validity"}]
    assert w.count("cm_orders", "order_id = 'so-bad'") == 0
    r = w.api.post("/api/v1/ingest/stream", headers={**h, "Content-Type": "text/plain"},
                   content=b"{}")
    assert r.status_code == 415


# ---- sources ----

def test_sources_create_update_list_and_inactive(w):
    h = bearer(w.tok["globex_admin"])
    for i in range(3):
        r = w.api.post("/api/v1/ingest/sources", headers=h, json={
            "source_id": f"erp-{i}", "name": f"ERP {i}", "type": "database",
            "configuration": {"host": "db.local", "port": 5432 + i}})
        assert r.status_code == 201, r.text
        s = r.json()["data"]
        assert (s["status"], s["total_records"], s["last_ingestion"]) == ("active", 0, None)
        assert s["configuration"] == {"host": "db.local", "port": 5432 + i}
    r = w.api.post("/api/v1/ingest/sources", headers=h, json={"source_id": "erp-0"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    fe = field_errors(w.api.post("/api/v1/ingest/sources", headers=h,
                                 json={"source_id": "e", "type": "ftp", "status": "on",
                                       "configuration": [1], "name": ""}))
    assert set(fe) == {"source_id", "type", "status", "configuration", "name"}
    r = w.api.request("PUT", "/api/v1/ingest/sources/erp-1", headers=h,
                      json={"status": "inactive", "name": "Old ERP"})
    assert r.status_code == 200
    d = r.json()["data"]
    assert (d["status"], d["name"], d["type"]) == ("inactive", "Old ERP", "database")
    assert d["configuration"] == {"host": "db.local", "port": 5433}
    r = w.api.request("PUT", "/api/v1/ingest/sources/none-such", headers=h, json={"name": "x"})
    assert r.status_code == 404
    assert field_errors(w.api.request("PUT", "/api/v1/ingest/sources/erp-1", headers=h,
                                      json={}))["body"]
    page = w.api.get("/api/v1/ingest/sources", headers=h).json()["data"]
    assert [s["source_id"] for s in page["content"]] == ["erp-0", "erp-2"]
    assert (page["totalElements"], page["totalPages"], page["number"]) == (2, 1, 0)
    page = w.api.get("/api/v1/ingest/sources", headers=h,
                     params={"active_only": "false", "size": 2, "page": 1}).json()["data"]
    assert [s["source_id"] for s in page["content"]] == ["erp-2"]
    assert (page["totalElements"], page["totalPages"], page["size"], page["first"],
            page["last"]) == (3, 2, 2, False, True)
    assert field_errors(w.api.get("/api/v1/ingest/sources", headers=h, params={"size": 101}))
    # an inactive source takes no new data
    r = post_batch(w.api, w.tok["globex_admin"], "orders", [order("in-1")], source_id="erp-1")
    assert r.status_code == 422 and r.json()["error"]["field_errors"][0]["field"] == "source_id"
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "erp-1", "data_type": "orders", "timestamp": "2025-01-01T00:00:00Z",
        "data": order("in-2")})
    assert r.status_code == 422
    st = ingest(w.api, w.tok["globex_admin"], "orders", [order("in-3"), order("in-4")],
                source_id="erp-2")
    s = w.api.get("/api/v1/ingest/sources", headers=h).json()["data"]["content"][1]
    assert s["source_id"] == "erp-2" and s["total_records"] == 2 and s["last_ingestion"]
    assert st["stored_records"] == 2
    # admins only
    r = w.api.post("/api/v1/ingest/sources", headers=bearer(w.tok["manager"]),
                   json={"source_id": "mgr-src"})
    assert r.status_code == 403


# ---- rate limit ----

def test_rate_limit_headers_and_429():
    s = Server("--rate-limit", "commerce=3/60")
    api = Api(s)
    try:
        tenant(s.data, "R", "r.example")
        user(s.data, "r.example", "a@r.example", "admin")
        tok = login(api, "a@r.example")["access_token"]
        for i in range(3):
            r = api.get("/api/v1/ingest/sources", headers=bearer(tok))
            assert r.status_code == 200
            assert r.headers["X-RateLimit-Limit"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == str(2 - i)
        r = api.get("/api/v1/ingest/sources", headers=bearer(tok))
        assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert r.headers["X-RateLimit-Remaining"] == "0" and int(r.headers["Retry-After"]) >= 1
        assert int(r.headers["X-RateLimit-Reset"]) >= 1
    finally:
        api.close()
        s.stop()


# ---- a batch resumed after a restart ----

def test_batch_resumed_from_its_last_chunk_after_restart():
    """A batch whose first 1,000 records were committed when the server stopped: on restart the
    job goes on from processed_records, storing each record once and counting no duplicates."""
    s = Server(*RATE_FLAGS)
    api = Api(s)
    try:
        t = tenant(s.data, "Resume", "resume.example")
        user(s.data, "resume.example", "a@resume.example", "admin")
        tok = login(api, "a@resume.example")["access_token"]
        st = ingest(api, tok, "orders", [order("warm-up")], source_id="resume-src")
        assert st["stored_records"] == 1
    finally:
        api.close()
        s.stop()
    recs = [order(f"rs-{i}", total=i % 97 + 0.5) for i in range(2500)]
    now = int(time.time() * 1000)
    db = sqlite3.connect(os.path.join(s.data, "tessera.db"))
    with db:
        db.execute("INSERT INTO cm_batches(tenant_id, batch_id, source_id, data_type, format, "
                   "records_received, processed_records, stored_records, created_at, started_at) "
                   "VALUES(?, 'b-resume', 'resume-src', 'orders', 'json', 2500, 1000, 1000, ?, ?)",
                   (t["id"], now, now))
        db.execute("INSERT INTO cm_batch_payloads(tenant_id, batch_id, payload) "
                   "VALUES(?, 'b-resume', ?)", (t["id"], json.dumps(recs)))
        db.executemany("INSERT INTO cm_orders(tenant_id, order_id, customer_id, created_at, "
                       "total_m, currency, source_id, batch_id, ingested_at) "
                       "VALUES(?, ?, 'c1', ?, ?, 'USD', 'resume-src', 'b-resume', ?)",
                       [(t["id"], r["order_id"], ms(r["created_at"]), money(r["total"]), now)
                        for r in recs[:1000]])
        db.execute("INSERT INTO jobs(id, tenant_id, kind, status, params, checkpoint, attempts, "
                   "created_at) VALUES('j-resume', ?, 'commerce.ingest', 'running', "
                   "'{\"batch_id\":\"b-resume\"}', '{\"next\":1000}', 1, ?)", (t["id"], now))
    db.close()
    s2 = Server(*RATE_FLAGS, data=s.data)
    api = Api(s2)
    try:
        tok = login(api, "a@resume.example")["access_token"]
        st = wait_batch(api, tok, "b-resume")
        assert st["status"] == "completed" and st["validation_status"] == "passed"
        assert (st["stored_records"], st["duplicate_records"], st["progress"]["processed_records"]) \
            == (2500, 0, 2500)
        db = sqlite3.connect(os.path.join(s.data, "tessera.db"))
        n, total = db.execute("SELECT count(*), sum(total_m) FROM cm_orders "
                              "WHERE order_id LIKE 'rs-%'").fetchone()
        assert n == 2500 and total == sum(money(r["total"]) for r in recs)
        assert db.execute("SELECT status FROM jobs WHERE id = 'j-resume'").fetchone()[0] == "completed"
        assert db.execute("SELECT total_records FROM cm_sources WHERE source_id = 'resume-src'"
                          ).fetchone()[0] == 2501
        db.close()
    finally:
        api.close()
        s2.stop()


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_batch_survives_a_stop_mid_batch(sig):
    """SIGKILL (or a drain) right after the 201: whatever the job had committed, the restarted
    server finishes the batch with every record stored once."""
    import signal as signals
    s = Server(*RATE_FLAGS)
    api = Api(s)
    try:
        tenant(s.data, "Kill", "kill.example")
        user(s.data, "kill.example", "a@kill.example", "admin")
        tok = login(api, "a@kill.example")["access_token"]
        recs = [{"product_id": f"k-{i}", "name": f"Product {i}", "price": i % 50}
                for i in range(10000)]
        r = post_batch(api, tok, "products", recs, source_id="kill-src")
        assert r.status_code == 201
        if sig == "SIGKILL":  # once the first chunk is committed, if we see it in time
            bid = r.json()["data"]["batch_id"]
            for _ in range(200):
                d = api.get(f"/api/v1/ingest/batches/{bid}/status", headers=bearer(tok)).json()
                if d["data"]["progress"]["processed_records"] or d["data"]["status"] != "processing":
                    break
            s.proc.send_signal(signals.SIGKILL)
            s.proc.wait(timeout=10)
        else:
            s.stop()  # a clean exit: the job checkpoints, nothing leaks
    finally:
        api.close()
    s2 = Server(*RATE_FLAGS, data=s.data)
    api = Api(s2)
    try:
        tok = login(api, "a@kill.example")["access_token"]
        st = wait_batch(api, tok, r.json()["data"]["batch_id"])
        assert st["status"] == "completed"
        assert (st["stored_records"], st["duplicate_records"], st["progress"]["failed_records"]) \
            == (10000, 0, 0)
        db = sqlite3.connect(os.path.join(s.data, "tessera.db"))
        assert db.execute("SELECT count(*), sum(price_m) FROM cm_products WHERE product_id LIKE "
                          "'k-%'").fetchone() == (10000, sum(i % 50 for i in range(10000)) * 10000)
        assert db.execute("SELECT total_records FROM cm_sources WHERE source_id = 'kill-src'"
                          ).fetchone()[0] == 10000
        assert db.execute("SELECT count(*) FROM cm_batch_payloads").fetchone()[0] == 0
        db.close()
    finally:
        api.close()
        s2.stop()


# ---- rollups stay exact: chunks mark their days, every other write fires its triggers ----

DAY_MS, HOUR_MS = 86400000, 3600000
INGEST_ROLLUPS = ("od", "ocd", "oh", "cat", "prod", "cust", "ev", "co")


def rollups_recomputed(orders, products, events):
    """The rollup rows of schema/013 and the per-customer rows of 017, recomputed from the
    test's own records: orders {id: {customer, at, total_m, currency, status, region, channel,
    items: [(product, qty, price_m)]}}, products {id: (category, cost_m)}, events {id: (at,
    session, type)}."""
    want = {t: {} for t in INGEST_ROLLUPS}

    def acc(t, key, vals, kinds):
        fold(want, t, key, vals, kinds)
    buyers = {}
    for o in orders.values():
        if o["status"] in ("cancelled", "refunded"):
            continue
        d, t, cur = o["at"] // DAY_MS, o["total_m"], o["currency"]
        acc("od", (d, o["region"], o["channel"], cur), (1, t, t, t), "++<>")
        acc("ocd", (d, cur), (1, t, t, t), "++<>")
        acc("oh", (o["at"] // HOUR_MS, cur), (1, t, t, t), "++<>")
        for c in (cur, ""):
            buyers.setdefault((d, c), set()).add(o["customer"])
            acc("cust", (d, c), (0, 1, t), "+++")
        acc("co", (cur, o["customer"]), (1, t, o["at"], o["at"]), "++<>")
        bycat, byprod = {}, {}
        for p, q, m in o["items"]:
            c = products[p][0] if p in products else ""
            r0, q0 = bycat.get(c, (0, 0))
            bycat[c] = (r0 + q * m, q0 + q)
            q1, r1 = byprod.get(p, (0, 0))
            byprod[p] = (q1 + q, r1 + q * m)
        for c, (rev, qty) in bycat.items():
            acc("cat", (c, d, o["region"], o["channel"], cur), (1, rev, qty, rev, rev), "+++<>")
        for p, (qty, rev) in byprod.items():
            acc("prod", (d, p, cur), (1, qty, rev), "+++")
    for k in want["cust"]:
        want["cust"][k][0] = len(buyers[k])
    for (d, p, cur), row in want["prod"].items():
        cost = products[p][1] if p in products else None
        row.append(None if cost is None else row[1] * cost)
    days = {}
    for at, session, type_ in events.values():
        days.setdefault(at // DAY_MS, []).append((session, type_))
    for d, evs in days.items():
        want["ev"][d] = [len({s for s, _ in evs}), len({s for s, t in evs if t == "purchase"}),
                         len(evs)]
    return {t: {k: tuple(v) for k, v in rows.items()} for t, rows in want.items()}


def rollups_stored_by(w, tid):
    with w.db() as c:
        return rollups_stored(c, tid, INGEST_ROLLUPS)


def wait_rollups_clean(w, tid, timeout=60):
    deadline = time.time() + timeout
    while w.count("cm_rollup_dirty", "tenant_id = ?", tid):
        assert time.time() < deadline, "rollup days still dirty"
        time.sleep(0.1)


def test_rollups_exact_after_batches_and_writes_by_other_paths(w):
    """A batch chunk marks each of its days dirty once (its rows' INSERT triggers skip,
    schema/023); every other write still marks through the triggers: the stream path (one
    record), direct SQL changes of a batch's orders, items and products, a product ingested
    after its orders were rolled up, and re-sent orders. Once the rollup job has caught up,
    every rollup row and every per-customer row equals a recomputation from the records."""
    import random
    t = tenant(w.server.data, "Rollups", "rollups.example")
    user(w.server.data, "rollups.example", "a@rollups.example", "admin")
    h = bearer(login(w.api, "a@rollups.example")["access_token"])
    tok = h["Authorization"].split()[1]
    rng = random.Random(23)
    t0 = ms("2025-02-03T00:00:00Z")
    iso = lambda v: datetime.fromtimestamp(v / 1000, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    products = {f"P{i}": (["toys", "books", "tools", "food"][i % 4], (i + 1) * 12500)
                for i in range(1, 5)}              # P5 and P6 are sold before they are known
    orders, events = {}, {}
    for i in range(240):
        items = [(f"P{rng.randint(1, 6)}", rng.randint(1, 4), rng.randint(1, 5000) * 100)
                 for _ in range(rng.randint(1, 3))]
        orders[f"ro-{i:03d}"] = {
            "customer": f"rc-{rng.randint(1, 25):02d}", "at": t0 + rng.randrange(12 * DAY_MS),
            "total_m": sum(q * m for _, q, m in items), "currency": rng.choice(["USD", "EUR"]),
            "status": rng.choice(["placed", "paid", "delivered", "cancelled", "refunded"]),
            "region": rng.choice(["EU", "US"]), "channel": rng.choice(["web", "app"]),
            "items": items}
    for i in range(150):
        events[f"re-{i:03d}"] = (t0 + rng.randrange(12 * DAY_MS), f"rs-{rng.randint(1, 40)}",
                                 rng.choice(["page_view", "add_to_cart", "purchase"]))

    def order_rec(oid):
        o = orders[oid]
        return {"order_id": oid, "customer_id": o["customer"], "created_at": iso(o["at"]),
                "total": o["total_m"] / 10000, "currency": o["currency"], "status": o["status"],
                "region": o["region"], "channel": o["channel"],
                "items": [{"product_id": p, "quantity": q, "unit_price": m / 10000}
                          for p, q, m in o["items"]]}

    def product_recs(ids):
        return [{"product_id": p, "name": p, "category": products[p][0],
                 "cost": products[p][1] / 10000} for p in ids]

    def check():
        wait_rollups_clean(w, t["id"])
        assert w.count("cm_ingest_marking") == 0
        got, want = rollups_stored_by(w, t["id"]), rollups_recomputed(orders, products, events)
        for table in INGEST_ROLLUPS:
            assert got[table] == want[table], table

    st = ingest(w.api, tok, "products", product_recs(sorted(products)), source_id="roll-src")
    assert st["stored_records"] == 4, st
    st = ingest(w.api, tok, "orders", [order_rec(k) for k in orders], source_id="roll-src")
    assert st["stored_records"] == 240 and st["duplicate_records"] == 0, st
    st = ingest(w.api, tok, "events", [{"event_id": k, "timestamp": iso(at), "session_id": s,
                                        "type": ty} for k, (at, s, ty) in events.items()],
                source_id="roll-src")
    assert st["stored_records"] == 150, st
    check()

    # direct SQL, as a repair or another tool would write: an order moved to another day and
    # counted again, an item's quantity, an item removed, a product's cost and category, an
    # order deleted, an order inserted with its items
    ids = sorted(orders)
    moved, edited, trimmed, gone = ids[5], ids[17], next(
        k for k in ids[30:] if len(orders[k]["items"]) > 1), ids[44]
    new_at = t0 + 20 * DAY_MS + 7 * HOUR_MS
    c = sqlite3.connect(os.path.join(w.server.data, "tessera.db"), timeout=30)
    with c:
        c.execute("UPDATE cm_orders SET created_at = ?, status = 'paid' WHERE tenant_id = ? "
                  "AND order_id = ?", (new_at, t["id"], moved))
        orders[moved].update(at=new_at, status="paid")
        c.execute("UPDATE cm_order_items SET quantity = quantity + 2 WHERE tenant_id = ? AND "
                  "order_id = ? AND line = 0", (t["id"], edited))
        p, q, m = orders[edited]["items"][0]
        orders[edited]["items"][0] = (p, q + 2, m)
        c.execute("DELETE FROM cm_order_items WHERE tenant_id = ? AND order_id = ? AND line = ?",
                  (t["id"], trimmed, len(orders[trimmed]["items"]) - 1))
        orders[trimmed]["items"].pop()
        c.execute("UPDATE cm_products SET cost_m = cost_m + 7, category = 'garden' "
                  "WHERE tenant_id = ? AND product_id = 'P2'", (t["id"],))
        products["P2"] = ("garden", products["P2"][1] + 7)
        c.execute("DELETE FROM cm_orders WHERE tenant_id = ? AND order_id = ?", (t["id"], gone))
        c.execute("DELETE FROM cm_order_items WHERE tenant_id = ? AND order_id = ?",
                  (t["id"], gone))
        del orders[gone]
        at = t0 + 3 * DAY_MS + 5
        c.execute("INSERT INTO cm_orders(tenant_id, order_id, customer_id, created_at, total_m, "
                  "currency, status, source_id, ingested_at) VALUES (?, 'ro-sql', 'rc-01', ?, "
                  "90000, 'USD', 'paid', 'roll-src', ?)", (t["id"], at, int(time.time() * 1000)))
        c.execute("INSERT INTO cm_order_items(tenant_id, order_id, line, product_id, quantity, "
                  "unit_price_m) VALUES (?, 'ro-sql', 0, 'P1', 3, 30000)", (t["id"],))
        orders["ro-sql"] = {"customer": "rc-01", "at": at, "total_m": 90000, "currency": "USD",
                            "status": "paid", "region": "", "channel": "", "items": [("P1", 3, 30000)]}
    c.close()
    check()

    # the stream path (one record: its triggers mark), a product known only now, and re-sent
    # orders (an order moved back, new items for another) through a batch
    at = t0 + 9 * DAY_MS + HOUR_MS
    orders["ro-live"] = {"customer": "rc-02", "at": at, "total_m": 55000, "currency": "EUR",
                         "status": "placed", "region": "EU", "channel": "web",
                         "items": [("P5", 1, 55000)]}
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "roll-live", "data_type": "orders", "timestamp": iso(at),
        "data": order_rec("ro-live")})
    assert r.status_code == 202, r.text
    events["re-live"] = (at, "rs-1", "purchase")
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "roll-live", "data_type": "events", "timestamp": iso(at),
        "data": {"event_id": "re-live", "type": "purchase", "session_id": "rs-1"}})
    assert r.status_code == 202, r.text
    check()
    products["P5"] = ("toys", 1000)
    st = ingest(w.api, tok, "products", product_recs(["P5"]), source_id="roll-src")
    assert st["stored_records"] == 1, st
    orders[moved]["at"] = t0 + HOUR_MS
    orders[edited]["items"] = [("P6", 2, 1234500), ("P1", 1, 100)]
    orders[edited]["total_m"] = 2 * 1234500 + 100
    st = ingest(w.api, tok, "orders", [order_rec(moved), order_rec(edited)],
                source_id="roll-src")
    assert st["stored_records"] == 2 and st["duplicate_records"] == 2, st
    check()


def test_stream_stores_every_type_as_a_batch_does(w):
    """A stream record is stored with its fields bound one by one, a batch's from JSON: the
    same record through either path gives the same row (and items), and sent again by stream
    it replaces its row (an order's items too) and says duplicate."""
    t = "2025-04-02T09:15:00Z"
    h = bearer(w.tok["admin"])
    recs = {
        "orders": ("order_id", "cm_orders", order(
            "X", customer="pc-1", total="12.3456", created=t, currency="EUR", status="shipped",
            channel="app", region="EU", items=[{"product_id": "pp-1", "quantity": 2,
                                                "unit_price": "6.1728"}])),
        "transactions": ("transaction_id", "cm_transactions", {
            "transaction_id": "X", "amount": "19.99", "timestamp": t, "type": "refund",
            "order_id": "o9", "customer_id": "pc-1", "currency": "GBP", "channel": "web",
            "region": "UK", "payment_method": "card"}),
        "products": ("product_id", "cm_products", {
            "product_id": "X", "name": "Mug", "category": "Kitchen", "price": 7.5, "cost": "2.25",
            "sku": 4711, "active": "false"}),
        "customers": ("customer_id", "cm_customers", {
            "customer_id": "X", "email": "ann@example.com", "name": "Ann", "created_at": t,
            "region": "EU", "channel": "app"}),
        "inventory": ("product_id", "cm_inventory", {
            "product_id": "X", "quantity": 40, "timestamp": t, "warehouse": "LDN",
            "reorder_level": 10}),
        "events": ("event_id", "cm_events", {
            "event_id": "X", "type": "purchase", "timestamp": t, "session_id": "s1",
            "customer_id": "pc-1", "product_id": "pp-1"}),
    }
    skip = {"source_id", "batch_id", "ingested_at"}
    for dtype, (key, table, rec) in recs.items():
        st = ingest(w.api, w.tok["admin"], dtype, [dict(rec, **{key: f"pb-{dtype}"})],
                    source_id="par-src")
        assert st["stored_records"] == 1, (dtype, st)
        r = w.api.post("/api/v1/ingest/stream", headers=h, json={
            "source_id": "par-live", "data_type": dtype, "timestamp": t,
            "data": dict(rec, **{key: f"ps-{dtype}"})})
        assert r.status_code == 202 and r.json()["data"]["duplicate"] is False, r.text
        rows = {}
        for via in ("pb", "ps"):
            got = w.rows(f"SELECT * FROM {table} WHERE {key} = ?", f"{via}-{dtype}")
            assert len(got) == 1, (dtype, via, got)
            rows[via] = {k: v for k, v in got[0].items() if k not in skip and k != key}
        assert rows["pb"] == rows["ps"], dtype
        assert w.rows(f"SELECT batch_id FROM {table} WHERE {key} = ?", f"ps-{dtype}") == \
            [{"batch_id": None}]
    items = lambda oid: w.rows("SELECT line, product_id, quantity, unit_price_m FROM "
                               "cm_order_items WHERE order_id = ? ORDER BY line", oid)
    assert items("pb-orders") == items("ps-orders") == \
        [{"line": 0, "product_id": "pp-1", "quantity": 2, "unit_price_m": 61728}]
    again = dict(recs["orders"][2], order_id="ps-orders", total=3, status="paid",
                 items=[{"product_id": "pp-2", "quantity": 1, "unit_price": 1},
                        {"product_id": "pp-3", "quantity": 1, "unit_price": 2}])
    r = w.api.post("/api/v1/ingest/stream", headers=h, json={
        "source_id": "par-live", "data_type": "orders", "timestamp": t, "data": again})
    assert r.status_code == 202 and r.json()["data"]["duplicate"] is True, r.text
    assert w.rows("SELECT total_m, status FROM cm_orders WHERE order_id = 'ps-orders'") == \
        [{"total_m": 30000, "status": "paid"}]
    assert [(i["product_id"], i["unit_price_m"]) for i in items("ps-orders")] == \
        [("pp-2", 10000), ("pp-3", 20000)]


def test_rollup_runs_that_caught_up_are_paced(w):
    """A day re-dirtied again and again (here: a 600,000-event day that a stream adds an event
    to every 50 ms) is not recomputed at every 500 ms tick: after a run that left nothing dirty,
    the next is queued only once that run has been over four times as long as it ran; after one
    that recomputed the day and could not write it (changed again meanwhile), only once it has
    been over twenty times as long, and 5 s at least, even if it stopped on its time budget
    (under ThreadSanitizer the day alone takes 3 s)."""
    t = w.acme
    day0 = int(datetime(2025, 3, 3, tzinfo=timezone.utc).timestamp() * 1000)
    rows = [(t["id"], f"pe-{i}", "page_view" if i % 7 else "purchase", day0 + i * 125,
             f"ps-{i // 5}", "seed", 0) for i in range(600000)]
    with w.db() as c:
        c.executemany("INSERT INTO cm_events(tenant_id, event_id, type, timestamp, session_id,"
                      " source_id, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    # the job threads are niced below everything else on the machine: on a host that is busy
    # with other work a 600,000-event day waits its turn
    wait_rollups_clean(w, t["id"], timeout=300)
    end = time.time() + 8
    k = 0
    while time.time() < end:  # each record marks the day dirty again
        r = w.api.post("/api/v1/ingest/stream", headers=bearer(w.tok["admin"]), json={
            "source_id": "paced", "data_type": "events", "timestamp": "2025-03-03T12:00:00Z",
            "data": {"event_id": f"live-{k}", "type": "page_view", "session_id": "live",
                     "timestamp": "2025-03-03T12:00:00Z"}})
        assert r.status_code == 202, r.text
        k += 1
        time.sleep(0.05)
    wait_rollups_clean(w, t["id"], timeout=300)
    runs = w.rows("SELECT created_at, started_at, finished_at, result FROM jobs WHERE"
                  " tenant_id = ? AND kind = 'commerce.rollup' AND status = 'completed'"
                  " ORDER BY created_at", t["id"])
    paced = wasted = 0
    for prev, nxt in zip(runs, runs[1:]):
        ran = prev["finished_at"] - prev["started_at"]
        res = json.loads(prev["result"])
        if res["days_recomputed"] > 0 and res["days_written"] == 0:  # caught up or not
            assert nxt["created_at"] >= prev["finished_at"] + max(5000, 20 * ran), (prev, nxt)
            wasted += 1
        elif res.get("caught_up"):
            assert nxt["created_at"] >= prev["finished_at"] + 4 * ran, (prev, nxt)
            paced += 4 * ran > 500  # a wait the 500 ms tick alone would not have made
    assert paced + wasted >= 1, f"no run long enough to show the pacing: {runs}"
    assert wasted >= 1, f"no run was overtaken by the changes: {runs}"
