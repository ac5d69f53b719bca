"""desk staging workflow: environments, deployments of approved tickets only, one active
deployment per environment, status transitions with the environment following, rollbacks,
history, permissions, validation, tenant isolation and the --demo environments."""
import pytest

from accounts import bearer, login, tenant, user
from conftest import Api, Server

ROLES = ["agent", "developer", "approver", "admin", "viewer"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("staging"))
    t = {"acme": tenant(data, "Acme", "acme.example"), "globex": tenant(data, "Globex", "globex.example")}
    u = {r: user(data, "acme.example", f"{r}@acme.example", r) for r in ROLES}
    u["g_admin"] = user(data, "globex.example", "admin@globex.example", "admin")
    u["g_agent"] = user(data, "globex.example", "agent@globex.example", "agent")
    u["g_approver"] = user(data, "globex.example", "approver@globex.example", "approver")
    s = Server("--rate-limit", "auth=100000/60", "--rate-limit", "default=100000/60", data=data)
    a = Api(s)
    tokens = {}

    def tok(email):
        if email not in tokens:
            tokens[email] = login(a, email)["access_token"]
        return tokens[email]

    yield {"api": a, "tenants": t, "users": u, "tok": tok}
    a.close()
    s.stop()


def hdr(world, who):
    return bearer(world["tok"](who if "@" in who else f"{who}@acme.example"))


def ticket(world, who="agent"):
    r = world["api"].post("/api/v1/tickets", headers=hdr(world, who),
                          json={"title": "Feature: audit export", "description": "", "type": "feature",
                                "priority": "high"})
    assert r.status_code == 201, r.text
    return r.json()


def approved_ticket(world, who="agent", decision="approve"):
    t = ticket(world, who)
    approver = "approver" if "@" not in who else who.replace("agent", "approver")
    r = world["api"].post("/api/v1/approvals/requests", headers=hdr(world, who),
                          json={"ticket_id": t["id"], "description": "ship it"})
    assert r.status_code == 201, r.text
    if decision:
        d = world["api"].post(f"/api/v1/approvals/requests/{r.json()['id']}/{decision}",
                              headers=hdr(world, approver), json={})
        assert d.status_code == 200, d.text
    return t


_env_n = [0]


def environment(world, who="admin", **extra):
    _env_n[0] += 1
    body = {"name": f"env-{_env_n[0]}", **extra}
    r = world["api"].post("/api/v1/staging/environments", headers=hdr(world, who), json=body)
    assert r.status_code == 201, r.text
    return r.json()


def deploy(world, t, env, version="1.2.3", notes=None, who="developer", expect=201):
    body = {"ticket_id": t["id"], "environment_id": env["id"], "version": version}
    if notes is not None:
        body["deployment_notes"] = notes
    r = world["api"].post("/api/v1/staging/deployments", headers=hdr(world, who), json=body)
    assert r.status_code == expect, r.text
    return r.json()


def set_status(world, dep, status, notes=None, who="admin", expect=200):
    body = {"status": status} if notes is None else {"status": status, "notes": notes}
    r = world["api"].post(f"/api/v1/staging/deployments/{dep['id']}/status", headers=hdr(world, who), json=body)
    assert r.status_code == expect, r.text
    return r.json()


def env_of(world, env_id, who="agent"):
    envs = world["api"].get("/api/v1/staging/environments", headers=hdr(world, who)).json()["environments"]
    return next(e for e in envs if e["id"] == env_id)


def test_environments(world):
    api = world["api"]
    e = environment(world, url="https://staging.acme.example")
    assert e["status"] == "available" and e["current_deployment_id"] is None
    assert e["url"] == "https://staging.acme.example" and e["created_at"].endswith("Z")
    m = environment(world, status="maintenance")
    assert m["status"] == "maintenance" and m["url"] is None
    r = api.post("/api/v1/staging/environments", headers=hdr(world, "admin"), json={"name": e["name"]})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "name"
    for body, field in (({}, "name"), ({"name": ""}, "name"), ({"name": "has space"}, "name"),
                        ({"name": "n" * 65}, "name"), ({"name": "ok", "url": "ftp://x"}, "url"),
                        ({"name": "ok", "status": "in_use"}, "status")):
        r = api.post("/api/v1/staging/environments", headers=hdr(world, "admin"), json=body)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, body
    assert environment(world, who="admin", name="n" * 64)["name"] == "n" * 64
    r = api.post("/api/v1/staging/environments", headers=hdr(world, "developer"), json={"name": "dev-env"})
    assert r.status_code == 403
    listed = api.get("/api/v1/staging/environments", headers=hdr(world, "agent")).json()
    names = [x["name"] for x in listed["environments"]]
    assert names == sorted(names) and {e["name"], m["name"]} <= set(names)
    assert listed["total"] == len(names)
    # other tenants see none of them; requesters may not read staging at all
    g = api.get("/api/v1/staging/environments", headers=hdr(world, "admin@globex.example")).json()
    assert g["environments"] == [] and g["total"] == 0
    assert api.get("/api/v1/staging/environments", headers=hdr(world, "viewer")).status_code == 403


def test_deployment_needs_an_approved_ticket(world):
    api = world["api"]
    env = environment(world)
    for t in (ticket(world), approved_ticket(world, decision=None), approved_ticket(world, decision="reject")):
        r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"),
                     json={"ticket_id": t["id"], "environment_id": env["id"], "version": "1.0.0"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "UNPROCESSABLE_ENTITY"
        assert r.json()["error"]["details"]["field"] == "ticket_id"
        assert t["ticket_number"] in r.json()["error"]["details"]["reason"]
    t = approved_ticket(world)
    d = deploy(world, t, env, "2.0.1-rc.1+build.7", "Deploying feature X")
    assert d["status"] == "pending" and d["ticket_id"] == t["id"] and d["environment_id"] == env["id"]
    assert d["ticket_number"] == t["ticket_number"] and d["environment_name"] == env["name"]
    assert d["version"] == "2.0.1-rc.1+build.7" and d["deployment_notes"] == "Deploying feature X"
    assert d["requested_by"] == world["users"]["developer"]["id"]
    assert d["completed_at"] is None and d["rollback_reason"] is None
    assert [(h["from_status"], h["to_status"]) for h in d["history"]] == [(None, "pending")]
    hist = api.get(f"/api/v1/approvals/history/{t['id']}", headers=hdr(world, "agent")).json()["history"]
    assert d["approval_id"] == hist[-1]["request_id"] and hist[-1]["action"] == "approved"
    # a later request that is still pending takes the approval away
    t2 = approved_ticket(world)
    r = api.post("/api/v1/approvals/requests", headers=hdr(world, "agent"),
                 json={"ticket_id": t2["id"], "description": "more scope"})
    assert r.status_code == 201
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"),
                 json={"ticket_id": t2["id"], "environment_id": environment(world)["id"], "version": "1.0.0"})
    assert r.status_code == 422 and "pending" in r.json()["error"]["details"]["reason"]


def test_one_active_deployment_per_environment(world):
    api = world["api"]
    env, other = environment(world), environment(world)
    t1, t2 = approved_ticket(world), approved_ticket(world)
    d1 = deploy(world, t1, env)
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"),
                 json={"ticket_id": t2["id"], "environment_id": env["id"], "version": "1.0.1"})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "environment_id"
    assert d1["id"] in r.json()["error"]["details"]["reason"]
    deploy(world, t2, other)                 # another environment is free
    set_status(world, d1, "in_progress")
    deploy(world, t2, env, expect=409)       # still active while in progress
    set_status(world, d1, "failed", "smoke tests failed")
    d3 = deploy(world, t2, env, "1.0.2")      # free again once it finished
    assert d3["status"] == "pending"
    m = environment(world, status="maintenance")
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"),
                 json={"ticket_id": t2["id"], "environment_id": m["id"], "version": "1.0.0"})
    assert r.status_code == 409 and "maintenance" in r.json()["error"]["details"]["reason"]


def test_status_transitions_and_environment(world):
    api, u = world["api"], world["users"]
    env = environment(world)
    t = approved_ticket(world)
    d = deploy(world, t, env)
    assert env_of(world, env["id"])["status"] == "available"
    for bad in ("completed", "failed"):      # pending may only start
        r = api.post(f"/api/v1/staging/deployments/{d['id']}/status", headers=hdr(world, "admin"),
                     json={"status": bad})
        assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "status"
    d = set_status(world, d, "in_progress", "rolling out")
    assert d["status"] == "in_progress" and d["completed_at"] is None
    e = env_of(world, env["id"])
    assert e["status"] == "deploying" and e["current_deployment_id"] == d["id"]
    set_status(world, d, "in_progress", expect=409)
    d = set_status(world, d, "completed", "Deployment successful")
    assert d["status"] == "completed" and d["completed_at"] is not None
    assert d["completed_at"] >= d["created_at"] and d["updated_at"] == d["completed_at"]
    e = env_of(world, env["id"])
    assert e["status"] == "in_use" and e["current_deployment_id"] == d["id"]
    for bad in ("in_progress", "failed", "completed"):
        set_status(world, d, bad, expect=409)
    got = api.get(f"/api/v1/staging/deployments/{d['id']}", headers=hdr(world, "agent")).json()
    steps = [(h["from_status"], h["to_status"], h["notes"], h["actor_id"]) for h in got["history"]]
    assert steps == [(None, "pending", None, u["developer"]["id"]),
                     ("pending", "in_progress", "rolling out", u["admin"]["id"]),
                     ("in_progress", "completed", "Deployment successful", u["admin"]["id"])]
    # the requester heard about each change
    notes = world["api"].get("/api/v1/notifications?limit=100", headers=hdr(world, "developer")).json()
    mine = [n for n in notes["notifications"] if n["type"] == "deployment" and n["ticket_id"] == t["id"]]
    assert len(mine) == 2
    # a failure frees the environment
    env2 = environment(world)
    f = deploy(world, approved_ticket(world), env2)
    set_status(world, f, "in_progress")
    f = set_status(world, f, "failed")
    assert f["completed_at"] is not None
    e2 = env_of(world, env2["id"])
    assert e2["status"] == "available" and e2["current_deployment_id"] is None
    # only admins move deployments
    r = api.post(f"/api/v1/staging/deployments/{f['id']}/status", headers=hdr(world, "developer"),
                 json={"status": "in_progress"})
    assert r.status_code == 403
    for body, field in (({}, "status"), ({"status": "rolled_back"}, "status"), ({"status": "pending"}, "status"),
                        ({"status": "completed", "notes": 5}, "notes"),
                        ({"status": "completed", "notes": "n" * 5001}, "notes")):
        r = api.post(f"/api/v1/staging/deployments/{f['id']}/status", headers=hdr(world, "admin"), json=body)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, body


def test_rollback(world):
    api = world["api"]
    env = environment(world)
    d = deploy(world, approved_ticket(world), env, "3.1.0")
    r = api.post(f"/api/v1/staging/deployments/{d['id']}/rollback", headers=hdr(world, "admin"),
                 json={"reason": "not live yet"})
    assert r.status_code == 409
    set_status(world, d, "in_progress")
    set_status(world, d, "completed")
    for body in ({}, {"reason": ""}, {"reason": "r" * 2001}):
        r = api.post(f"/api/v1/staging/deployments/{d['id']}/rollback", headers=hdr(world, "admin"), json=body)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "reason"
    r = api.post(f"/api/v1/staging/deployments/{d['id']}/rollback", headers=hdr(world, "developer"),
                 json={"reason": "x"})
    assert r.status_code == 403
    r = api.post(f"/api/v1/staging/deployments/{d['id']}/rollback", headers=hdr(world, "admin"),
                 json={"reason": "Critical bug found"})
    assert r.status_code == 200, r.text
    rb = r.json()
    assert rb["status"] == "rolled_back" and rb["rollback_reason"] == "Critical bug found"
    assert [(h["from_status"], h["to_status"]) for h in rb["history"]][-1] == ("completed", "rolled_back")
    assert rb["history"][-1]["notes"] == "Critical bug found"
    e = env_of(world, env["id"])
    assert e["status"] == "available" and e["current_deployment_id"] is None
    r = api.post(f"/api/v1/staging/deployments/{d['id']}/rollback", headers=hdr(world, "admin"),
                 json={"reason": "again"})
    assert r.status_code == 409
    # a completed deployment a later one replaced is no longer live: no rollback
    a = deploy(world, approved_ticket(world), env, "4.0.0")
    set_status(world, a, "in_progress")
    set_status(world, a, "completed")
    b = deploy(world, approved_ticket(world), env, "4.0.1")
    set_status(world, b, "in_progress")
    set_status(world, b, "completed")
    r = api.post(f"/api/v1/staging/deployments/{a['id']}/rollback", headers=hdr(world, "admin"),
                 json={"reason": "old"})
    assert r.status_code == 409
    assert env_of(world, env["id"])["current_deployment_id"] == b["id"]


def test_deployment_bad_input(world):
    api = world["api"]
    env, t = environment(world), approved_ticket(world)
    base = {"ticket_id": t["id"], "environment_id": env["id"], "version": "1.0.0"}
    cases = [({k: v for k, v in base.items() if k != "ticket_id"}, "ticket_id"),
             ({k: v for k, v in base.items() if k != "environment_id"}, "environment_id"),
             ({k: v for k, v in base.items() if k != "version"}, "version"),
             ({**base, "deployment_notes": "n" * 5001}, "deployment_notes"),
             ({**base, "version": "1" * 10 + ".0"}, "version"),
             ({**base, "version": "v" + "1" * 62 + ".0"}, "version")]
    for bad in ("1", "1.", "1.2.3.4", "a.b.c", "1.2.3-", "1.2.3+", "1.2.3-rc..1", " 1.2.3", "1.2.3 ",
                "V1.2", "-1.2.3", "1.2.3-rc_1"):
        cases.append(({**base, "version": bad}, "version"))
    for body, field in cases:
        r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"), json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["details"]["field"] == field, body
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"),
                 json={**base, "environment_id": "no-such-env"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "environment_id"
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "developer"),
                 json={**base, "ticket_id": "no-such-ticket"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "ticket_id"
    assert api.post("/api/v1/staging/deployments", headers=hdr(world, "viewer"), json=base).status_code == 403
    # good shapes, each its own environment
    for good in ("1.2", "v1.2.3", "0.0.1", "10.20.30-alpha.1", "1.0.0+20260101", "1.0.0-beta-2+exp.sha.5114f85",
                 "123456789.1.1"):
        assert deploy(world, t, environment(world), good)["version"] == good
    ok = deploy(world, t, environment(world), "1.0.0", "n" * 5000)
    assert ok["deployment_notes"] == "n" * 5000


def test_list_filters_and_isolation(world):
    api = world["api"]
    env_a, env_b = environment(world), environment(world)
    t = approved_ticket(world)
    d1 = deploy(world, t, env_a)
    set_status(world, d1, "in_progress")
    set_status(world, d1, "completed")
    d2 = deploy(world, t, env_b)
    everything = api.get("/api/v1/staging/deployments?limit=100", headers=hdr(world, "agent")).json()
    assert everything["total"] == len(everything["deployments"])
    created = [x["created_at"] for x in everything["deployments"]]
    assert created == sorted(created, reverse=True)
    for status in ("pending", "in_progress", "completed", "failed", "rolled_back"):
        r = api.get(f"/api/v1/staging/deployments?status={status}&limit=100", headers=hdr(world, "agent")).json()
        want = [x["id"] for x in everything["deployments"] if x["status"] == status]
        assert [x["id"] for x in r["deployments"]] == want and r["total"] == len(want)
    r = api.get(f"/api/v1/staging/deployments?environment_id={env_a['id']}", headers=hdr(world, "agent")).json()
    assert [x["id"] for x in r["deployments"]] == [d1["id"]] and r["total"] == 1
    r = api.get(f"/api/v1/staging/deployments?status=pending&environment_id={env_b['id']}",
                headers=hdr(world, "agent")).json()
    assert [x["id"] for x in r["deployments"]] == [d2["id"]]
    r = api.get(f"/api/v1/staging/deployments?ticket_id={t['id']}", headers=hdr(world, "agent")).json()
    assert [x["id"] for x in r["deployments"]] == [d2["id"], d1["id"]]
    r = api.get("/api/v1/staging/deployments?status=done", headers=hdr(world, "agent"))
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "status"
    # another tenant: nothing listed, nothing found, nothing changed
    g = "admin@globex.example"
    assert api.get("/api/v1/staging/deployments", headers=hdr(world, g)).json()["total"] == 0
    assert api.get(f"/api/v1/staging/deployments/{d1['id']}", headers=hdr(world, g)).status_code == 404
    r = api.post(f"/api/v1/staging/deployments/{d2['id']}/status", headers=hdr(world, g), json={"status": "in_progress"})
    assert r.status_code == 404
    r = api.post(f"/api/v1/staging/deployments/{d1['id']}/rollback", headers=hdr(world, g), json={"reason": "x"})
    assert r.status_code == 404
    gt = approved_ticket(world, who="agent@globex.example")
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "admin@globex.example"),
                 json={"ticket_id": t["id"], "environment_id": env_a["id"], "version": "1.0.0"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "ticket_id"
    r = api.post("/api/v1/staging/deployments", headers=hdr(world, "admin@globex.example"),
                 json={"ticket_id": gt["id"], "environment_id": env_a["id"], "version": "1.0.0"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "environment_id"
    assert api.get(f"/api/v1/staging/deployments/{d2['id']}", headers=hdr(world, "agent")).json()["status"] == "pending"
    assert api.get("/api/v1/staging/deployments/nope", headers=hdr(world, "agent")).status_code == 404


def test_demo_has_two_environments():
    s = Server("--demo", "--demo-scale", "0.02")
    try:
        a = Api(s)
        tok = login(a, "admin@demo.tessera.local", "tessera-demo")["access_token"]
        envs = a.get("/api/v1/staging/environments", headers=bearer(tok)).json()
        # the desk demo data (src/surfaces/desk/demo.c) leaves a completed deployment live on
        # staging-1 and a failed one on staging-2
        deps = a.get("/api/v1/staging/deployments", headers=bearer(tok)).json()["deployments"]
        live = next(d["id"] for d in deps if d["status"] == "completed")
        assert [(e["name"], e["status"], e["current_deployment_id"]) for e in envs["environments"]] == \
            [("staging-1", "in_use", live), ("staging-2", "available", None)]
        a.close()
    finally:
        s.stop()


def test_deleting_a_ticket_frees_its_environment(world):
    api = world["api"]
    env = environment(world)
    t = approved_ticket(world)
    d = deploy(world, t, env)
    set_status(world, d, "in_progress")
    set_status(world, d, "completed")
    assert env_of(world, env["id"])["status"] == "in_use"
    r = api.request("DELETE", f"/api/v1/tickets/{t['id']}", headers=hdr(world, "admin"))
    assert r.status_code in (200, 204), r.text
    e = env_of(world, env["id"])
    assert e["status"] == "available" and e["current_deployment_id"] is None
    assert api.get(f"/api/v1/staging/deployments/{d['id']}", headers=hdr(world, "agent")).status_code == 404
    assert api.get(f"/api/v1/approvals/history/{t['id']}", headers=hdr(world, "agent")).status_code == 404
    deploy(world, approved_ticket(world), env)
