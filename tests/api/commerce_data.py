"""Putting commerce data in through the real ingestion routes, for every commerce test.

    from commerce_data import RATE_FLAGS, ingest, shop

    server = Server(*RATE_FLAGS)              # limits high enough for a test module
    api = Api(server)
    s = shop(server, api, "acme")             # a tenant with one user per role, logged in
    st = ingest(api, s["admin"], "orders", [{"order_id": "o1", "customer_id": "c1",
                "created_at": "2025-01-02T10:00:00Z", "total": 12.5}])
    assert st["status"] == "completed" and st["stored_records"] == 1

ingest() posts POST /api/v1/ingest/batch and polls the batch status until the job has finished;
it returns the final status `data` (BatchStatusResponse: status, validation_status, progress,
stored_records, duplicate_records, errors [{record_index, record_id, field, check_type,
message}], ...). A batch whose records were all rejected ends "failed", one with some rejected
ends "completed" with validation_status "failed": check what your test expects.
"""
import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone

from accounts import bearer, login, tenant, user
from conftest import Api, Server

# Rate limits for a test module that makes many calls (the defaults are per hour).
RATE_FLAGS = ["--rate-limit", "commerce=100000/60", "--rate-limit", "analytics=100000/60",
              "--rate-limit", "stream=1000000/60"]

ROLES = ("admin", "manager", "developer", "viewer")


def shop(server, api, name, roles=ROLES):
    """Creates tenant <name> (domain <name>.example) with one user per role and logs each in.
    Returns {"tenant": {...id...}, "domain": ..., "<role>": access token, ...}."""
    domain = f"{name}.example"
    out = {"tenant": tenant(server.data, name.title(), domain), "domain": domain}
    for role in roles:
        email = f"{role}@{domain}"
        user(server.data, domain, email, role)
        out[role] = login(api, email)["access_token"]
    return out


def post_batch(api, token, data_type, records, source_id="test-src", format="json",
               metadata=None):
    """POST /api/v1/ingest/batch with a JSON body; returns the httpx response."""
    body = {"source_id": source_id, "data_type": data_type, "format": format, "data": records}
    if metadata is not None:
        body["metadata"] = metadata
    return api.post("/api/v1/ingest/batch", headers=bearer(token), json=body)


def post_body(api, token, content, content_type, data_type, source_id="test-src", **query):
    """POST /api/v1/ingest/batch with a CSV / NDJSON / XML body (content: str or bytes);
    query: columns=, date_format=, no_header=, schema_version= ... Returns the response."""
    params = {"source_id": source_id, "data_type": data_type, **query}
    if isinstance(content, str):
        content = content.encode()
    return api.post("/api/v1/ingest/batch", headers={**bearer(token), "Content-Type": content_type},
                    params=params, content=content)


def wait_batch(api, token, batch_id, timeout=60):
    """Polls the batch status until it is no longer processing; returns its data."""
    deadline = time.time() + timeout
    delay = 0.01
    while True:
        r = api.get(f"/api/v1/ingest/batches/{batch_id}/status", headers=bearer(token))
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if data["status"] != "processing":
            return data
        assert time.time() < deadline, f"batch {batch_id} still processing: {data}"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def ingest(api, token, data_type, records, source_id="test-src", timeout=60, **kw):
    """Posts records as one JSON batch (kw: format=, metadata=) and waits for the job.
    Returns the final BatchStatusResponse data. Fails the test if the batch is not accepted."""
    r = post_batch(api, token, data_type, records, source_id=source_id, **kw)
    assert r.status_code == 201, r.text
    return wait_batch(api, token, r.json()["data"]["batch_id"], timeout=timeout)


def ingest_body(api, token, content, content_type, data_type, source_id="test-src", timeout=60,
                **query):
    """As ingest(), for a CSV / NDJSON / XML body (see post_body)."""
    r = post_body(api, token, content, content_type, data_type, source_id=source_id, **query)
    assert r.status_code == 201, r.text
    return wait_batch(api, token, r.json()["data"]["batch_id"], timeout=timeout)


def ingest_many(api, token, data_type, records, source_id="test-src", size=10000, **kw):
    """Ingests any number of records in batches of at most `size`; returns the statuses."""
    return [ingest(api, token, data_type, records[i:i + size], source_id=source_id, **kw)
            for i in range(0, len(records), size)]


# The rollup tables of schema/013 (and the per-customer rows of 017): each one's query by
# tenant and how many leading columns are its key. rollups_stored() reads them as
# {table: {key: values}} (a one-column key unwrapped) for comparison with a recomputation.
ROLLUP_SQL = {
    "od": "SELECT day, region, channel, currency, orders, revenue_m, min_order_m, max_order_m"
          " FROM cm_rollup_orders_day WHERE tenant_id = ?",
    "ocd": "SELECT day, currency, orders, revenue_m, min_order_m, max_order_m"
           " FROM cm_rollup_orders_currency_day WHERE tenant_id = ?",
    "oh": "SELECT hour, currency, orders, revenue_m, min_order_m, max_order_m"
          " FROM cm_rollup_orders_hour WHERE tenant_id = ?",
    "cat": "SELECT category, day, region, channel, currency, orders, revenue_m, quantity,"
           " min_order_m, max_order_m FROM cm_rollup_category_day WHERE tenant_id = ?",
    "prod": "SELECT day, product_id, currency, orders, quantity, revenue_m, cost_m"
            " FROM cm_rollup_product_day WHERE tenant_id = ?",
    "cust": "SELECT day, currency, customers, orders, revenue_m FROM cm_rollup_customers_day"
            " WHERE tenant_id = ?",
    "ev": "SELECT day, sessions, purchase_sessions, events FROM cm_rollup_events_day"
          " WHERE tenant_id = ?",
    "inv": "SELECT day, delta, snapshots FROM cm_rollup_inventory_day WHERE tenant_id = ?",
    "co": "SELECT currency, customer_id, orders, monetary_m, first_at, last_at"
          " FROM cm_customer_orders WHERE tenant_id = ?",
}
ROLLUP_KEYS = {"od": 4, "ocd": 2, "oh": 2, "cat": 5, "prod": 3, "cust": 2, "ev": 1, "inv": 1,
               "co": 2}


def rollups_stored(conn, tenant_id, tables):
    """{table: {key: values}} for the named ROLLUP_SQL tables, read through conn (sqlite3)."""
    out = {}
    for t in tables:
        k = ROLLUP_KEYS[t]
        out[t] = {(r[0] if k == 1 else tuple(r[:k])): tuple(r[k:])
                  for r in map(tuple, conn.execute(ROLLUP_SQL[t], (tenant_id,)))}
    return out


def fold(want, table, key, vals, kinds):
    """Adds one record's figures to want[table][key] (a recomputed rollup row): kinds has one
    letter per value, "+" summed, "<" kept smallest, ">" kept largest."""
    cur = want[table].get(key)
    if cur is None:
        want[table][key] = list(vals)
        return
    for i, (v, k) in enumerate(zip(vals, kinds)):
        cur[i] = cur[i] + v if k == "+" else min(cur[i], v) if k == "<" else max(cur[i], v)


class BusyDay:
    """A day a stream keeps writing to, for the pacing tests of re-evaluations after ingestion:
    `n` events yesterday (UTC) written straight into SQLite, one session per two events and a
    purchase every 50th, so conversion over 7 days is 1 / 25 of `n / 2` sessions plus one more
    session for every live event. cost_ms() is the fastest the server answers that conversion
    query on /analytics/metrics (what each re-evaluation of a conversion figure also runs);
    post() streams one page_view event into the day (each its own session)."""

    def __init__(self, api, token, tenant_id, db, n=200000):
        self.api, self.token, self.n, self.live, self.costs = api, token, n, 0, []
        self.day = (datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
                    - timedelta(days=1))
        day0 = int(self.day.timestamp() * 1000)
        db.executemany("INSERT INTO cm_events(tenant_id, event_id, type, timestamp, session_id,"
                       " source_id, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(tenant_id, f"pe-{i}", "page_view" if i % 50 else "purchase",
                         day0 + i * (86400000 // n), f"ps-{i // 2}", "seed", 0) for i in range(n)])
        db.commit()

    @staticmethod
    def iso(dt):
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    def measure(self):
        end = datetime.now(timezone.utc)
        r = self.api.get("/api/v1/analytics/metrics", headers=bearer(self.token), params={
            "metric_type": "conversion", "granularity": "daily",
            "time_range[start]": self.iso(end - timedelta(days=7)),
            "time_range[end]": self.iso(end)})
        assert r.status_code == 200, r.text
        m = r.json()["data"]
        want = (self.n // 50) / (self.n // 2 + self.live)
        assert abs(m["summary"]["total"] - want) < 1e-9, (m["summary"], want)
        self.costs.append(m["metadata"]["query_time_ms"])

    def cost_ms(self):
        return min(self.costs)

    def post(self):
        k = self.live
        r = self.api.post("/api/v1/ingest/stream", headers=bearer(self.token), json={
            "source_id": "paced", "data_type": "events", "timestamp": self.iso(self.day),
            "data": {"event_id": f"live-{k}", "type": "page_view", "session_id": f"live-{k}",
                     "timestamp": self.iso(self.day)}})
        assert r.status_code == 202, r.text
        self.live += 1


def busy_shop(data, name):
    """A server on `data` (RATE_FLAGS) with an admin-only shop `name` and its BusyDay, the query
    time measured three times: (server, api, sqlite3 connection, shop, busy). The caller closes
    the connection and the api and stops the server."""
    s = Server(*RATE_FLAGS, data=data)
    api = Api(s)
    db = sqlite3.connect(os.path.join(s.data, "tessera.db"), timeout=30)
    t = shop(s, api, name, roles=("admin",))
    busy = BusyDay(api, t["admin"], t["tenant"]["id"], db)
    for _ in range(3):
        busy.measure()
    return s, api, db, t, busy
