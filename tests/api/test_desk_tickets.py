"""desk tickets: create and TKT numbering, list filters / search / sort / paging, detail with
comments and history, update, delete, comments, assignment, the status workflow, requester
isolation, tenants and roles. Expected figures are computed here from what the tests create."""
import os
import re
import sqlite3

import pytest

from accounts import bearer, login, tenant, user
from conftest import Api, Server

TYPES = ["bug", "feature", "support", "incident", "question", "task"]
PRIOS = ["low", "medium", "high", "critical"]
STATUSES = ["open", "in_progress", "pending", "waiting_on_customer", "resolved", "closed"]
# the workflow, written out independently of tickets.c
ALLOWED = {
    "open": {"in_progress", "pending", "waiting_on_customer", "resolved", "closed"},
    "in_progress": {"pending", "waiting_on_customer", "resolved", "open"},
    "pending": {"in_progress", "open", "resolved"},
    "waiting_on_customer": {"in_progress", "open", "resolved"},
    "resolved": {"closed", "open"},
    "closed": {"open"},
}
TICKET_KEYS = {"id", "ticket_number", "title", "description", "type", "priority", "status",
               "requester_id", "assignee_id", "resolution_notes", "created_at", "updated_at",
               "resolved_at", "closed_at"}


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("tickets"))
    tenant(data, "Acme", "acme.example")
    tenant(data, "Globex", "globex.example")
    tenant(data, "Initech", "initech.example")
    tenant(data, "Hooli", "hooli.example")
    u = {}
    for name, role in [("admin", "admin"), ("agent", "agent"), ("agent2", "agent"),
                       ("manager", "manager"), ("viewer", "viewer"), ("learner", "learner"),
                       ("gone", "agent")]:
        u[name] = user(data, "acme.example", f"{name}@acme.example", role)
    u["g_agent"] = user(data, "globex.example", "agent@globex.example", "agent")
    u["g_admin"] = user(data, "globex.example", "admin@globex.example", "admin")
    u["i_admin"] = user(data, "initech.example", "admin@initech.example", "admin")
    u["h_agent"] = user(data, "hooli.example", "agent@hooli.example", "agent")
    u["h_agent2"] = user(data, "hooli.example", "agent2@hooli.example", "agent")
    u["h_viewer"] = user(data, "hooli.example", "viewer@hooli.example", "viewer")
    db = sqlite3.connect(os.path.join(data, "tessera.db"))
    db.execute("UPDATE users SET active = 0 WHERE id = ?", (u["gone"]["id"],))
    db.commit()
    db.close()
    s = Server("--rate-limit", "auth=10000/60", "--rate-limit", "default=100000/60", data=data)
    a = Api(s)
    tokens = {}
    for name, email in [("admin", "admin@acme.example"), ("agent", "agent@acme.example"),
                        ("agent2", "agent2@acme.example"), ("manager", "manager@acme.example"),
                        ("viewer", "viewer@acme.example"), ("learner", "learner@acme.example"),
                        ("g_agent", "agent@globex.example"), ("g_admin", "admin@globex.example"),
                        ("i_admin", "admin@initech.example"), ("h_agent", "agent@hooli.example"),
                        ("h_agent2", "agent2@hooli.example"), ("h_viewer", "viewer@hooli.example")]:
        tokens[name] = bearer(login(a, email)["access_token"])
    yield {"api": a, "users": u, "tok": tokens, "data": data}
    a.close()
    s.stop()


def mk(desk, who, **body):
    body.setdefault("title", "Something broke")
    body.setdefault("type", "bug")
    r = desk["api"].post("/api/v1/tickets", headers=desk["tok"][who], json=body)
    assert r.status_code == 201, r.text
    return r.json()


def get(desk, who, path, **kw):
    return desk["api"].get(path, headers=desk["tok"][who], **kw)


def post(desk, who, path, body):
    return desk["api"].post(path, headers=desk["tok"][who], json=body)


def put(desk, who, path, body):
    return desk["api"].request("PUT", path, headers=desk["tok"][who], json=body)


def delete(desk, who, path):
    return desk["api"].request("DELETE", path, headers=desk["tok"][who])


def status(desk, who, tid, to, **extra):
    return post(desk, who, f"/api/v1/tickets/{tid}/status", {"status": to, **extra})


def err_field(r):
    return r.json()["error"]["details"].get("field")


def notifications(desk, who):
    return get(desk, who, "/api/v1/notifications?limit=100").json()["notifications"]


def sql(desk, query, *args):
    db = sqlite3.connect(os.path.join(desk["data"], "tessera.db"))
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


# ---- create and numbering ----

def test_create_full_object_history_sla_and_notify(desk):
    u = desk["users"]
    t = mk(desk, "agent", title="Login button not working", description="Steps: click it",
           type="bug", priority="high", assignee_id=u["agent2"]["id"])
    assert TICKET_KEYS <= set(t)
    assert re.fullmatch(r"TKT-\d{3,}", t["ticket_number"])
    assert (t["title"], t["description"], t["type"], t["priority"], t["status"]) == \
        ("Login button not working", "Steps: click it", "bug", "high", "open")
    assert t["requester_id"] == u["agent"]["id"] and t["assignee_id"] == u["agent2"]["id"]
    assert t["resolved_at"] is None and t["closed_at"] is None and t["resolution_notes"] is None
    assert t["created_at"] == t["updated_at"]
    d = get(desk, "agent", f"/api/v1/tickets/{t['id']}").json()
    assert [(h["field"], h["old_value"], h["new_value"], h["actor_id"]) for h in d["history"]] == \
        [("created", None, t["ticket_number"], u["agent"]["id"])]
    assert d["comments"] == []
    # SLA deadlines were stored in the same transaction
    assert sql(desk, "SELECT count(*) FROM ticket_sla WHERE ticket_id = ?", t["id"]) == [(1,)]
    # the assignee was told
    n = [x for x in notifications(desk, "agent2") if x["ticket_id"] == t["id"]]
    assert [x["type"] for x in n] == ["ticket_assigned"]
    # priority defaults to medium; a requester may raise tickets too
    v = mk(desk, "viewer", title="Need access", type="support")
    assert v["priority"] == "medium" and v["requester_id"] == u["viewer"]["id"]
    assert v["assignee_id"] is None and v["description"] == ""


def test_numbering_per_tenant_never_reused(desk):
    nums = [mk(desk, "i_admin", title=f"T{i}")["ticket_number"] for i in range(3)]
    assert nums == ["TKT-001", "TKT-002", "TKT-003"]
    last = get(desk, "i_admin", "/api/v1/tickets?sort=ticket_number&order=desc&limit=1").json()
    assert last["tickets"][0]["ticket_number"] == "TKT-003" and last["total"] == 3
    r = delete(desk, "i_admin", f"/api/v1/tickets/{last['tickets'][0]['id']}")
    assert r.status_code == 200 and "TKT-003" in r.json()["message"]
    assert mk(desk, "i_admin")["ticket_number"] == "TKT-004"
    # the other tenants count on their own
    g = mk(desk, "g_agent", title="Globex one")
    before = sql(desk, "SELECT count(*) FROM tickets t JOIN tenants n ON n.id = t.tenant_id "
                       "WHERE n.domain = 'globex.example'")[0][0]
    assert g["ticket_number"] == "TKT-%03d" % before


@pytest.mark.parametrize("body,field", [
    ({"type": "bug"}, "title"),
    ({"title": "", "type": "bug"}, "title"),
    ({"title": "x" * 201, "type": "bug"}, "title"),
    ({"title": 5, "type": "bug"}, "title"),
    ({"title": "ok", "description": "d" * 20001, "type": "bug"}, "description"),
    ({"title": "ok"}, "type"),
    ({"title": "ok", "type": "enhancement"}, "type"),
    ({"title": "ok", "type": "bug", "priority": "urgent"}, "priority"),
    ({"title": "ok", "type": "bug", "assignee_id": "no-such-user"}, "assignee_id"),
])
def test_create_validation(desk, body, field):
    r = post(desk, "agent", "/api/v1/tickets", body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR" and err_field(r) == field


def test_create_limits_and_assignee_rules(desk):
    u = desk["users"]
    t = mk(desk, "agent", title="x" * 200, description="d" * 20000)
    assert len(t["title"]) == 200 and len(t["description"]) == 20000
    for who in ("viewer", "gone", "g_agent"):   # not staff, inactive, other tenant
        r = post(desk, "agent", "/api/v1/tickets",
                 {"title": "a", "type": "bug", "assignee_id": u[who]["id"]})
        assert r.status_code == 422 and err_field(r) == "assignee_id", who
    r = desk["api"].post("/api/v1/tickets", headers=desk["tok"]["agent"], content=b"title=x",
                         validate=False)
    assert r.status_code in (400, 415)


# ---- list: filters, search, sort, paging ----

@pytest.fixture(scope="module")
def hooli(desk):
    """A tenant whose tickets only this fixture creates, in varied states."""
    u = desk["users"]
    specs = [
        ("Printer on floor two jams", "paper feed error", "bug", "high", "h_agent", "in_progress"),
        ("VPN drops every hour", "printer unrelated", "incident", "critical", None, "open"),
        ("Add dark mode", "users want a dark theme", "feature", "low", "h_agent2", "resolved"),
        ("Printer toner empty", "order toner", "support", "medium", "h_agent", "closed"),
        ("How do I reset MFA?", "question about mfa", "question", "medium", None, "pending"),
        ("Quarterly patching", "servers and laptops", "task", "low", "h_agent2", "open"),
        ("Email bounce storm", "mail server error", "incident", "high", "h_agent", "waiting_on_customer"),
        ("Login loop after update", "login fails, loop", "bug", "critical", "h_agent2", "open"),
    ]
    made = []
    for title, desc, typ, prio, assignee, st in specs:
        body = {"title": title, "description": desc, "type": typ, "priority": prio}
        if assignee:
            body["assignee_id"] = u[assignee]["id"]
        t = mk(desk, "h_agent", **body)
        if st != "open":
            r = status(desk, "h_agent", t["id"], st)
            assert r.status_code == 200, r.text
            t = r.json()
        made.append(t)
    mine = [mk(desk, "h_viewer", title=f"Viewer asks {i}", description="printer", type="question",
               priority="low") for i in range(2)]
    return made + mine, mine


def list_all(desk, who, query):
    out, page = [], 1
    while True:
        r = get(desk, who, f"/api/v1/tickets?{query}&limit=3&page={page}")
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["tickets"]
        if page * 3 >= body["total"]:
            return out, body["total"]
        page += 1


def test_list_filters(desk, hooli):
    u = desk["users"]
    every, _ = hooli
    cases = {
        "type=bug": lambda t: t["type"] == "bug",
        "status=open": lambda t: t["status"] == "open",
        "priority=critical": lambda t: t["priority"] == "critical",
        f"assignee_id={u['h_agent']['id']}": lambda t: t["assignee_id"] == u["h_agent"]["id"],
        "type=incident&priority=high": lambda t: t["type"] == "incident" and t["priority"] == "high",
        f"status=open&assignee_id={u['h_agent2']['id']}":
            lambda t: t["status"] == "open" and t["assignee_id"] == u["h_agent2"]["id"],
    }
    for q, pred in cases.items():
        want = {t["id"] for t in every if pred(t)}
        got, total = list_all(desk, "h_agent", q)
        assert {t["id"] for t in got} == want and total == len(want), q
    r = get(desk, "h_agent", "/api/v1/tickets").json()
    assert r["total"] == len(every) and r["page"] == 1 and r["limit"] == 20
    for q, field in [("type=nope", "type"), ("status=done", "status"), ("priority=p1", "priority"),
                     ("sort=title", "sort"), ("order=up", "order"), ("limit=101", "limit"),
                     ("limit=0", "limit"), ("page=0", "page"), ("page=x", "page"),
                     ("search=" + "a" * 201, "search")]:
        r = get(desk, "h_agent", f"/api/v1/tickets?{q}")
        assert r.status_code == 422 and err_field(r) == field, q
    assert get(desk, "h_agent", "/api/v1/tickets?limit=100").json()["limit"] == 100


def test_list_totals_follow_creates_edits_moves_and_deletes(desk):
    """A list's total comes from counts kept by triggers (schema 024): after creates, edits of
    type and priority, status moves and deletes, every filter of type, status and priority
    totals exactly what a count(*) over the stored tickets says."""
    types = ["bug", "feature", "support", "incident", "question", "task"]
    prios = ["low", "medium", "high", "critical"]
    made = [mk(desk, "g_admin", title=f"Count me {i}", type=types[i % 6], priority=prios[i % 4])
            for i in range(24)]
    for i, t in enumerate(made[:8]):  # edits that move a ticket to another (type, priority)
        r = put(desk, "g_admin", f"/api/v1/tickets/{t['id']}",
                {"type": types[(i + 2) % 6], "priority": prios[(i + 1) % 4]})
        assert r.status_code == 200, r.text
    put(desk, "g_admin", f"/api/v1/tickets/{made[8]['id']}", {"title": "same type, priority"})
    for t, to in zip(made[9:17], ["in_progress", "pending", "resolved", "closed"] * 2):
        assert status(desk, "g_admin", t["id"], to).status_code == 200
    for t in made[17:20]:
        assert delete(desk, "g_admin", f"/api/v1/tickets/{t['id']}").status_code == 200
    tid = sql(desk, "SELECT id FROM tenants WHERE domain = 'globex.example'")[0][0]
    for typ in [None] + types:
        for st in [None] + STATUSES:
            for pr in [None] + prios:
                f = {k: v for k, v in (("type", typ), ("status", st), ("priority", pr)) if v}
                where = "".join(f" AND {k} = ?" for k in f)
                want = sql(desk, "SELECT count(*) FROM tickets WHERE tenant_id = ?" + where,
                           tid, *f.values())[0][0]
                r = get(desk, "g_admin", "/api/v1/tickets", params={**f, "limit": 1})
                assert r.status_code == 200 and r.json()["total"] == want, (f, r.text)
    # the kept counts equal a recomputation, for every tenant
    kept = {r[:4]: r[4] for r in sql(desk, "SELECT tenant_id, status, priority, type, n "
                                           "FROM desk_ticket_counts") if r[4]}
    again = {r[:4]: r[4] for r in sql(desk, "SELECT tenant_id, status, priority, type, count(*) "
                                            "FROM tickets GROUP BY 1, 2, 3, 4")}
    assert kept == again


def words(t):
    return set(re.findall(r"[a-z0-9]+", (t["title"] + " " + t["description"]).lower()))


def test_list_search(desk, hooli):
    every, _ = hooli
    for text in ["printer", "PRINTER toner", "error", "login loop", "mfa", "nothingmatches"]:
        terms = re.findall(r"[a-z0-9]+", text.lower())
        want = {t["id"] for t in every if all(w in words(t) for w in terms)}
        got, total = list_all(desk, "h_agent", f"search={text}")
        assert {t["id"] for t in got} == want and total == len(want), text
    # search combines with filters
    got, _ = list_all(desk, "h_agent", "search=printer&type=bug")
    assert {t["id"] for t in got} == {t["id"] for t in every if "printer" in words(t) and t["type"] == "bug"}
    # FTS syntax from users is plain text: never a 500
    for hostile in ['"', '""', 'title:printer', 'AND', 'OR NOT', '*', '(', 'NEAR(a b)', 'print*',
                    '^x', 'a"b', "\u00e9t\u00e9", '-', '+', ':', '{a}', "%00"]:
        r = get(desk, "h_agent", "/api/v1/tickets", params={"search": hostile})
        assert r.status_code == 200, (hostile, r.text)
    assert get(desk, "h_agent", "/api/v1/tickets", params={"search": "\u00e9" * 200}).status_code == 200
    assert get(desk, "h_agent", "/api/v1/tickets", params={"search": "\u00e9" * 201}).status_code == 422
    r = get(desk, "h_agent", "/api/v1/tickets", params={"search": "title:printer"}).json()
    assert r["total"] == 0   # "title:printer" is one quoted term, not a column filter
    assert get(desk, "h_agent", "/api/v1/tickets", params={"search": "  "}).json()["total"] == len(every)


def test_list_sort_and_paging(desk, hooli):
    every, _ = hooli
    num = lambda t: int(t["ticket_number"][4:])
    # times as stored (ms); the API shows seconds
    stored = {r[0]: (r[1], r[2]) for r in sql(desk, "SELECT id, created_at, updated_at FROM tickets")}
    keys = {
        "created_at": lambda t: (stored[t["id"]][0], num(t)),
        "updated_at": lambda t: (stored[t["id"]][1], num(t)),
        "priority": lambda t: (PRIOS.index(t["priority"]), num(t)),
        "status": lambda t: (STATUSES.index(t["status"]), num(t)),
        "ticket_number": num,
    }
    for sort, key in keys.items():
        for order in ("asc", "desc"):
            got, total = list_all(desk, "h_agent", f"sort={sort}&order={order}")
            assert total == len(every)
            want = sorted(every, key=key, reverse=order == "desc")
            assert [t["id"] for t in got] == [t["id"] for t in want], (sort, order)
    default = get(desk, "h_agent", "/api/v1/tickets?limit=100").json()["tickets"]
    assert [t["ticket_number"] for t in default] == \
        [t["ticket_number"] for t in sorted(every, key=num, reverse=True)]   # newest first
    past = get(desk, "h_agent", "/api/v1/tickets?page=50&limit=3").json()
    assert past["tickets"] == [] and past["total"] == len(every)


def test_requester_sees_own_tickets_only(desk, hooli):
    _, mine = hooli
    r = get(desk, "h_viewer", "/api/v1/tickets?limit=100").json()
    assert r["total"] == len(mine) and {t["id"] for t in r["tickets"]} == {t["id"] for t in mine}
    r = get(desk, "h_viewer", "/api/v1/tickets?search=printer").json()
    assert {t["id"] for t in r["tickets"]} == {t["id"] for t in mine}
    other = hooli[0][0]
    assert get(desk, "h_viewer", f"/api/v1/tickets/{other['id']}").status_code == 404
    assert get(desk, "h_viewer", f"/api/v1/tickets/{other['id']}/comments").status_code == 404
    r = post(desk, "h_viewer", f"/api/v1/tickets/{other['id']}/comments", {"content": "hi"})
    assert r.status_code == 404


# ---- update and history ----

def test_update_history_rows(desk):
    u = desk["users"]
    t = mk(desk, "agent", title="Old title", description="old", priority="low", type="task")
    tid = t["id"]
    r = put(desk, "agent", f"/api/v1/tickets/{tid}", {"title": "New title", "priority": "high"})
    assert r.status_code == 200 and r.json()["title"] == "New title" and r.json()["priority"] == "high"
    assert r.json()["description"] == "old" and r.json()["type"] == "task"
    hist = get(desk, "agent", f"/api/v1/tickets/{tid}").json()["history"]
    assert [(h["field"], h["old_value"], h["new_value"]) for h in hist[1:]] == \
        [("title", "Old title", "New title"), ("priority", "low", "high")]
    # the same values again change nothing and add no rows
    r = put(desk, "agent", f"/api/v1/tickets/{tid}", {"title": "New title", "priority": "high"})
    assert r.status_code == 200
    assert len(get(desk, "agent", f"/api/v1/tickets/{tid}").json()["history"]) == len(hist)
    # assignee, type, description and status in one call: one row each
    r = put(desk, "manager", f"/api/v1/tickets/{tid}",
            {"assignee_id": u["agent2"]["id"], "type": "bug", "description": "new", "status": "in_progress"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["assignee_id"], body["type"], body["description"], body["status"]) == \
        (u["agent2"]["id"], "bug", "new", "in_progress")
    hist2 = get(desk, "agent", f"/api/v1/tickets/{tid}").json()["history"]
    new_rows = {(h["field"], h["old_value"], h["new_value"]) for h in hist2[len(hist):]}
    assert new_rows == {("assignee_id", None, u["agent2"]["id"]), ("type", "task", "bug"),
                        ("description", "old", "new"), ("status", "open", "in_progress")}
    assert all(h["actor_id"] == u["manager"]["id"] for h in hist2[len(hist):])
    # unassign with null
    r = put(desk, "agent", f"/api/v1/tickets/{tid}", {"assignee_id": None})
    assert r.json()["assignee_id"] is None
    last = get(desk, "agent", f"/api/v1/tickets/{tid}").json()["history"][-1]
    assert (last["field"], last["old_value"], last["new_value"]) == ("assignee_id", u["agent2"]["id"], None)
    # status via PUT follows the workflow: in_progress -> closed is not allowed
    r = put(desk, "agent", f"/api/v1/tickets/{tid}", {"status": "closed", "title": "Never saved"})
    assert r.status_code == 422 and err_field(r) == "status"
    assert get(desk, "agent", f"/api/v1/tickets/{tid}").json()["title"] == "New title"   # rolled back


@pytest.mark.parametrize("body,field", [
    ({}, "body"), ({"colour": "red"}, "colour"), ({"title": ""}, "title"),
    ({"title": "x" * 201}, "title"), ({"priority": "p0"}, "priority"), ({"type": "epic"}, "type"),
    ({"status": "done"}, "status"), ({"description": "d" * 20001}, "description"),
    ({"assignee_id": "nobody"}, "assignee_id"),
])
def test_update_validation(desk, body, field):
    t = mk(desk, "agent")
    r = put(desk, "agent", f"/api/v1/tickets/{t['id']}", body)
    assert r.status_code == 422 and err_field(r) == field, r.text


# ---- the workflow ----

def ticket_in(desk, state):
    t = mk(desk, "viewer", title=f"Workflow {state}")
    if state != "open":
        r = status(desk, "agent", t["id"], state)
        assert r.status_code == 200, r.text
    return t["id"]


@pytest.mark.parametrize("frm", STATUSES)
def test_workflow_every_transition(desk, frm):
    for to in STATUSES:
        if to in ALLOWED[frm]:
            tid = ticket_in(desk, frm)
            r = status(desk, "agent", tid, to)
            assert r.status_code == 200, (frm, to, r.text)
            assert r.json()["status"] == to
    tid = ticket_in(desk, frm)
    for to in STATUSES:
        if to in ALLOWED[frm]:
            continue
        r = status(desk, "agent", tid, to)
        assert r.status_code == 422, (frm, to)
        e = r.json()["error"]
        assert e["code"] == "UNPROCESSABLE_ENTITY" and e["details"]["field"] == "status"
        for name in ALLOWED[frm]:
            assert name in e["message"], (frm, name, e["message"])
    assert get(desk, "agent", f"/api/v1/tickets/{tid}").json()["status"] == frm


def test_workflow_times_notes_history_notify(desk):
    u = desk["users"]
    tid = ticket_in(desk, "open")
    r = status(desk, "agent", tid, "resolved", resolution_notes="Rebooted it")
    t = r.json()
    assert t["resolved_at"] is not None and t["closed_at"] is None
    assert t["resolution_notes"] == "Rebooted it"
    t = status(desk, "agent", tid, "closed").json()
    assert t["resolved_at"] is not None and t["closed_at"] is not None
    assert t["resolution_notes"] == "Rebooted it"
    t = status(desk, "agent", tid, "open").json()    # reopen
    assert t["resolved_at"] is None and t["closed_at"] is None
    hist = get(desk, "agent", f"/api/v1/tickets/{tid}").json()["history"]
    assert [(h["field"], h["old_value"], h["new_value"]) for h in hist[1:]] == [
        ("status", "open", "resolved"), ("resolution_notes", None, "Rebooted it"),
        ("status", "resolved", "closed"), ("status", "closed", "open")]
    mine = [n for n in notifications(desk, "viewer") if n["ticket_id"] == tid]
    assert [n["type"] for n in mine].count("ticket_status") == 3
    # the SLA record follows the status
    assert sql(desk, "SELECT count(*) FROM ticket_sla WHERE ticket_id = ?", tid) == [(1,)]
    for body, field in [({}, "status"), ({"status": "archived"}, "status"),
                        ({"status": "resolved", "resolution_notes": "n" * 20001}, "resolution_notes")]:
        r = post(desk, "agent", f"/api/v1/tickets/{tid}/status", body)
        assert r.status_code == 422 and err_field(r) == field
    assert u["viewer"]["id"] == get(desk, "agent", f"/api/v1/tickets/{tid}").json()["requester_id"]


# ---- comments ----

def test_comments_internal_hidden_first_response(desk):
    u = desk["users"]
    t = mk(desk, "viewer", title="Printer jam", type="support", assignee_id=u["agent"]["id"])
    tid = t["id"]
    c1 = post(desk, "viewer", f"/api/v1/tickets/{tid}/comments", {"content": "Any news?"})
    assert c1.status_code == 201 and c1.json()["is_internal"] is False
    assert c1.json()["author_id"] == u["viewer"]["id"] and c1.json()["ticket_id"] == tid
    r = post(desk, "viewer", f"/api/v1/tickets/{tid}/comments", {"content": "x", "is_internal": True})
    assert r.status_code == 403
    c2 = post(desk, "agent", f"/api/v1/tickets/{tid}/comments", {"content": "Check the logs", "is_internal": True})
    assert c2.status_code == 201 and c2.json()["is_internal"] is True
    first = lambda: sql(desk, "SELECT first_response_at FROM tickets WHERE id = ?", tid)[0][0]
    assert first() is None   # neither the requester nor an internal note is a response
    c3 = post(desk, "agent", f"/api/v1/tickets/{tid}/comments", {"content": "Fixed the tray"})
    assert c3.status_code == 201
    responded = first()
    assert responded is not None
    assert sql(desk, "SELECT first_response_at FROM ticket_sla WHERE ticket_id = ?", tid)[0][0] is not None
    post(desk, "agent2", f"/api/v1/tickets/{tid}/comments", {"content": "Also checked"})
    assert first() == responded
    staff = get(desk, "agent", f"/api/v1/tickets/{tid}/comments").json()
    assert staff["total"] == 4 and [c["id"] for c in staff["comments"]][:3] == \
        [c1.json()["id"], c2.json()["id"], c3.json()["id"]]
    req = get(desk, "viewer", f"/api/v1/tickets/{tid}/comments").json()
    assert req["total"] == 3 and all(not c["is_internal"] for c in req["comments"])
    detail = get(desk, "viewer", f"/api/v1/tickets/{tid}").json()
    assert c2.json()["id"] not in {c["id"] for c in detail["comments"]} and len(detail["comments"]) == 3
    assert len(get(desk, "agent", f"/api/v1/tickets/{tid}").json()["comments"]) == 4
    # the requester hears of public staff comments only; the assignee of the requester's
    n = [x for x in notifications(desk, "viewer") if x["ticket_id"] == tid and x["type"] == "ticket_comment"]
    assert len(n) == 2
    n = [x for x in notifications(desk, "agent") if x["ticket_id"] == tid and x["type"] == "ticket_comment"]
    assert len(n) == 2   # the requester's comment and agent2's; never their own


@pytest.mark.parametrize("body,field", [
    ({}, "content"), ({"content": ""}, "content"), ({"content": "c" * 20001}, "content"),
    ({"content": "ok", "is_internal": "yes"}, "is_internal"),
])
def test_comment_validation(desk, body, field):
    t = mk(desk, "agent")
    r = post(desk, "agent", f"/api/v1/tickets/{t['id']}/comments", body)
    assert r.status_code == 422 and err_field(r) == field
    ok = post(desk, "agent", f"/api/v1/tickets/{t['id']}/comments", {"content": "c" * 20000})
    assert ok.status_code == 201


# ---- assignment ----

def test_assign(desk):
    u = desk["users"]
    t = mk(desk, "viewer", title="Please assign")
    r = post(desk, "agent", f"/api/v1/tickets/{t['id']}/assign", {"assignee_id": u["agent2"]["id"]})
    assert r.status_code == 200 and r.json()["assignee_id"] == u["agent2"]["id"]
    hist = get(desk, "agent", f"/api/v1/tickets/{t['id']}").json()["history"]
    assert (hist[-1]["field"], hist[-1]["old_value"], hist[-1]["new_value"]) == \
        ("assignee_id", None, u["agent2"]["id"])
    n = [x for x in notifications(desk, "agent2") if x["ticket_id"] == t["id"]]
    assert [x["type"] for x in n] == ["ticket_assigned"]
    r = post(desk, "agent", f"/api/v1/tickets/{t['id']}/assign", {"assignee_id": u["agent2"]["id"]})
    assert r.status_code == 200
    assert len(get(desk, "agent", f"/api/v1/tickets/{t['id']}").json()["history"]) == len(hist)
    for body in [{}, {"assignee_id": u["viewer"]["id"]}, {"assignee_id": u["gone"]["id"]},
                 {"assignee_id": u["g_agent"]["id"]}]:
        r = post(desk, "agent", f"/api/v1/tickets/{t['id']}/assign", body)
        assert r.status_code == 422 and err_field(r) == "assignee_id"
    r = post(desk, "viewer", f"/api/v1/tickets/{t['id']}/assign", {"assignee_id": u["agent"]["id"]})
    assert r.status_code == 403


# ---- roles, delete, tenants ----

def test_roles_and_delete(desk):
    t = mk(desk, "viewer", title="Delete me")
    tid = t["id"]
    assert put(desk, "viewer", f"/api/v1/tickets/{tid}", {"title": "mine"}).status_code == 403
    assert put(desk, "learner", f"/api/v1/tickets/{tid}", {"title": "x"}).status_code == 403
    assert status(desk, "viewer", tid, "closed").status_code == 403
    assert delete(desk, "agent", f"/api/v1/tickets/{tid}").status_code == 403
    assert delete(desk, "manager", f"/api/v1/tickets/{tid}").status_code == 403
    post(desk, "agent", f"/api/v1/tickets/{tid}/comments", {"content": "going away"})
    r = delete(desk, "admin", f"/api/v1/tickets/{tid}")
    assert r.status_code == 200 and t["ticket_number"] in r.json()["message"]
    assert get(desk, "admin", f"/api/v1/tickets/{tid}").status_code == 404
    assert delete(desk, "admin", f"/api/v1/tickets/{tid}").status_code == 404
    assert sql(desk, "SELECT count(*) FROM ticket_comments WHERE ticket_id = ?", tid) == [(0,)]
    assert sql(desk, "SELECT count(*) FROM ticket_history WHERE ticket_id = ?", tid) == [(0,)]
    # no credential at all
    assert desk["api"].get("/api/v1/tickets").status_code == 401


def test_cross_tenant_is_not_found(desk):
    u = desk["users"]
    t = mk(desk, "agent", title="Acme secret")
    tid = t["id"]
    base = f"/api/v1/tickets/{tid}"
    assert get(desk, "g_agent", base).status_code == 404
    assert get(desk, "g_agent", base + "/comments").status_code == 404
    assert put(desk, "g_agent", base, {"title": "pwned"}).status_code == 404
    assert post(desk, "g_agent", base + "/comments", {"content": "hi"}).status_code == 404
    assert post(desk, "g_agent", base + "/assign", {"assignee_id": u["g_agent"]["id"]}).status_code == 404
    assert status(desk, "g_agent", tid, "closed").status_code == 404
    assert delete(desk, "g_admin", base).status_code == 404
    listed = get(desk, "g_agent", "/api/v1/tickets?limit=100", params={"search": "secret"}).json()
    assert tid not in {x["id"] for x in listed["tickets"]}
    assert get(desk, "agent", base).json()["title"] == "Acme secret"
    assert get(desk, "agent", "/api/v1/tickets/no-such-id").status_code == 404
