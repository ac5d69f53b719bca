"""`tessera serve --demo` desk data: tickets over 90 days with SLA rows and breaches, approvals
and deployments, loaded once; dashboard figures agree with what the ticket list shows."""
import datetime
import time

from accounts import bearer, login
from conftest import Api, Server

DEMO_TICKETS = 300  # src/surfaces/desk/demo.c DEMO_TICKETS
ADMIN = "admin@demo.tessera.local"
PASSWORD = "tessera-demo"


def all_tickets(api, h):
    out, page = [], 1
    while True:
        r = api.get(f"/api/v1/tickets?page={page}&limit=100", headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["tickets"]
        if len(out) >= body["total"] or not body["tickets"]:
            return out, body["total"]
        page += 1


def parse(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def breaches_total(api, h):
    today = datetime.datetime.now(datetime.timezone.utc).date()
    start = (today - datetime.timedelta(days=120)).isoformat()
    r = api.get(f"/api/v1/sla/breaches?start_date={start}&end_date={today.isoformat()}&limit=200",
                headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def snapshot(tmp_path):
    import sqlite3
    db = sqlite3.connect(str(tmp_path / "tessera.db"))
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("tickets", "ticket_comments", "ticket_history", "ticket_sla",
                        "approval_requests", "staging_deployments", "staging_environments",
                        "users", "tenants")}
    db.close()
    return counts


def test_demo_desk_data(tmp_path):
    s = Server("--demo", "--demo-scale", "0.02", data=str(tmp_path))
    api = Api(s)
    try:
        h = bearer(login(api, ADMIN, PASSWORD)["access_token"])
        tickets, total = all_tickets(api, h)
        assert total == DEMO_TICKETS == len(tickets)
        assert sorted(t["ticket_number"] for t in tickets) == [f"TKT-{i:03d}" for i in range(1, 301)]
        now = time.time()
        ages = [now - parse(t["created_at"]) for t in tickets]
        assert max(ages) <= 90 * 86400 + 60 and min(ages) >= 0
        assert {t["type"] for t in tickets} == {"bug", "feature", "support", "incident",
                                                "question", "task"}
        assert {t["priority"] for t in tickets} == {"low", "medium", "high", "critical"}
        statuses = {t["status"] for t in tickets}
        assert {"open", "in_progress", "waiting_on_customer", "resolved", "closed"} <= statuses
        for t in tickets:
            assert t["first_response_at"] is not None
            if t["status"] in ("resolved", "closed"):
                assert t["resolved_at"] is not None
            if t["status"] == "closed":
                assert t["closed_at"] is not None
        old = [t for t, a in zip(tickets, ages) if a > 30 * 86400]
        done_old = sum(t["status"] in ("resolved", "closed") for t in old)
        assert done_old > len(old) * 0.7

        # some breaches already recorded at load time (late responses and resolutions)
        b = breaches_total(api, h)
        assert b["total"] >= 1 and b["breaches"]

        # overview over 365 days covers every ticket: its figures are the list's counts
        ov = api.get("/api/v1/dashboard/overview?period=365d", headers=h)
        assert ov.status_code == 200, ov.text
        stats = ov.json()["ticket_stats"]
        assert stats["total"] == DEMO_TICKETS
        for st in ("open", "in_progress", "pending", "waiting_on_customer", "resolved", "closed"):
            assert stats[st] == sum(t["status"] == st for t in tickets), st

        # period=30d: the tickets created in the last 30 days (none sits at the boundary)
        ov = api.get("/api/v1/dashboard/overview?period=30d", headers=h)
        since = time.time() - 30 * 86400
        assert all(abs(parse(t["created_at"]) - since) > 120 for t in tickets)
        recent = [t for t in tickets if parse(t["created_at"]) >= since]
        stats = ov.json()["ticket_stats"]
        assert stats["total"] == len(recent) > 0
        for st in ("open", "in_progress", "waiting_on_customer", "resolved", "closed"):
            assert stats[st] == sum(t["status"] == st for t in recent), st

        r = api.get("/api/v1/approvals/requests?limit=100", headers=h)
        assert r.status_code == 200, r.text
        reqs = r.json()["requests"]
        assert sorted(x["status"] for x in reqs) == ["approved"] * 4 + ["pending", "rejected"]
        by_id = {t["id"]: t for t in tickets}
        assert all(by_id[x["ticket_id"]]["type"] == "feature" for x in reqs)

        r = api.get("/api/v1/staging/deployments", headers=h)
        assert r.status_code == 200, r.text
        deps = r.json()["deployments"]
        assert sorted(d["status"] for d in deps) == ["completed", "failed"]
        done = next(d for d in deps if d["status"] == "completed")
        envs = api.get("/api/v1/staging/environments", headers=h).json()["environments"]
        env = next(e for e in envs if e["id"] == done["environment_id"])
        assert env["status"] == "in_use" and env["current_deployment_id"] == done["id"]
    finally:
        api.close()
        s.stop()
    before = snapshot(tmp_path)
    assert before["tickets"] == DEMO_TICKETS and before["tenants"] == 1

    s = Server("--demo", "--demo-scale", "0.02", data=str(tmp_path))  # second start: nothing added
    s.stop()
    assert snapshot(tmp_path) == before
