"""commerce dashboards (contracts/commerce.md 3.1-3.2): create, read, update, delete with every
bad field named, visibility (public / admins / creator), permissions, other tenants' ids 404;
GET /dashboards/{id}/data figures checked against Python sums over the records this test
ingested; a failing widget beside working ones; the widget cache (miss, hit, stale once new
records arrive, ?refresh=true); the dashboard WebSocket (dashboard_refresh and every widget on
connect, widget_update with the new figure after ingestion and nothing for unchanged widgets,
dashboard_refresh after a PUT, error and close 4404 after a DELETE)."""
import asyncio
import json
import os
import random
import sqlite3
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import websockets

from accounts import bearer
from commerce_data import RATE_FLAGS, busy_shop, ingest, shop
from conftest import Api, Server

COUNTED = ("placed", "paid", "shipped", "delivered")


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_orders(n, seed, prefix):
    """n orders over the last 10 days (none in the future), some cancelled or refunded."""
    rnd = random.Random(seed)
    now = datetime.now(timezone.utc)
    out = []
    for i in range(n):
        out.append({
            "order_id": f"{prefix}{i}", "customer_id": f"c{rnd.randrange(40)}",
            "created_at": iso(now - timedelta(minutes=rnd.randrange(60, 10 * 24 * 60))),
            "total": round(rnd.uniform(5, 400), 2), "currency": "USD",
            "status": rnd.choice(COUNTED + COUNTED + ("cancelled", "refunded")),
            "channel": rnd.choice(["web", "store", "app"]),
            "region": rnd.choice(["EU", "US", "APAC"]),
        })
    return out


def counted(orders):
    return [o for o in orders if o["status"] in COUNTED]


def revenue(orders):
    return sum(o["total"] for o in counted(orders))


def by(orders, dim, fn):
    groups = defaultdict(list)
    for o in counted(orders):
        groups[o[dim]].append(o)
    return {k: fn(v) for k, v in groups.items()}


def query(metric, window="30d", granularity="daily", **extra):
    return {"metric_type": metric, "granularity": granularity, "time_window": window, **extra}


def widget(wid, type_, metric, refresh=300, **cfg):
    return {"widget_id": wid, "type": type_, "title": f"{metric} {type_}",
            "position": {"x": 0, "y": 0, "w": 4, "h": 3},
            "configuration": query(metric, **cfg), "refresh_interval": refresh}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("dash"))
    s = Server(*RATE_FLAGS, data=data)
    api = Api(s)
    acme = shop(s, api, "acme")
    globex = shop(s, api, "globex", roles=("admin", "viewer"))
    orders = make_orders(150, 7, "o")
    st = ingest(api, acme["admin"], "orders", orders)
    assert st["status"] == "completed" and st["stored_records"] == len(orders), st
    other = make_orders(20, 8, "g")
    assert ingest(api, globex["admin"], "orders", other)["status"] == "completed"
    yield {"server": s, "api": api, "acme": acme, "globex": globex, "orders": orders, "data": data}
    api.close()
    s.stop()


def create(env, body, who="admin", tenant="acme", status=201):
    r = env["api"].post("/api/v1/dashboards", headers=bearer(env[tenant][who]), json=body)
    assert r.status_code == status, r.text
    return r.json()["data"] if status == 201 else r.json()


def get_data(env, dash_id, who="viewer", tenant="acme", **params):
    r = env["api"].get(f"/api/v1/dashboards/{dash_id}/data", headers=bearer(env[tenant][who]),
                       params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def fields(resp):
    return {e["field"] for e in resp["error"]["field_errors"]}


def test_crud_visibility_and_permissions(env):
    api, acme, globex = env["api"], env["acme"], env["globex"]
    body = {"name": "Executive", "description": "Top line", "category": "executive", "is_public": True,
            "widgets": [widget("rev", "metric_card", "revenue"),
                        widget("tx", "line_chart", "transactions", refresh=30)]}
    d = create(env, body)
    assert d["name"] == "Executive" and d["category"] == "executive" and d["is_public"] is True
    assert [w["widget_id"] for w in d["widgets"]] == ["rev", "tx"]
    assert d["widgets"][0]["configuration"] == body["widgets"][0]["configuration"]
    assert d["widgets"][1]["refresh_interval"] == 30 and d["widgets"][0]["position"] == {"x": 0, "y": 0, "w": 4, "h": 3}
    assert d["created_at"] == d["updated_at"]
    # private: admins and the creator only
    priv = create(env, {"name": "Mine", "category": "finance",
                        "widgets": [{"type": "table", "title": "t", "position": {"x": 1, "y": 2, "w": 3, "h": 4},
                                     "configuration": query("revenue")}]})
    assert priv["is_public"] is False and priv["description"] == ""
    assert len(priv["widgets"][0]["widget_id"]) == 36 and priv["widgets"][0]["refresh_interval"] == 60
    ids = lambda who, t="acme": [x["dashboard_id"] for x in api.get(
        "/api/v1/dashboards", headers=bearer(env[t][who])).json()["data"]["dashboards"]]
    assert d["dashboard_id"] in ids("viewer") and priv["dashboard_id"] not in ids("viewer")
    assert priv["dashboard_id"] in ids("admin")
    r = api.post("/api/v1/api-keys", headers=bearer(acme["developer"]), json={"name": "wall", "permissions": ["read"]},
                 validate=False)
    assert r.status_code == 201, r.text
    key = {"Authorization": "Bearer " + r.json()["key"]}
    listed = [x["dashboard_id"] for x in api.get("/api/v1/dashboards", headers=key).json()["data"]["dashboards"]]
    assert d["dashboard_id"] in listed and priv["dashboard_id"] not in listed  # keys see public ones
    assert api.get(f"/api/v1/dashboards/{priv['dashboard_id']}", headers=bearer(acme["viewer"])).status_code == 404
    assert api.get(f"/api/v1/dashboards/{d['dashboard_id']}", headers=bearer(acme["viewer"])).json()["data"] == d
    # other tenants: never listed, 404 for every method
    assert d["dashboard_id"] not in ids("admin", "globex")
    for method in ("GET", "PUT", "DELETE"):
        r = api.request(method, f"/api/v1/dashboards/{d['dashboard_id']}", headers=bearer(globex["admin"]),
                        **({"json": {"name": "x"}} if method == "PUT" else {}))
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND", r.text
    assert api.get(f"/api/v1/dashboards/{d['dashboard_id']}/data", headers=bearer(globex["viewer"])).status_code == 404
    assert api.get("/api/v1/dashboards/nope", headers=bearer(acme["admin"])).status_code == 404
    # only admins change dashboards
    for who in ("viewer", "manager", "developer"):
        r = api.post("/api/v1/dashboards", headers=bearer(acme[who]), json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", r.text
        r = api.request("DELETE", f"/api/v1/dashboards/{d['dashboard_id']}", headers=bearer(acme[who]))
        assert r.status_code == 403
    assert api.get("/api/v1/dashboards").status_code == 401
    # PUT changes what it is given; widgets given replace them all
    time.sleep(1.1)
    r = api.request("PUT", f"/api/v1/dashboards/{d['dashboard_id']}", headers=bearer(acme["admin"]),
                    json={"name": "Exec v2"})
    assert r.status_code == 200, r.text
    u = r.json()["data"]
    assert u["name"] == "Exec v2" and u["widgets"] == d["widgets"] and u["updated_at"] > d["updated_at"]
    r = api.request("PUT", f"/api/v1/dashboards/{d['dashboard_id']}", headers=bearer(acme["admin"]),
                    json={**u, "widgets": [widget("tx", "bar_chart", "transactions")]})
    assert r.status_code == 200, r.text
    assert [(w["widget_id"], w["type"]) for w in r.json()["data"]["widgets"]] == [("tx", "bar_chart")]
    # DELETE
    r = api.request("DELETE", f"/api/v1/dashboards/{priv['dashboard_id']}", headers=bearer(acme["admin"]))
    assert r.status_code == 204 and r.content == b""
    assert api.get(f"/api/v1/dashboards/{priv['dashboard_id']}", headers=bearer(acme["admin"])).status_code == 404
    assert api.request("DELETE", f"/api/v1/dashboards/{priv['dashboard_id']}",
                       headers=bearer(acme["admin"])).status_code == 404


def test_validation_names_every_field(env):
    good = widget("a", "metric_card", "revenue")
    bad_type = dict(widget("b", "donut", "revenue"))
    bad_metric = widget("c", "line_chart", "profit")
    bad_pos = dict(widget("d", "table", "revenue"), position={"x": -1, "y": 0, "w": 0, "h": 2})
    bad_refresh = dict(widget("e", "table", "revenue"), refresh_interval=2)
    r = create(env, {"category": "sales", "is_public": "yes",
                     "widgets": [good, bad_type, bad_metric, bad_pos, bad_refresh]}, status=400)
    assert r["error"]["code"] == "VALIDATION_ERROR"
    f = fields(r)
    assert {"name", "category", "is_public", "widgets[1].type", "widgets[2].configuration.metric_type",
            "widgets[3].position.x", "widgets[3].position.w", "widgets[4].refresh_interval"} <= f, f
    assert not any(x.startswith("widgets[0]") for x in f), f
    rejected = {e["field"]: e["rejected_value"] for e in r["error"]["field_errors"]}
    assert rejected["category"] == "sales" and rejected["widgets[2].configuration.metric_type"] == "profit"
    # group_by only where a split makes sense; widget ids unique; configuration required
    r = create(env, {"name": "x", "category": "marketing", "widgets": [
        widget("a", "line_chart", "revenue", group_by="region"),
        widget("b", "pie_chart", "conversion", group_by="region"),
        widget("c", "pie_chart", "revenue", group_by="colour"),
        widget("a", "table", "revenue"),
        {"type": "map", "title": "m", "position": {"x": 0, "y": 0, "w": 1, "h": 1}},
        "not a widget"]}, status=400)
    assert {"widgets[0].configuration.group_by", "widgets[1].configuration.group_by",
            "widgets[2].configuration.group_by", "widgets[3].widget_id", "widgets[4].configuration",
            "widgets[5]"} <= fields(r), fields(r)
    r = create(env, {"name": "x", "category": "finance", "widgets": [good] * 51}, status=400)
    assert fields(r) == {"widgets"}
    r = env["api"].post("/api/v1/dashboards", headers=bearer(env["acme"]["admin"]), content=b"[]",
                        params=None)
    assert r.status_code in (400, 415)
    # nothing was stored by any of these
    names = [x["name"] for x in env["api"].get("/api/v1/dashboards", headers=bearer(env["acme"]["admin"])).json()["data"]["dashboards"]]
    assert "x" not in names


def test_data_figures_against_python(env):
    orders = env["orders"]
    d = create(env, {"name": "Figures", "category": "operations", "is_public": True, "widgets": [
        widget("card", "metric_card", "revenue"),
        widget("tx", "line_chart", "transactions"),
        widget("pie", "pie_chart", "revenue", group_by="region"),
        widget("tab", "table", "customers", group_by="channel"),
        widget("eu", "bar_chart", "revenue", filters={"region": ["EU"]})]})
    before = datetime.now(timezone.utc).replace(microsecond=0)
    out = get_data(env, d["dashboard_id"])
    w = out["data"]
    assert out["dashboard_id"] == d["dashboard_id"] and set(w) == {"card", "tx", "pie", "tab", "eu"}
    for k in ("card", "tx", "pie", "tab", "eu"):
        assert w[k]["status"] == "success" and w[k]["cache_status"] == "miss" and w[k]["widget_id"] == k, w[k]
    assert w["card"]["data"]["value"] == pytest.approx(revenue(orders), abs=1e-6)
    assert w["card"]["data"]["metric"]["summary"]["total"] == pytest.approx(revenue(orders), abs=1e-6)
    assert w["card"]["data"]["metric"]["metric_type"] == "revenue"
    assert w["tx"]["data"]["summary"]["total"] == pytest.approx(len(counted(orders)))
    assert sum(p["value"] for p in w["tx"]["data"]["data"]) == pytest.approx(len(counted(orders)))
    pie = w["pie"]["data"]
    assert pie["group_by"] == "region" and pie["truncated"] is False
    expect = by(orders, "region", lambda v: sum(o["total"] for o in v))
    assert {g["key"]: g["value"] for g in pie["groups"]} == pytest.approx(expect, abs=1e-6)
    assert [g["value"] for g in pie["groups"]] == sorted((g["value"] for g in pie["groups"]), reverse=True)
    tab = w["tab"]["data"]
    expect = by(orders, "channel", lambda v: len({o["customer_id"] for o in v}))
    assert {g["key"]: g["value"] for g in tab["groups"]} == pytest.approx(expect)
    eu = [o for o in orders if o["region"] == "EU"]
    assert w["eu"]["data"]["summary"]["total"] == pytest.approx(revenue(eu), abs=1e-6)
    # times: every figure computed now; the next refresh when the first one expires (300 s)
    last = datetime.strptime(out["last_updated"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    nxt = datetime.strptime(out["next_refresh"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= last <= datetime.now(timezone.utc)
    assert abs((nxt - last).total_seconds() - 300) <= 1


def test_cache_miss_hit_stale_refresh(env):
    api, acme = env["api"], env["acme"]
    d = create(env, {"name": "Cache", "category": "finance", "is_public": True, "widgets": [
        widget("card", "metric_card", "revenue"), widget("pie", "pie_chart", "revenue", group_by="region")]})
    did = d["dashboard_id"]
    first = get_data(env, did)
    assert {k: v["cache_status"] for k, v in first["data"].items()} == {"card": "miss", "pie": "miss"}
    second = get_data(env, did)
    assert {k: v["cache_status"] for k, v in second["data"].items()} == {"card": "hit", "pie": "hit"}
    assert second["data"]["card"]["data"] == first["data"]["card"]["data"]
    assert second["last_updated"] == first["last_updated"]
    old = first["data"]["card"]["data"]["value"]
    new_order = {"order_id": "cache-1", "customer_id": "c1", "created_at": iso(datetime.now(timezone.utc) - timedelta(minutes=5)),
                 "total": 100.0, "currency": "USD", "status": "paid", "channel": "web", "region": "EU"}
    assert ingest(api, acme["admin"], "orders", [new_order])["stored_records"] == 1
    env["orders"].append(new_order)
    third = get_data(env, did)
    # within the refresh interval the cached figures are still served, marked stale
    assert {k: v["cache_status"] for k, v in third["data"].items()} == {"card": "stale", "pie": "stale"}
    assert third["data"]["card"]["data"]["value"] == old
    fresh = get_data(env, did, refresh="true")
    assert {k: v["cache_status"] for k, v in fresh["data"].items()} == {"card": "miss", "pie": "miss"}
    assert fresh["data"]["card"]["data"]["value"] == pytest.approx(old + 100.0, abs=1e-6)
    assert fresh["data"]["card"]["data"]["value"] == pytest.approx(revenue(env["orders"]), abs=1e-6)
    again = get_data(env, did)
    assert again["data"]["card"]["cache_status"] == "hit" and again["data"]["card"]["data"] == fresh["data"]["card"]["data"]
    # a changed definition is computed afresh
    r = api.request("PUT", f"/api/v1/dashboards/{did}", headers=bearer(acme["admin"]),
                    json={"widgets": [widget("card", "metric_card", "revenue", filters={"region": ["US"]})]})
    assert r.status_code == 200
    us = get_data(env, did)["data"]["card"]
    assert us["cache_status"] == "miss"
    assert us["data"]["value"] == pytest.approx(revenue([o for o in env["orders"] if o["region"] == "US"]), abs=1e-6)
    r = api.get(f"/api/v1/dashboards/{did}/data", headers=bearer(acme["viewer"]), params={"refresh": "maybe"})
    assert r.status_code == 400 and fields(r.json()) == {"refresh"}


def test_websocket_updates(env):
    api, acme = env["api"], env["acme"]
    d = create(env, {"name": "Live", "category": "operations", "is_public": True, "widgets": [
        widget("rev", "metric_card", "revenue"), widget("tx", "line_chart", "transactions"),
        widget("inv", "metric_card", "inventory")]})
    did, port = d["dashboard_id"], env["server"].port
    url = f"ws://127.0.0.1:{port}/ws/dashboards/{did}?access_token={acme['viewer']}"

    async def next_msg(ws, pred, timeout=8):
        end = time.monotonic() + timeout
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic())))
            assert m["timestamp"].endswith("Z")
            if pred(m):
                return m

    async def quiet(ws, seconds):
        try:
            m = await asyncio.wait_for(ws.recv(), seconds)
        except asyncio.TimeoutError:
            return None
        return json.loads(m)

    async def snapshot(ws):
        ref = await next_msg(ws, lambda m: m["type"] == "dashboard_refresh")
        got = {}
        while len(got) < 3:
            m = await next_msg(ws, lambda m: m["type"] == "widget_update")
            got[m["widget_id"]] = m["data"]
        return ref, got

    async def go():
        async with websockets.connect(url) as ws:
            ref, got = await snapshot(ws)
            assert ref["data"]["dashboard"]["dashboard_id"] == did
            assert [w["widget_id"] for w in ref["data"]["dashboard"]["widgets"]] == ["rev", "tx", "inv"]
            assert got["rev"]["value"] == pytest.approx(revenue(env["orders"]), abs=1e-6)
            # a new order through the stream route: revenue and transactions change, inventory not
            order = {"order_id": "live-1", "customer_id": "c2", "created_at": iso(datetime.now(timezone.utc) - timedelta(minutes=1)),
                     "total": 250.5, "currency": "USD", "status": "paid", "channel": "app", "region": "US"}
            r = await asyncio.to_thread(api.post, "/api/v1/ingest/stream", headers=bearer(acme["admin"]), json={
                "source_id": "live-src", "data_type": "orders", "timestamp": order["created_at"], "data": order})
            assert r.status_code == 202, r.text
            env["orders"].append(order)
            seen = {}
            t0 = time.monotonic()
            while set(seen) != {"rev", "tx"}:
                m = await next_msg(ws, lambda m: m["type"] == "widget_update")
                assert m["widget_id"] != "inv", m
                seen[m["widget_id"]] = m["data"]
            assert time.monotonic() - t0 < 6  # debounce 300 ms + evaluation, on a loaded CI machine
            assert seen["rev"]["value"] == pytest.approx(revenue(env["orders"]), abs=1e-6)
            assert seen["tx"]["summary"]["total"] == pytest.approx(len(counted(env["orders"])))
            assert await quiet(ws, 1.0) is None  # each change once
            # records that change no widget: nothing is sent
            st = await asyncio.to_thread(ingest, api, acme["admin"], "products",
                                         [{"product_id": "p-live", "name": "Thing", "category": "misc", "price": 3}])
            assert st["stored_records"] == 1
            assert await quiet(ws, 1.5) is None
            # the definition changes: everyone gets the new dashboard and every widget
            r = await asyncio.to_thread(api.request, "PUT", f"/api/v1/dashboards/{did}", headers=bearer(acme["admin"]),
                                        json={"name": "Live v2", "widgets": [widget("rev", "metric_card", "revenue"),
                                                                             widget("tx", "line_chart", "transactions")]})
            assert r.status_code == 200, r.text
            ref = await next_msg(ws, lambda m: m["type"] == "dashboard_refresh")
            assert ref["data"]["dashboard"]["name"] == "Live v2" and len(ref["data"]["dashboard"]["widgets"]) == 2
            # the client may ask for everything again; anything else is an error message
            await ws.send(json.dumps({"type": "refresh"}))
            ref = await next_msg(ws, lambda m: m["type"] == "dashboard_refresh")
            assert ref["data"]["dashboard"]["name"] == "Live v2"
            await ws.send("hello")
            err = await next_msg(ws, lambda m: m["type"] == "error")
            assert "refresh" in err["error"]
            # deleted: an error, then the server closes with 4404
            r = await asyncio.to_thread(api.request, "DELETE", f"/api/v1/dashboards/{did}", headers=bearer(acme["admin"]))
            assert r.status_code == 204
            err = await next_msg(ws, lambda m: m["type"] == "error")
            assert "deleted" in err["error"]
            with pytest.raises(websockets.ConnectionClosed) as e:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert e.value.rcvd.code == 4404

    asyncio.run(go())


def test_failing_widget_fails_alone(tmp_path):
    """A widget whose stored query the engine no longer accepts (left by an older version, or
    written by hand while the server was down) is an error beside widgets that work."""
    data = str(tmp_path)
    s = Server(*RATE_FLAGS, data=data)
    api = Api(s)
    try:
        t = shop(s, api, "solo", roles=("admin",))
        orders = make_orders(30, 9, "s")
        assert ingest(api, t["admin"], "orders", orders)["stored_records"] == 30
        r = api.post("/api/v1/dashboards", headers=bearer(t["admin"]), json={
            "name": "Mixed", "category": "finance",
            "widgets": [widget("good", "metric_card", "revenue"), widget("bad", "metric_card", "revenue")]})
        did = r.json()["data"]["dashboard_id"]
    finally:
        api.close()
        s.stop()
    with sqlite3.connect(os.path.join(data, "tessera.db")) as c:
        n = c.execute("UPDATE cm_widgets SET configuration = ? WHERE widget_id = 'bad'",
                      (json.dumps({"metric_type": "profit", "granularity": "daily", "time_window": "30d"}),)).rowcount
        assert n == 1
    c.close()
    s = Server(*RATE_FLAGS, data=data)
    api = Api(s)
    try:
        r = api.get(f"/api/v1/dashboards/{did}/data", headers=bearer(t["admin"]))
        assert r.status_code == 200, r.text
        w = r.json()["data"]["data"]
        assert w["good"]["status"] == "success"
        assert w["good"]["data"]["value"] == pytest.approx(revenue(orders), abs=1e-6)
        bad = w["bad"]
        assert bad["status"] == "error" and bad["data"] is None and bad["cache_status"] == "miss"
        assert "metric_type" in bad["error_message"], bad
    finally:
        api.close()
        s.stop()


def test_websocket_refused_without_access(env):
    acme, globex, port = env["acme"], env["globex"], env["server"].port
    d = create(env, {"name": "Private", "category": "finance", "widgets": [widget("rev", "metric_card", "revenue")]})

    async def status(url, headers=None):
        try:
            async with websockets.connect(url, extra_headers=headers or {}):
                return 101
        except websockets.InvalidStatusCode as e:
            return e.status_code

    base = f"ws://127.0.0.1:{port}/ws/dashboards/{d['dashboard_id']}"
    assert asyncio.run(status(base)) == 401
    assert asyncio.run(status(base + f"?access_token={globex['admin']}")) == 404   # other tenant
    assert asyncio.run(status(base + f"?access_token={acme['viewer']}")) == 404    # not public
    assert asyncio.run(status(base, {"Authorization": f"Bearer {acme['admin']}"})) == 101


def test_pushes_under_a_stream_are_paced(tmp_path):
    """A subscribed dashboard with a conversion widget over 200,000 events of a day a stream
    keeps writing to (see test_commerce_alerts' pacing test): each event changes the figure, yet
    widget_update comes no more often than the pacing allows: the next evaluation for new
    records no sooner than ten times as long as the last took (common.h), so every interval is
    at least four times the query time the previous update reports (metric.metadata)."""
    s, api, db, t, busy = busy_shop(str(tmp_path), "busy")
    try:
        r = api.post("/api/v1/dashboards", headers=bearer(t["admin"]), json={
            "name": "Conversion", "category": "marketing", "widgets": [
                widget("conv", "metric_card", "conversion", window="7d")]})
        assert r.status_code == 201, r.text
        url = f"ws://127.0.0.1:{s.port}/ws/dashboards/{r.json()['data']['dashboard_id']}" \
              f"?access_token={t['admin']}"

        async def go():
            async with websockets.connect(url, max_size=None) as ws:
                updates = []
                end = time.monotonic() + 180  # ThreadSanitizer: an evaluation takes seconds
                post_at = 0.0
                while len(updates) < 5 and time.monotonic() < end:
                    if time.monotonic() >= post_at:  # every 50 ms an event of that day
                        post_at = time.monotonic() + 0.05
                        await asyncio.to_thread(busy.post)
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
                    except asyncio.TimeoutError:
                        continue
                    if m["type"] == "widget_update":
                        meta = m["data"]["metric"]["metadata"]
                        updates.append((time.monotonic(), meta["query_time_ms"]))
                return updates

        updates = asyncio.run(go())
        for _ in range(3):
            busy.measure()
        pairs = list(zip(updates[1:], updates[2:]))  # after the snapshot
        assert len(pairs) >= 3, f"widget updates (s, query ms) {updates} in 180 s"
        for (t0, ms), (t1, _) in pairs:
            assert (t1 - t0) * 1000 >= 4 * ms, f"widget updates (s, query ms) {updates}"
    finally:
        db.close()
        api.close()
        s.stop()
