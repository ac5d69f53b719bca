"""GET /api/v1/data-quality/reports over a planted dataset (fixed seed) sent through the batch
route: every report, check score, issue count, severity, sample id, the overall score and the
trend are compared with an independent computation here, over the records the test sent (the
refused ones are known from what was planted in them; the stored ones are checked in Python).
Also: the source and data-type filters, bad input one field at a time, and tenant isolation.

The server runs on the test clock (TESSERA_TEST_CLOCK_FILE): three phases of ingestion two
days apart, so a range's halves hold different phases and the trend can be checked."""
import json
import os
import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from accounts import bearer, login, tenant, user
from commerce_data import RATE_FLAGS, ingest
from conftest import Api, Server

MIN = 60 * 1000
HOUR = 60 * MIN
DAY = 24 * HOUR
SEED = 5
PATH = "/api/v1/data-quality/reports"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TYPES = ["orders", "transactions", "products", "customers", "inventory", "events"]


def iso(ms):
    return (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_s(ms):
    return (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%SZ")


def m(x):
    """money as ten-thousandths, as Tessera stores it"""
    return int(round(float(x) * 10000))


# ---------------------------------------------------------------------------------------------
# The planted dataset. Each record is built with a list of problems; refused problems say the
# issue, the field (as the report names it) and the check, exactly as README "Data quality"
# classifies what ingestion refuses. Stored records are judged by Model.stored_flags below.

REFUSED = {  # problem -> (issue_type, field, check)
    "missing_customer": ("missing_required_field", "customer_id", "completeness"),
    "missing_order_id": ("missing_required_field", "order_id", "completeness"),
    "missing_amount": ("missing_required_field", "amount", "completeness"),
    "missing_timestamp": ("missing_required_field", "timestamp", "completeness"),
    "missing_name": ("missing_required_field", "name", "completeness"),
    "bad_status": ("invalid_enum", "status", "validity"),
    "bad_tx_type": ("invalid_enum", "type", "validity"),
    "bad_date": ("invalid_format", "created_at", "validity"),
    "bad_tx_date": ("invalid_format", "timestamp", "validity"),
    "bad_email": ("invalid_format", "email", "validity"),
    "bad_price": ("invalid_type", "price", "validity"),
    "negative_total": ("negative_amount", "total", "accuracy"),
    "negative_sale": ("negative_amount", "amount", "accuracy"),
    "far_future": ("future_timestamp", "created_at", "accuracy"),
    "zero_quantity": ("invalid_quantity", "items[].quantity", "accuracy"),
    "negative_stock": ("invalid_quantity", "quantity", "accuracy"),
    "bad_event_type": ("invalid_enum", "type", "validity"),
}


class Gen:
    def __init__(self, rng, now):
        self.rng = rng
        self.now = now  # the server's time when the batch is sent

    def when(self):
        return self.now - self.rng.randint(1, 20 * 24) * HOUR

    def order(self, oid, problems, customers, products):
        rng = self.rng
        items = [{"product_id": rng.choice(products), "quantity": rng.randint(1, 4),
                  "unit_price": rng.choice([4.99, 12.5, 19.0, 99.95, 7.25])}
                 for _ in range(rng.randint(1, 3))]
        total = sum(m(i["unit_price"]) * i["quantity"] for i in items) / 10000
        r = {"order_id": oid, "customer_id": rng.choice(customers), "created_at": iso_s(self.when()),
             "total": round(total, 2), "currency": "EUR", "status": rng.choice(["placed", "paid", "shipped"]),
             "channel": rng.choice(["web", "app"]), "region": rng.choice(["EU", "US"]), "items": items}
        for p in problems:
            if p == "missing_customer":
                del r["customer_id"]
            elif p == "missing_order_id":
                del r["order_id"]
            elif p == "bad_status":
                r["status"] = "teleported"
            elif p == "bad_date":
                r["created_at"] = "31/02/2024"
            elif p == "negative_total":
                r["total"] = -12.5
            elif p == "far_future":
                r["created_at"] = "2099-01-01T00:00:00Z"
            elif p == "zero_quantity":
                items[0]["quantity"] = 0
            elif p == "mismatch":
                r["total"] = round(r["total"] + 5, 2)
            elif p == "soon_future":  # stored (ingestion allows 24 h), flagged by the report
                r["created_at"] = iso_s(self.now + 3 * HOUR)
            elif p == "unknown_customer":
                r["customer_id"] = "C-GHOST-" + oid
            elif p == "unknown_product":
                items[-1]["product_id"] = "P-GHOST"
            elif p == "no_channel":
                del r["channel"]
            elif p == "no_region":
                r["region"] = ""
            elif p == "no_items":
                del r["items"]
            else:
                raise AssertionError(p)
        return r

    def transaction(self, tid, problems, orders, customers):
        rng = self.rng
        r = {"transaction_id": tid, "amount": rng.choice([10, 25.5, 99.99]), "timestamp": iso_s(self.when()),
             "type": rng.choice(["sale", "sale", "refund"]), "order_id": rng.choice(orders),
             "customer_id": rng.choice(customers), "currency": "EUR", "payment_method": "card"}
        for p in problems:
            if p == "missing_amount":
                del r["amount"]
            elif p == "missing_timestamp":
                del r["timestamp"]
            elif p == "bad_tx_type":
                r["type"] = "chargeback"
            elif p == "bad_tx_date":
                r["timestamp"] = "yesterday"
            elif p == "negative_sale":
                r["amount"], r["type"] = -20, "sale"
            elif p == "unknown_order":
                r["order_id"] = "O-GHOST-" + tid
            elif p == "unknown_customer":
                r["customer_id"] = "C-GHOST-" + tid
            elif p == "no_payment":
                del r["payment_method"]
            elif p == "no_order":
                del r["order_id"]
            elif p == "soon_future":
                r["timestamp"] = iso_s(self.now + 2 * HOUR)
            else:
                raise AssertionError(p)
        return r

    def product(self, pid, problems):
        r = {"product_id": pid, "name": "Product " + pid, "category": self.rng.choice(["toys", "books"]),
             "price": 20, "cost": 11.5, "sku": "SKU-" + pid}
        for p in problems:
            if p == "missing_name":
                del r["name"]
            elif p == "bad_price":
                r["price"] = "twenty"
            elif p == "no_category":
                del r["category"]
            elif p == "no_cost":
                del r["cost"]
            else:
                raise AssertionError(p)
        return r

    def customer(self, cid, problems):
        r = {"customer_id": cid, "created_at": iso_s(self.when()), "email": cid.lower() + "@shop.example",
             "name": "Customer " + cid, "region": "EU"}
        for p in problems:
            if p == "bad_email":
                r["email"] = "not-an-email"
            elif p == "no_email":
                del r["email"]
            elif p == "no_region":
                del r["region"]
            else:
                raise AssertionError(p)
        return r

    def inventory(self, pid, wh, t, problems):
        r = {"product_id": pid, "warehouse": wh, "timestamp": iso(t), "quantity": 40, "reorder_level": 5}
        for p in problems:
            if p == "negative_stock":
                r["quantity"] = -3
            elif p == "no_warehouse":
                del r["warehouse"]
            elif p == "no_reorder":
                del r["reorder_level"]
            elif p == "unknown_product":
                r["product_id"] = "P-GHOST"
            else:
                raise AssertionError(p)
        return r

    def event(self, eid, problems, products, customers):
        r = {"event_id": eid, "type": "product_view", "timestamp": iso_s(self.when()),
             "session_id": "S" + eid[-2:], "customer_id": self.rng.choice(customers),
             "product_id": self.rng.choice(products)}
        for p in problems:
            if p == "no_product":
                del r["product_id"]
            elif p == "unknown_product":
                r["product_id"] = "P-GHOST"
            elif p == "page_view":  # a page view names no product: not a gap
                r["type"] = "page_view"
                del r["product_id"]
            elif p == "bad_event_type":
                r["type"] = "hover"
            else:
                raise AssertionError(p)
        return r


def plan(rng, n, **counts):
    """n problem lists: counts[name] records get that problem, each at its own random
    positions (no record gets two names); a name "a+b" plants both problems in one record."""
    pos = rng.sample(range(n), sum(counts.values()))
    out = [[] for _ in range(n)]
    for name, k in counts.items():
        for i in pos[:k]:
            out[i] = name.split("+")
        pos = pos[k:]
    return out


# ---------------------------------------------------------------------------------------------
# The independent model of the reports (README "Data quality").

EXPECTED = {"orders": ["channel", "region"], "transactions": ["order_id", "payment_method"],
            "products": ["category", "price", "cost"], "customers": ["created_at", "email", "region"],
            "inventory": ["warehouse", "reorder_level"], "events": ["product_id"]}
TIME_FIELD = {"orders": "created_at", "transactions": "timestamp", "customers": "created_at",
              "inventory": "timestamp", "events": "timestamp"}
CHECK_OF = {"missing_required_field": "completeness", "missing_expected_field": "completeness",
            "invalid_enum": "validity", "invalid_format": "validity", "invalid_type": "validity",
            "negative_amount": "accuracy", "invalid_quantity": "accuracy", "future_timestamp": "accuracy",
            "order_total_mismatch": "accuracy", "unknown_customer": "consistency",
            "unknown_product": "consistency", "unknown_order": "consistency", "duplicate_records": None}
STORED_SEVERITY = {"missing_expected_field": 0, "duplicate_records": 0}  # others: medium (1)
CHECKS = ["completeness", "accuracy", "consistency", "validity"]


def natural_id(dtype, r):
    if dtype == "inventory":
        wh = r.get("warehouse") or ""
        t = iso(parse_ms(r["timestamp"]))
        return (r["product_id"], wh, parse_ms(r["timestamp"])), (f"{r['product_id']}/{wh}/{t}" if wh
                                                                  else f"{r['product_id']}/{t}")
    key = {"orders": "order_id", "transactions": "transaction_id", "products": "product_id",
           "customers": "customer_id", "events": "event_id"}[dtype]
    return r[key], r[key]


def parse_ms(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


class Model:
    def __init__(self):
        self.stored = {t: {} for t in TYPES}   # sort key -> (record, source, ingested_at, shown id)
        self.refused = []                      # dicts: source, type, batch, index, key, issues, at
        self.batches = []                      # (source, type, created_at, duplicates, batch_id)

    def sent(self, source, dtype, records, problems, batch_id, at):
        dups = 0
        for i, (r, probs) in enumerate(zip(records, problems)):
            bad = [REFUSED[p] for p in probs if p in REFUSED]
            if bad:
                key = None
                try:
                    key = natural_id(dtype, r)[1]
                except (KeyError, ValueError):
                    pass
                self.refused.append(dict(source=source, type=dtype, batch=batch_id, index=i,
                                         key=key, issues=bad, at=at))
                continue
            k, shown = natural_id(dtype, r)
            dups += k in self.stored[dtype]
            self.stored[dtype][k] = (r, source, at, shown)
        self.batches.append((source, dtype, at, dups, batch_id))
        return dups

    def streamed(self, source, dtype, r, problems, at):
        """one record sent to POST /ingest/stream (no batch: duplicates are not counted)"""
        bad = [REFUSED[p] for p in problems if p in REFUSED]
        k, shown = natural_id(dtype, r)
        if bad:
            self.refused.append(dict(source=source, type=dtype, batch=None, index=0, key=shown,
                                     issues=bad, at=at))
        else:
            self.stored[dtype][k] = (r, source, at, shown)

    # ---- stored-record checks, in Python ----
    def refs(self):
        return {"customers": {k for k in self.stored["customers"]},
                "products": {k for k in self.stored["products"]},
                "orders": {k for k in self.stored["orders"]}}

    def stored_flags(self, dtype, r, at, refs):
        """[(issue, field)] of a stored record"""
        out = []
        for f in EXPECTED[dtype]:
            if dtype == "events" and r.get("type") not in ("product_view", "add_to_cart"):
                continue
            if r.get(f) in (None, ""):
                out.append(("missing_expected_field", f))
        if dtype == "orders" and r.get("items"):
            s = sum(i["quantity"] * m(i["unit_price"]) for i in r["items"])
            if abs(m(r["total"]) - s) > 100:
                out.append(("order_total_mismatch", "total"))
        if dtype == "transactions" and float(r["amount"]) < 0 and r.get("type") != "refund":
            out.append(("negative_amount", "amount"))
        tf = TIME_FIELD.get(dtype)
        if tf and r.get(tf) and parse_ms(r[tf]) > at + 5 * MIN:
            out.append(("future_timestamp", tf))
        cust = r.get("customer_id")
        if dtype in ("orders", "transactions", "events") and refs["customers"] and cust and cust not in refs["customers"]:
            out.append(("unknown_customer", "customer_id"))
        if dtype == "orders" and refs["products"] and any(i["product_id"] not in refs["products"]
                                                          for i in r.get("items") or []):
            out.append(("unknown_product", "items[].product_id"))
        if dtype in ("inventory", "events") and refs["products"] and r.get("product_id") and \
                r["product_id"] not in refs["products"]:
            out.append(("unknown_product", "product_id"))
        if dtype == "transactions" and refs["orders"] and r.get("order_id") and r["order_id"] not in refs["orders"]:
            out.append(("unknown_order", "order_id"))
        return out

    def groups(self, start, end, source=None, dtype=None):
        """{(source, type): group} for the records in [start, end)"""
        mid = start + (end - start) // 2
        refs = self.refs()
        groups = {}

        def group(src, t):
            return groups.setdefault((src, t), dict(
                half=[dict(total=0, expected=0, hit={c: 0 for c in CHECKS}) for _ in range(2)],
                issues={}, dups=0, dup_batches=[]))

        def issue(g, name):
            return g["issues"].setdefault(name, dict(count=0, refused=False, samples=[], fields={}))

        def keep(src, t, at):
            return start <= at < end and source in (None, src) and dtype in (None, t)

        # stream records (no batch) sort first, as NULL does in SQLite
        for rj in sorted(self.refused, key=lambda x: (x["source"], x["type"], x["batch"] or "",
                                                      x["index"], x["at"])):
            if not keep(rj["source"], rj["type"], rj["at"]):
                continue
            g = group(rj["source"], rj["type"])
            h = g["half"][rj["at"] >= mid]
            h["total"] += 1
            sample = rj["key"] or f"{rj['batch']}:data[{rj['index']}]"
            for check in {c for _, _, c in rj["issues"]}:
                h["hit"][check] += 1
            for name in dict.fromkeys(n for n, _, _ in rj["issues"]):
                iss = issue(g, name)
                iss["count"] += 1
                iss["refused"] = True
                if len(iss["samples"]) < 5:
                    iss["samples"].append(sample)
            for name, field in dict.fromkeys((n, f) for n, f, _ in rj["issues"]):
                f = issue(g, name)["fields"]
                f[field] = f.get(field, 0) + 1
        for t in TYPES:
            for k in sorted(self.stored[t]):
                r, src, at, shown = self.stored[t][k]
                if not keep(src, t, at):
                    continue
                g = group(src, t)
                h = g["half"][at >= mid]
                h["total"] += 1
                flags = self.stored_flags(t, r, at, refs)
                names = [n for n, _ in flags]
                h["expected"] += "missing_expected_field" in names
                h["hit"]["accuracy"] += any(CHECK_OF[n] == "accuracy" for n in names)
                h["hit"]["consistency"] += any(CHECK_OF[n] == "consistency" for n in names)
                for name in dict.fromkeys(names):
                    iss = issue(g, name)
                    iss["count"] += 1
                    if len(iss["samples"]) < 5:
                        iss["samples"].append(shown)
                for name, field in flags:
                    f = issue(g, name)["fields"]
                    f[field] = f.get(field, 0) + 1
        for src, t, at, dups, bid in sorted(self.batches, key=lambda b: b[4]):
            if dups and keep(src, t, at) and (src, t) in groups:
                g = groups[(src, t)]
                iss = issue(g, "duplicate_records")
                iss["count"] += dups
                g["dup_batches"].append(bid)
        return groups

    @staticmethod
    def scores(h):
        t = h["total"]
        if t == 0:
            return {c: 100.0 for c in CHECKS}
        out = {c: 100 * (1 - h["hit"][c] / t) for c in CHECKS}
        out["completeness"] = 100 * (1 - (h["hit"]["completeness"] + h["expected"] / 2) / t)
        return out

    @staticmethod
    def total_half(g):
        a, b = g["half"]
        return dict(total=a["total"] + b["total"], expected=a["expected"] + b["expected"],
                    hit={c: a["hit"][c] + b["hit"][c] for c in CHECKS})

    def expect(self, start, end, source=None, dtype=None):
        groups = self.groups(start, end, source, dtype)
        reports = []
        for (src, t), g in sorted(groups.items()):
            h = self.total_half(g)
            sc = self.scores(h)
            q = sum(sc.values()) / 4
            issues = []
            for name, iss in g["issues"].items():
                sev = 2 if iss["refused"] else STORED_SEVERITY.get(name, 1)
                if iss["count"] > 0.25 * h["total"]:
                    sev = min(2, sev + 1)
                issues.append(dict(issue_type=name, severity=["low", "medium", "high"][sev],
                                   count=iss["count"], sample_records=iss["samples"],
                                   fields=iss["fields"],
                                   batches=g["dup_batches"] if name == "duplicate_records" else []))
            issues.sort(key=lambda i: (-["low", "medium", "high"].index(i["severity"]), -i["count"],
                                       i["issue_type"]))
            reports.append(dict(source_id=src, data_type=t, quality_score=q, scores=sc, counts=h,
                                issues=issues))

        def weighted(sel):
            n = sum(sel(g)["total"] for g in groups.values())
            if n == 0:
                return 100.0, 0
            s = sum(sum(self.scores(sel(g)).values()) / 4 * sel(g)["total"] for g in groups.values())
            return s / n, n

        overall, _ = weighted(self.total_half)
        first, n1 = weighted(lambda g: g["half"][0])
        second, n2 = weighted(lambda g: g["half"][1])
        trend = "stable"
        if n1 and n2 and second - first > 2:
            trend = "improving"
        elif n1 and n2 and first - second > 2:
            trend = "declining"
        return dict(reports=reports, overall_score=overall, trend=trend)


# ---------------------------------------------------------------------------------------------
# The world: one server on the test clock, tenants A and B, three phases of ingestion.

class Clock:
    def __init__(self, path):
        self.path = path
        self.offset = 0
        path.write_text("0")

    def set(self, offset):
        self.offset = offset
        self.path.write_text(str(offset))
        time.sleep(0.15)  # the server re-reads the file every 50 ms

    def now(self):
        return int(time.time() * 1000) + self.offset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    data = str(tmp / "data")
    os.mkdir(data)
    tenant(data, "Acme", "acme.example")
    tenant(data, "Globex", "globex.example")
    user(data, "acme.example", "admin@acme.example", "admin")
    user(data, "acme.example", "viewer@acme.example", "viewer")
    user(data, "globex.example", "admin@globex.example", "admin")
    clock = Clock(tmp / "clock")
    s = Server("--jwt-ttl", "604800", *RATE_FLAGS, data=data,
               env={"TESSERA_TEST_CLOCK_FILE": str(clock.path)})
    api = Api(s)
    tok = {k: login(api, k)["access_token"]
           for k in ("admin@acme.example", "viewer@acme.example", "admin@globex.example")}
    A, B = tok["admin@acme.example"], tok["admin@globex.example"]
    rng = random.Random(SEED)
    model, model_b = Model(), Model()

    def send(mdl, t, source, dtype, records, problems):
        st = ingest(api, t, dtype, records, source_id=source)
        assert st["status"] == "completed", st
        bid = st["batch_id"]
        dups = mdl.sent(source, dtype, records, problems, bid, clock.now())
        assert st["duplicate_records"] == dups, (st, dups)
        return bid

    # ---- phase 1 (clock + 0): reference data, then messy orders, transactions, inventory, events
    t0 = clock.now()
    g = Gen(rng, t0)
    pids = [f"P{i:03d}" for i in range(1, 21)]
    cids = [f"C{i:03d}" for i in range(1, 31)]
    pp = plan(rng, 20, missing_name=1, bad_price=1, no_category=3, no_cost=4)
    send(model, A, "catalog-feed", "products", [g.product(p, pr) for p, pr in zip(pids, pp)], pp)
    cp = plan(rng, 30, bad_email=1, no_email=5, no_region=2)
    send(model, A, "catalog-feed", "customers", [g.customer(c, pr) for c, pr in zip(cids, cp)], cp)
    good_p = [p for p, pr in zip(pids, pp) if not set(pr) & set(REFUSED)]
    good_c = [c for c, pr in zip(cids, cp) if not set(pr) & set(REFUSED)]

    wp = plan(rng, 40, missing_customer=3, missing_order_id=1, bad_status=2, bad_date=2,
              negative_total=2, far_future=1, zero_quantity=1, **{"missing_customer+bad_status": 1},
              mismatch=3, soon_future=2, unknown_customer=2, unknown_product=2, no_channel=4,
              no_region=3, no_items=1, **{"mismatch+unknown_customer": 1})
    web_orders = [g.order(f"W{i:03d}", pr, good_c, good_p) for i, pr in enumerate(wp, 1)]
    send(model, A, "shop-web", "orders", web_orders, wp)
    # four clean orders sent again, unchanged: duplicates
    clean = [(r, pr) for r, pr in zip(web_orders, wp) if not pr][:4]
    send(model, A, "shop-web", "orders", [r for r, _ in clean], [pr for _, pr in clean])

    ep = [pr + ["no_channel"] for pr in plan(rng, 25, bad_date=1, missing_customer=1, mismatch=2,
                                               unknown_product=1)]
    send(model, A, "erp-main", "orders", [g.order(f"E{i:03d}", pr, good_c, good_p) for i, pr in enumerate(ep, 1)], ep)
    stored_orders = [k for k in model.stored["orders"]]
    tp = plan(rng, 20, negative_sale=2, bad_tx_type=2, missing_timestamp=1, unknown_order=2,
              no_payment=3, soon_future=1, unknown_customer=1, no_order=1)
    send(model, A, "shop-web", "transactions",
         [g.transaction(f"TW{i:03d}", pr, stored_orders, good_c) for i, pr in enumerate(tp, 1)], tp)
    ip = plan(rng, 6, negative_stock=1, no_warehouse=2, no_reorder=1, unknown_product=1)
    send(model, A, "catalog-feed", "inventory",
         [g.inventory(good_p[i], "main", t0 - (i + 1) * HOUR, pr) for i, pr in enumerate(ip)], ip)
    vp = plan(rng, 8, no_product=2, unknown_product=1, page_view=2)
    send(model, A, "shop-web", "events", [g.event(f"EV{i:02d}", pr, good_p, good_c) for i, pr in enumerate(vp, 1)], vp)
    # events one at a time through the stream route: a refused one is kept for the report
    for eid, pr in [("LIVE1", ["bad_event_type"]), ("LIVE2", []), ("LIVE3", ["bad_event_type"]),
                    ("LIVE4", ["no_product"])]:
        ev = g.event(eid, pr, good_p, good_c)
        r = api.post("/api/v1/ingest/stream", headers=bearer(A), json={
            "source_id": "shop-web", "data_type": "events", "timestamp": ev["timestamp"], "data": ev})
        assert r.status_code == (400 if pr and pr[0] in REFUSED else 202), r.text
        model.streamed("shop-web", "events", ev, pr, clock.now())

    # tenant B: the same source and type names, its own small data
    gb = Gen(random.Random(SEED + 1), t0)
    bp = plan(gb.rng, 6, bad_status=1)
    send(model_b, B, "shop-web", "orders", [gb.order(f"W{i:03d}", pr, ["X1"], ["Y1"]) for i, pr in enumerate(bp, 1)], bp)

    # ---- phase 2 (clock + 2 days): clean orders from both sources
    clock.set(2 * DAY)
    g = Gen(rng, clock.now())
    send(model, A, "shop-web", "orders", [g.order(f"W{i:03d}", [], good_c, good_p) for i in range(101, 131)], [[]] * 30)
    send(model, A, "erp-main", "orders", [g.order(f"E{i:03d}", [], good_c, good_p) for i in range(101, 111)], [[]] * 10)

    # ---- phase 3 (clock + 4 days): messy transactions from the ERP
    clock.set(4 * DAY)
    g = Gen(rng, clock.now())
    stored_orders = [k for k in model.stored["orders"]]
    xp = plan(rng, 15, missing_amount=3, unknown_order=3, bad_tx_date=2)
    send(model, A, "erp-main", "transactions",
         [g.transaction(f"TE{i:03d}", pr, stored_orders, good_c) for i, pr in enumerate(xp, 1)], xp)
    yield dict(api=api, tok=tok, A=A, B=B, model=model, model_b=model_b, t0=t0, clock=clock,
               server=s)
    api.close()
    s.stop()


def fetch(world, start, end, tok=None, **params):
    q = {"time_range[start]": iso(start), "time_range[end]": iso(end), **params}
    r = world["api"].get(PATH, params=q, headers=bearer(tok or world["A"]))
    assert r.status_code == 200, r.text
    return r.json()["data"]


def close(a, b):
    return abs(a - b) < 0.0051


def compare(got, want):
    """the route's answer against the model's"""
    assert [(r["source_id"], r["data_type"]) for r in got["reports"]] == \
        [(r["source_id"], r["data_type"]) for r in want["reports"]]
    for g, w in zip(got["reports"], want["reports"]):
        where = f"{g['source_id']}/{g['data_type']}"
        assert close(g["quality_score"], w["quality_score"]), (where, g["quality_score"], w["quality_score"])
        assert [c["check_type"] for c in g["checks_performed"]] == CHECKS
        c = w["counts"]
        for chk in g["checks_performed"]:
            ws = w["scores"][chk["check_type"]]
            assert close(chk["score"], ws), (where, chk, ws)
            assert chk["passed"] == (round(ws, 2) >= 95), (where, chk)
            assert f"of {c['total']} records" in chk["details"], chk["details"]
            assert f"{c['hit'][chk['check_type']]} of {c['total']}" in chk["details"], (where, chk)
        assert [(i["issue_type"], i["severity"], i["count"]) for i in g["issues_found"]] == \
            [(i["issue_type"], i["severity"], i["count"]) for i in w["issues"]], where
        for gi, wi in zip(g["issues_found"], w["issues"]):
            assert gi["sample_records"] == wi["sample_records"], (where, gi, wi)
            for field, n in wi["fields"].items():
                assert f"{field} {n}" in gi["suggested_action"], (where, gi)
            for bid in wi["batches"]:
                assert bid in gi["suggested_action"], (where, gi)
        uuid.UUID(g["report_id"])
    assert close(got["overall_score"], want["overall_score"]), (got["overall_score"], want["overall_score"])
    assert got["trend"] == want["trend"]


# ---------------------------------------------------------------------------------------------

def test_reports_match_the_independent_computation(world):
    t0 = world["t0"]
    start, end = t0 - DAY, t0 + 6 * DAY
    got = fetch(world, start, end)
    want = world["model"].expect(start, end)
    compare(got, want)
    assert {(r["source_id"], r["data_type"]) for r in got["reports"]} == {
        ("catalog-feed", "customers"), ("catalog-feed", "inventory"), ("catalog-feed", "products"),
        ("erp-main", "orders"), ("erp-main", "transactions"), ("shop-web", "events"),
        ("shop-web", "orders"), ("shop-web", "transactions")}
    # the same report asked again has the same id; generated_at is now
    again = fetch(world, start, end)
    assert [r["report_id"] for r in again["reports"]] == [r["report_id"] for r in got["reports"]]
    assert len({r["report_id"] for r in got["reports"]}) == len(got["reports"])
    gen = parse_ms(got["reports"][0]["generated_at"])
    assert abs(gen - world["clock"].now()) < 60000


def test_planted_problems_are_counted(world):
    """A readable cross-check of the planted numbers, independent of the model's code."""
    t0 = world["t0"]
    got = fetch(world, t0 - DAY, t0 + 6 * DAY, source_id="shop-web", data_type="orders")
    (rep,) = got["reports"]
    issues = {i["issue_type"]: i for i in rep["issues_found"]}
    assert issues["missing_required_field"]["count"] == 5      # 3 + 1 combined + 1 without order_id
    assert issues["invalid_enum"]["count"] == 3                # 2 + 1 combined
    assert issues["invalid_format"]["count"] == 2
    assert issues["negative_amount"]["count"] == 2
    assert issues["future_timestamp"]["count"] == 1 + 2        # refused (2099) + stored (3 h ahead)
    assert issues["invalid_quantity"]["count"] == 1
    assert issues["order_total_mismatch"]["count"] == 4        # 3 + 1 combined
    assert issues["unknown_customer"]["count"] == 3            # 2 + 1 combined
    assert issues["unknown_product"]["count"] == 2
    assert issues["duplicate_records"]["count"] == 4
    assert issues["duplicate_records"]["sample_records"] == []
    assert issues["missing_expected_field"]["count"] == 7      # 4 without channel, 3 without region
    for name in ("missing_required_field", "invalid_enum", "invalid_format", "negative_amount",
                 "invalid_quantity", "future_timestamp"):
        assert issues[name]["severity"] == "high", name        # refused records
    # the record without an order_id is named by its batch and position
    assert any(re.fullmatch(r"[0-9a-f-]{36}:data\[\d+\]", s)
               for s in issues["missing_required_field"]["sample_records"])
    # 40 + 4 duplicates in phase 1 are 40 records, + 30 clean ones in phase 2
    comp = rep["checks_performed"][0]
    assert "of 70 records" in comp["details"]
    erp = fetch(world, t0 - DAY, t0 + 6 * DAY, source_id="erp-main", data_type="orders")["reports"][0]
    missing = {i["issue_type"]: i for i in erp["issues_found"]}["missing_expected_field"]
    assert missing["severity"] == "medium"                     # 23 of 35 records: escalated
    cons = [c for c in erp["checks_performed"] if c["check_type"] == "consistency"][0]
    assert "duplicate" not in cons["details"]
    # stream records: the two refused ones are named by their ids; 8 batch + 4 stream records
    ev = fetch(world, t0 - DAY, t0 + 6 * DAY, source_id="shop-web", data_type="events")["reports"][0]
    enum = {i["issue_type"]: i for i in ev["issues_found"]}["invalid_enum"]
    assert (enum["count"], enum["severity"], enum["sample_records"]) == (2, "high", ["LIVE1", "LIVE3"])
    assert "2 of 12 records were refused as invalid" in ev["checks_performed"][3]["details"]


def test_consistency_only_against_reference_data_that_was_sent(world):
    """Tenant B sent orders but no customers or products: nothing is unknown, and it says so."""
    t0 = world["t0"]
    got = fetch(world, t0 - DAY, t0 + 6 * DAY, tok=world["B"])
    compare(got, world["model_b"].expect(t0 - DAY, t0 + 6 * DAY))
    (rep,) = got["reports"]
    cons = rep["checks_performed"][2]
    assert cons["score"] == 100 and cons["passed"]
    assert "not checked, none sent yet: customers, products" in cons["details"]


@pytest.mark.parametrize("params", [
    {"source_id": "shop-web"}, {"source_id": "erp-main"}, {"data_type": "orders"},
    {"data_type": "transactions"}, {"data_type": "events"}, {"data_type": "inventory"},
    {"source_id": "shop-web", "data_type": "transactions"}, {"source_id": "nobody-here"},
])
def test_filters(world, params):
    t0 = world["t0"]
    start, end = t0 - DAY, t0 + 6 * DAY
    got = fetch(world, start, end, **params)
    want = world["model"].expect(start, end, params.get("source_id"), params.get("data_type"))
    compare(got, want)
    full = {(r["source_id"], r["data_type"]): r["report_id"] for r in fetch(world, start, end)["reports"]}
    for r in got["reports"]:
        assert r["source_id"] == params.get("source_id", r["source_id"])
        assert r["data_type"] == params.get("data_type", r["data_type"])
        assert full[(r["source_id"], r["data_type"])] == r["report_id"]
    if params.get("source_id") == "nobody-here":
        assert got == {"reports": [], "overall_score": 100, "trend": "stable"}


@pytest.mark.parametrize("lo,hi,trend", [
    (-1 * DAY, 3 * DAY, "improving"),   # halves: phase 1 (messy) | phase 2 (clean)
    (1 * DAY, 5 * DAY, "declining"),    # phase 2 (clean) | phase 3 (messy)
    (-1 * DAY, int(1.5 * DAY), "stable"),  # only phase 1, in the first half
    (-1 * DAY, 6 * DAY, None),          # phases 1 + 2 | 3: whatever the model says
])
def test_trend_and_ranges(world, lo, hi, trend):
    t0 = world["t0"]
    got = fetch(world, t0 + lo, t0 + hi)
    want = world["model"].expect(t0 + lo, t0 + hi)
    compare(got, want)
    if trend:
        assert got["trend"] == trend


def test_browser_forms_of_time_range(world):
    t0 = world["t0"]
    start, end = t0 - DAY, t0 + 6 * DAY
    want = fetch(world, start, end, data_type="products")
    api, h = world["api"], bearer(world["A"])
    for q in [f"time_range.start={iso(start)}&time_range.end={iso(end)}",
              "time_range=" + json.dumps({"start": iso(start), "end": iso(end)}),
              f"start={iso(start)}&end={iso(end)}"]:
        r = api.get(f"{PATH}?{q}&data_type=products", headers=h)
        assert r.status_code == 200, r.text
        got = r.json()["data"]
        assert [x["report_id"] for x in got["reports"]] == [x["report_id"] for x in want["reports"]]
        assert got["overall_score"] == want["overall_score"]


def bad(world, params, field):
    r = world["api"].get(PATH, params=params, headers=bearer(world["A"]))
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["code"] == "VALIDATION_ERROR"
    assert field in [f["field"] for f in e["field_errors"]], e
    return e


def test_bad_input_one_by_one(world):
    t0 = world["t0"]
    ok = {"time_range[start]": iso(t0 - DAY), "time_range[end]": iso(t0 + DAY)}
    bad(world, {}, "time_range.start")
    bad(world, {"time_range[start]": iso(t0)}, "time_range.end")
    bad(world, {"time_range[end]": iso(t0)}, "time_range.start")
    bad(world, {"time_range[start]": "yesterday", "time_range[end]": iso(t0)}, "time_range.start")
    bad(world, {"time_range[start]": iso(t0 + DAY), "time_range[end]": iso(t0 - DAY)}, "time_range")
    bad(world, {"time_range[start]": iso(t0), "time_range[end]": iso(t0)}, "time_range")
    e = bad(world, {**ok, "data_type": "invoices"}, "data_type")
    assert e["field_errors"][0]["rejected_value"] == "invoices"
    assert "events" in e["field_errors"][0]["message"]
    bad(world, {**ok, "source_id": "x"}, "source_id")
    bad(world, {**ok, "source_id": "no spaces here"}, "source_id")
    # every bad parameter at once
    e = bad(world, {"data_type": "invoices", "source_id": "x"}, "data_type")
    assert [f["field"] for f in e["field_errors"]] == ["source_id", "data_type", "time_range.start"]
    # the server keeps serving
    assert fetch(world, t0 - DAY, t0 + DAY, data_type="products")["reports"]


def test_tenant_isolation_and_access(world):
    t0 = world["t0"]
    start, end = t0 - DAY, t0 + 6 * DAY
    a = fetch(world, start, end, source_id="shop-web", data_type="orders")["reports"][0]
    b = fetch(world, start, end, tok=world["B"])
    assert [(r["source_id"], r["data_type"]) for r in b["reports"]] == [("shop-web", "orders")]
    assert b["reports"][0]["report_id"] != a["report_id"]
    bi = b["reports"][0]["issues_found"]
    assert [(i["issue_type"], i["count"]) for i in bi] == [("invalid_enum", 1)]
    assert fetch(world, start, end, tok=world["B"], source_id="catalog-feed")["reports"] == []
    # any role reads; no credential is 401
    v = fetch(world, start, end, tok=world["tok"]["viewer@acme.example"], data_type="products")
    assert len(v["reports"]) == 1
    r = world["api"].get(PATH, params={"time_range[start]": iso(start), "time_range[end]": iso(end)})
    assert r.status_code == 401
    assert r.json()["success"] is False
