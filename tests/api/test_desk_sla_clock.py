"""SLA on the server's injectable test clock (TESSERA_TEST_CLOCK_FILE): the breach timer finds
a breach when time moves past a deadline, waiting on the customer stops the resolution clock,
and resuming moves the deadline by exactly the time stopped (24x7 calendar)."""
import os
import time
from datetime import datetime

from accounts import bearer, login, tenant, user
from conftest import Api, Server

H = 3600 * 1000


def ms(iso):
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_breach_and_pause_on_test_clock(tmp_path):
    data = str(tmp_path / "d")
    os.mkdir(data)
    clock = tmp_path / "clock"
    clock.write_text("0")
    tenant(data, "Acme", "acme.example")
    user(data, "acme.example", "agent@acme.example", "agent")
    user(data, "acme.example", "admin@acme.example", "admin")
    user(data, "acme.example", "req@acme.example", "viewer")
    s = Server("--sla-check-ms", "100", "--jwt-ttl", "604800", data=data,
               env={"TESSERA_TEST_CLOCK_FILE": str(clock)})
    try:
        api = Api(s)
        agent = bearer(login(api, "agent@acme.example")["access_token"])
        admin = bearer(login(api, "admin@acme.example")["access_token"])
        req = bearer(login(api, "req@acme.example")["access_token"])
        rules = {r["ticket_type"]: r for r in api.get("/api/v1/sla/rules", headers=agent).json()["rules"]
                 if r.get("priority") is None}
        resp_h, reso_h = rules["incident"]["response_time_hours"], rules["incident"]["resolution_time_hours"]
        agent_id = api.get("/api/v1/users/me", headers=agent).json()["id"]
        t = api.post("/api/v1/tickets", headers=req,
                     json={"title": "Site down", "type": "incident", "priority": "critical",
                           "assignee_id": agent_id}).json()
        sla = api.get(f"/api/v1/sla/tickets/{t['id']}", headers=agent).json()
        created = ms(t["created_at"])
        assert sla["sla_status"] == "compliant"
        assert abs(ms(sla["response_deadline"]) - (created + int(resp_h * H))) <= 1000
        assert abs(ms(sla["resolution_deadline"]) - (created + int(reso_h * H))) <= 1000

        # time jumps past the response deadline: the timer records it, without anyone reading
        clock.write_text(str(int((resp_h + 0.5) * H)))
        breaches = wait_for(lambda: [b for b in api.get("/api/v1/sla/breaches", headers=admin).json()["breaches"]
                                     if b["ticket_id"] == t["id"]])
        assert [b["breach_type"] for b in breaches] == ["response"]
        notes = api.get("/api/v1/notifications", headers=agent).json()["notifications"]
        assert any(n["type"] == "sla_breach" and n["ticket_id"] == t["id"] for n in notes)
        assert api.get(f"/api/v1/sla/tickets/{t['id']}", headers=agent).json()["sla_status"] == "breached"

        # waiting on the customer stops the resolution clock for the time it waits
        old_deadline = ms(sla["resolution_deadline"])
        r = api.post(f"/api/v1/tickets/{t['id']}/status", headers=agent, json={"status": "waiting_on_customer"})
        assert r.status_code == 200, r.text
        paused_at = ms(r.json()["updated_at"])
        wait_h = reso_h + 5   # longer than the whole resolution window
        clock.write_text(str(int((resp_h + 0.5 + wait_h) * H)))
        time.sleep(0.6)       # several timer rounds: nothing may breach while paused
        kinds = [b["breach_type"] for b in api.get("/api/v1/sla/breaches", headers=admin).json()["breaches"]
                 if b["ticket_id"] == t["id"]]
        assert kinds == ["response"]
        r = api.post(f"/api/v1/tickets/{t['id']}/status", headers=agent, json={"status": "in_progress"})
        resumed_at = ms(r.json()["updated_at"])
        after = api.get(f"/api/v1/sla/tickets/{t['id']}", headers=agent).json()
        # times are rendered to the second: allow that rounding on each of the three readings
        assert abs(ms(after["resolution_deadline"]) - (old_deadline + (resumed_at - paused_at))) <= 2000
        assert ms(after["resolution_deadline"]) - old_deadline >= wait_h * H - 2000

        # and past the moved deadline the resolution breach follows
        clock.write_text(str(int((resp_h + 0.5 + wait_h) * H) + (ms(after["resolution_deadline"]) - resumed_at) + H))
        wait_for(lambda: len([b for b in api.get("/api/v1/sla/breaches", headers=admin).json()["breaches"]
                              if b["ticket_id"] == t["id"]]) == 2)
        api.close()
    finally:
        s.stop()
