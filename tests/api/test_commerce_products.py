"""commerce product performance (contract section 2.3): revenue, quantity, margin, conversion,
inventory turnover and trend per product, sorting, limits and the category summary.

A seeded shop with planted behaviour (a product selling more each day, one selling less, one
flat, one with sales only before the range, one sold without a product record, products with
and without a cost, cancelled/refunded orders, orders outside the range and in another
currency, web sessions that view and buy, inventory snapshots in two warehouses before and
inside the range) goes in through the batch ingestion route, and every figure is checked against the
definitions computed again here in Python from the same records."""
import math
import os
import random
import sqlite3
import time
from datetime import datetime, timezone

import pytest

from accounts import bearer, login, tenant, user
from commerce_data import RATE_FLAGS, ingest_many
from conftest import Api, Server

DAY = 86400000
START = 1740787200000  # 2025-03-01T00:00:00Z
END = START + 30 * DAY
PERF = "/api/v1/analytics/products/performance"
CATS = ["electronics", "home", "toys", "books"]


def iso(v):
    return datetime.fromtimestamp(v / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ms_of(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def money(v):
    return round(v * 10000)


def tr(start, end):
    return {"time_range[start]": iso(start), "time_range[end]": iso(end)}


# ---- the dataset ----

class Shop:
    def __init__(self, seed, prefix=""):
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.products, self.orders, self.events, self.inventory = [], [], [], []
        self.n = 0

    def product(self, pid, category, cost=None, price=20.0):
        p = {"product_id": pid, "name": f"Name of {pid}", "category": category, "price": price}
        if cost is not None:
            p["cost"] = cost
        self.products.append(p)

    def order(self, when, items, status=None, currency="USD"):
        self.n += 1
        total = round(sum(q * u for _, q, u in items), 2)
        self.orders.append({
            "order_id": f"{self.prefix}O{self.n:05d}", "customer_id": f"C{self.rng.randint(1, 30):02d}",
            "created_at": iso(when), "total": total, "currency": currency,
            "status": status or self.rng.choice(["placed", "paid", "shipped", "delivered"]),
            "channel": "web", "region": "EU",
            "items": [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in items]})

    def session(self, when, pid, bought, view=True):
        self.n += 1
        sid = f"{self.prefix}S{self.n:05d}"
        kinds = (["product_view"] if view else []) + ["add_to_cart"] + (["purchase"] if bought else [])
        for k, kind in enumerate(kinds):
            self.events.append({"event_id": f"{sid}-{k}", "type": kind, "timestamp": iso(when + k * 1000),
                                "session_id": sid, "product_id": pid})

    def snapshot(self, pid, warehouse, when, qty):
        self.inventory.append({"product_id": pid, "warehouse": warehouse, "timestamp": iso(when), "quantity": qty})


def acme_shop():
    s = Shop(31)
    rng = s.rng
    s.product("RISE-1", "electronics", cost=40.0)
    s.product("FALL-1", "electronics", cost=10.0)
    s.product("FLAT-1", "home")                 # no cost
    s.product("NOSALE", "toys", cost=3.0)
    s.product("FREE-1", "toys", cost=0.0)       # a cost of 0 is a cost
    for i in range(10):
        s.product(f"R{i:02d}", CATS[i % 4], cost=rng.choice([None, 2.5, 7.0, 12.0]))
    rnd = [p["product_id"] for p in s.products if p["product_id"].startswith("R")]
    for k in range(30):
        t = START + k * DAY + rng.randint(0, DAY - 1000)
        s.order(t, [("RISE-1", 1 + k // 3, 99.0)])
        s.order(t + 1000, [("FALL-1", max(1, 12 - k // 2), 25.5), ("FLAT-1", 2, 15.0)])
        for _ in range(rng.randint(1, 4)):
            items = [(p, rng.randint(1, 4), round(rng.uniform(3, 60), 2)) for p in rng.sample(rnd, rng.randint(1, 3))]
            s.order(START + k * DAY + rng.randint(0, DAY - 1), items)
    s.order(START + 3 * DAY, [("FREE-1", 5, 0.0)])
    s.order(START + 4 * DAY, [("P-NO-RECORD", 3, 11.0)])
    # not counted, or outside the range / currency
    s.order(START + 5 * DAY, [("RISE-1", 50, 99.0)], status="cancelled")
    s.order(START + 6 * DAY, [("FLAT-1", 50, 15.0)], status="refunded")
    s.order(START - 1, [("NOSALE", 7, 30.0), ("RISE-1", 9, 99.0)])
    s.order(END, [("FALL-1", 40, 25.5)])
    s.order(START + 7 * DAY, [("RISE-1", 3, 80.0), ("R01", 2, 9.0)], currency="EUR")
    s.order(START + 8 * DAY, [("R02", 4, 12.0)], currency="EUR")
    # web sessions: views with and without a purchase, a purchase without a view, out of range
    for pid, n in [("RISE-1", 12), ("FALL-1", 8), ("R03", 5), ("NOSALE", 4)]:
        for _ in range(n):
            s.session(START + rng.randint(0, 29) * DAY + rng.randint(0, 3600000), pid, rng.random() < 0.4)
    s.session(START + 2 * DAY, "FLAT-1", True, view=False)
    s.session(START - DAY, "FLAT-1", True)
    s.session(END + 1000, "RISE-1", True)
    # inventory: before the range, inside it (one exactly at a day's end), two warehouses
    for pid in ["RISE-1", "FALL-1", "FLAT-1", "R00", "R05", "NOSALE"]:
        s.snapshot(pid, "A", START - 10 * DAY, rng.randint(20, 80))
        s.snapshot(pid, "A", START - 2 * DAY, rng.randint(20, 80))
        for k in sorted(rng.sample(range(30), 4)):
            s.snapshot(pid, "A", START + k * DAY + rng.randint(0, DAY - 1), rng.randint(0, 120))
    s.snapshot("RISE-1", "B", START + 10 * DAY, 33)       # exactly at the end of day 9
    s.snapshot("RISE-1", "B", START + 20 * DAY + 5, 7)
    s.snapshot("FALL-1", "B", START + 15 * DAY - 1, 50)
    s.snapshot("R05", "A", END + DAY, 999)               # after the range
    return s


def globex_shop():
    s = Shop(5, prefix="G")
    s.product("RISE-1", "electronics", cost=1.0)
    s.product("GX-ONLY", "garden", cost=1.0)
    for k in range(5):
        s.order(START + k * DAY, [("RISE-1", 100, 1000.0), ("GX-ONLY", 1, 5.0)])
    s.session(START, "RISE-1", True)
    s.snapshot("RISE-1", "A", START, 1)
    return s


# ---- the independent computation ----

def expected(shop, start, end, category=None, currency="USD"):
    days = math.ceil((end - start) / DAY)
    recs = {p["product_id"]: p for p in shop.products}
    ids = {pid for pid, p in recs.items() if category is None or p.get("category") == category}
    sales = {}
    for o in shop.orders:
        t = ms_of(o["created_at"])
        if o["status"] in ("cancelled", "refunded") or not (start <= t < end) or o["currency"] != currency:
            continue
        k = (t - start) // DAY
        for i in o["items"]:
            v = sales.setdefault(i["product_id"], {"rev": 0, "qty": 0, "daily": [0] * days})
            v["rev"] += money(i["quantity"] * i["unit_price"])
            v["qty"] += i["quantity"]
            v["daily"][k] += money(i["quantity"] * i["unit_price"])
    for pid in sales:
        if category is None or (pid in recs and recs[pid].get("category") == category):
            ids.add(pid)
    views, buys = {}, {}
    for e in shop.events:
        t = ms_of(e["timestamp"])
        if start <= t < end and e.get("product_id"):
            key = (e["product_id"], e["session_id"])
            if e["type"] == "product_view":
                views[key] = True
            if e["type"] == "purchase":
                buys[key] = True
    samples = [min(start + (k + 1) * DAY, end) for k in range(days)]
    out = []
    for pid in ids:
        rec = recs.get(pid, {})
        s = sales.get(pid, {"rev": 0, "qty": 0, "daily": [0] * days})
        cost = rec.get("cost")
        rev = s["rev"] / 10000
        cogs = s["qty"] * money(cost) / 10000 if cost is not None else 0
        margin = rev - cogs if cost is not None else 0
        viewed = [k for k in views if k[0] == pid]
        bought = [k for k in viewed if k in buys]
        on_hand = []
        for t in samples:
            level = 0
            for wh in {v["warehouse"] for v in shop.inventory if v["product_id"] == pid}:
                snaps = [v for v in shop.inventory if v["product_id"] == pid and v["warehouse"] == wh
                         and ms_of(v["timestamp"]) <= t]
                if snaps:
                    level += max(snaps, key=lambda v: ms_of(v["timestamp"]))["quantity"]
            on_hand.append(level)
        avg_inv = sum(on_hand) / days
        y = [v / 10000 for v in s["daily"]]
        slope = least_squares(y)
        out.append({
            "product_id": pid, "name": rec.get("name", pid), "category": rec.get("category", ""),
            "revenue": rev, "quantity_sold": s["qty"], "margin": margin,
            "conversion_rate": len(bought) / len(viewed) if viewed else 0,
            "inventory_turnover": s["qty"] / avg_inv if avg_inv > 0 else 0,
            "trend": trend(slope, y), "has_cost": cost is not None, "cost_of_goods_sold": cogs,
            "trend_slope": slope, "view_sessions": len(viewed), "purchase_sessions": len(bought),
            "average_inventory": avg_inv, "_daily": y, "_cost": cost})
    return out


def least_squares(y):
    n = len(y)
    if n < 2:
        return 0.0
    xbar, ybar = (n - 1) / 2, sum(y) / n
    return sum((x - xbar) * (v - ybar) for x, v in enumerate(y)) / sum((x - xbar) ** 2 for x in range(n))


def trend(slope, y):
    mean = sum(y) / len(y)
    if abs(slope) * len(y) <= 0.10 * mean + 1e-9:
        return "stable"
    return "increasing" if slope > 0 else "decreasing"


def sort_rows(rows, sort_by):
    key = {"revenue": "revenue", "quantity": "quantity_sold", "margin": "margin"}[sort_by]
    return sorted(rows, key=lambda r: (-round(r[key] * 10000), r["product_id"]))


def close(a, b, tol=1e-6):
    return abs(a - b) <= tol + 1e-9 * abs(b)


def check_product(got, want):
    for k, v in want.items():
        if k.startswith("_"):
            continue
        if isinstance(v, float):
            assert close(got[k], v), (want["product_id"], k, got[k], v)
        else:
            assert got[k] == v, (want["product_id"], k, got[k], v)


def check_summary(got, rows, category):
    assert got["category"] == category
    assert got["product_count"] == len(rows)
    assert got["products_with_cost"] == sum(r["has_cost"] for r in rows)
    assert close(got["revenue"], sum(r["revenue"] for r in rows))
    assert got["quantity_sold"] == sum(r["quantity_sold"] for r in rows)
    assert close(got["margin"], sum(r["margin"] for r in rows))
    cogs = sum(r["cost_of_goods_sold"] for r in rows)
    assert close(got["cost_of_goods_sold"], cogs)
    v, b = sum(r["view_sessions"] for r in rows), sum(r["purchase_sessions"] for r in rows)
    assert close(got["conversion_rate"], b / v if v else 0)
    inv = sum(r["average_inventory"] * money(r["_cost"]) / 10000 for r in rows if r["has_cost"])
    assert close(got["inventory_turnover"], cogs / inv if inv > 0 else 0)
    daily = [sum(r["_daily"][k] for r in rows) for k in range(len(rows[0]["_daily"]))] if rows else []
    if daily:
        slope = least_squares(daily)
        assert close(got["trend_slope"], slope)
        assert got["trend"] == trend(slope, daily)


def check(body, shop, start, end, sort_by="revenue", limit=50, category=None, currency="USD"):
    rows = expected(shop, start, end, category, currency)
    want = sort_rows(rows, sort_by)[:limit]
    assert [p["product_id"] for p in body["products"]] == [r["product_id"] for r in want]
    for got, w in zip(body["products"], want):
        check_product(got, w)
    check_summary(body["category_summary"], rows, category)
    assert body["time_range"] == {"start": iso(start), "end": iso(end)}
    assert body["currency"] == currency and body["sort_by"] == sort_by
    assert body["total_products"] == len(rows)
    return {r["product_id"]: r for r in rows}


# ---- the server ----

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("products"))
    tenant(data, "Acme", "acme.example")
    tenant(data, "Globex", "globex.example")
    user(data, "acme.example", "admin@acme.example", "admin")
    user(data, "acme.example", "viewer@acme.example", "viewer")
    user(data, "globex.example", "admin@globex.example", "admin")
    s = Server("--rate-limit", "auth=10000/60", *RATE_FLAGS, data=data)
    a = Api(s)
    raw = {k: login(a, k)["access_token"]
           for k in ["admin@acme.example", "viewer@acme.example", "admin@globex.example"]}
    tok = {k: bearer(v) for k, v in raw.items()}
    A, G = acme_shop(), globex_shop()
    for who, shop in [("admin@acme.example", A), ("admin@globex.example", G)]:
        for data_type, records in [("products", shop.products), ("orders", shop.orders),
                                   ("events", shop.events), ("inventory", shop.inventory)]:
            for st in ingest_many(a, raw[who], data_type, records, size=5000):
                assert st["status"] == "completed" and st["errors"] == [], st
    yield {"api": a, "tok": tok, "raw": raw, "acme": A, "globex": G, "server": s}
    a.close()
    s.stop()


def get(world, who="viewer@acme.example", **params):
    return world["api"].get(PERF, headers=world["tok"][who], params=params)


def ok(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return body["data"]


# ---- figures ----

def test_default_sort_matches_independent_computation(world):
    body = ok(get(world, **tr(START, END)))
    rows = check(body, world["acme"], START, END)
    assert rows["RISE-1"]["trend"] == "increasing"
    assert rows["FALL-1"]["trend"] == "decreasing"
    assert rows["FLAT-1"]["trend"] == "stable"
    # no cost: margin 0 and flagged; a cost of 0 is a cost
    flat = next(p for p in body["products"] if p["product_id"] == "FLAT-1")
    assert flat["margin"] == 0 and flat["has_cost"] is False and flat["revenue"] > 0
    free = next(p for p in body["products"] if p["product_id"] == "FREE-1")
    assert free["has_cost"] is True and free["quantity_sold"] == 5
    nosale = next(p for p in body["products"] if p["product_id"] == "NOSALE")
    assert nosale["revenue"] == 0 and nosale["trend"] == "stable" and nosale["inventory_turnover"] == 0
    assert nosale["view_sessions"] == 4
    unknown = next(p for p in body["products"] if p["product_id"] == "P-NO-RECORD")
    assert unknown["name"] == "P-NO-RECORD" and unknown["category"] == "" and unknown["has_cost"] is False
    rise = next(p for p in body["products"] if p["product_id"] == "RISE-1")
    assert rise["inventory_turnover"] > 0 and 0 < rise["conversion_rate"] < 1


@pytest.mark.parametrize("sort_by", ["revenue", "quantity", "margin"])
@pytest.mark.parametrize("limit", [1, 3, 17, 500])
def test_sort_and_limit(world, sort_by, limit):
    body = ok(get(world, sort_by=sort_by, limit=str(limit), **tr(START, END)))
    check(body, world["acme"], START, END, sort_by, limit)


@pytest.mark.parametrize("category", ["electronics", "home", "toys", "books", "garden"])
def test_category_filter_and_summary(world, category):
    body = ok(get(world, category=category, **tr(START, END)))
    rows = check(body, world["acme"], START, END, category=category)
    assert all(p["category"] == category for p in body["products"])
    if category == "garden":  # Globex's category: nothing here
        assert rows == {} and body["category_summary"]["revenue"] == 0


@pytest.mark.parametrize("start,end", [
    (START + 4 * DAY + 12 * 3600000, START + 19 * DAY + 6 * 3600000),  # not on day edges
    (START + 10 * DAY, START + 10 * DAY + 3600000),                     # one short day
    (START - 40 * DAY, END + 40 * DAY),                                 # wider than the data
])
def test_other_ranges(world, start, end):
    check(ok(get(world, **tr(start, end))), world["acme"], start, end)


def test_range_forms_and_currency(world):
    as_json = '{"start": "%s", "end": "%s"}' % (iso(START), iso(END))
    check(ok(get(world, time_range=as_json)), world["acme"], START, END)
    check(ok(get(world, start=iso(START), end=iso(END))), world["acme"], START, END)
    check(ok(get(world, currency="EUR", **tr(START, END))), world["acme"], START, END, currency="EUR")


def test_tenant_isolation(world):
    mine = ok(get(world, who="admin@globex.example", **tr(START, END)))
    check(mine, world["globex"], START, END)
    acme = ok(get(world, **tr(START, END)))
    assert "GX-ONLY" not in [p["product_id"] for p in acme["products"]]


# ---- rollups ----

def dirty_days(server):
    with sqlite3.connect(f"file:{os.path.join(server.data, 'tessera.db')}?mode=ro", uri=True) as c:
        return c.execute("SELECT count(*) FROM cm_rollup_dirty").fetchone()[0]


def wait_clean(server, timeout=60):
    deadline = time.time() + timeout
    while dirty_days(server):
        assert time.time() < deadline, "rollups still dirty"
        time.sleep(0.1)


def test_figures_equal_once_rollups_settle(world):
    """Ranges on UTC day edges read the product rollup for clean days: the same figures."""
    wait_clean(world["server"])
    for sort_by, category, currency in [("revenue", None, "USD"), ("margin", "electronics", "USD"),
                                        ("quantity", None, "EUR")]:
        body = ok(get(world, sort_by=sort_by, currency=currency,
                      **({"category": category} if category else {}), **tr(START, END)))
        check(body, world["acme"], START, END, sort_by, category=category, currency=currency)
    for start, end in [(START + 3 * DAY, START + 9 * DAY), (START - 40 * DAY, END + 40 * DAY),
                       (START + 4 * DAY + 3600000, START + 9 * DAY)]:
        check(ok(get(world, **tr(start, end))), world["acme"], start, end)


def test_rollups_follow_resent_records(world):
    """Re-sent orders and a product's new cost mark their days dirty: figures stay exact right
    after (dirty days from the orders, the rest from the rollup) and once settled again."""
    wait_clean(world["server"])
    g, token = world["globex"], world["raw"]["admin@globex.example"]
    changed = [dict(g.orders[0], status="cancelled"),
               dict(g.orders[1], items=[{"product_id": "RISE-1", "quantity": 7, "unit_price": 1000.0}],
                    total=7000.0),
               dict(g.orders[2], created_at=iso(START + 20 * DAY + 5))]
    g.n += 1
    changed.append({"order_id": f"GO{g.n:05d}", "customer_id": "C01", "created_at": iso(START + 11 * DAY),
                    "total": 30.0, "currency": "USD", "status": "paid", "channel": "web", "region": "EU",
                    "items": [{"product_id": "GX-ONLY", "quantity": 6, "unit_price": 5.0}]})
    for st in ingest_many(world["api"], token, "orders", changed):
        assert st["status"] == "completed" and st["errors"] == [], st
    g.products[1] = dict(g.products[1], cost=4.0)
    for st in ingest_many(world["api"], token, "products", [g.products[1]]):
        assert st["status"] == "completed" and st["errors"] == [], st
    by_id = {o["order_id"]: o for o in g.orders}
    by_id.update({o["order_id"]: o for o in changed})
    g.orders = list(by_id.values())
    for _ in range(2):
        body = ok(get(world, who="admin@globex.example", **tr(START, END)))
        check(body, g, START, END)
        wait_clean(world["server"])


# ---- bad input ----

@pytest.mark.parametrize("params,field", [
    ({}, "time_range.start"),
    ({"time_range[start]": iso(START)}, "time_range.end"),
    ({"time_range[start]": "March", "time_range[end]": iso(END)}, "time_range.start"),
    ({"time_range[start]": iso(END), "time_range[end]": iso(START)}, "time_range"),
    ({"time_range[start]": iso(START), "time_range[end]": iso(START)}, "time_range"),
    ({"time_range[start]": iso(START), "time_range[end]": iso(START + 732 * DAY)}, "time_range"),
    ({**tr(START, END), "sort_by": "price"}, "sort_by"),
    ({**tr(START, END), "sort_by": "Revenue"}, "sort_by"),
    ({**tr(START, END), "limit": "0"}, "limit"),
    ({**tr(START, END), "limit": "501"}, "limit"),
    ({**tr(START, END), "limit": "ten"}, "limit"),
    ({**tr(START, END), "limit": "-5"}, "limit"),
    ({**tr(START, END), "category": "c" * 201}, "category"),
    ({**tr(START, END), "currency": "dollars"}, "currency"),
])
def test_bad_input_names_the_field(world, params, field):
    r = get(world, **params)
    assert r.status_code == 400, r.text
    e = r.json()
    assert e["success"] is False and e["error"]["code"] == "VALIDATION_ERROR"
    assert [f["field"] for f in e["error"]["field_errors"]] == [field]
    assert ok(get(world, **tr(START, END)))["total_products"] > 0  # still serving


def test_limits_at_the_edge(world):
    assert len(ok(get(world, limit="500", **tr(START, START + 731 * DAY)))["products"]) > 0
    r = get(world, **tr(START, END))
    assert r.headers.get("x-ratelimit-limit") == "100000"


def test_requires_credentials(world):
    r = world["api"].get(PERF, params=tr(START, END))
    assert r.status_code == 401 and r.json()["success"] is False
