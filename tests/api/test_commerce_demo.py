"""`tessera serve --demo` commerce shop (src/surfaces/commerce/demo.c, tools/commerce_gen.c):
the documented sizes, 18 months of seasonal orders with exact totals, payments that match
the orders, weekly stock, web sessions whose purchases are the orders, two dashboards and
alert rules that evaluate, and a generator that gives the same shop for the same seed.
Figures are read with sqlite3 (read-only) from the data dir and checked in Python."""
import collections
import datetime
import hashlib
import json
import os
import sqlite3
import subprocess

import pytest

from accounts import bearer, login
from conftest import BIN, Api, Server

ADMIN = "admin@demo.tessera.local"
PASSWORD = "tessera-demo"
GEN = os.path.join(os.path.dirname(os.path.abspath(BIN)), "commerce-gen")
# the demo's sizes (cg_config_demo in tools/commerce_gen.c, README "commerce / Demo data")
PRODUCTS, CUSTOMERS, ORDERS, DAYS, EVENT_DAYS = 2000, 20000, 200000, 548, 7
DAY_MS = 86400000
COUNTED = "status NOT IN ('cancelled', 'refunded')"


class DemoServer(Server):
    """Seeding the shop takes a few seconds (longer under ASan on a busy machine)."""

    def wait_ready(self, timeout=120):
        return super().wait_ready(timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = tmp_path_factory.mktemp("commerce-demo")
    s = DemoServer("--demo", data=str(data))
    api = Api(s)
    db = sqlite3.connect(f"file:{data}/tessera.db?mode=ro", uri=True, timeout=10)
    tenant = db.execute("SELECT id FROM tenants WHERE domain = 'demo.tessera.local'").fetchone()[0]
    h = bearer(login(api, ADMIN, PASSWORD)["access_token"])
    yield s, api, db, tenant, h
    db.close()
    api.close()
    s.stop()


def one(db, sql, *args):
    return db.execute(sql, args).fetchone()[0]


def month_of(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m")


def test_sizes_and_span(demo):
    _, _, db, t, _ = demo
    assert one(db, "SELECT count(*) FROM cm_products WHERE tenant_id = ?", t) == PRODUCTS
    assert one(db, "SELECT count(*) FROM cm_customers WHERE tenant_id = ?", t) == CUSTOMERS
    assert one(db, "SELECT count(*) FROM cm_orders WHERE tenant_id = ?", t) == ORDERS
    cats = db.execute("SELECT category, count(*) FROM cm_products WHERE tenant_id = ? "
                      "GROUP BY category", (t,)).fetchall()
    assert len(cats) >= 10 and all(n >= 20 for _, n in cats)
    assert one(db, "SELECT count(*) FROM cm_products WHERE tenant_id = ? AND (price_m <= 0 OR "
                   "cost_m <= 0 OR cost_m >= price_m OR sku IS NULL OR name = '')", t) == 0
    # orders over the 548 days up to the moment of seeding, none in the future
    first, last = db.execute("SELECT min(created_at), max(created_at) FROM cm_orders "
                             "WHERE tenant_id = ?", (t,)).fetchone()
    seeded = json.loads(one(db, "SELECT configuration FROM cm_sources WHERE tenant_id = ? AND "
                                "source_id = 'demo-shop'", t))
    end = int(datetime.datetime.fromisoformat(seeded["end"].replace("Z", "+00:00"))
              .timestamp() * 1000)
    assert last <= end and end - last < DAY_MS
    assert (DAYS - 1) * DAY_MS < end - first <= DAYS * DAY_MS
    # every customer signed up before their first order
    assert one(db, "SELECT count(*) FROM cm_orders o JOIN cm_customers c ON c.tenant_id = "
                   "o.tenant_id AND c.customer_id = o.customer_id WHERE o.tenant_id = ? AND "
                   "c.created_at > o.created_at", t) == 0


def test_orders_items_and_statuses(demo):
    _, _, db, t, _ = demo
    per_order = collections.Counter()
    sums = {}
    for oid, n, s in db.execute("SELECT order_id, count(*), sum(quantity * unit_price_m) FROM "
                                "cm_order_items WHERE tenant_id = ? GROUP BY order_id", (t,)):
        per_order[n] += 1
        sums[oid] = s
    assert set(per_order) == {1, 2, 3, 4, 5} and sum(per_order.values()) == ORDERS
    assert per_order[1] > per_order[2] > per_order[3] > per_order[4] > per_order[5]
    bad = [oid for oid, total in db.execute("SELECT order_id, total_m FROM cm_orders WHERE "
                                            "tenant_id = ?", (t,)) if sums.get(oid) != total]
    assert bad == []  # every total is exactly the sum of its items
    st = dict(db.execute("SELECT status, count(*) FROM cm_orders WHERE tenant_id = ? "
                         "GROUP BY status", (t,)).fetchall())
    assert set(st) == {"placed", "paid", "shipped", "delivered", "cancelled", "refunded"}
    assert 0.02 < (st["cancelled"] + st["refunded"]) / ORDERS < 0.10
    cur = dict(db.execute("SELECT currency, count(*) FROM cm_orders WHERE tenant_id = ? "
                          "GROUP BY currency", (t,)).fetchall())
    assert set(cur) == {"USD", "EUR", "GBP"} and cur["USD"] > 0.6 * ORDERS
    assert min(cur["EUR"], cur["GBP"]) > 0.05 * ORDERS
    assert one(db, "SELECT count(DISTINCT region) FROM cm_orders WHERE tenant_id = ?", t) >= 5
    assert one(db, "SELECT count(DISTINCT channel) FROM cm_orders WHERE tenant_id = ?", t) >= 4


def test_seasonality_and_growth(demo):
    _, _, db, t, _ = demo
    revenue = collections.Counter()
    days = collections.Counter()
    for ms, total in db.execute(f"SELECT created_at, total_m FROM cm_orders WHERE tenant_id = ? "
                                f"AND {COUNTED}", (t,)):
        revenue[month_of(ms)] += total
        days[ms // DAY_MS] += 1
    months = sorted(revenue)
    full = months[1:-1]  # the first and the last month are partial
    assert len(full) >= 16
    december = max(m for m in full if m.endswith("-12"))
    mean = sum(revenue[m] for m in full) / len(full)
    assert revenue[december] > 1.2 * mean  # the December peak
    assert revenue[december] > max(revenue[m] for m in full if m[:4] == december[:4] and m != december)
    # growth: each full month against the same month a year before
    pairs = [(m, f"{int(m[:4]) + 1}{m[4:]}") for m in full if f"{int(m[:4]) + 1}{m[4:]}" in full]
    assert len(pairs) >= 4
    assert all(revenue[b] > 1.2 * revenue[a] for a, b in pairs), pairs
    # a weekly cycle: Saturdays sell less than Mondays
    by_dow = collections.defaultdict(list)
    for d, n in days.items():
        by_dow[(d + 4) % 7].append(n)  # 1970-01-01 was a Thursday: 0 = Sunday
    mean_of = {k: sum(v) / len(v) for k, v in by_dow.items()}
    assert mean_of[6] < mean_of[1]


def test_transactions_match_orders(demo):
    _, _, db, t, _ = demo
    tx = collections.defaultdict(list)
    for oid, typ, amount, ts in db.execute("SELECT order_id, type, amount_m, timestamp FROM "
                                           "cm_transactions WHERE tenant_id = ?", (t,)):
        tx[oid].append((typ, amount, ts))
    for oid, status, total, created in db.execute("SELECT order_id, status, total_m, created_at "
                                                  "FROM cm_orders WHERE tenant_id = ?", (t,)):
        kinds = sorted(k for k, _, _ in tx.get(oid, []))
        want = {"placed": [], "cancelled": [], "refunded": ["refund", "sale"]}.get(status, ["sale"])
        assert kinds == want, (oid, status, kinds)
        assert all(a == total and ts >= created for _, a, ts in tx.get(oid, []))
    assert one(db, "SELECT count(DISTINCT payment_method) FROM cm_transactions "
                   "WHERE tenant_id = ?", t) >= 4


def test_inventory_weekly(demo):
    _, _, db, t, _ = demo
    snaps = collections.defaultdict(list)
    for p, w, ts, q in db.execute("SELECT product_id, warehouse, timestamp, quantity FROM "
                                  "cm_inventory WHERE tenant_id = ? ORDER BY 1, 2, 3", (t,)):
        snaps[(p, w)].append((ts, q))
    assert {p for p, _ in snaps} == {r[0] for r in db.execute(
        "SELECT product_id FROM cm_products WHERE tenant_id = ?", (t,))}
    assert {w for _, w in snaps} == {"us-east", "eu-west"}
    for series in snaps.values():
        assert len(series) >= DAYS // 7
        assert all(b[0] - a[0] == 7 * DAY_MS for a, b in zip(series, series[1:]))
        assert all(q >= 0 for _, q in series)
    zero = sum(q == 0 for s in snaps.values() for _, q in s)
    assert 0 < zero < 0.2 * sum(len(s) for s in snaps.values())  # some stock-outs, not many


def test_web_sessions(demo):
    _, _, db, t, _ = demo
    sessions = collections.defaultdict(set)
    for sid, typ in db.execute("SELECT session_id, type FROM cm_events WHERE tenant_id = ?", (t,)):
        sessions[sid].add(typ)
    assert set().union(*sessions.values()) == {"page_view", "product_view", "add_to_cart",
                                               "checkout", "purchase"}
    buying = [s for s in sessions.values() if "purchase" in s]
    assert 0.03 < len(buying) / len(sessions) < 0.2
    assert all(s >= {"page_view", "product_view", "add_to_cart", "checkout"} for s in buying)
    first, last = db.execute("SELECT min(timestamp), max(timestamp) FROM cm_events "
                             "WHERE tenant_id = ?", (t,)).fetchone()
    assert (EVENT_DAYS - 1) * DAY_MS < last - first < (EVENT_DAYS + 1) * DAY_MS
    # each purchase is an item of an order of the same customer, at the order's time (CROSS
    # JOIN fixes the order: the customer's orders by cm_orders_customer, then their items;
    # without an index of items by product the planner would scan every item per purchase)
    unmatched = one(db, "SELECT count(*) FROM cm_events e WHERE e.tenant_id = ? AND "
                        "e.type = 'purchase' AND NOT EXISTS (SELECT 1 FROM cm_orders o CROSS JOIN "
                        "cm_order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id "
                        "WHERE o.tenant_id = e.tenant_id AND o.customer_id = e.customer_id AND "
                        "o.created_at BETWEEN e.timestamp - 4 AND e.timestamp AND "
                        "i.product_id = e.product_id)",
                    t)
    assert unmatched == 0


def test_sources_dashboards_and_rules(demo):
    _, api, db, t, h = demo
    r = api.get("/api/v1/ingest/sources?size=100", headers=h)
    assert r.status_code == 200, r.text
    srcs = {s["source_id"]: s for s in r.json()["data"]["content"]}
    tables = {"demo-shop": ("cm_orders", "cm_transactions"), "demo-erp": ("cm_products", "cm_inventory"),
              "demo-crm": ("cm_customers",), "demo-web": ("cm_events",)}
    for sid, tabs in tables.items():
        assert srcs[sid]["total_records"] == sum(
            one(db, f"SELECT count(*) FROM {tab} WHERE tenant_id = ?", t) for tab in tabs)

    r = api.get("/api/v1/dashboards", headers=h)
    assert r.status_code == 200, r.text
    dashboards = r.json()["data"]["dashboards"]
    assert len(dashboards) == 2
    assert {d["category"] for d in dashboards} == {"executive", "operations"}
    assert all(len(d["widgets"]) >= 6 for d in dashboards)
    types = {w["type"] for d in dashboards for w in d["widgets"]}
    assert types == {"metric_card", "line_chart", "bar_chart", "pie_chart", "table", "map"}
    exe = next(d for d in dashboards if d["category"] == "executive")
    r = api.get(f"/api/v1/dashboards/{exe['dashboard_id']}/data", headers=h, timeout=60)
    assert r.status_code == 200, r.text
    widgets = r.json()["data"]["data"]
    assert len(widgets) == len(exe["widgets"])
    assert all(w["status"] == "success" for w in widgets.values()), widgets

    r = api.get("/api/v1/alerts/rules", headers=h)
    assert r.status_code == 200, r.text
    rules = r.json()["data"]["rules"]
    assert len(rules) >= 3 and all(x["enabled"] for x in rules)
    assert {x["metric_type"] for x in rules} >= {"revenue", "conversion", "inventory"}


def test_december_figure_through_the_metrics_route(demo):
    """The route's monthly revenue for the December equals Python's sum over the rows."""
    _, api, db, t, h = demo
    rows = db.execute(f"SELECT created_at, total_m FROM cm_orders WHERE tenant_id = ? AND "
                      f"{COUNTED}", (t,)).fetchall()
    months = sorted({month_of(ms) for ms, _ in rows})
    december = max(m for m in months[1:-1] if m.endswith("-12"))
    want = sum(total for ms, total in rows if month_of(ms) == december) / 10000
    y = int(december[:4])
    r = api.get(f"/api/v1/analytics/metrics?metric_type=revenue&granularity=monthly"
                f"&time_range[start]={y}-12-01T00:00:00Z&time_range[end]={y + 1}-01-01T00:00:00Z",
                headers=h, timeout=60)
    assert r.status_code == 200, r.text
    points = r.json()["data"]["data"]
    assert len(points) == 1 and abs(points[0]["value"] - want) < 0.005


def gen(out, *args):
    subprocess.run([GEN, "--out", str(out), *args], check=True, capture_output=True, timeout=120)
    digest = hashlib.sha256()
    for name in sorted(os.listdir(out)):
        digest.update(name.encode())
        with open(os.path.join(out, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def test_generator_is_deterministic(tmp_path):
    small = ["--products", "50", "--customers", "300", "--orders", "3000", "--days", "60",
             "--event-days", "5", "--end", "2025-03-01T10:30:00Z"]
    a = gen(tmp_path / "a", "--seed", "7", *small)
    b = gen(tmp_path / "b", "--seed", "7", *small)
    c = gen(tmp_path / "c", "--seed", "8", *small)
    assert a == b and a != c
    d = gen(tmp_path / "d", "--seed", "7", "--format", "batch", "--batch-size", "1000", *small)
    batches = sorted(os.listdir(tmp_path / "d"))
    assert [f for f in batches if f.startswith("orders-")] == [
        "orders-000001.json", "orders-000002.json", "orders-000003.json"]
    body = json.load(open(tmp_path / "d" / "orders-000001.json"))
    assert body["data_type"] == "orders" and body["format"] == "json" and len(body["data"]) == 1000
    lines = [json.loads(x) for x in open(tmp_path / "a" / "orders.ndjson")]
    assert body["data"] == lines[:1000]  # the same records in either form
    assert d != a


def test_generator_reproduces_the_demo(demo, tmp_path):
    """commerce-gen with the seed and end the demo recorded writes the demo's orders."""
    _, _, db, t, _ = demo
    conf = json.loads(one(db, "SELECT configuration FROM cm_sources WHERE tenant_id = ? AND "
                              "source_id = 'demo-shop'", t))
    subprocess.run([GEN, "--out", str(tmp_path), "--types", "orders,products", "--seed",
                    str(conf["seed"]), "--days", str(conf["days"]), "--end", conf["end"]],
                   check=True, capture_output=True, timeout=120)
    orders = [json.loads(x) for x in open(tmp_path / "orders.ndjson")]
    assert len(orders) == ORDERS
    got = dict(db.execute("SELECT order_id, total_m FROM cm_orders WHERE tenant_id = ?", (t,)))
    assert {o["order_id"]: round(o["total"] * 10000) for o in orders} == got
    names = dict(db.execute("SELECT product_id, name FROM cm_products WHERE tenant_id = ?", (t,)))
    assert {p["product_id"]: p["name"] for p in
            map(json.loads, open(tmp_path / "products.ndjson"))} == names
