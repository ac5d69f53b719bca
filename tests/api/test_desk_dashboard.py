"""desk dashboards: overview, ticket and SLA analytics, CSV/XLSX export, the export cap,
validation, roles and tenant isolation. Every expected figure is computed here from the rows
the test created (through the tickets API and directly in SQLite), never read back from the
routes under test."""
import csv
import io
import os
import sqlite3
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import openpyxl
import pytest

from accounts import bearer, login, tenant, user
from conftest import Api, Server

DAY = 86400000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
STATUSES = ["open", "in_progress", "pending", "waiting_on_customer", "resolved", "closed"]
HEADER = ["ticket_number", "title", "type", "priority", "status", "requester_email",
          "assignee_email", "created_at", "resolved_at", "closed_at"]


def ms(y, m, d, hh=0, mm=0):
    return int((datetime(y, m, d, hh, mm, tzinfo=timezone.utc) - EPOCH).total_seconds() * 1000)


def iso(v):
    if v is None:
        return ""
    return (EPOCH + timedelta(milliseconds=v)).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(v):
    return (EPOCH + timedelta(milliseconds=v)).date()


class Rows:
    """Tickets written straight into SQLite, remembered for the expectations."""

    def __init__(self, db):
        self.db = db
        self.numbers = {}
        self.tickets = []

    def ticket(self, tenant_id, requester, title, type_, prio, status, created, resolved=None,
               closed=None, assignee=None, sla=None):
        n = self.numbers[tenant_id] = self.numbers.get(tenant_id, 0) + 1
        t = dict(tenant_id=tenant_id, id=str(uuid.uuid4()), number=n, title=title, type=type_,
                 priority=prio, status=status, requester=requester, assignee=assignee,
                 created=created, resolved=resolved, closed=closed, sla=sla)
        self.tickets.append(t)
        return t

    def flush(self):
        self.db.executemany(
            "INSERT INTO tickets(tenant_id, id, number, title, type, priority, status, requester_id,"
            " assignee_id, created_at, updated_at, resolved_at, closed_at)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(t["tenant_id"], t["id"], t["number"], t["title"], t["type"], t["priority"],
              t["status"], t["requester"]["id"], t["assignee"]["id"] if t["assignee"] else None,
              t["created"], t["created"], t["resolved"], t["closed"]) for t in self.tickets])
        for t in self.tickets:
            if t["sla"] is None:
                continue
            resp_b, reso_b = t["sla"]
            self.db.execute(
                "INSERT INTO ticket_sla(ticket_id, tenant_id, created_at, response_hours,"
                " resolution_hours, response_deadline, resolution_deadline, first_response_at,"
                " response_breached_at, resolution_breached_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (t["id"], t["tenant_id"], t["created"], 4, 24, t["created"] + 4 * 3600000,
                 t["created"] + 365 * DAY if reso_b is None else reso_b - 1000,  # no timer breach
                 t["created"] + 3600000 if resp_b is None else None, resp_b, reso_b))
        self.db.executemany(
            "INSERT INTO desk_counters(tenant_id, last_ticket) VALUES(?, ?)"
            " ON CONFLICT(tenant_id) DO UPDATE SET last_ticket = excluded.last_ticket",
            list(self.numbers.items()))
        self.db.commit()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("dashboard"))
    acme = tenant(data, "Acme", "acme.example")
    globex = tenant(data, "Globex", "globex.example")
    initech = tenant(data, "Initech", "initech.example")
    u = {}
    for key, dom, role, name in [
            ("agent", "acme.example", "agent", "Alice Agent"),
            ("agent2", "acme.example", "agent", "Bob Agent"),
            ("manager", "acme.example", "manager", "Mia Manager"),
            ("customer", "acme.example", "viewer", "Carl Customer"),
            ("viewer", "acme.example", "viewer", "Vera Viewer"),
            ("g", "globex.example", "agent", "Gus Globex"),
            ("i", "initech.example", "agent", "Ivy Initech")]:
        u[key] = user(data, dom, f"{key}@{dom}", role, name=name)
    now = int(time.time() * 1000)
    db = sqlite3.connect(os.path.join(data, "tessera.db"))
    rows = Rows(db)
    A, G = acme["id"], globex["id"]
    # January 2024 (analytics and export), with every awkward title a spreadsheet meets
    hist = [
        ("=cmd|' /C calc'!A0", "bug", "high", "resolved", ms(2024, 1, 1, 9), ms(2024, 1, 2, 15), None, "agent"),
        ("+SUM(A1:A2)", "feature", "low", "open", ms(2024, 1, 3, 10), None, None, None),
        ("-2+3", "support", "medium", "closed", ms(2024, 1, 8, 8), ms(2024, 1, 9, 8), ms(2024, 1, 10, 8), "agent2"),
        ("@SUM(1)", "incident", "critical", "resolved", ms(2024, 1, 15, 12), ms(2024, 1, 20, 0), None, "agent"),
        ("\tTabbed", "question", "low", "in_progress", ms(2024, 1, 16, 1), None, None, "agent"),
        ('Comma, "quoted" and\nnew line', "task", "medium", "closed", ms(2024, 1, 22, 23, 59), ms(2024, 1, 23), ms(2024, 1, 24), None),
        ("Ünïcødé ticket", "bug", "low", "resolved", ms(2024, 1, 30, 6), ms(2024, 2, 2, 6), None, "agent2"),
        ("Last day", "bug", "high", "open", ms(2024, 1, 31, 23, 59), None, None, None),
        ("Outside: February", "bug", "low", "open", ms(2024, 2, 1, 0), None, None, None),
        ("Outside: December, resolved in January", "support", "low", "resolved", ms(2023, 12, 30), ms(2024, 1, 5, 12), None, "agent"),
    ]
    for title, ty, pr, st, cr, rs, cl, asg in hist:
        rows.ticket(A, u["customer"], title, ty, pr, st, cr, rs, cl, u[asg] if asg else None)
    # the last 30 days: SLA rows with and without breaches; one older ticket (40 days)
    recent = [
        ("Recent bug breached response", "bug", "high", "open", now - 5 * DAY, None, None, "agent", (now - 5 * DAY + 4 * 3600000, None)),
        ("Recent bug fine", "bug", "low", "resolved", now - 4 * DAY, now - 3 * DAY, None, "agent", (None, None)),
        ("Recent support breached resolution", "support", "medium", "closed", now - 10 * DAY, now - 8 * DAY, now - 7 * DAY, "agent2", (None, now - 9 * DAY)),
        ("Recent incident fine", "incident", "critical", "pending", now - 2 * DAY, None, None, "agent2", (None, None)),
        ("Recent task without SLA row", "task", "medium", "waiting_on_customer", now - 1 * DAY, None, None, None, None),
        ("Forty days old breached", "bug", "high", "resolved", now - 40 * DAY, now - 39 * DAY, None, "agent", (now - 40 * DAY + 5 * 3600000, None)),
    ]
    for title, ty, pr, st, cr, rs, cl, asg, sla in recent:
        rows.ticket(A, u["customer"], title, ty, pr, st, cr, rs, cl, u[asg] if asg else None, sla)
    # another tenant with tickets everywhere: never counted for Acme
    for i in range(6):
        rows.ticket(G, u["g"], f"Globex {i}", "bug", "low", "resolved", ms(2024, 1, 2 + i), ms(2024, 1, 3 + i), None, u["g"])
        rows.ticket(G, u["g"], f"Globex recent {i}", "bug", "low", "closed", now - (i + 1) * DAY, now - i * DAY, now - i * DAY, u["g"], (now - DAY, None))
    rows.flush()
    hist_rows = [(str(uuid.uuid4()), t["id"], u["agent"]["id"], "priority", "low", t["priority"], t["created"] + 60000)
                 for t in rows.tickets if t["tenant_id"] == A and t["created"] > now - 30 * DAY]
    db.executemany("INSERT INTO ticket_history(tenant_id, id, ticket_id, actor_id, field, old_value, new_value,"
                   " created_at) VALUES(?,?,?,?,?,?,?,?)", [(A, *h) for h in hist_rows])
    db.executemany("INSERT INTO ticket_history(tenant_id, id, ticket_id, actor_id, field, old_value, new_value,"
                   " created_at) VALUES(?,?,?,?,?,?,?,?)",
                   [(G, str(uuid.uuid4()), t["id"], u["g"]["id"], "status", "open", "closed", now)
                    for t in rows.tickets if t["tenant_id"] == G])
    # Initech: exactly 50,000 tickets on 2024-03-01 and one more on 2024-03-02 (the export cap)
    db.executemany("INSERT INTO tickets(tenant_id, id, number, title, type, priority, status, requester_id,"
                   " created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
                   [(initech["id"], str(uuid.uuid4()), i + 1, f"Bulk {i}", "task", "low", "open", u["i"]["id"],
                     ms(2024, 3, 1) + i, ms(2024, 3, 1) + i) for i in range(50000)] +
                   [(initech["id"], str(uuid.uuid4()), 50001, "Bulk over", "task", "low", "open", u["i"]["id"],
                     ms(2024, 3, 2), ms(2024, 3, 2))])
    db.commit()
    s = Server("--rate-limit", "auth=10000/60", "--rate-limit", "default=100000/60", data=data)
    a = Api(s)
    tok = {k: login(a, v["email"])["access_token"] for k, v in u.items()}
    # tickets through the API: real history and SLA rows (default rules: no breach yet)
    api_t = []
    for title, ty, pr, assignee, to in [("API one", "bug", "high", "agent", "in_progress"),
                                         ("API two", "feature", "low", "agent2", "resolved"),
                                         ("API three", "support", "medium", None, None)]:
        r = a.post("/api/v1/tickets", headers=bearer(tok["customer"]),
                   json={"title": title, "type": ty, "priority": pr})
        assert r.status_code == 201, r.text
        t = r.json()
        if assignee:
            r = a.post(f"/api/v1/tickets/{t['id']}/assign", headers=bearer(tok["manager"]),
                       json={"assignee_id": u[assignee]["id"]})
            assert r.status_code == 200, r.text
        if to:
            r = a.post(f"/api/v1/tickets/{t['id']}/status", headers=bearer(tok["manager"]), json={"status": to})
            assert r.status_code == 200, r.text
        api_t.append(dict(tenant_id=A, id=t["id"], number=int(t["ticket_number"][4:]), title=title, type=ty,
                          priority=pr, status=to or "open", requester=u["customer"],
                          assignee=u[assignee] if assignee else None, created=now, resolved=None,
                          closed=None, sla=(None, None)))
    yield {"api": a, "u": u, "tok": tok, "rows": rows.tickets + api_t, "now": now, "db": db,
           "acme": A, "globex": G, "data": data}
    db.close()
    a.close()
    s.stop()


def get(world, who, path):
    r = world["api"].get(path, headers=bearer(world["tok"][who]))
    return r


def of(world, tenant_id):
    return [t for t in world["rows"] if t["tenant_id"] == tenant_id]


def compliant(t):
    return t["sla"] is None or (t["sla"][0] is None and t["sla"][1] is None)


def pct(part, whole):
    return None if whole == 0 else round(100.0 * part / whole, 1)


def approx(a, b, tol=0.051):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def test_overview(world):
    r = get(world, "agent", "/api/v1/dashboard/overview?period=30d")
    assert r.status_code == 200, r.text
    o = r.json()
    since = world["now"] - 30 * DAY
    mine = [t for t in of(world, world["acme"]) if t["created"] >= since]
    expect = {"total": len(mine), **{s: sum(t["status"] == s for t in mine) for s in STATUSES}}
    assert o["ticket_stats"] == expect
    assert expect["total"] == 8  # 5 recent direct + 3 through the API
    assert approx(o["sla_compliance"], pct(sum(compliant(t) for t in mine), len(mine)))
    # recent activity: the tenant's last 10 history rows of the period, from SQLite directly
    hist = world["db"].execute(
        "SELECT h.ticket_id, h.actor_id, h.field, h.old_value, h.new_value, h.created_at FROM ticket_history h"
        " WHERE h.tenant_id = ? AND h.created_at >= ? ORDER BY h.created_at DESC, h.rowid DESC LIMIT 10",
        (world["acme"], since)).fetchall()
    numbers = {t["id"]: f"TKT-{t['number']:03d}" for t in of(world, world["acme"])}
    assert len(hist) == 10 and len(o["recent_activity"]) == 10
    for got, (tid, actor, field, old, new, at) in zip(o["recent_activity"], hist):
        assert got == {"ticket_id": tid, "ticket_number": numbers[tid], "actor_id": actor, "field": field,
                       "old_value": old, "new_value": new, "created_at": iso(at)}
    # top assignees: resolved (status resolved or closed) then assigned
    by = {}
    for t in mine:
        if t["assignee"]:
            e = by.setdefault(t["assignee"]["id"], [t["assignee"]["name"], 0, 0])
            e[1] += t["status"] in ("resolved", "closed")
            e[2] += 1
    top = sorted(by.items(), key=lambda kv: (-kv[1][1], -kv[1][2], kv[1][0], kv[0]))[:5]
    assert o["top_assignees"] == [{"assignee_id": k, "name": v[0], "resolved": v[1], "assigned": v[2]}
                                  for k, v in top]
    # a wider period takes in the 40-day-old ticket
    o60 = get(world, "agent", "/api/v1/dashboard/overview?period=60d").json()
    assert o60["ticket_stats"]["total"] == expect["total"] + 1
    # the default period is 30d
    assert get(world, "agent", "/api/v1/dashboard/overview").json()["ticket_stats"] == expect


def test_overview_other_tenant_and_empty(world):
    o = get(world, "g", "/api/v1/dashboard/overview?period=30d").json()
    mine = [t for t in of(world, world["globex"]) if t["created"] >= world["now"] - 30 * DAY]
    assert o["ticket_stats"]["total"] == len(mine) == 6 and o["ticket_stats"]["closed"] == 6
    assert o["sla_compliance"] == 0.0
    assert {a["assignee_id"] for a in o["top_assignees"]} == {world["u"]["g"]["id"]}
    globex_ids = {t["id"] for t in of(world, world["globex"])}  # 12 history rows, all "now"
    assert len(o["recent_activity"]) == 10
    assert all(a["ticket_id"] in globex_ids for a in o["recent_activity"])
    e = get(world, "i", "/api/v1/dashboard/overview?period=1d").json()
    assert e["ticket_stats"]["total"] == 0 and e["sla_compliance"] is None
    assert e["recent_activity"] == [] and e["top_assignees"] == []


def bucket(d, group_by):
    if group_by == "day":
        return d.isoformat()
    if group_by == "week":
        return (d - timedelta(days=d.weekday())).isoformat()
    return d.strftime("%Y-%m")


def expected_analytics(tickets, start, end, group_by):
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    keys = []
    for d in days:
        if bucket(d, group_by) not in keys:
            keys.append(bucket(d, group_by))
    data = {k: {"period": k, "created": 0, "resolved": 0, "closed": 0} for k in keys}
    per_day = {d: [0, 0] for d in days}
    for t in tickets:
        for col, name in (("created", "created"), ("resolved", "resolved"), ("closed", "closed")):
            if t[col] is not None and start <= day_of(t[col]) <= end:
                data[bucket(day_of(t[col]), group_by)][name] += 1
        for i, col in enumerate(("created", "resolved")):
            if t[col] is not None and start <= day_of(t[col]) <= end:
                per_day[day_of(t[col])][i] += 1
    half = len(days) // 2

    def change(i):
        first = sum(per_day[d][i] for d in days[:half])
        second = sum(per_day[d][i] for d in days[len(days) - half:])
        return None if half == 0 or first == 0 else round(100.0 * (second - first) / first, 1)
    hours = [(t["resolved"] - t["created"]) / 3600000 for t in tickets
             if t["resolved"] is not None and start <= day_of(t["resolved"]) <= end]
    return [data[k] for k in keys], {
        "created_change_pct": change(0), "resolved_change_pct": change(1),
        "average_resolution_hours": round(sum(hours) / len(hours), 2) if hours else None}


@pytest.mark.parametrize("start,end,group_by", [
    ("2024-01-01", "2024-01-31", "day"), ("2024-01-03", "2024-02-10", "week"),
    ("2023-12-01", "2024-02-29", "month"), ("2024-01-15", "2024-01-15", "day")])
def test_ticket_analytics(world, start, end, group_by):
    r = get(world, "manager", f"/api/v1/dashboard/analytics/tickets?start_date={start}&end_date={end}&group_by={group_by}")
    assert r.status_code == 200, r.text
    got = r.json()
    data, trends = expected_analytics(of(world, world["acme"]), date.fromisoformat(start),
                                      date.fromisoformat(end), group_by)
    assert got["data"] == data
    for k, v in trends.items():
        assert approx(got["trends"][k], v, 0.0051 if k == "average_resolution_hours" else 0.051), (k, got["trends"], trends)
    if group_by == "week":
        assert got["data"][0]["period"] == "2024-01-01"  # the ISO week's Monday, before the range
    if group_by == "day" and start != end:
        assert sum(p["created"] for p in got["data"]) == 8  # the January tickets, none of Globex


def test_sla_analytics(world):
    r = get(world, "agent", "/api/v1/dashboard/analytics/sla?period=30d")
    assert r.status_code == 200, r.text
    s = r.json()
    since = world["now"] - 30 * DAY
    mine = [t for t in of(world, world["acme"]) if t["created"] >= since]
    assert approx(s["compliance_rate"], pct(sum(compliant(t) for t in mine), len(mine)))
    for key, col in (("by_type", "type"), ("by_priority", "priority")):
        groups = {}
        for t in mine:
            g = groups.setdefault(t[col], [0, 0])
            g[0] += compliant(t)
            g[1] += 1
        assert set(s["trends"][key]) == set(groups)
        for k, (ok, n) in groups.items():
            assert approx(s["trends"][key][k], pct(ok, n)), (key, k)
    # breaches with a breach time in the period, newest first
    exp = []
    for t in of(world, world["acme"]):
        if t["sla"] is None:
            continue
        for kind, at in zip(("response", "resolution"), t["sla"]):
            if at is not None and at >= since:
                exp.append((at, t["id"], kind))
    exp.sort(reverse=True)
    assert [(b["ticket_id"], b["kind"], b["breached_at"]) for b in s["breaches"]] == \
        [(tid, kind, iso(at)) for at, tid, kind in exp]
    assert len(exp) == 2
    s90 = get(world, "agent", "/api/v1/dashboard/analytics/sla?period=90d").json()
    assert len(s90["breaches"]) == 3  # the forty-day-old response breach too


def expected_export(world, start, end, tenant_id):
    lo, hi = ms(*start), ms(*end) + DAY
    ts = sorted((t for t in of(world, tenant_id) if lo <= t["created"] < hi),
                key=lambda t: (t["created"], t["number"]))
    return [[f"TKT-{t['number']:03d}", t["title"], t["type"], t["priority"], t["status"],
             t["requester"]["email"], t["assignee"]["email"] if t["assignee"] else "",
             iso(t["created"]), iso(t["resolved"]), iso(t["closed"])] for t in ts]


def neutral(cell):
    return "'" + cell if cell and cell[0] in "=+-@\t\r" else cell


def test_export_csv(world):
    r = get(world, "agent", "/api/v1/dashboard/reports/export?type=tickets&format=csv&start_date=2024-01-01&end_date=2024-01-31")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="tickets-2024-01-01-2024-01-31.csv"'
    assert r.content.count(b"\r\n") >= 9 and r.content.endswith(b"\r\n")
    got = list(csv.reader(io.StringIO(r.content.decode("utf-8"), newline="")))
    exp = expected_export(world, (2024, 1, 1), (2024, 1, 31), world["acme"])
    assert len(exp) == 8
    assert got[0] == HEADER
    assert got[1:] == [[neutral(c) for c in row] for row in exp]
    assert got[1][1] == "'=cmd|' /C calc'!A0" and got[5][1] == "'\tTabbed"
    # the spool file is gone: the stream held the only reference
    spool = os.path.join(world["data"], "files", "tmp")
    assert os.path.isdir(spool) and not [f for f in os.listdir(spool) if f.startswith("export-")]


def test_export_xlsx(world):
    r = get(world, "manager", "/api/v1/dashboard/reports/export?type=tickets&format=xlsx&start_date=2024-01-01&end_date=2024-01-31")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == XLSX
    assert r.headers["content-disposition"] == 'attachment; filename="tickets-2024-01-01-2024-01-31.xlsx"'
    ws = openpyxl.load_workbook(io.BytesIO(r.content)).active
    got = [[("" if c is None else c) for c in row] for row in ws.iter_rows(values_only=True)]
    exp = expected_export(world, (2024, 1, 1), (2024, 1, 31), world["acme"])
    assert got[0] == HEADER
    assert got[1:] == exp  # strings, never formulas: "=cmd..." is text in the cell
    assert ws.cell(row=2, column=2).data_type == "s"


def test_export_other_tenant_and_empty(world):
    r = get(world, "g", "/api/v1/dashboard/reports/export?type=tickets&start_date=2024-01-01&end_date=2024-01-31")
    got = list(csv.reader(io.StringIO(r.content.decode(), newline="")))
    assert got[1:] == expected_export(world, (2024, 1, 1), (2024, 1, 31), world["globex"])
    assert len(got) == 7
    r = get(world, "agent", "/api/v1/dashboard/reports/export?type=tickets&format=xlsx&start_date=2020-01-01&end_date=2020-01-02")
    assert r.status_code == 200
    rows = list(openpyxl.load_workbook(io.BytesIO(r.content)).active.iter_rows(values_only=True))
    assert [list(x) for x in rows] == [HEADER]


def wait_job(world, who, url):
    deadline = time.time() + 60
    while time.time() < deadline:
        r = get(world, who, url)
        if r.headers["content-type"].startswith("application/json"):
            j = r.json()
            assert r.status_code == 200 and j["status"] in ("queued", "running"), j
            time.sleep(0.1)
            continue
        return r
    raise AssertionError("export job did not finish")


def test_export_cap_and_job(world):
    # exactly 50,000 tickets: streamed at once
    ok = get(world, "i", "/api/v1/dashboard/reports/export?type=tickets&start_date=2024-03-01&end_date=2024-03-01")
    assert ok.status_code == 200
    rows = list(csv.reader(io.StringIO(ok.content.decode(), newline="")))
    assert len(rows) == 50001 and rows[1][1] == "Bulk 0" and rows[-1][1] == "Bulk 49999"
    # 50,001: a durable job, then the file from its status URL
    for fmt in ("csv", "xlsx"):
        r = get(world, "i", f"/api/v1/dashboard/reports/export?type=tickets&format={fmt}&start_date=2024-03-01&end_date=2024-03-02")
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and job["rows"] == 50001
        assert job["status_url"] == f"/api/v1/dashboard/reports/export/{job['job_id']}"
        # another tenant never sees it
        assert get(world, "g", job["status_url"]).status_code == 404
        f = wait_job(world, "i", job["status_url"])
        assert f.status_code == 200
        assert f.headers["content-disposition"] == f'attachment; filename="tickets-2024-03-01-2024-03-02.{fmt}"'
        if fmt == "csv":
            assert f.headers["content-type"] == "text/csv; charset=utf-8"
            got = list(csv.reader(io.StringIO(f.content.decode(), newline="")))
        else:
            assert f.headers["content-type"] == XLSX
            got = [list(x) for x in openpyxl.load_workbook(io.BytesIO(f.content), read_only=True).active.iter_rows(values_only=True)]
        assert got[0] == HEADER and len(got) == 50002
        assert [g[1] for g in got[1:]] == [f"Bulk {i}" for i in range(50000)] + ["Bulk over"]
        assert got[-1][0] == "TKT-50001" and got[-1][7] == iso(ms(2024, 3, 2))
        # downloadable again; the job row says completed
        assert get(world, "i", job["status_url"]).content == f.content
        st = world["db"].execute("SELECT status, kind FROM jobs WHERE id = ?", (job["job_id"],)).fetchone()
        assert st == ("completed", "desk.export")
    r = get(world, "i", "/api/v1/dashboard/reports/export/" + str(uuid.uuid4()))
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "job_id"


def test_export_job_bound(tmp_path):
    """The job bound: a range holding exactly 1,000,000 tickets is queued as a job; one more
    ticket is a 422 naming end_date, and no job is queued for it. The million tickets go
    straight into SQLite in one statement (through the API they would take many minutes)."""
    data = str(tmp_path)
    t = tenant(data, "Umbrella", "umbrella.example")
    u = user(data, "umbrella.example", "ann@umbrella.example", "agent")
    db = sqlite3.connect(os.path.join(data, "tessera.db"))
    db.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)"
               " INSERT INTO tickets(tenant_id, id, number, title, type, priority, status,"
               " requester_id, created_at, updated_at)"
               " SELECT ?1, printf('m%07d', i), i + 1, 'm', 'task', 'low', 'open', ?2,"
               " CASE WHEN i < 1000000 THEN ?3 + i ELSE ?4 END, ?3 FROM n",
               (t["id"], u["id"], ms(2024, 4, 1), ms(2024, 4, 2)))
    db.execute("INSERT INTO desk_counters(tenant_id, last_ticket) VALUES(?, 1000001)", (t["id"],))
    db.commit()
    assert db.execute("SELECT count(*) FROM tickets WHERE tenant_id = ?", (t["id"],)).fetchone() == (1000001,)
    s = Server(data=data)
    try:
        a = Api(s)
        h = bearer(login(a, u["email"])["access_token"])
        path = "/api/v1/dashboard/reports/export?type=tickets&start_date=2024-04-01&end_date="
        over = a.get(path + "2024-04-02", headers=h)
        assert over.status_code == 422, over.text
        err = over.json()["error"]
        assert err["details"]["field"] == "end_date" and "more than 1000000 tickets" in over.text
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        at = a.get(path + "2024-04-01", headers=h)
        assert at.status_code == 202, at.text
        assert at.json()["rows"] == 1000000 and at.json()["status"] == "queued"
        kinds = db.execute("SELECT kind FROM jobs WHERE id = ?", (at.json()["job_id"],)).fetchall()
        assert kinds == [("desk.export",)]
    finally:
        db.close()
        s.stop()


@pytest.mark.parametrize("path,field", [
    ("/api/v1/dashboard/overview?period=0d", "period"),
    ("/api/v1/dashboard/overview?period=366d", "period"),
    ("/api/v1/dashboard/overview?period=30", "period"),
    ("/api/v1/dashboard/overview?period=d", "period"),
    ("/api/v1/dashboard/analytics/sla?period=-1d", "period"),
    ("/api/v1/dashboard/analytics/tickets?start_date=2024-13-01&end_date=2024-12-31", "start_date"),
    ("/api/v1/dashboard/analytics/tickets?start_date=2023-02-29&end_date=2023-03-31", "start_date"),
    ("/api/v1/dashboard/analytics/tickets?start_date=2024-01-01&end_date=2024/01/31", "end_date"),
    ("/api/v1/dashboard/analytics/tickets?start_date=2024-02-01&end_date=2024-01-31", "end_date"),
    ("/api/v1/dashboard/analytics/tickets?start_date=2023-01-01&end_date=2024-01-02", "end_date"),
    ("/api/v1/dashboard/analytics/tickets?start_date=2024-01-01&end_date=2024-01-31&group_by=year", "group_by"),
    ("/api/v1/dashboard/reports/export?type=users&start_date=2024-01-01&end_date=2024-01-31", "type"),
    ("/api/v1/dashboard/reports/export?start_date=2024-01-01&end_date=2024-01-31", "type"),
    ("/api/v1/dashboard/reports/export?type=tickets&format=pdf", "format"),
    ("/api/v1/dashboard/reports/export?type=tickets&start_date=2024-01-32", "start_date"),
])
def test_validation(world, path, field):
    r = get(world, "agent", path)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["field"] == field


def test_ranges_at_the_limit(world):
    # 366 days is allowed (2024 is a leap year: 01-01..12-31), 367 is not
    r = get(world, "agent", "/api/v1/dashboard/analytics/tickets?start_date=2024-01-01&end_date=2024-12-31&group_by=month")
    assert r.status_code == 200 and len(r.json()["data"]) == 12
    r = get(world, "agent", "/api/v1/dashboard/analytics/tickets?start_date=2023-12-31&end_date=2024-12-31")
    assert r.status_code == 422
    assert get(world, "agent", "/api/v1/dashboard/overview?period=365d").status_code == 200
    assert get(world, "agent", "/api/v1/dashboard/overview?period=1d").status_code == 200


@pytest.mark.parametrize("path", [
    "/api/v1/dashboard/overview", "/api/v1/dashboard/analytics/tickets",
    "/api/v1/dashboard/analytics/sla",
    "/api/v1/dashboard/reports/export?type=tickets&start_date=2024-01-01&end_date=2024-01-31",
    "/api/v1/dashboard/reports/export/" + str(uuid.uuid4())])
def test_roles(world, path):
    assert get(world, "viewer", path).status_code == 403
    assert get(world, "customer", path).status_code == 403
    assert world["api"].get(path).status_code == 401
