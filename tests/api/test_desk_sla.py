"""desk SLA: rules (defaults, validation, precedence), business calendar, a ticket's deadlines
and status, pause/resume, a real breach found by the timer (breaches list, notifications,
history, WebSocket push on desk:<tenant>:sla), and metrics against figures computed here."""
import asyncio
import json
import os
import sqlite3
import time
from datetime import datetime, timezone

import pytest
import websockets

from accounts import bearer, login, tenant, user
from conftest import Api, Server

DEFAULTS = {"incident": (4, 24), "bug": (24, 72), "support": (8, 48), "question": (24, 72),
            "task": (48, 168), "feature": (72, 720)}
H = 3600000


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("sla"))
    t = {"acme": tenant(data, "Acme", "acme.example"), "globex": tenant(data, "Globex", "globex.example")}
    u = {}
    for dom in ("acme", "globex"):
        for role in ("admin", "agent", "viewer"):
            u[f"{dom}_{role}"] = user(data, f"{dom}.example", f"{role}@{dom}.example", role)
    s = Server("--rate-limit", "auth=10000/60", "--sla-check-ms", "200", data=data)
    a = Api(s)
    tok = {k: bearer(login(a, f"{k.split('_')[1]}@{k.split('_')[0]}.example")["access_token"]) for k in u}
    yield {"api": a, "server": s, "data": data, "tenants": t, "users": u, "tok": tok}
    a.close()
    s.stop()


def db(desk):
    c = sqlite3.connect(os.path.join(desk["data"], "tessera.db"), timeout=10)
    c.row_factory = sqlite3.Row
    return c


def ms(iso):
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() * 1000)


def iso(ms_):
    return datetime.fromtimestamp(ms_ // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def put_rule(desk, who, **body):
    return desk["api"].request("PUT", "/api/v1/sla/rules", headers=desk["tok"][who], json=body)


def new_ticket(desk, who, type_, priority="medium", assignee=None):
    body = {"title": f"{type_} {priority}", "description": "x", "type": type_, "priority": priority}
    if assignee:
        body["assignee_id"] = assignee
    r = desk["api"].post("/api/v1/tickets", headers=desk["tok"][who], json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sla_row(desk, ticket_id):
    with db(desk) as c:
        return dict(c.execute("SELECT * FROM ticket_sla WHERE ticket_id = ?", (ticket_id,)).fetchone())


def set_status(desk, who, ticket_id, status):
    r = desk["api"].post(f"/api/v1/tickets/{ticket_id}/status", headers=desk["tok"][who], json={"status": status})
    assert r.status_code == 200, r.text


def field_of(r):
    return r.json()["error"]["details"]["field"]


def test_rules_defaults_validation_precedence(desk):
    api, tok = desk["api"], desk["tok"]
    rules = api.get("/api/v1/sla/rules", headers=tok["acme_agent"]).json()["rules"]
    assert {r["ticket_type"]: (r["response_time_hours"], r["resolution_time_hours"]) for r in rules} == DEFAULTS
    assert all(r["is_default"] and r["priority"] is None for r in rules)
    assert api.get("/api/v1/sla/rules", headers=tok["acme_viewer"]).status_code == 403
    bad = [({"response_time_hours": 1, "resolution_time_hours": 2}, "ticket_type"),
           ({"ticket_type": "epic", "response_time_hours": 1, "resolution_time_hours": 2}, "ticket_type"),
           ({"ticket_type": "bug", "priority": "urgent", "response_time_hours": 1, "resolution_time_hours": 2}, "priority"),
           ({"ticket_type": "bug", "response_time_hours": 0, "resolution_time_hours": 2}, "response_time_hours"),
           ({"ticket_type": "bug", "response_time_hours": 0.0009, "resolution_time_hours": 2}, "response_time_hours"),
           ({"ticket_type": "bug", "response_time_hours": "1", "resolution_time_hours": 2}, "response_time_hours"),
           ({"ticket_type": "bug", "response_time_hours": 1}, "resolution_time_hours"),
           ({"ticket_type": "bug", "response_time_hours": 1, "resolution_time_hours": 8761}, "resolution_time_hours"),
           ({"ticket_type": "bug", "response_time_hours": 5, "resolution_time_hours": 4}, "resolution_time_hours")]
    for body, field in bad:
        r = put_rule(desk, "acme_admin", **body)
        assert r.status_code == 422 and field_of(r) == field, (body, r.text)
    assert put_rule(desk, "acme_agent", ticket_type="bug", response_time_hours=1,
                    resolution_time_hours=2).status_code == 403
    r = put_rule(desk, "acme_admin", ticket_type="bug", priority="high", response_time_hours=2, resolution_time_hours=10)
    assert r.status_code == 200 and r.json()["rule"]["priority"] == "high" and not r.json()["rule"]["is_default"]
    rules = api.get("/api/v1/sla/rules", headers=tok["acme_agent"]).json()["rules"]
    bug = [r for r in rules if r["ticket_type"] == "bug"]
    # the high rule, and the default for any other priority
    assert sorted((r["priority"] or "", r["response_time_hours"], r["is_default"]) for r in bug) == \
        [("", 24, True), ("high", 2, False)]
    # replace, not duplicate
    put_rule(desk, "acme_admin", ticket_type="bug", priority="high", response_time_hours=3, resolution_time_hours=10)
    put_rule(desk, "acme_admin", ticket_type="bug", response_time_hours=12, resolution_time_hours=48)
    rules = api.get("/api/v1/sla/rules", headers=tok["acme_agent"]).json()["rules"]
    bug = sorted((r["priority"] or "", r["response_time_hours"], r["is_default"]) for r in rules if r["ticket_type"] == "bug")
    assert bug == [("", 12, False), ("high", 3, False)]
    # other tenants are untouched
    g = api.get("/api/v1/sla/rules", headers=tok["globex_agent"]).json()["rules"]
    assert all(r["is_default"] for r in g) and len(g) == 6
    # the priority-specific rule wins at ticket creation; other priorities take the any rule
    hi = sla_row(desk, new_ticket(desk, "acme_agent", "bug", "high"))
    lo = sla_row(desk, new_ticket(desk, "acme_agent", "bug", "low"))
    assert hi["response_deadline"] - hi["created_at"] == 3 * H and hi["resolution_deadline"] - hi["created_at"] == 10 * H
    assert lo["response_deadline"] - lo["created_at"] == 12 * H and lo["resolution_deadline"] - lo["created_at"] == 48 * H


def test_new_ticket_status_and_visibility(desk):
    api, tok = desk["api"], desk["tok"]
    tid = new_ticket(desk, "acme_viewer", "incident", "critical")
    created = ms(api.get(f"/api/v1/tickets/{tid}", headers=tok["acme_agent"]).json()["created_at"])
    s = api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["acme_agent"]).json()
    assert s["ticket_id"] == tid and s["sla_status"] == "compliant"
    assert abs(ms(s["response_deadline"]) - (created + 4 * H)) <= 1000
    assert abs(ms(s["resolution_deadline"]) - (created + 24 * H)) <= 1000
    assert s["response_delay_hours"] == 0 and s["resolution_delay_hours"] == 0 and s["paused"] is False
    # requesters have no sla.read; another tenant's staff cannot see the ticket
    assert api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["acme_viewer"]).status_code == 403
    r = api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["globex_agent"])
    assert r.status_code == 404 and field_of(r) == "ticket_id"
    assert api.get("/api/v1/sla/tickets/nope", headers=tok["acme_agent"]).status_code == 404


def test_at_risk(desk):
    # a 20 s window: after 17 s less than 20% remains
    put_rule(desk, "acme_admin", ticket_type="feature", response_time_hours=1, resolution_time_hours=1)
    tid = new_ticket(desk, "acme_agent", "feature")
    with db(desk) as c:  # move the ticket's clock to 81% of its window having elapsed
        row = sla_row(desk, tid)
        c.execute("UPDATE ticket_sla SET resolution_deadline = ?, response_deadline = ? WHERE ticket_id = ?",
                  (int(time.time() * 1000) + int(0.19 * H), int(time.time() * 1000) + int(0.5 * H), tid))
    s = desk["api"].get(f"/api/v1/sla/tickets/{tid}", headers=desk["tok"]["acme_agent"]).json()
    assert s["sla_status"] == "at_risk", s
    assert row["resolution_hours"] == 1


def biz_add(start_ms, dur_ms, offset_min, days, start_min, end_min, holidays):
    """Business time arithmetic, done here independently: walk local days."""
    off = offset_min * 60000
    cur = start_ms + off
    day = cur // 86400000
    left = dur_ms
    while True:
        d = datetime.fromtimestamp(day * 86400, timezone.utc)
        if d.strftime("%a").lower() in days and d.strftime("%Y-%m-%d") not in holidays:
            a, b = day * 86400000 + start_min * 60000, day * 86400000 + end_min * 60000
            if cur < b:
                cur = max(cur, a)
                if b - cur >= left:
                    return cur + left - off
                left -= b - cur
                cur = b
        day += 1


def test_calendar(desk):
    api, tok = desk["api"], desk["tok"]
    c = api.get("/api/v1/sla/calendar", headers=tok["acme_agent"]).json()
    assert c["is_default"] and c["start_time"] == "00:00" and c["end_time"] == "24:00" and len(c["working_days"]) == 7
    for body, field in [({"utc_offset_minutes": 900}, "utc_offset_minutes"), ({"working_days": []}, "working_days"),
                        ({"working_days": ["mon", "funday"]}, "working_days"), ({"start_time": "9am"}, "start_time"),
                        ({"start_time": "17:00", "end_time": "09:00"}, "end_time"),
                        ({"holidays": ["2025-02-30"]}, "holidays"), ({"end_time": "24:01"}, "end_time")]:
        r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["acme_admin"], json=body)
        assert r.status_code == 422 and field_of(r) == field, (body, r.text)
    assert api.request("PUT", "/api/v1/sla/calendar", headers=tok["acme_agent"], json={}).status_code == 403
    today = datetime.now(timezone.utc)
    hol = [today.strftime("%Y-%m-%d")]  # today is a holiday: nothing counts until tomorrow
    cal = {"utc_offset_minutes": 60, "working_days": ["mon", "tue", "wed", "thu", "fri"],
           "start_time": "09:00", "end_time": "17:30", "holidays": hol + ["2030-01-01"]}
    r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["acme_admin"], json=cal)
    assert r.status_code == 200 and not r.json()["is_default"]
    assert r.json()["holidays"] == sorted(hol + ["2030-01-01"]) and r.json()["end_time"] == "17:30"
    tid = new_ticket(desk, "acme_agent", "support")
    row = sla_row(desk, tid)
    days = {"mon", "tue", "wed", "thu", "fri"}
    for col, hours in (("response_deadline", 8), ("resolution_deadline", 48)):
        want = biz_add(row["created_at"], hours * H, 60, days, 540, 1050, set(cal["holidays"]))
        assert row[col] == want, (col, iso(row[col]), iso(want))
    # back to 24x7 for the other tests
    r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["acme_admin"], json={})
    assert r.json()["working_days"] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] and r.json()["holidays"] == []


def test_pause_resume(desk):
    api, tok = desk["api"], desk["tok"]
    put_rule(desk, "acme_admin", ticket_type="task", response_time_hours=1, resolution_time_hours=2)
    tid = new_ticket(desk, "acme_viewer", "task")
    before = sla_row(desk, tid)
    set_status(desk, "acme_agent", tid, "waiting_on_customer")
    assert api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["acme_agent"]).json()["paused"] is True
    time.sleep(1.2)
    set_status(desk, "acme_agent", tid, "in_progress")
    after = sla_row(desk, tid)
    assert after["paused_since"] is None and 1100 <= after["paused_ms"] < 5000
    # 24x7: the deadline moved by exactly the time spent waiting; the response clock did not
    assert after["resolution_deadline"] == before["resolution_deadline"] + after["paused_ms"]
    assert after["response_deadline"] == before["response_deadline"]
    s = api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["acme_agent"]).json()
    assert s["paused"] is False and s["resolution_deadline"] == iso(after["resolution_deadline"])
    # pending pauses too; resolving stops the clock and records resolved_at
    set_status(desk, "acme_agent", tid, "pending")
    time.sleep(0.3)
    set_status(desk, "acme_agent", tid, "resolved")
    done = sla_row(desk, tid)
    assert done["resolved_at"] and done["paused_since"] and done["paused_ms"] == after["paused_ms"]
    s = api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["acme_agent"]).json()
    assert s["sla_status"] == "compliant" and s["resolved_at"] == iso(done["resolved_at"])


def test_real_breach_timer(desk):
    api, tok, u = desk["api"], desk["tok"], desk["users"]
    put_rule(desk, "acme_admin", ticket_type="question", response_time_hours=0.001, resolution_time_hours=0.002)
    port = desk["server"].port
    agent_token = tok["acme_agent"]["Authorization"].split()[1]

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/sla?access_token={agent_token}") as ws:
            tid = new_ticket(desk, "acme_viewer", "question", "low")
            r = api.post(f"/api/v1/tickets/{tid}/assign", headers=tok["acme_admin"],
                         json={"assignee_id": u["acme_agent"]["id"]})
            assert r.status_code == 200, r.text
            msgs = [json.loads(await asyncio.wait_for(ws.recv(), 15)) for _ in range(2)]
            return tid, msgs

    tid, msgs = asyncio.run(go())
    row = sla_row(desk, tid)
    assert [m["breach_type"] for m in msgs] == ["response", "resolution"]
    assert all(m["type"] == "sla_breach" and m["ticket_id"] == tid for m in msgs)
    assert row["response_deadline"] == row["created_at"] + 3600 and row["resolution_deadline"] == row["created_at"] + 7200
    # found by the timer (every 200 ms) soon after each deadline
    assert 0 <= row["response_breached_at"] - row["response_deadline"] < 5000  # slack for a loaded CI
    assert 0 <= row["resolution_breached_at"] - row["resolution_deadline"] < 5000
    s = api.get(f"/api/v1/sla/tickets/{tid}", headers=tok["acme_agent"]).json()
    now = time.time() * 1000
    assert s["sla_status"] == "breached"
    # delays are reported rounded; just past a deadline they may still read 0.0
    assert abs(s["response_delay_hours"] - (now - row["response_deadline"]) / H) < 0.01
    assert abs(s["resolution_delay_hours"] - (now - row["resolution_deadline"]) / H) < 0.01
    # the breaches list (admin), by recorded date
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    b = api.get(f"/api/v1/sla/breaches?start_date={today}&end_date={today}", headers=tok["acme_admin"]).json()
    mine = {x["breach_type"]: x for x in b["breaches"] if x["ticket_id"] == tid}
    assert set(mine) == {"response", "resolution"} and b["total"] >= 2
    assert mine["response"]["deadline"] == iso(row["response_deadline"])
    assert mine["resolution"]["breached_at"] == iso(row["resolution_breached_at"])
    assert mine["response"]["ticket_number"].startswith("TKT-") and mine["response"]["assignee_id"] == u["acme_agent"]["id"]
    old = api.get("/api/v1/sla/breaches?start_date=2020-01-01&end_date=2020-12-31", headers=tok["acme_admin"]).json()
    assert old == {"breaches": [], "total": 0, "page": 1, "limit": 50}
    for q, field in [("start_date=2024-13-01", "start_date"), ("end_date=yesterday", "end_date"),
                     ("start_date=2024-02-01&end_date=2024-01-31", "end_date")]:
        r = api.get(f"/api/v1/sla/breaches?{q}", headers=tok["acme_admin"])
        assert r.status_code == 422 and field_of(r) == field
    assert api.get("/api/v1/sla/breaches", headers=tok["acme_agent"]).status_code == 403
    g = api.get("/api/v1/sla/breaches", headers=tok["globex_admin"]).json()
    assert all(x["ticket_id"] != tid for x in g["breaches"])
    # notifications: the assignee and the tenant admin, one per breach
    for who in ("acme_agent", "acme_admin"):
        n = api.get("/api/v1/notifications?limit=100", headers=tok[who]).json()["notifications"]
        assert len([x for x in n if x["type"] == "sla_breach" and x["ticket_id"] == tid]) == 2, who
    with db(desk) as c:
        hist = c.execute("SELECT new_value FROM ticket_history WHERE ticket_id = ? AND field = 'sla_breach' "
                         "ORDER BY created_at", (tid,)).fetchall()
    assert [h[0] for h in hist] == ["response", "resolution"]
    # recorded once: later ticks add nothing
    time.sleep(0.6)
    assert sla_row(desk, tid)["response_breached_at"] == row["response_breached_at"]


def test_metrics(desk):
    api, tok = desk["api"], desk["tok"]
    for q in ("period=abc", "period=0d", "period=366d", "period=30", "period=-1d"):
        r = api.get(f"/api/v1/sla/metrics?{q}", headers=tok["globex_agent"])
        assert r.status_code == 422 and field_of(r) == "period", q
    empty = api.get("/api/v1/sla/metrics?period=7d", headers=tok["globex_agent"]).json()
    assert empty["ticket_count"] == 0 and empty["compliance_rate"] is None and empty["breach_count"] == 0
    put_rule(desk, "globex_admin", ticket_type="question", response_time_hours=0.001, resolution_time_hours=0.001)
    t1 = new_ticket(desk, "globex_viewer", "bug")
    t2 = new_ticket(desk, "globex_viewer", "support")
    t3 = new_ticket(desk, "globex_viewer", "task")
    t4 = new_ticket(desk, "globex_viewer", "question")
    for t in (t1, t2):
        r = api.post(f"/api/v1/tickets/{t}/comments", headers=tok["globex_agent"], json={"content": "on it"})
        assert r.status_code == 201, r.text
    set_status(desk, "globex_agent", t1, "resolved")
    deadline = time.time() + 15
    while time.time() < deadline and not sla_row(desk, t4)["resolution_breached_at"]:
        time.sleep(0.2)
    with db(desk) as c:  # the tickets table (written by tickets.c) is the independent source
        rows = {r["id"]: r for r in c.execute(
            "SELECT id, created_at, first_response_at, resolved_at FROM tickets WHERE tenant_id = ?",
            (desk["tenants"]["globex"]["id"],))}
    b = api.get("/api/v1/sla/breaches", headers=tok["globex_admin"]).json()
    breached = {x["ticket_id"] for x in b["breaches"]}
    assert breached == {t4} and b["total"] == 2
    resp = [r["first_response_at"] - r["created_at"] for r in rows.values() if r["first_response_at"]]
    reso = [r["resolved_at"] - r["created_at"] for r in rows.values() if r["resolved_at"]]
    m = api.get("/api/v1/sla/metrics?period=30d", headers=tok["globex_agent"]).json()
    assert m["ticket_count"] == len(rows) == 4
    assert m["compliance_rate"] == round(100 * (len(rows) - len(breached)) / len(rows), 2) == 75
    assert abs(m["average_response_time_hours"] - sum(resp) / len(resp) / H) <= 0.006
    assert abs(m["average_resolution_time_hours"] - sum(reso) / len(reso) / H) <= 0.006
    assert m["breach_count"] == b["total"] and m["period"] == "30d"
    # the default period is 30d
    assert api.get("/api/v1/sla/metrics", headers=tok["globex_agent"]).json() == m
    assert api.get("/api/v1/sla/metrics", headers=tok["globex_viewer"]).status_code == 403


def test_calendar_timezone(desk):
    """An IANA zone: deadlines follow Europe/Berlin's daylight-saving changes. 1500 business
    hours (~9 months of 8-hour days) always cross at least one transition; the expectation is
    computed here with zoneinfo, one local day at a time."""
    from datetime import date, timedelta
    from zoneinfo import ZoneInfo

    api, tok = desk["api"], desk["tok"]
    for tz in ("Europe/Nowhere", "../../etc/passwd", "Europe", 42, "x" * 65):
        r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["globex_admin"], json={"timezone": tz})
        assert r.status_code == 422 and field_of(r) == "timezone", (tz, r.text)
    cal = {"timezone": "Europe/Berlin", "utc_offset_minutes": -600,  # the zone wins over the offset
           "working_days": ["mon", "tue", "wed", "thu", "fri"], "start_time": "09:00", "end_time": "17:00"}
    r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["globex_admin"], json=cal)
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Berlin", r.text
    assert api.get("/api/v1/sla/calendar", headers=tok["globex_agent"]).json()["timezone"] == "Europe/Berlin"
    assert put_rule(desk, "globex_admin", ticket_type="task", response_time_hours=8,
                    resolution_time_hours=1500).status_code == 200
    tid = new_ticket(desk, "globex_agent", "task")
    row = sla_row(desk, tid)

    zone = ZoneInfo("Europe/Berlin")

    def add(start_ms, dur_ms):
        cur, left = start_ms, dur_ms
        day = datetime.fromtimestamp(start_ms / 1000, zone).date() - timedelta(days=1)
        while True:
            if day.weekday() < 5:
                a = int(datetime(day.year, day.month, day.day, 9, tzinfo=zone).timestamp() * 1000)
                b = int(datetime(day.year, day.month, day.day, 17, tzinfo=zone).timestamp() * 1000)
                if cur < b:
                    cur = max(cur, a)
                    if b - cur >= left:
                        return cur + left
                    left -= b - cur
                    cur = b
            day += timedelta(days=1)

    created = row["created_at"]
    offsets = {datetime.fromtimestamp(t / 1000, zone).utcoffset() for t in range(created, row["resolution_deadline"], 86400000)}
    assert len(offsets) == 2  # the span really crosses a DST change
    for col, hours in (("response_deadline", 8), ("resolution_deadline", 1500)):
        want = add(created, hours * H)
        assert row[col] == want, (col, iso(row[col]), iso(want))
    # deadlines land inside local working hours
    local = datetime.fromtimestamp(row["resolution_deadline"] / 1000, zone)
    assert local.weekday() < 5 and 9 * 60 < local.hour * 60 + local.minute <= 17 * 60
    # null clears the zone; back to 24x7
    r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["globex_admin"], json={"timezone": None})
    assert r.status_code == 200 and r.json()["timezone"] is None
    r = api.request("PUT", "/api/v1/sla/calendar", headers=tok["globex_admin"], json={})
    assert r.json()["timezone"] is None and r.json()["is_default"] is False


def test_websocket_token_in_subprotocol(desk):
    """Browsers cannot set Authorization on a WebSocket: `Sec-WebSocket-Protocol: bearer, <token>`
    authenticates and the server selects "bearer"; a wrong token there is refused."""
    port = desk["server"].port
    agent_token = desk["tok"]["acme_agent"]["Authorization"].split()[1]

    async def go(token):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/sla",
                                      subprotocols=["bearer", token]) as ws:
            return ws.subprotocol

    assert asyncio.run(go(agent_token)) == "bearer"
    with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
        asyncio.run(go(agent_token[:-4] + "AAAA"))
    assert e.value.status_code == 401
