"""commerce customer analytics: RFM segments and customer profiles (contract section 2.2).

A seeded dataset with planted behaviour (frequent big spenders, regulars, lapsed frequent
buyers, lapsed light buyers, one-order new customers, middling ones; cancelled and refunded
orders, orders after as_of, a second currency, web events, and a second tenant reusing ids)
goes in through the batch ingestion route, and every figure the routes answer is checked against the
RFM computation written out again here in Python from the same records."""
import math
import random
import statistics
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest

from accounts import bearer, login, tenant, user
from commerce_data import RATE_FLAGS, ingest_many
from conftest import Api, Server

DAY = 86400000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
AS_OF = 1748736000000  # 2025-06-01T00:00:00Z
SEGMENTS = ["champions", "loyal", "new", "potential", "need_attention", "at_risk", "hibernating"]
CATEGORIES = ["electronics", "books", "home", "toys"]
CHANNELS = ["web", "mobile", "store"]
REGIONS = ["EU", "US", "APAC"]
SEG = "/api/v1/analytics/customers/segments"


def iso(v):
    return (EPOCH + timedelta(milliseconds=v)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ms_of(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def prof(cid):
    return f"/api/v1/analytics/customers/{quote(cid, safe='')}/profile"


# ---- the dataset ----

def make_products(rng):
    out = []
    for i in range(12):
        out.append({"product_id": f"P{i:02d}", "name": f"Product {i}",
                    "category": CATEGORIES[i % 4], "price": rng.choice([9.5, 19.99, 45.0, 120.0, 199.0]),
                    "cost": 5.0})
    out.append({"product_id": "P99", "name": "No category"})
    return out


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.products = make_products(self.rng)
        self.orders, self.customers, self.events = [], [], []
        self.n = 0

    def order(self, cid, when, price_lo=5, price_hi=50, status=None, currency="USD", n_items=None):
        rng = self.rng
        self.n += 1
        items = []
        for _ in range(n_items or rng.randint(1, 3)):
            p = rng.choice(self.products)
            items.append({"product_id": p["product_id"], "quantity": rng.randint(1, 3),
                          "unit_price": round(rng.uniform(price_lo, price_hi), 2)})
        total = round(sum(i["quantity"] * i["unit_price"] for i in items), 2)
        o = {"order_id": f"O{self.n:05d}", "customer_id": cid, "created_at": iso(when),
             "total": total, "currency": currency,
             "status": status or rng.choice(["placed", "paid", "shipped", "delivered"]),
             "channel": rng.choice(CHANNELS), "region": rng.choice(REGIONS + [""]), "items": items}
        self.orders.append(o)
        return o

    def spread(self, cid, count, newest_days, oldest_days, **kw):
        """count orders between oldest_days and newest_days before AS_OF (the first exactly at
        newest_days so the planted recency holds)."""
        rng = self.rng
        ages = [newest_days] + [rng.uniform(newest_days, oldest_days) for _ in range(count - 1)]
        for a in ages:
            self.order(cid, AS_OF - int(a * DAY) - rng.randint(0, 3600) * 1000, **kw)

    def customer(self, cid, **kw):
        self.customers.append({"customer_id": cid, "name": cid.title(),
                               "email": f"c{len(self.customers)}@shop.example",
                               "region": self.rng.choice(REGIONS), "created_at": iso(AS_OF - 600 * DAY), **kw})

    def session(self, cid, when, product_id, bought):
        self.n += 1
        sid = f"S{self.n:05d}"
        kinds = ["page_view", "product_view", "add_to_cart"] + (["checkout", "purchase"] if bought else [])
        for k, kind in enumerate(kinds):
            self.events.append({"event_id": f"E{self.n:05d}-{k}", "type": kind, "timestamp": iso(when + k * 1000),
                                "session_id": sid, "customer_id": cid,
                                "product_id": product_id if kind in ("product_view", "add_to_cart", "purchase") else None})


def acme_data():
    g = Gen(20250601)
    rng = g.rng
    for i in range(1, 9):
        g.customer(f"vip-{i:02d}")
        g.spread(f"vip-{i:02d}", rng.randint(12, 20), rng.uniform(0.5, 6), 360, price_lo=80, price_hi=200)
    for i in range(1, 9):
        g.customer(f"reg-{i:02d}")
        g.spread(f"reg-{i:02d}", rng.randint(5, 9), rng.uniform(2, 45), 300, price_lo=20, price_hi=60)
    for i in range(1, 7):
        g.customer(f"lap-{i:02d}")
        g.spread(f"lap-{i:02d}", rng.randint(8, 14), rng.uniform(200, 260), 420, price_lo=30, price_hi=90)
    for i in range(1, 7):
        g.customer(f"old-{i:02d}")
        g.spread(f"old-{i:02d}", rng.randint(1, 2), rng.uniform(300, 400), 500, price_lo=5, price_hi=20)
    for i in range(1, 9):
        g.customer(f"new-{i:02d}")
        g.spread(f"new-{i:02d}", 1, rng.uniform(0.1, 3), 3, price_lo=10, price_hi=80)
    for i in range(1, 7):
        g.customer(f"mid-{i:02d}")
        g.spread(f"mid-{i:02d}", rng.randint(2, 4), rng.uniform(60, 150), 330, price_lo=10, price_hi=50)
    # not counted: cancelled and refunded orders, orders after as_of
    for cid in ["vip-01", "reg-02", "new-01", "lap-03", "old-02"]:
        g.order(cid, AS_OF - 3 * DAY, status="cancelled", price_lo=500, price_hi=900)
        g.order(cid, AS_OF - 30 * DAY, status="refunded", price_lo=500, price_hi=900)
        g.order(cid, AS_OF + 2 * DAY, price_lo=500, price_hi=900)
    g.order("new-02", AS_OF + 5 * DAY)  # a new customer's second order, after as_of
    g.customer("Zoë 7/b+c")  # an id that needs percent-encoding in the path
    g.spread("Zoë 7/b+c", 2, 20, 80)
    g.customer("cxl-01")
    g.order("cxl-01", AS_OF - 10 * DAY, status="cancelled")
    g.customer("ghost-01")  # a customer record without orders
    # a second currency: EUR-only customers and a USD customer's EUR orders
    for cid in ["eur-01", "eur-02"]:
        g.customer(cid)
        g.spread(cid, 3, 5, 100, currency="EUR")
    g.order("vip-01", AS_OF - 20 * DAY, currency="EUR")
    g.order("vip-01", AS_OF - 40 * DAY, currency="EUR")
    # an order whose only product has no product record and one without a category
    g.products.append({"product_id": "P-UNKNOWN"})
    o = g.order("reg-01", AS_OF - 50 * DAY)
    o["items"] = [{"product_id": "P-UNKNOWN", "quantity": 2, "unit_price": 7.25},
                  {"product_id": "P99", "quantity": 1, "unit_price": 3.5}]
    o["total"] = 18.0
    g.products.pop()
    # web events, some after as_of
    for cid in ["vip-01", "vip-02", "new-01", "new-03", "reg-04"]:
        for k in range(rng.randint(2, 5)):
            g.session(cid, AS_OF - rng.randint(1, 90) * DAY, rng.choice(g.products)["product_id"], rng.random() < 0.5)
        g.session(cid, AS_OF + DAY, "P01", True)
    g.session(None, AS_OF - DAY, "P02", False)  # an anonymous session
    return g


def globex_data():
    g = Gen(7)
    g.customer("vip-01")
    g.spread("vip-01", 3, 1, 50, price_lo=1000, price_hi=2000)
    g.customer("gx-only")
    g.spread("gx-only", 2, 3, 30)
    return g


# ---- the independent computation ----

def money(v):
    return round(v * 10000)


def counted(orders, as_of, currency):
    return [o for o in orders if o["status"] not in ("cancelled", "refunded")
            and ms_of(o["created_at"]) <= as_of and o["currency"] == currency]


def score(values, v, better):
    """1 + floor(5 * (customers strictly worse) / n)."""
    worse = sum(1 for x in values if (x < v if better == "larger" else x > v))
    return 1 + (5 * worse) // len(values)


def segment_of(r, f, m, freq):
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if r >= 3 and f >= 4:
        return "loyal"
    if r >= 4 and freq == 1:
        return "new"
    if r >= 4:
        return "potential"
    if r == 3:
        return "need_attention"
    if f >= 3:
        return "at_risk"
    return "hibernating"


def rfm(orders, as_of, currency, period_days=90):
    per = {}
    for o in counted(orders, as_of, currency):
        per.setdefault(o["customer_id"], []).append(o)
    out = {}
    for cid, os_ in per.items():
        times = sorted(ms_of(o["created_at"]) for o in os_)
        p = period_days * DAY
        out[cid] = {"first": times[0], "last": times[-1], "freq": len(os_),
                    "mon": sum(money(o["total"]) for o in os_),
                    "rec": (as_of - times[-1]) // DAY,
                    "last_p": any(as_of - p < t <= as_of for t in times),
                    "prev_p": any(as_of - 2 * p < t <= as_of - p for t in times)}
    recs = [c["rec"] for c in out.values()]
    freqs = [c["freq"] for c in out.values()]
    mons = [c["mon"] for c in out.values()]
    for c in out.values():
        c["r"] = score(recs, c["rec"], "smaller")
        c["f"] = score(freqs, c["freq"], "larger")
        c["m"] = score(mons, c["mon"], "larger")
        c["seg"] = segment_of(c["r"], c["f"], c["m"], c["freq"])
    return out


def close(a, b, tol=1e-4):
    return abs(a - b) <= tol + 1e-9 * abs(b)


def check_segments(body, orders, as_of, currency, period_days=90):
    exp = rfm(orders, as_of, currency, period_days)
    assert body["total_customers"] == len(exp)
    assert body["currency"] == currency and body["period_days"] == period_days
    assert [s["segment_id"] for s in body["segments"]] == SEGMENTS
    assert sum(s["customer_count"] for s in body["segments"]) == len(exp)
    for s in body["segments"]:
        mem = [c for c in exp.values() if c["seg"] == s["segment_id"]]
        n = len(mem)
        assert s["customer_count"] == n, s["segment_id"]
        assert close(s["percentage"], 100 * n / len(exp) if exp else 0)
        mon = sum(c["mon"] for c in mem) / 10000
        assert close(s["avg_lifetime_value"], mon / n if n else 0), s
        assert close(s["avg_order_value"], mon / sum(c["freq"] for c in mem) if n else 0), s
        retained = sum(1 for c in mem if c["last_p"] and c["prev_p"])
        assert close(s["retention_rate"], retained / n if n else 0), s
        ch = s["characteristics"]
        assert ch["retained_customers"] == retained
        assert close(ch["avg_recency_days"], sum(c["rec"] for c in mem) / n if n else 0)
        assert close(ch["avg_frequency"], sum(c["freq"] for c in mem) / n if n else 0)
        assert close(ch["avg_monetary"], mon / n if n else 0)
        for key, k in (("recency_score", "r"), ("frequency_score", "f"), ("monetary_score", "m")):
            if n:
                assert ch[key] == {"min": min(c[k] for c in mem), "max": max(c[k] for c in mem)}
            else:
                assert ch[key] is None
    return exp


def put(api, token, data_type, records):
    """Through the batch ingestion route; every record must be stored."""
    for st in ingest_many(api, token, data_type, records, size=5000):
        assert st["status"] == "completed" and st["errors"] == [], st


# ---- the server ----

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("customers"))
    tenant(data, "Acme", "acme.example")
    tenant(data, "Globex", "globex.example")
    tenant(data, "Empty", "empty.example")
    tenant(data, "Mutable", "mut.example")
    user(data, "acme.example", "admin@acme.example", "admin")
    user(data, "acme.example", "viewer@acme.example", "viewer")
    user(data, "globex.example", "admin@globex.example", "admin")
    user(data, "empty.example", "viewer@empty.example", "viewer")
    user(data, "mut.example", "admin@mut.example", "admin")
    s = Server("--rate-limit", "auth=10000/60", *RATE_FLAGS, data=data)
    a = Api(s)
    raw = {k: login(a, k)["access_token"] for k in ["admin@acme.example", "viewer@acme.example",
                                                    "admin@globex.example", "viewer@empty.example",
                                                    "admin@mut.example"]}
    tok = {k: bearer(v) for k, v in raw.items()}
    A, G = acme_data(), globex_data()
    for who, g in [("admin@acme.example", A), ("admin@globex.example", G)]:
        for data_type, records in [("products", g.products), ("customers", g.customers),
                                   ("orders", g.orders), ("events", g.events)]:
            put(a, raw[who], data_type, records)
    yield {"api": a, "tok": tok, "raw": raw, "acme": A, "globex": G}
    a.close()
    s.stop()


def get(world, path, who="viewer@acme.example", **params):
    return world["api"].get(path, headers=world["tok"][who], params=params)


def ok(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return body["data"]


# ---- segments ----

def test_segments_match_independent_rfm(world):
    body = ok(get(world, SEG, as_of=iso(AS_OF)))
    assert body["segmentation_date"] == iso(AS_OF)
    exp = check_segments(body, world["acme"].orders, AS_OF, "USD")
    # the planted behaviour lands where a marketer expects it
    seg = {cid: c["seg"] for cid, c in exp.items()}
    assert all(seg[f"new-{i:02d}"] == "new" for i in range(1, 9))
    assert all(seg[f"lap-{i:02d}"] == "at_risk" for i in range(1, 7))
    assert all(seg[f"old-{i:02d}"] == "hibernating" for i in range(1, 7))
    assert sum(seg[f"vip-{i:02d}"] == "champions" for i in range(1, 9)) >= 6
    assert "cxl-01" not in seg and "ghost-01" not in seg and "eur-01" not in seg
    # cancelled, refunded and later orders never count
    assert exp["vip-01"]["freq"] == len(counted([o for o in world["acme"].orders if o["customer_id"] == "vip-01"],
                                                AS_OF, "USD"))
    champions = next(s for s in body["segments"] if s["segment_id"] == "champions")
    assert champions["name"] == "Champions" and "R>=4" in champions["description"]


@pytest.mark.parametrize("period_days", [30, 90, 200, 365])
def test_segments_retention_periods(world, period_days):
    body = ok(get(world, SEG, as_of=iso(AS_OF), period_days=str(period_days)))
    check_segments(body, world["acme"].orders, AS_OF, "USD", period_days)


@pytest.mark.parametrize("days_back", [45, 180, 400])
def test_segments_as_of_the_past(world, days_back):
    as_of = AS_OF - days_back * DAY
    body = ok(get(world, SEG, as_of=iso(as_of)))
    check_segments(body, world["acme"].orders, as_of, "USD")


def test_segments_other_currency(world):
    body = ok(get(world, SEG, as_of=iso(AS_OF), currency="EUR"))
    exp = check_segments(body, world["acme"].orders, AS_OF, "EUR")
    assert set(exp) == {"eur-01", "eur-02", "vip-01"}


def test_segments_default_as_of_is_now(world):
    body = ok(get(world, SEG))
    now = ms_of(body["segmentation_date"])
    assert abs(now - datetime.now(timezone.utc).timestamp() * 1000) < 120000
    check_segments(body, world["acme"].orders, now + 999, "USD")


def test_segments_tenant_isolation(world):
    body = ok(get(world, SEG, who="admin@globex.example", as_of=iso(AS_OF)))
    exp = check_segments(body, world["globex"].orders, AS_OF, "USD")
    assert set(exp) == {"vip-01", "gx-only"}
    empty = ok(get(world, SEG, who="viewer@empty.example"))
    assert empty["total_customers"] == 0
    assert all(s["customer_count"] == 0 and s["percentage"] == 0 for s in empty["segments"])


def test_segments_follow_resent_orders(world):
    """Re-sent orders update the per-customer summary the "as of now" path reads: status,
    currency, customer, total and time changes all end up as a recomputation over the final
    records would have them, on both paths (now, and an as_of before the newest order)."""
    g = Gen(99)
    rng = g.rng
    for i in range(12):
        g.spread(f"m-{i:02d}", rng.randint(1, 6), rng.uniform(1, 30), 200)
    put(world["api"], world["raw"]["admin@mut.example"], "orders", g.orders)
    changed = [dict(o) for o in rng.sample(g.orders, 12)]
    for k, o in enumerate(changed):
        what = k % 6
        if what == 0:
            o["status"] = "cancelled"
        elif what == 1:
            o["currency"] = "EUR"
        elif what == 2:
            o["customer_id"] = "m-00"
        elif what == 3:
            o["total"] = round(o["total"] * 3 + 1, 2)
            o["items"] = [{"product_id": "P00", "quantity": 1, "unit_price": o["total"]}]
        elif what == 4:
            o["created_at"] = iso(AS_OF - 400 * DAY)
        else:
            o["status"] = "refunded"
    put(world["api"], world["raw"]["admin@mut.example"], "orders", changed)
    back = [dict(o, status="delivered") for o in changed if o["status"] == "cancelled"]
    put(world["api"], world["raw"]["admin@mut.example"], "orders", back)
    final = {o["order_id"]: o for o in g.orders + changed + back}
    orders = list(final.values())
    newest = max(ms_of(o["created_at"]) for o in orders)
    for params, as_of in [({}, None), ({"as_of": iso(newest - DAY)}, newest - DAY),
                          ({"currency": "EUR"}, None)]:
        body = ok(get(world, SEG, who="admin@mut.example", **params))
        at = as_of if as_of is not None else ms_of(body["segmentation_date"]) + 999
        check_segments(body, orders, at, params.get("currency", "USD"))


# ---- profiles ----

def expected_profile(g, cid, as_of, currency="USD"):
    sets = rfm(g.orders, as_of, currency)
    c = sets[cid]
    mine = counted([o for o in g.orders if o["customer_id"] == cid], as_of, currency)
    times = sorted(ms_of(o["created_at"]) for o in mine)
    ltv = c["mon"] / 10000
    repeat = [(x["last"] - x["first"]) / (x["freq"] - 1) for x in sets.values() if x["freq"] >= 2]
    tenant_median = statistics.median(repeat) if repeat else 90 * DAY
    interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) >= 2 else tenant_median
    interval = max(interval, DAY)
    products = {p["product_id"]: p for p in g.products}
    cats, chans, regions, items = {}, {}, {}, 0
    for o in mine:
        for i in o["items"]:
            cat = products.get(i["product_id"], {}).get("category") or "uncategorized"
            v = cats.setdefault(cat, [0, 0])
            v[0] += money(i["quantity"] * i["unit_price"])
            v[1] += i["quantity"]
            items += i["quantity"]
        ch = chans.setdefault(o["channel"] or "unknown", [0, 0])
        ch[0] += 1
        ch[1] += money(o["total"])
        if o["region"]:
            regions[o["region"]] = regions.get(o["region"], 0) + 1
    cur_count = {}
    for o in g.orders:
        if o["customer_id"] == cid and o["status"] not in ("cancelled", "refunded") and ms_of(o["created_at"]) <= as_of:
            cur_count[o["currency"]] = cur_count.get(o["currency"], 0) + 1
    statuses = [o["status"] for o in g.orders if o["customer_id"] == cid and o["currency"] == currency
                and ms_of(o["created_at"]) <= as_of]
    ev = [e for e in g.events if e["customer_id"] == cid and ms_of(e["timestamp"]) <= as_of]
    months = max(1.0, (as_of - times[0]) / (30.4375 * DAY))
    return {
        "segment": c["seg"], "lifetime_value": ltv, "total_orders": len(mine),
        "avg_order_value": ltv / len(mine), "first": times[0], "last": times[-1],
        "next": times[-1] + round(interval) if len(times) >= 2 else None,
        "risk": 1 - math.exp(-(as_of - times[-1]) / interval),
        "top_categories": [{"category": k, "revenue": v[0] / 10000, "quantity": v[1]}
                           for k, v in sorted(cats.items(), key=lambda kv: (-kv[1][0], kv[0]))[:5]],
        "top_channels": [{"channel": k, "orders": v[0], "revenue": v[1] / 10000}
                         for k, v in sorted(chans.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:5]],
        "preferred_region": min(regions.items(), key=lambda kv: (-kv[1], kv[0]))[0] if regions else None,
        "preferred_currency": min(cur_count.items(), key=lambda kv: (-kv[1], kv[0]))[0],
        "behavior": {
            "orders_per_month": len(mine) / months, "avg_items_per_order": items / len(mine),
            "days_since_last_order": (as_of - times[-1]) // DAY,
            "avg_days_between_orders": (times[-1] - times[0]) / (len(times) - 1) / DAY if len(times) >= 2 else None,
            "cancelled_orders": statuses.count("cancelled"), "refunded_orders": statuses.count("refunded"),
            "sessions": len({e["session_id"] for e in ev}),
            "product_views": sum(e["type"] == "product_view" for e in ev),
            "add_to_cart_events": sum(e["type"] == "add_to_cart" for e in ev),
            "purchase_events": sum(e["type"] == "purchase" for e in ev)},
        "rfm": {"recency_days": c["rec"], "frequency": c["freq"], "monetary": ltv,
                "recency_score": c["r"], "frequency_score": c["f"], "monetary_score": c["m"]},
    }


def check_profile(p, e, cid, currency="USD"):
    assert p["customer_id"] == cid
    assert p["currency"] == currency
    assert p["segment"] == e["segment"]
    assert close(p["lifetime_value"], e["lifetime_value"])
    assert p["total_orders"] == e["total_orders"]
    assert close(p["avg_order_value"], e["avg_order_value"])
    assert p["first_purchase_date"] == iso(e["first"])
    assert p["last_purchase_date"] == iso(e["last"])
    if e["next"] is None:
        assert "predicted_next_purchase" not in p
    else:
        assert abs(ms_of(p["predicted_next_purchase"]) - e["next"]) <= 1000
    assert close(p["risk_score"], e["risk"])
    pref = p["preferences"]
    assert len(pref["top_categories"]) == len(e["top_categories"])
    for got, want in zip(pref["top_categories"], e["top_categories"]):
        assert got["category"] == want["category"] and got["quantity"] == want["quantity"]
        assert close(got["revenue"], want["revenue"])
    assert len(pref["top_channels"]) == len(e["top_channels"])
    for got, want in zip(pref["top_channels"], e["top_channels"]):
        assert got["channel"] == want["channel"] and got["orders"] == want["orders"]
        assert close(got["revenue"], want["revenue"])
    assert pref["preferred_region"] == e["preferred_region"]
    assert pref["preferred_currency"] == e["preferred_currency"]
    b = p["behavior_metrics"]
    for k, v in e["behavior"].items():
        if v is None or isinstance(v, int):
            assert b[k] == v, k
        else:
            assert close(b[k], v), k
    for k, v in e["rfm"].items():
        assert close(p["rfm"][k], v), k


@pytest.mark.parametrize("cid", ["vip-01", "vip-02", "reg-01", "reg-04", "lap-03", "old-02",
                                 "new-01", "new-02", "mid-03", "Zoë 7/b+c"])
def test_profile_matches_independent_computation(world, cid):
    p = ok(get(world, prof(cid), as_of=iso(AS_OF)))
    check_profile(p, expected_profile(world["acme"], cid, AS_OF), cid)


def test_profile_planted_behaviour(world):
    new = ok(get(world, prof("new-03"), as_of=iso(AS_OF)))
    assert new["segment"] == "new" and new["total_orders"] == 1
    assert "predicted_next_purchase" not in new
    assert new["behavior_metrics"]["avg_days_between_orders"] is None
    lapsed = ok(get(world, prof("lap-01"), as_of=iso(AS_OF)))
    vip = ok(get(world, prof("vip-03"), as_of=iso(AS_OF)))
    # a lapsed frequent buyer is far past their usual interval; a regular big spender is not
    assert lapsed["risk_score"] > 0.99 and vip["risk_score"] < 0.6
    assert lapsed["segment"] == "at_risk"
    unknown = ok(get(world, prof("reg-01"), as_of=iso(AS_OF)))
    assert "uncategorized" in [c["category"] for c in unknown["preferences"]["top_categories"]]


def test_profile_in_the_past_and_other_currency(world):
    as_of = AS_OF - 120 * DAY
    p = ok(get(world, prof("vip-04"), as_of=iso(as_of)))
    check_profile(p, expected_profile(world["acme"], "vip-04", as_of), "vip-04")
    p = ok(get(world, prof("vip-01"), as_of=iso(AS_OF), currency="EUR"))
    check_profile(p, expected_profile(world["acme"], "vip-01", AS_OF, "EUR"), "vip-01", "EUR")
    assert p["preferences"]["preferred_currency"] == "USD"
    p = ok(get(world, prof("eur-01"), as_of=iso(AS_OF), currency="EUR"))
    check_profile(p, expected_profile(world["acme"], "eur-01", AS_OF, "EUR"), "eur-01", "EUR")


def test_profile_tenant_isolation(world):
    mine = ok(get(world, prof("vip-01"), who="admin@globex.example", as_of=iso(AS_OF)))
    check_profile(mine, expected_profile(world["globex"], "vip-01", AS_OF), "vip-01")
    # Globex's customer does not exist for Acme: 404 in the commerce format
    r = get(world, prof("gx-only"), as_of=iso(AS_OF))
    assert r.status_code == 404, r.text
    e = r.json()
    assert e["success"] is False and e["error"]["code"] == "NOT_FOUND"
    assert e["error"]["field_errors"][0]["field"] == "customer_id"
    r = get(world, prof("vip-01"), who="viewer@empty.example")
    assert r.status_code == 404


def test_profile_unknown_and_without_counted_orders(world):
    r = get(world, prof("nobody-at-all"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    for cid in ["ghost-01", "cxl-01"]:  # known, but nothing counted: 422
        r = get(world, prof(cid), as_of=iso(AS_OF))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "UNPROCESSABLE_ENTITY"
    r = get(world, prof("eur-01"), as_of=iso(AS_OF))  # orders only in EUR
    assert r.status_code == 422 and "currency" in r.json()["error"]["message"]
    r = get(world, prof("new-01"), as_of=iso(AS_OF - 400 * DAY))  # before their first order
    assert r.status_code == 422


# ---- bad input, roles ----

@pytest.mark.parametrize("path,params,field", [
    (SEG, {"as_of": "yesterday"}, "as_of"),
    (SEG, {"as_of": "2025-13-01T00:00:00Z"}, "as_of"),
    (SEG, {"currency": "usd"}, "currency"),
    (SEG, {"currency": "US"}, "currency"),
    (SEG, {"currency": "USDX"}, "currency"),
    (SEG, {"period_days": "0"}, "period_days"),
    (SEG, {"period_days": "366"}, "period_days"),
    (SEG, {"period_days": "ninety"}, "period_days"),
    (SEG, {"period_days": "90.5"}, "period_days"),
    (prof("vip-01"), {"as_of": "2025-06-01T25:00:00Z"}, "as_of"),
    (prof("vip-01"), {"currency": "€"}, "currency"),
    (prof("x" * 201), {}, "customer_id"),
])
def test_bad_input_names_the_field(world, path, params, field):
    r = get(world, path, **params)
    assert r.status_code == 400, r.text
    e = r.json()
    assert e["success"] is False and e["error"]["code"] == "VALIDATION_ERROR"
    assert [f["field"] for f in e["error"]["field_errors"]] == [field]
    assert ok(get(world, SEG, as_of=iso(AS_OF)))["total_customers"] > 0  # still serving


def test_read_api_key(world):
    api = world["api"]
    r = api.post("/api/v1/api-keys", headers=world["tok"]["admin@acme.example"],
                 json={"name": "BI tool", "permissions": ["read"]})
    assert r.status_code == 201, r.text
    key = bearer(r.json()["key"])
    body = ok(api.get(SEG, headers=key, params={"as_of": iso(AS_OF)}))
    check_segments(body, world["acme"].orders, AS_OF, "USD")
    assert ok(api.get(prof("vip-01"), headers=key, params={"as_of": iso(AS_OF)}))["customer_id"] == "vip-01"


def test_requires_credentials(world):
    for path in (SEG, prof("vip-01")):
        r = world["api"].get(path)
        assert r.status_code == 401
        assert r.json()["success"] is False


def test_analytics_rate_class():
    """The analytics routes share the analytics class (contract 6.2: 500/hour per key), apart
    from the general commerce class."""
    s = Server("--rate-limit", "analytics=3/60")
    api = Api(s)
    try:
        tenant(s.data, "R", "r.example")
        user(s.data, "r.example", "a@r.example", "viewer")
        h = bearer(login(api, "a@r.example")["access_token"])
        for i, path in enumerate([SEG, "/api/v1/analytics/products/performance", prof("nobody")]):
            params = {"start": iso(AS_OF - DAY), "end": iso(AS_OF)} if "products" in path else {}
            r = api.get(path, headers=h, params=params)
            assert r.status_code in (200, 404), r.text
            assert r.headers["X-RateLimit-Limit"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == str(2 - i)
        r = api.get(SEG, headers=h)
        assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(r.headers["Retry-After"]) >= 1
        assert api.get("/api/v1/ingest/sources", headers=h).status_code == 200  # another class
    finally:
        api.close()
        s.stop()
