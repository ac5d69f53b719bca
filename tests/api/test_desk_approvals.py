"""desk feature approvals: submit (named or least-loaded approver), one pending per ticket,
decide once (assigned approver or master_admin), notifications, ticket history, approval
history, permissions, validation and tenant isolation, against the real binary."""
import pytest

from accounts import bearer, login, tenant, user
from conftest import Api, Server

ACME_ROLES = ["agent", "developer", "approver", "master_admin", "viewer", "manager"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("approvals"))
    t = {"acme": tenant(data, "Acme", "acme.example"), "globex": tenant(data, "Globex", "globex.example"),
         "load": tenant(data, "Loadco", "load.example")}
    u = {r: user(data, "acme.example", f"{r}@acme.example", r) for r in ACME_ROLES}
    u["approver2"] = user(data, "acme.example", "approver2@acme.example", "approver")
    u["g_agent"] = user(data, "globex.example", "agent@globex.example", "agent")
    u["g_approver"] = user(data, "globex.example", "approver@globex.example", "approver")
    s = Server("--rate-limit", "auth=100000/60", "--rate-limit", "default=100000/60", data=data)
    a = Api(s)
    tokens = {}

    def tok(email):
        if email not in tokens:
            tokens[email] = login(a, email)["access_token"]
        return tokens[email]

    yield {"api": a, "server": s, "data": data, "tenants": t, "users": u, "tok": tok}
    a.close()
    s.stop()


def hdr(world, who):
    email = who if "@" in who else f"{who}@acme.example"
    return bearer(world["tok"](email))


def new_ticket(world, who="agent", title="Feature: export to CSV"):
    r = world["api"].post("/api/v1/tickets", headers=hdr(world, who),
                          json={"title": title, "description": "Users want CSV exports.",
                                "type": "feature", "priority": "medium"})
    assert r.status_code == 201, r.text
    return r.json()


def submit(world, who, ticket_id, description="Please approve", approver_id=None, expect=201):
    body = {"ticket_id": ticket_id, "description": description}
    if approver_id is not None:
        body["approver_id"] = approver_id
    r = world["api"].post("/api/v1/approvals/requests", headers=hdr(world, who), json=body)
    assert r.status_code == expect, r.text
    return r.json()


def decide(world, who, request_id, action, comments=None, expect=200):
    body = {} if comments is None else {"comments": comments}
    r = world["api"].post(f"/api/v1/approvals/requests/{request_id}/{action}", headers=hdr(world, who),
                          json=body)
    assert r.status_code == expect, r.text
    return r.json()


def notifications(world, who, kind):
    r = world["api"].get("/api/v1/notifications?limit=100", headers=hdr(world, who))
    assert r.status_code == 200
    return [n for n in r.json()["notifications"] if n["type"] == kind]


def test_submit_decide_flow(world):
    api, u = world["api"], world["users"]
    t = new_ticket(world)
    req = submit(world, "agent", t["id"], "Add CSV export", approver_id=u["approver"]["id"])
    assert req["status"] == "pending" and req["ticket_id"] == t["id"]
    assert req["ticket_number"] == t["ticket_number"]
    assert req["requester_id"] == u["agent"]["id"] and req["approver_id"] == u["approver"]["id"]
    assert req["description"] == "Add CSV export"
    assert req["comments"] is None and req["decided_at"] is None and req["created_at"].endswith("Z")
    got = api.get(f"/api/v1/approvals/requests/{req['id']}", headers=hdr(world, "manager"))
    assert got.status_code == 200 and got.json() == req
    # the approver is told, with the ticket
    told = [n for n in notifications(world, "approver", "approval_requested") if n["ticket_id"] == t["id"]]
    assert len(told) == 1 and t["ticket_number"] in told[0]["title"]
    # the ticket's history has the request
    hist = api.get(f"/api/v1/tickets/{t['id']}", headers=hdr(world, "agent")).json()["history"]
    assert [(h["field"], h["old_value"], h["new_value"]) for h in hist if h["field"] == "approval"] == \
        [("approval", None, "pending")]

    done = decide(world, "approver", req["id"], "approve", "Approved for staging")
    assert done["status"] == "approved" and done["comments"] == "Approved for staging"
    assert done["decided_by"] == u["approver"]["id"] and done["decided_at"] >= done["created_at"]
    told = [n for n in notifications(world, "agent", "approval_decided") if n["ticket_id"] == t["id"]]
    assert len(told) == 1 and told[0]["message"] == "Approved for staging"
    # deciding twice, either way, conflicts and changes nothing
    for action in ("approve", "reject"):
        r = api.post(f"/api/v1/approvals/requests/{req['id']}/{action}", headers=hdr(world, "approver"),
                     json={"comments": "again"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    assert api.get(f"/api/v1/approvals/requests/{req['id']}", headers=hdr(world, "agent")).json() == done
    hist = api.get(f"/api/v1/tickets/{t['id']}", headers=hdr(world, "agent")).json()["history"]
    assert [(h["old_value"], h["new_value"]) for h in hist if h["field"] == "approval"] == \
        [(None, "pending"), ("pending", "approved")]


def test_one_pending_per_ticket_and_history(world):
    api, u = world["api"], world["users"]
    t = new_ticket(world, title="Feature: dark mode")
    first = submit(world, "agent", t["id"], "v1 of dark mode", approver_id=u["approver"]["id"])
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, "developer"),
                 json={"ticket_id": t["id"], "description": "again"})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "ticket_id"
    decide(world, "approver", first["id"], "reject", "Needs more information")
    second = submit(world, "developer", t["id"], "v2 with contrast checks", approver_id=u["approver2"]["id"])
    decide(world, "approver2", second["id"], "approve")
    h = api.get(f"/api/v1/approvals/history/{t['id']}", headers=hdr(world, "agent"))
    assert h.status_code == 200
    body = h.json()
    assert body["ticket_id"] == t["id"] and body["ticket_number"] == t["ticket_number"]
    events = [(e["request_id"], e["action"], e["actor_id"], e["notes"]) for e in body["history"]]
    assert events == [
        (first["id"], "requested", u["agent"]["id"], "v1 of dark mode"),
        (first["id"], "rejected", u["approver"]["id"], "Needs more information"),
        (second["id"], "requested", u["developer"]["id"], "v2 with contrast checks"),
        (second["id"], "approved", u["approver2"]["id"], None),
    ]
    assert body["total"] == 4
    times = [e["created_at"] for e in body["history"]]
    assert times == sorted(times)
    # a ticket with no requests has an empty history
    empty = api.get(f"/api/v1/approvals/history/{new_ticket(world)['id']}", headers=hdr(world, "agent")).json()
    assert empty["history"] == [] and empty["total"] == 0


def test_who_may_decide(world):
    api, u = world["api"], world["users"]
    t = new_ticket(world, title="Feature: SSO")
    req = submit(world, "agent", t["id"], approver_id=u["approver"]["id"])
    # no approvals.decide permission
    for who in ("agent", "manager", "developer"):
        r = api.post(f"/api/v1/approvals/requests/{req['id']}/approve", headers=hdr(world, who), json={})
        assert r.status_code == 403, who
    # an approver who is not the assigned one
    r = api.post(f"/api/v1/approvals/requests/{req['id']}/approve", headers=hdr(world, "approver2"), json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    # a master_admin may decide any request
    done = decide(world, "master_admin", req["id"], "reject", "Out of scope")
    assert done["status"] == "rejected" and done["decided_by"] == u["master_admin"]["id"]
    assert done["approver_id"] == u["approver"]["id"]
    # ... but not their own
    own = submit(world, "master_admin", new_ticket(world)["id"], approver_id=u["approver"]["id"])
    r = api.post(f"/api/v1/approvals/requests/{own['id']}/approve", headers=hdr(world, "master_admin"), json={})
    assert r.status_code == 403
    # requesters (viewer) have no approval routes at all
    for path in ("/api/v1/approvals/requests", f"/api/v1/approvals/requests/{req['id']}",
                 f"/api/v1/approvals/history/{t['id']}"):
        assert api.get(path, headers=hdr(world, "viewer")).status_code == 403


def test_named_approver_must_be_eligible(world):
    api, u = world["api"], world["users"]
    t = new_ticket(world)
    for bad in (u["agent"]["id"], u["manager"]["id"], u["g_approver"]["id"], "no-such-user"):
        r = api.post("/api/v1/approvals/requests", headers=hdr(world, "developer"),
                     json={"ticket_id": t["id"], "description": "x", "approver_id": bad})
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "approver_id", bad
    # nobody approves their own request
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, "approver"),
                 json={"ticket_id": t["id"], "description": "x", "approver_id": u["approver"]["id"]})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "approver_id"
    ok = submit(world, "developer", t["id"], approver_id=u["master_admin"]["id"])
    assert ok["approver_id"] == u["master_admin"]["id"]


def test_bad_input_names_the_field(world):
    api = world["api"]
    t = new_ticket(world)
    cases = [({"description": "x"}, "ticket_id"),
             ({"ticket_id": t["id"]}, "description"),
             ({"ticket_id": t["id"], "description": ""}, "description"),
             ({"ticket_id": t["id"], "description": 5}, "description"),
             ({"ticket_id": 7, "description": "x"}, "ticket_id"),
             ({"ticket_id": t["id"], "description": "d" * 5001}, "description"),
             ({"ticket_id": t["id"], "description": "x", "approver_id": 3}, "approver_id")]
    for body, field in cases:
        r = api.post("/api/v1/approvals/requests", headers=hdr(world, "agent"), json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        assert r.json()["error"]["details"]["field"] == field, body
    # the limit itself is fine
    assert submit(world, "agent", t["id"], "d" * 5000)["description"] == "d" * 5000
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, "agent"),
                 json={"ticket_id": "no-such-ticket", "description": "x"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "ticket_id"
    r = api.get("/api/v1/approvals/requests?status=maybe", headers=hdr(world, "agent"))
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "status"
    r = api.get("/api/v1/approvals/requests?limit=101", headers=hdr(world, "agent"))
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "limit"
    r = api.post("/api/v1/approvals/requests/nope/approve", headers=hdr(world, "approver"),
                 json={"comments": 12})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "comments"
    r = api.post("/api/v1/approvals/requests/nope/approve", headers=hdr(world, "approver"), json={})
    assert r.status_code == 404


def test_list_filters(world):
    api, u = world["api"], world["users"]
    mine = []
    for i in range(3):
        t = new_ticket(world, title=f"Feature {i}")
        mine.append(submit(world, "agent", t["id"], f"filter {i}", approver_id=u["approver2"]["id"]))
    decide(world, "approver2", mine[0]["id"], "approve")
    everything = api.get("/api/v1/approvals/requests?limit=100", headers=hdr(world, "agent")).json()["requests"]
    for status in ("pending", "approved", "rejected"):
        r = api.get(f"/api/v1/approvals/requests?status={status}&limit=100", headers=hdr(world, "agent")).json()
        want = [x["id"] for x in everything if x["status"] == status]
        assert [x["id"] for x in r["requests"]] == want and r["total"] == len(want)
    r = api.get(f"/api/v1/approvals/requests?status=pending&approver_id={u['approver2']['id']}&limit=100",
                headers=hdr(world, "agent")).json()
    want = [x["id"] for x in everything if x["status"] == "pending" and x["approver_id"] == u["approver2"]["id"]]
    assert [x["id"] for x in r["requests"]] == want and {mine[1]["id"], mine[2]["id"]} <= set(want)
    # newest first, paged
    created = [x["created_at"] for x in everything]
    assert created == sorted(created, reverse=True)
    p2 = api.get("/api/v1/approvals/requests?limit=2&page=2", headers=hdr(world, "agent")).json()
    assert [x["id"] for x in p2["requests"]] == [x["id"] for x in everything[2:4]]
    assert p2["total"] == len(everything)


def test_cross_tenant_is_not_found(world):
    api, u = world["api"], world["users"]
    t = new_ticket(world)
    req = submit(world, "agent", t["id"], approver_id=u["approver"]["id"])
    g_agent, g_appr = "agent@globex.example", "approver@globex.example"
    assert api.get(f"/api/v1/approvals/requests/{req['id']}", headers=hdr(world, g_agent)).status_code == 404
    assert api.get(f"/api/v1/approvals/history/{t['id']}", headers=hdr(world, g_agent)).status_code == 404
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, g_agent),
                 json={"ticket_id": t["id"], "description": "steal"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "ticket_id"
    r = api.post(f"/api/v1/approvals/requests/{req['id']}/approve", headers=hdr(world, g_appr), json={})
    assert r.status_code == 404
    listed = api.get("/api/v1/approvals/requests?limit=100", headers=hdr(world, g_agent)).json()
    assert listed["requests"] == [] and listed["total"] == 0
    assert api.get(f"/api/v1/approvals/requests/{req['id']}", headers=hdr(world, "agent")).json()["status"] == "pending"


def test_auto_assignment_picks_least_loaded(world):
    """In a tenant of its own, the test keeps the pending load of every approver and checks each
    auto-assignment against its own minimum (fewest pending, then smallest id)."""
    api, data = world["api"], world["data"]
    approvers = [user(data, "load.example", f"appr{i}@load.example", "approver") for i in range(4)]
    boss = user(data, "load.example", "boss@load.example", "master_admin")
    agent = user(data, "load.example", "agent@load.example", "agent")
    load = {a["id"]: 0 for a in approvers}

    def ticket():
        r = api.post("/api/v1/tickets", headers=hdr(world, "agent@load.example"),
                     json={"title": "Load", "description": "", "type": "feature", "priority": "low"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    # uneven starting loads through named approvers: 3, 0, 2, 1 (by creation order)
    pending = []
    for idx, n in enumerate((3, 0, 2, 1)):
        for _ in range(n):
            r = submit(world, "agent@load.example", ticket(), approver_id=approvers[idx]["id"])
            load[r["approver_id"]] += 1
            pending.append(r)

    def expected(exclude=None):
        return min((n, i) for i, n in load.items() if i != exclude)[1]

    for _ in range(6):
        want = expected()
        got = submit(world, "agent@load.example", ticket())
        assert got["approver_id"] == want and got["approver_id"] != boss["id"]
        load[want] += 1
        pending.append(got)
    # decisions take load off: the most loaded approver decides all theirs and becomes the pick
    heavy = max(load, key=lambda i: (load[i], i))
    email = next(a["email"] for a in approvers if a["id"] == heavy)
    for p in [p for p in pending if p["approver_id"] == heavy]:
        decide(world, email, p["id"], "approve")
        load[heavy] -= 1
    assert load[heavy] == 0
    got = submit(world, "agent@load.example", ticket())
    assert got["approver_id"] == expected()
    load[got["approver_id"]] += 1
    # an approver asking is never their own approver
    asker = approvers[0]
    got = submit(world, asker["email"], ticket())
    assert got["approver_id"] == expected(exclude=asker["id"]) != asker["id"]
    load[got["approver_id"]] += 1
    # the server's view of pending load agrees with the test's
    for a in approvers:
        r = api.get(f"/api/v1/approvals/requests?status=pending&approver_id={a['id']}",
                    headers=hdr(world, "boss@load.example")).json()
        assert r["total"] == load[a["id"]]
        assert all(x["requester_id"] in (agent["id"], asker["id"]) for x in r["requests"])


def test_no_approver_available(world):
    api, data = world["api"], world["data"]
    tenant(data, "Lonely", "lonely.example")
    user(data, "lonely.example", "agent@lonely.example", "agent")
    r = api.post("/api/v1/tickets", headers=hdr(world, "agent@lonely.example"),
                 json={"title": "x", "description": "", "type": "feature", "priority": "low"})
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, "agent@lonely.example"),
                 json={"ticket_id": r.json()["id"], "description": "anyone?"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "UNPROCESSABLE_ENTITY"
    assert r.json()["error"]["details"]["field"] == "approver_id"


def test_inactive_approver_is_never_assigned(world):
    import os
    import sqlite3
    api, data = world["api"], world["data"]
    tenant(data, "Quiet", "quiet.example")
    pair = sorted((user(data, "quiet.example", f"appr{i}@quiet.example", "approver") for i in range(2)),
                  key=lambda a: a["id"])
    user(data, "quiet.example", "agent@quiet.example", "agent")
    db = sqlite3.connect(os.path.join(data, "tessera.db"), timeout=10)
    db.execute("UPDATE users SET active = 0 WHERE id = ?", (pair[0]["id"],))  # the one ties would pick
    db.commit()
    db.close()

    def tid():
        r = api.post("/api/v1/tickets", headers=hdr(world, "agent@quiet.example"),
                     json={"title": "q", "description": "", "type": "feature", "priority": "low"})
        return r.json()["id"]

    assert submit(world, "agent@quiet.example", tid())["approver_id"] == pair[1]["id"]
    assert submit(world, "agent@quiet.example", tid())["approver_id"] == pair[1]["id"]
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, "agent@quiet.example"),
                 json={"ticket_id": tid(), "description": "x", "approver_id": pair[0]["id"]})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "approver_id"
