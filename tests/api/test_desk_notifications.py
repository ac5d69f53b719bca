"""desk notifications: list with unread_only and paging, mark read, mark all, preferences."""
import os
import sqlite3
import time
import uuid

import pytest

from accounts import bearer, login, tenant, user
from conftest import Api, Server


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("notify"))
    t = tenant(data, "Acme", "acme.example")
    g = tenant(data, "Globex", "globex.example")
    u = {r: user(data, "acme.example", f"{r}@acme.example", r) for r in ("agent", "viewer")}
    u["g"] = user(data, "globex.example", "agent@globex.example", "agent")
    # notifications as the desk routes write them (kinds of the table's CHECK list)
    db = sqlite3.connect(os.path.join(data, "tessera.db"))
    now = int(time.time() * 1000)
    rows = []
    for i in range(7):
        rows.append((t["id"], str(uuid.uuid4()), u["agent"]["id"], "ticket_comment", f"Comment {i}",
                     f"body {i}", None, now + i if i < 3 else None, now + i))
    rows.append((g["id"], str(uuid.uuid4()), u["g"]["id"], "ticket_assigned", "Other tenant", "x", None, None, now))
    db.executemany("INSERT INTO notifications(tenant_id, id, user_id, kind, title, message, ticket_id, "
                   "read_at, created_at) VALUES(?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()
    s = Server("--rate-limit", "auth=10000/60", data=data)
    a = Api(s)
    yield {"api": a, "users": u, "rows": rows}
    a.close()
    s.stop()


def test_list_unread_paging(desk):
    api = desk["api"]
    tok = login(api, "agent@acme.example")["access_token"]
    r = api.get("/api/v1/notifications?limit=3", headers=bearer(tok)).json()
    assert r["total"] == 7 and r["unread_count"] == 4 and len(r["notifications"]) == 3
    assert [n["title"] for n in r["notifications"]] == ["Comment 6", "Comment 5", "Comment 4"]  # newest first
    unread = api.get("/api/v1/notifications?unread_only=true&limit=100", headers=bearer(tok)).json()
    assert unread["total"] == 4 and all(not n["read"] for n in unread["notifications"])
    page3 = api.get("/api/v1/notifications?limit=3&page=3", headers=bearer(tok)).json()
    assert [n["title"] for n in page3["notifications"]] == ["Comment 0"]
    r = api.get("/api/v1/notifications?unread_only=maybe", headers=bearer(tok))
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "unread_only"
    # another user, and another tenant, see none of these
    v = login(api, "viewer@acme.example")["access_token"]
    assert api.get("/api/v1/notifications", headers=bearer(v)).json()["total"] == 0


def test_mark_read_and_all(desk):
    api = desk["api"]
    tok = login(api, "agent@acme.example")["access_token"]
    first_unread = api.get("/api/v1/notifications?unread_only=true", headers=bearer(tok)).json()["notifications"][0]
    before = api.get("/api/v1/notifications", headers=bearer(tok)).json()["unread_count"]
    r = api.request("PUT", f"/api/v1/notifications/{first_unread['id']}/read", headers=bearer(tok))
    assert r.status_code == 200 and r.json()["unread_count"] == before - 1
    again = api.request("PUT", f"/api/v1/notifications/{first_unread['id']}/read", headers=bearer(tok))
    assert again.json()["unread_count"] == before - 1  # idempotent
    foreign = desk["rows"][-1][1]
    r = api.request("PUT", f"/api/v1/notifications/{foreign}/read", headers=bearer(tok))
    assert r.status_code == 404
    r = api.request("PUT", "/api/v1/notifications/read-all", headers=bearer(tok))
    assert r.json() == {"updated": before - 1, "unread_count": 0}
    assert api.get("/api/v1/notifications", headers=bearer(tok)).json()["unread_count"] == 0


def test_preferences(desk):
    api = desk["api"]
    tok = login(api, "viewer@acme.example")["access_token"]
    p = api.get("/api/v1/notifications/preferences", headers=bearer(tok)).json()
    assert p["email_ticket_assigned"] is True and p["email_sla_breach"] is True
    assert p["in_app_comments"] is True and p["email_comments"] is False
    r = api.request("PUT", "/api/v1/notifications/preferences", headers=bearer(tok),
                    json={"email_ticket_assigned": False, "in_app_comments": False})
    assert r.status_code == 200
    assert r.json()["email_ticket_assigned"] is False and r.json()["in_app_comments"] is False
    assert r.json()["email_sla_breach"] is True
    assert api.get("/api/v1/notifications/preferences", headers=bearer(tok)).json() == r.json()
    for body, field in [({"email_everything": True}, "email_everything"), ({"email_sla_breach": "yes"}, "email_sla_breach"), ({}, "body")]:
        r = api.request("PUT", "/api/v1/notifications/preferences", headers=bearer(tok), json=body)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field
    # other profile preferences are kept alongside
    me = api.get("/api/v1/auth/me", headers=bearer(tok)).json()
    assert me["data"]["preferences"]["leaderboardPrivacy"] == "public"
