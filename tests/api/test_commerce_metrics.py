"""commerce business metrics (contract section 2.1): GET /api/v1/analytics/metrics and the
rollups behind it.

A seeded shop (products in categories with and without costs, orders in three regions, three
channels and two currencies with cancelled and refunded ones, items of unknown products, web
sessions some of which cross midnight, inventory snapshots in two warehouses) goes in through
the batch ingestion route. Every figure is then computed again here in Python from the same
records - buckets from zoneinfo, counted orders, distinct customers and sessions, stock levels,
RFM segments - and compared with what the route answers: every metric with each aggregation it
defines, every granularity, time zones across a DST change and with a half-hour offset, each
filter, summary and comparison, each query-parameter form, every bad input. The rollup tables
are read from the SQLite file (read-only) once the job has cleaned every day and compared with
a recomputation; re-ingested records (an order moved to another day, one cancelled, items and
a product category changed, a snapshot inserted into a history) are followed at once (dirty
days from the base tables) and after the job has run again."""
import json
import os
import random
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from accounts import bearer
from commerce_data import RATE_FLAGS, fold, ingest, rollups_stored, shop
from conftest import Api, Server

URL = "/api/v1/analytics/metrics"
DAY = 86400000
HOUR = 3600000
MINUTE = 60000
UTC = timezone.utc
T0 = 1735689600000  # 2025-01-01T00:00:00Z
T1 = 1746057600000  # 2025-05-01T00:00:00Z
REGIONS = ["EU", "US", "APAC"]
CHANNELS = ["web", "mobile", "store"]
CATS = ["books", "games", "toys", "garden"]
METRICS = ["revenue", "transactions", "customers", "inventory", "conversion",
           "average_order_value"]
AGGS = {"revenue": ["sum", "avg", "count", "min", "max"],
        "transactions": ["sum", "avg", "count", "min", "max"],
        "customers": ["count", "sum"],
        "inventory": ["sum", "avg", "count", "min", "max"],
        "conversion": ["avg", "count", "sum", "min", "max"],
        "average_order_value": ["avg", "min", "max"]}
DEFAULT_AGG = {"revenue": "sum", "transactions": "count", "customers": "count",
               "inventory": "sum", "conversion": "avg", "average_order_value": "avg"}
EXTRA = {"revenue": ("orders", "average_order_value"),
         "transactions": ("revenue", "average_order_value"),
         "customers": ("orders", "revenue"), "inventory": ("snapshots", "change"),
         "conversion": ("sessions", "converted_sessions"),
         "average_order_value": ("orders", "revenue")}


def iso(v):
    return datetime.fromtimestamp(v / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ms(y, m, d, hh=0, mm=0):
    return int(datetime(y, m, d, hh, mm, tzinfo=UTC).timestamp() * 1000)


def ms_of(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


# ---- the dataset ----

class Shop:
    """The records as sent (latest version per natural id), in ten-thousandths and ms."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.products, self.orders, self.events, self.inventory = {}, {}, {}, {}

    def product(self, pid, category, cost_cents):
        self.products[pid] = {"product_id": pid, "category": category,
                              "cost_m": None if cost_cents is None else cost_cents * 100}

    def order(self, oid, when, items, status, region, channel, currency, customer):
        self.orders[oid] = {"order_id": oid, "customer_id": customer, "ms": when,
                            "total_m": sum(q * c * 100 for _, q, c in items), "status": status,
                            "region": region, "channel": channel, "currency": currency,
                            "items": [(p, q, c * 100) for p, q, c in items]}

    def event(self, eid, when, session, type_):
        self.events[eid] = {"ms": when, "session": session, "type": type_}

    def snapshot(self, pid, wh, when, qty):
        self.inventory[(pid, wh, when)] = qty

    # wire records
    def product_records(self, pids=None):
        out = []
        for p in self.products.values():
            if pids is not None and p["product_id"] not in pids:
                continue
            r = {"product_id": p["product_id"], "name": "P " + p["product_id"],
                 "category": p["category"], "price": 10}
            if p["cost_m"] is not None:
                r["cost"] = p["cost_m"] / 10000
            out.append(r)
        return out

    def order_records(self, oids=None):
        out = []
        for o in self.orders.values():
            if oids is not None and o["order_id"] not in oids:
                continue
            out.append({"order_id": o["order_id"], "customer_id": o["customer_id"],
                        "created_at": iso(o["ms"]), "total": o["total_m"] / 10000,
                        "currency": o["currency"], "status": o["status"],
                        "channel": o["channel"], "region": o["region"],
                        "items": [{"product_id": p, "quantity": q, "unit_price": m / 10000}
                                  for p, q, m in o["items"]]})
        return out

    def event_records(self):
        return [{"event_id": k, "type": e["type"], "timestamp": iso(e["ms"]),
                 "session_id": e["session"]} for k, e in self.events.items()]

    def inventory_records(self, keys=None):
        return [{"product_id": p, "warehouse": w, "timestamp": iso(t), "quantity": q}
                for (p, w, t), q in self.inventory.items() if keys is None or (p, w, t) in keys]


def make_shop():
    s = Shop(20250101)
    rng = s.rng
    for i in range(12):
        s.product(f"P{i:02d}", CATS[i % 4], None if i % 5 == 4 else 100 + 37 * i)
    s.product("P12", "", 500)                      # a product without a category
    n = 0
    for k in range(380):
        n += 1
        when = T0 + rng.randrange((T1 - T0) // 1000) * 1000
        if k % 9 == 0:   # close to a UTC midnight, so zones and day edges matter
            when = (when // DAY) * DAY + rng.choice([-1, 1]) * rng.randrange(1, 90) * MINUTE
        if k % 29 == 0:  # on the day New York moves to daylight saving time
            when = ms(2025, 3, 9) + rng.randrange(24 * 60) * MINUTE
        items = [(f"P{rng.randrange(13):02d}" if rng.random() > 0.05 else "GHOST",
                  rng.randint(1, 4), rng.randint(199, 9999)) for _ in range(rng.randint(1, 3))]
        status = rng.choice(["placed", "paid", "shipped", "delivered"] * 4 + ["cancelled",
                                                                              "refunded"])
        s.order(f"O{n:04d}", when, items, status, rng.choice(REGIONS), rng.choice(CHANNELS),
                "EUR" if rng.random() < 0.15 else "USD", f"C{rng.randrange(60):02d}")
    for k in range(160):
        start = T0 + rng.randrange((T1 - T0) // 1000) * 1000
        if k % 7 == 0:
            start = (start // DAY + 1) * DAY - rng.randrange(1, 5) * MINUTE  # crosses midnight
        kinds = ["page_view"] + rng.sample(["product_view", "add_to_cart", "checkout"],
                                           rng.randint(0, 3))
        if rng.random() < 0.3:
            kinds.append("purchase")
        for j, kind in enumerate(kinds):
            s.event(f"E{k:03d}-{j}", start + j * 2 * MINUTE, f"S{k:03d}", kind)
    for p in ["P00", "P01", "P02", "P05"]:
        for wh in ["W1", "W2"]:
            t = T0 - 20 * DAY + rng.randrange(DAY)
            while t < T1 + 10 * DAY:
                s.snapshot(p, wh, t, rng.randint(0, 300))
                t += rng.randint(3, 12) * DAY + rng.randrange(DAY)
    return s


# ---- the figures, computed again here ----

def counted(o):
    return o["status"] not in ("cancelled", "refunded")


class Filters:
    def __init__(self, region=None, channel=None, currency=None, category=None, members=None):
        self.region, self.channel, self.currency = region, channel, currency
        self.category, self.members = category, members


def order_rows(s, a, b, f):
    """(order, revenue_m) of the counted orders in [a, b) that pass f (in-category revenue)."""
    for o in s.orders.values():
        if not counted(o) or not a <= o["ms"] < b:
            continue
        if f.region and o["region"] not in f.region or f.channel and o["channel"] not in f.channel:
            continue
        if f.currency and o["currency"] != f.currency:
            continue
        if f.members is not None and o["customer_id"] not in f.members:
            continue
        if f.category:
            lines = [q * m for p, q, m in o["items"]
                     if p in s.products and s.products[p]["category"] in f.category]
            if not lines:
                continue
            yield o, sum(lines)
        else:
            yield o, o["total_m"]


def level(s, t, f):
    """Stock at t: the latest snapshot before t of each product and warehouse."""
    latest = {}
    for (p, w, ts), q in s.inventory.items():
        if ts < t and (f.category is None or s.products.get(p, {}).get("category") in f.category):
            if (p, w) not in latest or ts > latest[(p, w)][0]:
                latest[(p, w)] = (ts, q)
    return sum(q for _, q in latest.values())


def sessions(s, a, b):
    seen, bought = set(), set()
    for e in s.events.values():
        if a <= e["ms"] < b:
            seen.add(e["session"])
            if e["type"] == "purchase":
                bought.add(e["session"])
    return len(seen), len(bought)


def aov(rows):
    return sum(r for _, r in rows) / len(rows) / 10000 if rows else 0


def extreme(values, agg):
    values = list(values)
    return (max(values) if agg == "max" else min(values)) if values else 0


def figure(s, metric, agg, a, b, cells, f):
    """The metric over [a, b) whose cells (local days, or hours) are `cells`."""
    if metric in ("revenue", "transactions", "average_order_value"):
        rows = list(order_rows(s, a, b, f))
        per_cell = [list(order_rows(s, ca, cb, f)) for ca, cb in cells]
        if metric == "revenue":
            return {"sum": sum(r for _, r in rows) / 10000, "avg": aov(rows),
                    "count": len(rows),
                    "min": min((r for _, r in rows), default=0) / 10000,
                    "max": max((r for _, r in rows), default=0) / 10000}[agg]
        if metric == "transactions":
            if agg == "avg":
                return len(rows) / len(cells)
            return extreme(map(len, per_cell), agg) if agg in ("min", "max") else len(rows)
        if agg == "avg":
            return aov(rows)
        return extreme((aov(c) for c in per_cell if c), agg)
    if metric == "customers":
        return len({o["customer_id"] for o, _ in order_rows(s, a, b, f)})
    if metric == "conversion":
        n, k = sessions(s, a, b)
        if agg in ("min", "max"):
            return extreme((y / x for x, y in (sessions(s, ca, cb) for ca, cb in cells) if x),
                           agg)
        return {"avg": k / n if n else 0, "count": n, "sum": k}[agg]
    levels = [level(s, cb, f) for _, cb in cells]
    if agg == "count":
        return sum(1 for (p, w, t) in s.inventory if a <= t < b and
                   (f.category is None or s.products.get(p, {}).get("category") in f.category))
    return {"sum": levels[-1], "avg": sum(levels) / len(levels), "min": min(levels),
            "max": max(levels)}[agg]


def extras(s, metric, a, b, f):
    if metric == "inventory":
        n = sum(1 for (p, w, t) in s.inventory if a <= t < b and
                (f.category is None or s.products.get(p, {}).get("category") in f.category))
        return {"snapshots": n, "change": level(s, b, f) - level(s, a, f)}
    if metric == "conversion":
        n, k = sessions(s, a, b)
        return {"sessions": n, "converted_sessions": k}
    rows = list(order_rows(s, a, b, f))
    rev = sum(r for _, r in rows) / 10000
    if metric == "transactions":
        return {"revenue": rev, "average_order_value": aov(rows)}
    if metric == "revenue":
        return {"orders": len(rows), "average_order_value": aov(rows)}
    return {"orders": len(rows), "revenue": rev}


def local_midnight(day, z):
    return int(datetime(day.year, day.month, day.day, tzinfo=z).timestamp() * 1000)


def period_start(d, gran):
    if gran == "weekly":
        return d - timedelta(days=d.weekday())
    if gran == "monthly":
        return d.replace(day=1)
    if gran == "quarterly":
        return d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1)
    return d


def period_next(d, gran):
    if gran == "weekly":
        return d + timedelta(days=7)
    if gran in ("monthly", "quarterly"):
        m = d.month - 1 + (1 if gran == "monthly" else 3)
        return d.replace(year=d.year + m // 12, month=m % 12 + 1)
    return d + timedelta(days=1)


def grid(start, end, gran, tz):
    """[(label, a, b)]: the calendar periods of zone tz that meet [start, end)."""
    z = ZoneInfo(tz) if tz else UTC
    if gran == "hourly":   # a bucket starts whenever the local clock reads hh:00
        t = start // MINUTE * MINUTE
        while datetime.fromtimestamp(t / 1000, z).minute != 0:
            t -= MINUTE
        labels = [t]
        for u in range(start // MINUTE * MINUTE + MINUTE, end, MINUTE):
            if datetime.fromtimestamp(u / 1000, z).minute == 0:
                labels.append(u)
    else:
        d = period_start(datetime.fromtimestamp(start / 1000, z).date(), gran)
        labels = [local_midnight(d, z)]
        while True:
            d = period_next(d, gran)
            t = local_midnight(d, z)
            if t >= end:
                break
            labels.append(t)
    edges = [start] + labels[1:] + [end]
    return [(labels[i], edges[i], edges[i + 1]) for i in range(len(labels))]


def expected(s, metric, start, end, gran="daily", agg=None, tz=None, f=None):
    agg = agg or DEFAULT_AGG[metric]
    f = f or Filters()
    fine = "hourly" if gran == "hourly" else "daily"

    def series(a0, b0):
        cells = [(a, b) for _, a, b in grid(a0, b0, fine, tz)]
        pts = []
        for label, a, b in grid(a0, b0, gran, tz):
            inside = [(ca, cb) for ca, cb in cells if a <= ca and cb <= b]
            pts.append({"timestamp": iso(label), "value": figure(s, metric, agg, a, b, inside, f),
                        "additional_metrics": extras(s, metric, a, b, f)})
        return pts, figure(s, metric, agg, a0, b0, cells, f)

    pts, total = series(start, end)
    prev_pts, prev_total = series(start - (end - start), start)
    vals = [p["value"] for p in pts]
    change = total - prev_total
    return {"data": pts, "total": total, "average": sum(vals) / len(vals), "min": min(vals),
            "max": max(vals), "change": change,
            "pct": change / abs(prev_total) * 100 if prev_total else 0,
            "prev": prev_pts, "prev_total": prev_total}


def rfm_members(s, as_of, segments, currency="USD"):
    """Customers in the RFM segments (README "Customers and products"), recomputed."""
    per = {}
    for o in s.orders.values():
        if counted(o) and o["currency"] == currency and o["ms"] <= as_of:
            c = per.setdefault(o["customer_id"], {"last": 0, "n": 0, "m": 0})
            c["last"] = max(c["last"], o["ms"])
            c["n"] += 1
            c["m"] += o["total_m"]
    rec = {k: (as_of - v["last"]) // DAY for k, v in per.items()}
    n = len(per)

    def score(key, worse):
        return {k: 1 + 5 * sum(1 for j in per if worse(j, k)) // n for k in per}
    r = score("r", lambda j, k: rec[j] > rec[k])
    fq = score("f", lambda j, k: per[j]["n"] < per[k]["n"])
    mo = score("m", lambda j, k: per[j]["m"] < per[k]["m"])

    def segment(k):
        if r[k] >= 4 and fq[k] >= 4 and mo[k] >= 4:
            return "champions"
        if r[k] >= 3 and fq[k] >= 4:
            return "loyal"
        if r[k] >= 4 and per[k]["n"] == 1:
            return "new"
        if r[k] >= 4:
            return "potential"
        if r[k] == 3:
            return "need_attention"
        return "at_risk" if fq[k] >= 3 else "hibernating"
    return {k for k in per if segment(k) in segments}


# ---- the server ----

@pytest.fixture(scope="module")
def env():
    server = Server(*RATE_FLAGS)
    api = Api(server)
    try:
        sh = shop(server, api, "metrics", roles=("admin", "viewer"))
        other = shop(server, api, "othermetrics", roles=("admin",))
        s = make_shop()
        before = int(time.time() * 1000) - 1000
        for kind, recs in [("products", s.product_records()), ("orders", s.order_records()),
                           ("events", s.event_records()), ("inventory", s.inventory_records())]:
            st = ingest(api, sh["admin"], kind, recs)
            assert st["status"] == "completed" and st["stored_records"] == len(recs), st
        after = int(time.time() * 1000) + 1000
        yield {"server": server, "api": api, "token": sh["admin"], "viewer": sh["viewer"],
               "shop": s, "tenant": sh["tenant"]["id"], "ingested": (before, after),
               "other": other["admin"]}
    finally:
        api.close()
        server.stop()


def db_ro(server):
    return sqlite3.connect(f"file:{os.path.join(server.data, 'tessera.db')}?mode=ro", uri=True)


def dirty_days(server):
    with db_ro(server) as c:
        return c.execute("SELECT count(*) FROM cm_rollup_dirty").fetchone()[0]


def wait_clean(server, timeout=60):
    deadline = time.time() + timeout
    while dirty_days(server):
        assert time.time() < deadline, "rollups still dirty"
        time.sleep(0.1)


def get(env, params, token=None, status=200):
    r = env["api"].get(URL, params=params, headers=bearer(token or env["token"]))
    assert r.status_code == status, r.text
    return r.json()


def query(env, metric, start, end, gran="daily", agg=None, tz=None, comparison=False, **filters):
    p = [("metric_type", metric), ("time_range[start]", iso(start)),
         ("time_range[end]", iso(end)), ("granularity", gran)]
    if agg:
        p.append(("aggregation", agg))
    if tz:
        p.append(("timezone", tz))
    if comparison:
        p.append(("include_comparison", "true"))
    for k, v in filters.items():
        if isinstance(v, list):
            p += [(f"filters[{k}][]", x) for x in v]
        else:
            p.append((f"filters[{k}]", v))
    return get(env, p)["data"]


def close(a, b):
    return a == pytest.approx(b, rel=1e-9, abs=1e-9)


def check(got, exp, comparison=False):
    assert [p["timestamp"] for p in got["data"]] == [p["timestamp"] for p in exp["data"]]
    for g, e in zip(got["data"], exp["data"]):
        assert close(g["value"], e["value"]), (g, e)
        assert set(g["additional_metrics"]) == set(e["additional_metrics"])
        for k, v in e["additional_metrics"].items():
            assert close(g["additional_metrics"][k], v), (k, g, e)
    sm = got["summary"]
    for k, e in [("total", "total"), ("average", "average"), ("min", "min"), ("max", "max"),
                 ("change_from_previous", "change"), ("change_percentage", "pct")]:
        assert close(sm[k], exp[e]), (k, sm, exp[e])
    if comparison:
        cmp = got["comparison"]
        assert close(cmp["previous_total"], exp["prev_total"])
        assert close(cmp["variance"], exp["change"])
        assert close(cmp["variance_percentage"], exp["pct"])
        assert [p["timestamp"] for p in cmp["previous_period"]] == \
            [p["timestamp"] for p in exp["prev"]]
        for g, e in zip(cmp["previous_period"], exp["prev"]):
            assert close(g["value"], e["value"]), (g, e)
    else:
        assert "comparison" not in got


# ---- figures ----

def test_figures_exact_while_days_are_dirty(env):
    """Right after ingestion most days are dirty: the base tables answer, exactly."""
    s = env["shop"]
    for metric in METRICS:
        got = query(env, metric, T0, T1, "weekly", comparison=True)
        check(got, expected(s, metric, T0, T1, "weekly"), comparison=True)


def test_rollups_settle_and_equal_a_recomputation(env):
    wait_clean(env["server"])
    check_rollup_tables(env)


@pytest.mark.parametrize("metric", METRICS)
def test_every_aggregation_daily(env, metric):
    wait_clean(env["server"])
    s = env["shop"]
    start, end = ms(2025, 2, 1), ms(2025, 3, 15)
    for agg in AGGS[metric]:
        got = query(env, metric, start, end, "daily", agg, comparison=True)
        assert got["aggregation"] == agg and got["granularity"] == "daily"
        check(got, expected(s, metric, start, end, "daily", agg), comparison=True)


@pytest.mark.parametrize("gran", ["weekly", "monthly", "quarterly"])
def test_long_granularities(env, gran):
    s = env["shop"]
    start, end = ms(2024, 12, 10, 6), T1 + 20 * DAY   # partial first and last periods
    for metric in METRICS:
        for agg in AGGS[metric][:3]:
            got = query(env, metric, start, end, gran, agg)
            check(got, expected(s, metric, start, end, gran, agg))


def test_hourly(env):
    s = env["shop"]
    start, end = ms(2025, 3, 7, 12), ms(2025, 3, 11, 3)
    for metric in METRICS:
        for agg in AGGS[metric]:
            got = query(env, metric, start, end, "hourly", agg)
            assert len(got["data"]) == (end - start) // HOUR
            check(got, expected(s, metric, start, end, "hourly", agg))


def test_default_aggregation_and_granularity(env):
    s = env["shop"]
    for metric in METRICS:
        got = get(env, {"metric_type": metric, "time_range[start]": iso(T0),
                        "time_range[end]": iso(T0 + 40 * DAY)})["data"]
        assert got["granularity"] == "daily" and got["aggregation"] == DEFAULT_AGG[metric]
        assert got["timezone"] == "UTC" and len(got["data"]) == 40
        check(got, expected(s, metric, T0, T0 + 40 * DAY))


def test_new_york_days_across_the_dst_change(env):
    """Buckets at New York midnights: 05:00Z before 9 March 2025, 04:00Z after; the day of
    the change is 23 hours long."""
    s = env["shop"]
    start, end = ms(2025, 3, 1, 5), ms(2025, 3, 20, 4)
    got = query(env, "revenue", start, end, tz="America/New_York")
    stamps = [p["timestamp"] for p in got["data"]]
    assert stamps[0] == "2025-03-01T05:00:00Z" and "2025-03-09T05:00:00Z" in stamps
    assert "2025-03-10T04:00:00Z" in stamps and stamps[-1] == "2025-03-19T04:00:00Z"
    for metric in METRICS:
        for agg in AGGS[metric]:
            got = query(env, metric, start, end, "daily", agg, "America/New_York", True)
            assert got["timezone"] == "America/New_York"
            check(got, expected(s, metric, start, end, "daily", agg, "America/New_York"), True)
    for gran in ["hourly", "weekly"]:
        e = end if gran == "weekly" else start + 6 * DAY + 7 * HOUR
        for metric in ["revenue", "transactions", "customers"]:
            got = query(env, metric, start, e, gran, tz="America/New_York")
            check(got, expected(s, metric, start, e, gran, tz="America/New_York"))


def test_half_hour_zone(env):
    """Asia/Kolkata (UTC+05:30): day edges at 18:30Z cut UTC hours, read from base rows."""
    s = env["shop"]
    start, end = ms(2025, 1, 20), ms(2025, 3, 3)
    for gran in ["daily", "monthly"]:
        for metric in METRICS:
            got = query(env, metric, start, end, gran, tz="Asia/Kolkata")
            assert got["data"][0]["timestamp"].endswith("T18:30:00Z")
            check(got, expected(s, metric, start, end, gran, tz="Asia/Kolkata"))
    got = query(env, "revenue", start, start + 3 * DAY, "hourly", tz="Asia/Kolkata")
    assert got["data"][1]["timestamp"].endswith(":30:00Z")
    check(got, expected(s, "revenue", start, start + 3 * DAY, "hourly", tz="Asia/Kolkata"))


# ---- filters ----

FILTER_CASES = [
    ({"region": ["EU"]}, Filters(region={"EU"})),
    ({"region": ["EU", "US"], "channel": ["web"]}, Filters(region={"EU", "US"}, channel={"web"})),
    ({"currency": "EUR"}, Filters(currency="EUR")),
    ({"channel": ["store", "mobile"], "currency": "USD"},
     Filters(channel={"store", "mobile"}, currency="USD")),
    ({"product_category": ["books"]}, Filters(category={"books"})),
    ({"product_category": ["games", "toys"]}, Filters(category={"games", "toys"})),
    ({"product_category": ["garden"], "region": ["APAC", "US"], "currency": "USD"},
     Filters(category={"garden"}, region={"APAC", "US"}, currency="USD")),
]


@pytest.mark.parametrize("case", range(len(FILTER_CASES)))
def test_filters(env, case):
    wait_clean(env["server"])
    s = env["shop"]
    wire, f = FILTER_CASES[case]
    start, end = ms(2025, 1, 15), ms(2025, 4, 15)
    for metric in ["revenue", "transactions", "customers", "average_order_value"]:
        for agg in AGGS[metric]:
            got = query(env, metric, start, end, "daily", agg, **wire)
            check(got, expected(s, metric, start, end, "daily", agg, f=f))
        got = query(env, metric, start, end, "weekly", tz="America/New_York", **wire)
        check(got, expected(s, metric, start, end, "weekly", tz="America/New_York", f=f))
    if set(wire) == {"product_category"}:
        for agg in AGGS["inventory"]:
            got = query(env, "inventory", start, end, "weekly", agg, **wire)
            check(got, expected(s, "inventory", start, end, "weekly", agg, f=f))


def test_customer_segment_filter(env):
    s = env["shop"]
    start, end = T0, T1
    for segs in (["hibernating"], ["at_risk", "need_attention", "loyal", "champions"]):
        got = query(env, "revenue", start, end, "monthly", customer_segment=segs)
        members = rfm_members(s, int(time.time() * 1000), set(segs))
        assert members, segs
        check(got, expected(s, "revenue", start, end, "monthly", f=Filters(members=members)))
        for metric in ["transactions", "customers", "average_order_value"]:
            got = query(env, metric, start, end, "weekly", customer_segment=segs, region=["EU"])
            check(got, expected(s, metric, start, end, "weekly",
                                f=Filters(members=members, region={"EU"})))


def test_metadata(env):
    wait_clean(env["server"])
    s = env["shop"]
    start, end = ms(2025, 2, 1), ms(2025, 3, 1)
    got = query(env, "revenue", start, end)
    md = got["metadata"]
    assert md["total_records"] == len(list(order_rows(s, start, end, Filters())))
    assert md["cache_hit"] is False and md["query_time_ms"] > 0
    before, after = env["ingested"]
    assert before <= ms_of(md["data_freshness"]) <= after
    with db_ro(env["server"]) as c:
        newest = c.execute("SELECT max(ingested_at) FROM cm_orders WHERE tenant_id = ? AND"
                           " created_at >= ? AND created_at < ? AND status NOT IN"
                           " ('cancelled', 'refunded')", (env["tenant"], start, end)).fetchone()[0]
    assert ms_of(md["data_freshness"]) == newest // 1000 * 1000
    ev = query(env, "conversion", start, end)["metadata"]
    assert ev["total_records"] == sum(1 for e in s.events.values() if start <= e["ms"] < end)
    inv = query(env, "inventory", start, end)["metadata"]
    assert inv["total_records"] == sum(1 for (_, _, t) in s.inventory if t < end)
    empty = query(env, "revenue", ms(2020, 1, 1), ms(2020, 2, 1))
    assert empty["metadata"]["total_records"] == 0 and empty["metadata"]["data_freshness"] is None
    assert all(p["value"] == 0 for p in empty["data"]) and len(empty["data"]) == 31
    assert empty["summary"]["change_percentage"] == 0


# ---- query parameters as browser clients send them ----

def test_parameter_forms(env):
    s = env["shop"]
    a, b = iso(ms(2025, 2, 3)), iso(ms(2025, 3, 3))
    want = expected(s, "revenue", ms(2025, 2, 3), ms(2025, 3, 3), "weekly",
                    f=Filters(region={"EU", "US"}, channel={"web"}))
    base = [("metric_type", "revenue"), ("granularity", "weekly")]
    ranges = [
        [("time_range[start]", a), ("time_range[end]", b)],
        [("time_range.start", a), ("time_range.end", b)],
        [("time_range", json.dumps({"start": a, "end": b}))],
        [("start", a), ("end", b)],
    ]
    filters = [
        [("filters[region][]", "EU"), ("filters[region][]", "US"), ("filters[channel][]", "web")],
        [("filters[region][0]", "EU"), ("filters[region][1]", "US"), ("filters[channel]", "web")],
        [("filters[region]", "EU,US"), ("filters[channel]", "web")],
        [("filters.region", "EU"), ("filters.region", "US"), ("filters.channel", "web")],
        [("filters", json.dumps({"region": ["EU", "US"], "channel": ["web"]}))],
        [("filters[region]", json.dumps(["EU", "US"])), ("filters[channel]", "web")],
        [("region", "EU"), ("region", "US"), ("channel", "web")],
    ]
    for r in ranges:
        for f in filters:
            check(get(env, base + r + f)["data"], want)
    cur = get(env, base + ranges[0] + [("filters", json.dumps({"currency": "EUR"}))])["data"]
    check(cur, expected(s, "revenue", ms(2025, 2, 3), ms(2025, 3, 3), "weekly",
                        f=Filters(currency="EUR")))
    for v in ["true", "1"]:
        got = get(env, base + ranges[0] + [("include_comparison", v)])["data"]
        assert "comparison" in got
    for v in ["false", "0", ""]:
        got = get(env, base + ranges[0] + [("include_comparison", v)])["data"]
        assert "comparison" not in got


BAD = [
    ([], "metric_type"),
    ([("metric_type", "profit")], "metric_type"),
    ([("granularity", "yearly")], "granularity"),
    ([("aggregation", "median")], "aggregation"),
    ([("metric_type", "customers"), ("aggregation", "avg")], "aggregation"),
    ([("metric_type", "average_order_value"), ("aggregation", "sum")], "aggregation"),
    ([("time_range[start]", None)], "time_range.start"),
    ([("time_range[end]", None)], "time_range.end"),
    ([("time_range[start]", "yesterday")], "time_range.start"),
    ([("time_range[start]", "2025-03-02T00:00:00Z")], "time_range"),       # end before start
    ([("time_range[start]", "2025-03-01T00:00:00Z")], "time_range"),       # empty range
    ([("granularity", "hourly"), ("time_range[start]", "2025-01-28T00:00:00Z")], "time_range"),
    ([("time_range[start]", "2022-02-28T00:00:00Z")], "time_range"),       # daily > 1096 days
    ([("granularity", "monthly"), ("time_range[start]", "2015-02-28T00:00:00Z")], "time_range"),
    ([("timezone", "Mars/Olympus_Mons")], "timezone"),
    ([("timezone", "../../etc/passwd")], "timezone"),
    ([("filters[currency]", "euro")], "filters.currency"),
    ([("filters[customer_segment][]", "whales")], "filters.customer_segment"),
    ([("metric_type", "conversion"), ("filters[region][]", "EU")], "filters.region"),
    ([("metric_type", "inventory"), ("filters[channel][]", "web")], "filters.channel"),
    ([("metric_type", "conversion"), ("filters[product_category][]", "books")],
     "filters.product_category"),
    ([("metric_type", "inventory"), ("filters[currency]", "USD")], "filters.currency"),
    ([("filters[region]", ",".join(f"R{i}" for i in range(51)))], "filters.region"),
    ([("filters[region]", "x" * 101)], "filters.region"),
    ([("filters[region]", "[1, {}]")], "filters.region"),
    ([("include_comparison", "maybe")], "include_comparison"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(env, case):
    change, field = BAD[case]
    p = {"metric_type": "revenue", "granularity": "daily",
         "time_range[start]": "2025-02-01T00:00:00Z", "time_range[end]": "2025-03-01T00:00:00Z"}
    if not change:
        del p["metric_type"]
    for k, v in change:
        if v is None:
            del p[k]
        else:
            p[k] = v
    e = get(env, p, status=400)
    assert e["success"] is False and e["error"]["code"] == "VALIDATION_ERROR"
    assert e["error"]["field_errors"][0]["field"] == field, e
    get(env, {"metric_type": "revenue", "time_range[start]": iso(T0),
              "time_range[end]": iso(T0 + DAY)})   # still serving


def test_auth_roles_and_tenants(env):
    api = env["api"]
    p = {"metric_type": "revenue", "time_range[start]": iso(T0), "time_range[end]": iso(T1)}
    r = api.get(URL, params=p)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    mine = get(env, p)["data"]["summary"]["total"]
    assert mine > 0
    assert get(env, p, token=env["viewer"])["data"]["summary"]["total"] == mine
    o = get(env, p, token=env["other"])["data"]
    assert o["summary"]["total"] == 0 and o["metadata"]["total_records"] == 0


# ---- rollups follow changes ----

def check_rollup_tables(env):
    """Every rollup row of the tenant equals a recomputation from the records sent."""
    s, tid = env["shop"], env["tenant"]
    want = {t: {} for t in ("od", "ocd", "oh", "cat", "prod", "cust", "ev", "inv")}

    def add(table, key, vals, kinds):
        fold(want, table, key, vals, kinds)
    cust = {}
    for o in s.orders.values():
        if not counted(o):
            continue
        d, t = o["ms"] // DAY, o["total_m"]
        add("od", (d, o["region"], o["channel"], o["currency"]), (1, t, t, t), "++<>")
        add("ocd", (d, o["currency"]), (1, t, t, t), "++<>")
        add("oh", (o["ms"] // HOUR, o["currency"]), (1, t, t, t), "++<>")
        for cur in (o["currency"], ""):
            cust.setdefault((d, cur), set()).add(o["customer_id"])
            add("cust", (d, cur), (1, t), "++")
        bycat, byprod = {}, {}
        for p, q, m in o["items"]:
            c = s.products[p]["category"] if p in s.products else ""
            bycat[c] = (bycat.get(c, (0, 0))[0] + q * m, bycat.get(c, (0, 0))[1] + q)
            byprod[p] = (byprod.get(p, (0, 0))[0] + q, byprod.get(p, (0, 0))[1] + q * m)
        for c, (rev, qty) in bycat.items():
            add("cat", (c, d, o["region"], o["channel"], o["currency"]), (1, rev, qty, rev, rev),
                "+++<>")
        for p, (qty, rev) in byprod.items():
            add("prod", (d, p, o["currency"]), (1, qty, rev), "+++")
    want["od"] = {k: (v[0], v[1], v[2], v[3]) for k, v in want["od"].items()}
    want["oh"] = {k: (v[0], v[1], v[2], v[3]) for k, v in want["oh"].items()}
    want["ocd"] = {k: (v[0], v[1], v[2], v[3]) for k, v in want["ocd"].items()}
    want["cust"] = {k: (len(cust[k]), v[0], v[1]) for k, v in want["cust"].items()}
    want["cat"] = {k: tuple(v) for k, v in want["cat"].items()}
    prod = {}
    for (d, p, cur), (n, qty, rev) in want["prod"].items():
        cost = s.products.get(p, {}).get("cost_m")
        prod[(d, p, cur)] = (n, qty, rev, None if cost is None else qty * cost)
    want["prod"] = prod
    days = {}
    for e in s.events.values():
        days.setdefault(e["ms"] // DAY, []).append(e)
    for d, evs in days.items():
        want["ev"][d] = (len({e["session"] for e in evs}),
                         len({e["session"] for e in evs if e["type"] == "purchase"}), len(evs))
    hist = {}
    for (p, w, t) in sorted(s.inventory, key=lambda k: k[2]):
        q = s.inventory[(p, w, t)]
        prev = hist.get((p, w), 0)
        hist[(p, w)] = q
        cur = want["inv"].get(t // DAY, (0, 0))
        want["inv"][t // DAY] = (cur[0] + q - prev, cur[1] + 1)
    with db_ro(env["server"]) as c:
        assert c.execute("SELECT count(*) FROM cm_rollup_dirty WHERE tenant_id = ?",
                         (tid,)).fetchone()[0] == 0
        got = rollups_stored(c, tid, ("od", "ocd", "oh", "cat", "prod", "cust", "ev", "inv"))
    for t, rows in got.items():
        assert rows == want[t], t


def test_rollups_follow_changes(env):
    """Re-ingested records: figures follow at once (dirty days read from base rows) and the
    job brings the rollups back to a recomputation."""
    wait_clean(env["server"])
    s, tok, api = env["shop"], env["token"], env["api"]
    rng = random.Random(7)
    ids = sorted(o for o in s.orders if counted(s.orders[o]))
    moved, cancelled, regrouped = ids[3], ids[10], ids[20]
    o = s.orders[moved]
    o["ms"] = o["ms"] - 9 * DAY - 5 * HOUR                      # to another day
    s.orders[cancelled]["status"] = "cancelled"
    g = s.orders[regrouped]
    g["items"] = [("P03", 2, 1250), ("P07", 1, 999)]             # new items and total
    g["total_m"] = sum(q * m for _, q, m in g["items"])
    g["region"] = "US" if g["region"] != "US" else "EU"
    dup = s.orders[ids[30]]                                       # an unchanged duplicate
    st = ingest(api, tok, "orders", s.order_records([moved, cancelled, regrouped, dup["order_id"]]))
    assert st["stored_records"] == 4 and st["duplicate_records"] == 4, st
    s.products["P01"]["category"] = "garden"                      # category and cost change
    s.products["P02"]["cost_m"] = 4321 * 100
    st = ingest(api, tok, "products", s.product_records(["P01", "P02"]))
    assert st["stored_records"] == 2, st
    key = ("P00", "W1", T0 + 45 * DAY + rng.randrange(DAY))      # into the middle of a history
    s.snapshot(*key, 999)
    st = ingest(api, tok, "inventory", s.inventory_records({key}))
    assert st["stored_records"] == 1, st
    for metric in METRICS:
        got = query(env, metric, T0, T1, "weekly", comparison=True)
        check(got, expected(s, metric, T0, T1, "weekly"), comparison=True)
    got = query(env, "revenue", T0, T1, "daily", product_category=["garden"])
    check(got, expected(s, "revenue", T0, T1, "daily", f=Filters(category={"garden"})))
    wait_clean(env["server"])
    check_rollup_tables(env)
    for metric in METRICS:
        for agg in AGGS[metric][:2]:
            got = query(env, metric, T0, T1, "daily", agg)
            check(got, expected(s, metric, T0, T1, "daily", agg))
    got = query(env, "revenue", T0, T1, "daily", product_category=["garden"], region=["US"])
    check(got, expected(s, "revenue", T0, T1, "daily",
                        f=Filters(category={"garden"}, region={"US"})))
