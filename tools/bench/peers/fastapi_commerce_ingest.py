"""The peer for tools/bench/commerce: POST /api/v1/ingest/batch and GET
/api/v1/ingest/batches/{id}/status in FastAPI + uvicorn + sqlite3, written the way such a
service usually is and doing the work Tessera does for the same request:

- the bearer token is checked (HS256, the server's own secret, as tools/bench/auth's peer);
- the request is checked (source_id 3-50 [A-Za-z0-9-], data_type, format, 1..10,000 records)
  with every violation in one 400; the source is registered on first use; the batch row is
  stored with the body as its durable payload, and the answer is 201 with validation_status
  pending (contract 1.1);
- a worker thread then checks every record with Tessera's rules (src/surfaces/commerce/
  records.c: required fields, ids, ISO 8601 times not more than 24 h ahead, non-negative money
  in ten-thousandths, enums, ISO 4217 currency, line items with quantity > 0), upserts the good
  ones by natural id into the schema/012 tables (an order's items replaced on re-send), keeps
  the rejects with their reasons, and updates the batch and source counters, all in one
  transaction per batch (WAL, synchronous=NORMAL).

It runs on its own database file (PEER_DB), created from schema/012 unless it holds the tables
already (tools/bench/commerce also runs it on a copy of Tessera's fully migrated database),
with plain-Python checks rather than pydantic models: the faster of the two for this work, so
the comparison favours the peer.
"""
import json
import math
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone

import jwt
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

DB = os.environ["PEER_DB"]
KEY = bytes.fromhex(open(os.environ["PEER_SECRET"]).read().strip())
SCHEMA = os.environ.get("PEER_SCHEMA", os.path.join(os.path.dirname(__file__),
                                                     "../../../schema/012_commerce_data.sql"))
BATCH_MAX = 10000
ID_MAX, TEXT_MAX, ITEMS_MAX = 128, 512, 1000
FUTURE_MS = 24 * 3600 * 1000
MONEY_MAX = 1e14
SOURCE_RE = re.compile(r"[A-Za-z0-9-]{3,50}\Z")
CURRENCY_RE = re.compile(r"[A-Z]{3}\Z")
NUMBER_RE = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*\Z")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
TYPES = ("transactions", "products", "customers", "inventory", "orders", "events")
FORMATS = ("json", "csv", "xml", "parquet")


def connect():
    c = sqlite3.connect(DB, isolation_level=None, check_same_thread=False, timeout=5)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    return c


def init_db():
    c = connect()
    if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'cm_orders'").fetchone():
        c.executescript(open(SCHEMA).read())
    c.close()


init_db()
app = FastAPI()
accept_db = connect()
jobs = queue.Queue()


def now_ms():
    return int(time.time() * 1000)


def iso(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def envelope(data, status=200):
    return JSONResponse({"success": True, "data": data, "timestamp": iso(now_ms()),
                         "request_id": str(uuid.uuid4())}, status_code=status)


def error(status, code, message, field_errors=()):
    return JSONResponse({"success": False,
                         "error": {"code": code, "message": message, "details": {},
                                   "field_errors": list(field_errors)},
                         "timestamp": iso(now_ms()), "request_id": str(uuid.uuid4())},
                        status_code=status)


def tenant_of(authorization):
    if not authorization or not authorization.startswith("Bearer "):
        return None
    try:
        return jwt.decode(authorization[7:], KEY, algorithms=["HS256"])["tid"]
    except (jwt.PyJWTError, KeyError):
        return None


# ---- record checks: records.c's tables, field by field ----

ORDER_STATUS = ("placed", "paid", "shipped", "delivered", "cancelled", "refunded")
TX_TYPE = ("sale", "refund")
EVENT_TYPE = ("page_view", "product_view", "add_to_cart", "checkout", "purchase")
REQ, NONNEG, POS, EMPTY, DEFCUR = 1, 2, 4, 8, 16
# name, kind, flags, enum values
FIELDS = {
    "orders": [("order_id", "id", REQ), ("customer_id", "id", REQ), ("created_at", "time", REQ),
               ("total", "money", REQ | NONNEG), ("currency", "currency", DEFCUR),
               ("status", "enum", 0, ORDER_STATUS), ("channel", "text", EMPTY),
               ("region", "text", EMPTY)],
    "transactions": [("transaction_id", "id", REQ), ("amount", "money", REQ | NONNEG),
                     ("timestamp", "time", REQ), ("type", "enum", 0, TX_TYPE),
                     ("order_id", "id", 0), ("customer_id", "id", 0),
                     ("currency", "currency", DEFCUR), ("channel", "text", EMPTY),
                     ("region", "text", EMPTY), ("payment_method", "text", 0)],
    "products": [("product_id", "id", REQ), ("name", "text", REQ), ("category", "text", EMPTY),
                 ("price", "money", NONNEG), ("cost", "money", NONNEG), ("sku", "id", 0),
                 ("active", "bool", 0)],
    "customers": [("customer_id", "id", REQ), ("created_at", "time", 0), ("email", "email", 0),
                  ("name", "text", 0), ("region", "text", EMPTY), ("channel", "text", EMPTY)],
    "inventory": [("product_id", "id", REQ), ("warehouse", "id", EMPTY),
                  ("timestamp", "time", REQ), ("quantity", "int", REQ | NONNEG),
                  ("reorder_level", "int", NONNEG)],
    "events": [("event_id", "id", REQ), ("type", "enum", REQ, EVENT_TYPE),
               ("timestamp", "time", REQ), ("session_id", "id", REQ),
               ("customer_id", "id", 0), ("product_id", "id", 0)],
}
ITEM_FIELDS = [("product_id", "id", REQ), ("quantity", "int", REQ | POS),
               ("unit_price", "money", REQ | NONNEG)]
TABLES = {
    "orders": ("cm_orders", ["order_id", "customer_id", "created_at", "total_m", "currency",
                             "status", "channel", "region"], 1),
    "transactions": ("cm_transactions", ["transaction_id", "amount_m", "timestamp", "type",
                                         "order_id", "customer_id", "currency", "channel",
                                         "region", "payment_method"], 1),
    "products": ("cm_products", ["product_id", "name", "category", "price_m", "cost_m", "sku",
                                 "active"], 1),
    "customers": ("cm_customers", ["customer_id", "created_at", "email", "name", "region",
                                   "channel"], 1),
    "inventory": ("cm_inventory", ["product_id", "warehouse", "timestamp", "quantity",
                                   "reorder_level"], 3),
    "events": ("cm_events", ["event_id", "type", "timestamp", "session_id", "customer_id",
                             "product_id"], 1),
}


def number_of(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return float(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str) and NUMBER_RE.match(v):
        d = float(v)
        return d if math.isfinite(d) else None
    return None


def parse_time(s):
    if not isinstance(s, str):
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(round(t.timestamp() * 1000))


def check_value(name, kind, flags, values, v, fails, path, now):
    """The stored value of one present field, or None with a failure added."""
    if kind == "id":
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if not isinstance(v, str):
            fails.append((f"{path}.{name}", "validity", f"{name} must be a string or an integer"))
        elif v == "":
            fails.append((f"{path}.{name}", "completeness" if flags & REQ else "validity",
                          f"{name} is empty"))
        elif len(v.encode()) > ID_MAX or "\0" in v:
            fails.append((f"{path}.{name}", "validity",
                          f"{name} must be at most {ID_MAX} characters of text"))
        else:
            return v
        return None
    if kind in ("text", "email"):
        limit = TEXT_MAX if kind == "text" else 254
        if not isinstance(v, str) or len(v.encode()) > limit or "\0" in v:
            fails.append((f"{path}.{name}", "validity",
                          f"{name} must be a string of at most {limit} characters"))
            return None
        if kind == "email" and not EMAIL_RE.match(v):
            fails.append((f"{path}.{name}", "validity", f"{name} must be an email address"))
            return None
        return v
    if kind == "enum":
        if isinstance(v, str) and v in values:
            return v
        fails.append((f"{path}.{name}", "validity", f"{name} must be one of: {', '.join(values)}"))
        return None
    if kind == "currency":
        if isinstance(v, str) and CURRENCY_RE.match(v):
            return v
        fails.append((f"{path}.{name}", "validity",
                      f"{name} must be an ISO 4217 code: three capital letters"))
        return None
    if kind == "time":
        ms = parse_time(v)
        if ms is None:
            fails.append((f"{path}.{name}", "validity", f"{name} must be an ISO 8601 date-time"))
        elif ms > now + FUTURE_MS:
            fails.append((f"{path}.{name}", "accuracy",
                          f"{name} is more than 24 hours in the future"))
        else:
            return ms
        return None
    if kind == "money":
        d = number_of(v)
        if d is None:
            fails.append((f"{path}.{name}", "validity", f"{name} must be a number"))
        elif abs(d) > MONEY_MAX:
            fails.append((f"{path}.{name}", "validity", f"{name} is out of range"))
        elif flags & NONNEG and d < 0:
            fails.append((f"{path}.{name}", "accuracy", f"{name} must not be negative"))
        else:
            return int(round(d * 10000))
        return None
    if kind == "int":
        if isinstance(v, int) and not isinstance(v, bool):
            x = v
        else:
            d = number_of(v)
            if d is None or d != math.floor(d) or abs(d) > 9e15:
                fails.append((f"{path}.{name}", "validity", f"{name} must be an integer"))
                return None
            x = int(d)
        if flags & POS and x <= 0:
            fails.append((f"{path}.{name}", "accuracy", f"{name} must be greater than 0"))
        elif flags & NONNEG and x < 0:
            fails.append((f"{path}.{name}", "accuracy", f"{name} must not be negative"))
        else:
            return x
        return None
    if kind == "bool":
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int) and v in (0, 1):
            return v
        if isinstance(v, str) and v.lower() in ("true", "1", "yes", "false", "0", "no"):
            return int(v.lower() in ("true", "1", "yes"))
        fails.append((f"{path}.{name}", "validity", f"{name} must be true or false"))
        return None
    raise AssertionError(kind)


def check_record(data_type, rec, index, now, currency="USD"):
    """(values in table order, items, failures)."""
    path = f"data[{index}]"
    fails, values = [], []
    if not isinstance(rec, dict):
        return None, None, [(path, "validity", "a record must be a JSON object")]
    for spec in FIELDS[data_type]:
        name, kind, flags = spec[:3]
        enum = spec[3] if len(spec) > 3 else None
        v = rec.get(name)
        if v is None:
            if flags & REQ:
                fails.append((f"{path}.{name}", "completeness", f"{name} is required"))
                values.append(None)
            elif flags & EMPTY:
                values.append("")
            elif flags & DEFCUR:
                values.append(currency)
            elif kind == "enum":
                values.append(enum[0])
            elif kind == "bool":
                values.append(1)
            else:
                values.append(None)
            continue
        values.append(check_value(name, kind, flags, enum, v, fails, path, now))
    items = []
    if data_type == "orders":
        raw = rec.get("items")
        if raw is not None:
            if not isinstance(raw, list):
                fails.append((f"{path}.items", "validity", "items must be an array of line items"))
            elif len(raw) > ITEMS_MAX:
                fails.append((f"{path}.items", "validity",
                              f"items holds more than {ITEMS_MAX} lines"))
            else:
                for k, it in enumerate(raw):
                    ipath = f"{path}.items[{k}]"
                    if not isinstance(it, dict):
                        fails.append((ipath, "validity", "a line item must be an object"))
                        continue
                    row = []
                    for name, kind, flags in ITEM_FIELDS:
                        v = it.get(name)
                        if v is None:
                            fails.append((f"{ipath}.{name}", "completeness",
                                          f"{name} is required"))
                            row.append(None)
                        else:
                            row.append(check_value(name, kind, flags, None, v, fails, ipath, now))
                    items.append(row)
    return values, items, fails


# ---- storing ----

def upsert_sql(data_type):
    table, cols, nkey = TABLES[data_type]
    allc = ["tenant_id"] + cols + ["source_id", "batch_id", "ingested_at"]
    ins = (f"INSERT INTO {table}({', '.join(allc)}) VALUES({', '.join('?' * len(allc))}) "
           f"ON CONFLICT DO NOTHING")
    sets = cols[nkey:] + ["source_id", "batch_id", "ingested_at"]
    keys = ["tenant_id"] + cols[:nkey]
    upd = (f"UPDATE {table} SET {', '.join(c + ' = ?' for c in sets)} "
           f"WHERE {' AND '.join(k + ' = ?' for k in keys)}")
    return ins, upd, nkey


SQL = {t: upsert_sql(t) for t in TABLES}


def record_key(data_type, values, rec):
    if data_type == "inventory":
        if values[0] is None or values[1] is None or values[2] is None:
            return None
        return f"{values[0]}/{values[1]}/{iso(values[2])}" if values[1] else \
            f"{values[0]}/{iso(values[2])}"
    if values and values[0] is not None:
        return values[0]
    v = rec.get(FIELDS[data_type][0][0]) if isinstance(rec, dict) else None
    return v if isinstance(v, str) and len(v) <= ID_MAX else None


def process(db, job):
    tenant, batch_id, source_id, data_type, records = job
    now = now_ms()
    ins, upd, nkey = SQL[data_type]
    stored = dup = failed = 0
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE cm_batches SET started_at = ? WHERE tenant_id = ? AND batch_id = ?",
               (now, tenant, batch_id))
    for i, rec in enumerate(records):
        values, items, fails = check_record(data_type, rec, i, now)
        if fails:
            failed += 1
            key = record_key(data_type, values or [], rec)
            db.executemany("INSERT INTO cm_rejects(tenant_id, batch_id, source_id, data_type, "
                           "record_index, record_key, field, check_type, reason, created_at) "
                           "VALUES(?,?,?,?,?,?,?,?,?,?)",
                           [(tenant, batch_id, source_id, data_type, i, key, f, c, r, now)
                            for f, c, r in fails[:8]])
            continue
        tail = [source_id, batch_id, now]
        cur = db.execute(ins, [tenant] + values + tail)
        is_dup = cur.rowcount == 0
        if is_dup:
            db.execute(upd, values[nkey:] + tail + [tenant] + values[:nkey])
            dup += 1
        if data_type == "orders":
            if is_dup:
                db.execute("DELETE FROM cm_order_items WHERE tenant_id = ? AND order_id = ?",
                           (tenant, values[0]))
            db.executemany("INSERT INTO cm_order_items(tenant_id, order_id, line, product_id, "
                           "quantity, unit_price_m) VALUES(?,?,?,?,?,?)",
                           [(tenant, values[0], k, it[0], it[1], it[2])
                            for k, it in enumerate(items)])
        stored += 1
    done = now_ms()
    db.execute("UPDATE cm_batches SET status = CASE WHEN ? = 0 THEN 'failed' ELSE 'completed' END, "
               "validation_status = CASE WHEN ? = 0 THEN 'passed' ELSE 'failed' END, "
               "processed_records = ?, stored_records = ?, failed_records = ?, "
               "duplicate_records = ?, completed_at = ?, payload = NULL "
               "WHERE tenant_id = ? AND batch_id = ?",
               (stored, failed, len(records), stored, failed, dup, done, tenant, batch_id))
    db.execute("UPDATE cm_sources SET last_ingestion = ?, updated_at = ?, "
               "total_records = total_records + ? WHERE tenant_id = ? AND source_id = ?",
               (done, done, stored, tenant, source_id))
    db.execute("COMMIT")


def worker():
    db = connect()
    while True:
        job = jobs.get()
        try:
            process(db, job)
        except Exception as e:  # the batch fails; the worker goes on
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.execute("UPDATE cm_batches SET status = 'failed', error = ? "
                       "WHERE tenant_id = ? AND batch_id = ?", (str(e), job[0], job[1]))


threading.Thread(target=worker, daemon=True).start()


# ---- routes ----

@app.post("/api/v1/ingest/batch")
async def ingest_batch(request: Request, authorization: str = Header(None)):
    tenant = tenant_of(authorization)
    if tenant is None:
        return error(401, "UNAUTHORIZED", "a valid bearer token is required")
    body = await request.body()
    try:
        req = json.loads(body)
    except ValueError:
        return error(400, "VALIDATION_ERROR", "the body is not JSON")
    if not isinstance(req, dict):
        return error(400, "VALIDATION_ERROR", "the body must be a JSON object")
    errs = []
    source_id, data_type, fmt, data = (req.get("source_id"), req.get("data_type"),
                                       req.get("format"), req.get("data"))
    if not isinstance(source_id, str) or not SOURCE_RE.match(source_id):
        errs.append({"field": "source_id",
                     "message": "Source ID must be 3-50 characters: letters, digits and hyphens"})
    if data_type not in TYPES:
        errs.append({"field": "data_type", "message": "data_type must be one of " + ", ".join(TYPES)})
    if fmt not in FORMATS:
        errs.append({"field": "format", "message": "format must be one of " + ", ".join(FORMATS)})
    elif fmt != "json":
        errs.append({"field": "format", "message": "a JSON body carries format json"})
    if not isinstance(data, list) or not data:
        errs.append({"field": "data", "message": "data must be a non-empty array"})
    elif len(data) > BATCH_MAX:
        errs.append({"field": "data", "message": f"data holds at most {BATCH_MAX} records"})
    if errs:
        return error(400, "VALIDATION_ERROR", "the request is invalid", errs)
    meta = req.get("metadata") if isinstance(req.get("metadata"), dict) else {}
    now = now_ms()
    batch_id = str(uuid.uuid4())
    db = accept_db
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO cm_sources(tenant_id, source_id, name, type, status, configuration, "
               "created_at, updated_at) VALUES(?, ?, ?, 'api', 'active', '{}', ?, ?) "
               "ON CONFLICT DO NOTHING", (tenant, source_id, source_id, now, now))
    db.execute("INSERT INTO cm_batches(tenant_id, batch_id, source_id, data_type, format, "
               "metadata, schema_version, records_received, payload, created_at) "
               "VALUES(?,?,?,?,?,?,?,?,?,?)",
               (tenant, batch_id, source_id, data_type, fmt, json.dumps(meta),
                meta.get("schema_version"), len(data), body.decode(), now))
    db.execute("COMMIT")
    jobs.put((tenant, batch_id, source_id, data_type, data))
    return envelope({"status": "accepted", "batch_id": batch_id, "records_received": len(data),
                     "validation_status": "pending",
                     "estimated_processing_time": f"PT{len(data) / 5000:.3g}S",
                     "created_at": iso(now)}, 201)


@app.get("/api/v1/ingest/batches/{batch_id}/status")
async def batch_status(batch_id: str, authorization: str = Header(None)):
    tenant = tenant_of(authorization)
    if tenant is None:
        return error(401, "UNAUTHORIZED", "a valid bearer token is required")
    row = accept_db.execute(
        "SELECT status, records_received, processed_records, failed_records, created_at, "
        "started_at, completed_at FROM cm_batches WHERE tenant_id = ? AND batch_id = ?",
        (tenant, batch_id)).fetchone()
    if row is None:
        return error(404, "NOT_FOUND", "no such batch")
    status, total, processed, failed, created, started, completed = row
    if status == "processing":
        processed = 0  # one transaction per batch: nothing is visible until it commits
    data = {"batch_id": batch_id, "status": status,
            "progress": {"total_records": total, "processed_records": processed,
                         "failed_records": failed,
                         "progress_percentage": round(100.0 * processed / total, 1)},
            "started_at": iso(started or created)}
    if completed:
        data["completed_at"] = iso(completed)
    return envelope(data)
