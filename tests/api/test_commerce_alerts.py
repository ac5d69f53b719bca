"""commerce alerts (contracts/commerce.md 3.3): alert rules (validation naming fields,
permissions, other tenants' ids 404) and the alert lifecycle driven by ingested records: a rule
that trips opens one alert (and only one while it stays tripped, its current_value following
the figure), acknowledgement records the caller, cancelling the orders resolves it by itself, a
new trip opens a new alert; disabling or deleting a rule resolves its open alert; GET /alerts
filters and summary. Every value is checked against a Python sum over the records sent."""
import time
from datetime import datetime, timedelta, timezone

import pytest

from accounts import bearer
from commerce_data import RATE_FLAGS, busy_shop, ingest, shop
from conftest import Api, Server


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def order(oid, total, status="paid", minutes_ago=30, region="EU"):
    return {"order_id": oid, "customer_id": "c-" + oid, "total": total, "currency": "USD",
            "status": status, "region": region, "channel": "web",
            "created_at": iso(datetime.now(timezone.utc) - timedelta(minutes=minutes_ago))}


def rule_body(**kw):
    body = {"name": "Revenue over 1000", "description": "weekly revenue watch",
            "query": {"metric_type": "revenue", "granularity": "daily", "time_window": "7d"},
            "comparison": "gt", "threshold": 1000, "severity": "high"}
    body.update(kw)
    return body


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.time() < end, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("alerts"))
    s = Server(*RATE_FLAGS, data=data)
    api = Api(s)
    acme = shop(s, api, "acme")
    globex = shop(s, api, "globex", roles=("admin", "viewer"))
    yield {"server": s, "api": api, "acme": acme, "globex": globex}
    api.close()
    s.stop()


def call(env, method, path, who="admin", tenant="acme", **kw):
    return env["api"].request(method, path, headers=bearer(env[tenant][who]), **kw)


def alerts(env, who="viewer", tenant="acme", **params):
    r = call(env, "GET", "/api/v1/alerts", who, tenant, params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def of_rule(env, rule_id, **params):
    return [a for a in alerts(env, **params)["alerts"] if a["rule_id"] == rule_id]


def fields(r):
    return {e["field"] for e in r.json()["error"]["field_errors"]}


def test_rule_validation_permissions_and_tenants(env):
    r = call(env, "POST", "/api/v1/alerts/rules", json={"description": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert {"name", "query", "comparison", "threshold", "severity"} <= fields(r), fields(r)
    r = call(env, "POST", "/api/v1/alerts/rules", json=rule_body(
        comparison="above", severity="urgent", threshold="1000", enabled="yes",
        query={"metric_type": "profit", "granularity": "daily", "time_window": "7d"}))
    assert {"comparison", "severity", "threshold", "enabled", "query.metric_type"} <= fields(r), fields(r)
    r = call(env, "POST", "/api/v1/alerts/rules", json=rule_body(query={"metric_type": "revenue", "granularity": "daily"}))
    assert fields(r) == {"query.time_window"}
    r = call(env, "POST", "/api/v1/alerts/rules", json=rule_body(query={
        "metric_type": "revenue", "granularity": "daily",
        "time_range": {"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z"}}))
    assert fields(r) == {"query.time_range"}
    # rules are for admins; everyone may read them
    for who in ("manager", "developer", "viewer"):
        assert call(env, "POST", "/api/v1/alerts/rules", who, json=rule_body()).status_code == 403
    r = call(env, "POST", "/api/v1/alerts/rules", json=rule_body(name="never", threshold=1e15))
    assert r.status_code == 201, r.text
    rule = r.json()["data"]
    assert rule["name"] == "never" and rule["enabled"] is True and rule["metric_type"] == "revenue"
    assert rule["query"] == rule_body()["query"] and rule["threshold"] == 1e15 and rule["last_value"] is None
    rid = rule["rule_id"]
    assert call(env, "GET", f"/api/v1/alerts/rules/{rid}", "viewer").json()["data"]["rule_id"] == rid
    listed = call(env, "GET", "/api/v1/alerts/rules", "viewer").json()["data"]
    assert rid in [x["rule_id"] for x in listed["rules"]] and listed["total"] == len(listed["rules"])
    # PUT changes what it is given
    r = call(env, "PUT", f"/api/v1/alerts/rules/{rid}", json={"severity": "low"})
    assert r.status_code == 200 and r.json()["data"]["severity"] == "low" and r.json()["data"]["name"] == "never"
    r = call(env, "PUT", f"/api/v1/alerts/rules/{rid}", json={"comparison": "between"})
    assert r.status_code == 400 and fields(r) == {"comparison"}
    assert call(env, "PUT", f"/api/v1/alerts/rules/{rid}", "manager", json={"severity": "low"}).status_code == 403
    # evaluated soon after creation: its figure is recorded on the rule
    got = wait_for(lambda: call(env, "GET", f"/api/v1/alerts/rules/{rid}").json()["data"]["last_evaluated_at"])
    assert got
    # other tenants: 404 everywhere
    for method in ("GET", "PUT", "DELETE"):
        r = call(env, method, f"/api/v1/alerts/rules/{rid}", "admin", "globex",
                 **({"json": {"severity": "low"}} if method == "PUT" else {}))
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND", r.text
    assert rid not in [x["rule_id"] for x in call(env, "GET", "/api/v1/alerts/rules", "admin", "globex").json()["data"]["rules"]]
    assert call(env, "DELETE", f"/api/v1/alerts/rules/{rid}").status_code == 204
    assert call(env, "GET", f"/api/v1/alerts/rules/{rid}").status_code == 404
    assert call(env, "GET", "/api/v1/alerts", "viewer", params={"status": "open"}).status_code == 400
    assert call(env, "GET", "/api/v1/alerts", "viewer", params={"severity": "urgent"}).status_code == 400
    for bad in ("0", "1001", "ten"):
        r = call(env, "GET", "/api/v1/alerts", "viewer", params={"limit": bad})
        assert r.status_code == 400 and fields(r) == {"limit"}


def test_alert_lifecycle(env):
    api, acme = env["api"], env["acme"]
    r = call(env, "POST", "/api/v1/alerts/rules", json=rule_body())
    assert r.status_code == 201, r.text
    rid = r.json()["data"]["rule_id"]
    first = [order("a1", 400.0), order("a2", 350.25), order("a3", 300.0)]
    assert ingest(api, acme["admin"], "orders", first)["stored_records"] == 3
    total = 400.0 + 350.25 + 300.0
    opened = wait_for(lambda: of_rule(env, rid))
    assert len(opened) == 1
    a = opened[0]
    assert a["status"] == "active" and a["severity"] == "high" and a["metric_type"] == "revenue"
    assert a["title"] == "Revenue over 1000" and a["comparison"] == "gt"
    assert a["threshold_value"] == 1000 and a["current_value"] == pytest.approx(total)
    assert "revenue" in a["description"] and "acknowledged_at" not in a and "resolved_at" not in a
    # more data while it is tripped: still one alert, its value follows
    assert ingest(api, acme["admin"], "orders", [order("a4", 99.75)])["stored_records"] == 1
    total += 99.75
    wait_for(lambda: of_rule(env, rid)[0]["current_value"] == pytest.approx(total))
    assert len(of_rule(env, rid)) == 1
    # acknowledge: the caller is recorded; a viewer may not; twice answers the same
    aid = a["alert_id"]
    assert call(env, "POST", f"/api/v1/alerts/{aid}/acknowledge", "viewer").status_code == 403
    assert call(env, "POST", f"/api/v1/alerts/{aid}/acknowledge", "admin", "globex").status_code == 404
    r = call(env, "POST", f"/api/v1/alerts/{aid}/acknowledge", "manager")
    assert r.status_code == 200, r.text
    ack = r.json()["data"]
    assert ack["alert_id"] == aid and ack["status"] == "acknowledged" and ack["acknowledged_by"] == "manager@acme.example"
    time.sleep(1.1)
    assert call(env, "POST", f"/api/v1/alerts/{aid}/acknowledge", "admin").json()["data"] == ack
    assert call(env, "POST", "/api/v1/alerts/nope/acknowledge", "admin").status_code == 404
    a = of_rule(env, rid)[0]
    assert a["status"] == "acknowledged" and a["acknowledged_by"] == "manager@acme.example"
    assert a["acknowledged_at"] == ack["acknowledged_at"]
    # the orders are cancelled (re-sent with the new status): revenue recovers, it resolves
    cancelled = [dict(o, status="cancelled") for o in first]
    assert ingest(api, acme["admin"], "orders", cancelled)["stored_records"] == 3
    done = wait_for(lambda: [x for x in of_rule(env, rid) if x["status"] == "resolved"])[0]
    assert done["alert_id"] == aid and done["current_value"] == pytest.approx(99.75) and done["resolved_at"]
    r = call(env, "POST", f"/api/v1/alerts/{aid}/acknowledge", "manager")
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    rule = call(env, "GET", f"/api/v1/alerts/rules/{rid}").json()["data"]
    assert rule["last_value"] == pytest.approx(99.75) and rule["last_error"] is None
    # it trips again: a new alert, the old one stays resolved
    assert ingest(api, acme["admin"], "orders", [order("a5", 2000.0)])["stored_records"] == 1
    again = wait_for(lambda: [x for x in of_rule(env, rid) if x["status"] == "active"])
    assert len(again) == 1 and again[0]["alert_id"] != aid
    assert again[0]["current_value"] == pytest.approx(2099.75)
    # filters and the summary (over everything the filters match, not just `limit`)
    everything = alerts(env)
    mine = [x for x in everything["alerts"] if x["rule_id"] == rid]
    assert [x["status"] for x in mine] == ["active", "resolved"]  # newest first
    s = everything["summary"]
    assert s["total"] == len(everything["alerts"]) == sum(s["by_status"].values()) == sum(s["by_severity"].values())
    assert s["by_status"]["active"] == len([x for x in everything["alerts"] if x["status"] == "active"])
    resolved = alerts(env, status="resolved")
    assert all(x["status"] == "resolved" for x in resolved["alerts"]) and aid in [x["alert_id"] for x in resolved["alerts"]]
    assert resolved["summary"]["total"] == resolved["summary"]["by_status"]["resolved"] == len(resolved["alerts"])
    high = alerts(env, severity="high", limit=1)
    assert len(high["alerts"]) == 1 and high["summary"]["total"] >= 2 and high["summary"]["by_severity"]["high"] == high["summary"]["total"]
    assert alerts(env, severity="low")["summary"]["by_severity"]["high"] == 0
    # the other tenant sees none of it
    g = alerts(env, "viewer", "globex")
    assert g["alerts"] == [] and g["summary"]["total"] == 0
    call(env, "DELETE", f"/api/v1/alerts/rules/{rid}")


def test_disable_and_delete_resolve(env):
    r = call(env, "POST", "/api/v1/alerts/rules", json=rule_body(
        name="Any revenue", comparison="gte", threshold=0, severity="low"))
    rid = r.json()["data"]["rule_id"]
    a = wait_for(lambda: of_rule(env, rid))[0]
    assert a["status"] == "active" and a["severity"] == "low"
    # API keys: a read key lists alerts but may not acknowledge; a write key's name is recorded
    keys = {}
    for perms in (["read"], ["read", "write"]):
        r = env["api"].post("/api/v1/api-keys", headers=bearer(env["acme"]["developer"]),
                            json={"name": "ops-" + "-".join(perms), "permissions": perms}, validate=False)
        assert r.status_code == 201, r.text
        keys[len(perms)] = r.json()["key"]
    h = {"Authorization": f"Bearer {keys[1]}"}
    assert env["api"].get("/api/v1/alerts", headers=h).status_code == 200
    assert env["api"].post(f"/api/v1/alerts/{a['alert_id']}/acknowledge", headers=h).status_code == 403
    r = env["api"].post(f"/api/v1/alerts/{a['alert_id']}/acknowledge", headers={"Authorization": f"Bearer {keys[2]}"})
    assert r.status_code == 200 and r.json()["data"]["acknowledged_by"] == "api_key:ops-read-write", r.text
    r = call(env, "PUT", f"/api/v1/alerts/rules/{rid}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["data"]["enabled"] is False
    a = of_rule(env, rid)[0]
    assert a["status"] == "resolved" and a["resolved_at"]
    time.sleep(1.5)  # a disabled rule opens nothing
    assert len(of_rule(env, rid)) == 1
    r = call(env, "PUT", f"/api/v1/alerts/rules/{rid}", json={"enabled": True})
    b = wait_for(lambda: [x for x in of_rule(env, rid) if x["status"] == "active"])[0]
    assert call(env, "DELETE", f"/api/v1/alerts/rules/{rid}").status_code == 204
    kept = of_rule(env, rid)
    assert len(kept) == 2 and all(x["status"] == "resolved" for x in kept)
    assert b["alert_id"] in [x["alert_id"] for x in kept]


def test_evaluations_under_a_stream_are_paced(tmp_path):
    """A conversion rule reads the sessions of its whole window from the base rows (distinct
    sessions do not add up across days), here 200,000 events yesterday, and a stream writing
    to that day marks the tenant again during every evaluation. The next evaluation still
    starts no sooner than ten times as long as the last one took (common.h CM_PACE_FACTOR),
    not every 500 ms: every interval between evaluations is at least four times the fastest
    the server answers the same query on /analytics/metrics."""
    s, api, db, acme, busy = busy_shop(str(tmp_path), "acme")
    try:
        r = call({"api": api, "acme": acme}, "POST", "/api/v1/alerts/rules", json=rule_body(
            name="Conversion floor", threshold=0.05, comparison="lt",
            query={"metric_type": "conversion", "granularity": "daily", "time_window": "7d"}))
        assert r.status_code == 201, r.text
        rule_id = r.json()["data"]["rule_id"]
        seen, post_at = [], 0.0
        end = time.time() + 180  # ThreadSanitizer: an evaluation takes seconds
        while len(seen) < 4 and time.time() < end:
            if time.time() >= post_at:  # every 50 ms an event of that day: dirty again
                post_at = time.time() + 0.05
                busy.post()
            at = db.execute("SELECT last_evaluated_at FROM cm_alert_rules WHERE rule_id = ?",
                            (rule_id,)).fetchone()[0]
            if at is not None and (not seen or at != seen[-1]):
                seen.append(at)
            time.sleep(0.01)
        for _ in range(3):
            busy.measure()
        gaps = [b - a for a, b in zip(seen, seen[1:])]
        assert len(gaps) >= 3, f"evaluations seen at {seen} in 180 s"
        assert min(gaps) >= 4 * busy.cost_ms(), f"ms between evaluations {gaps}, query ms {busy.costs}"
    finally:
        db.close()
        api.close()
        s.stop()
