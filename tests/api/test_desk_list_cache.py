"""The ticket list is cached per caller for a few seconds, and never outlives a write."""
from accounts import bearer, login, tenant, user
from conftest import Api, Server


def test_list_cache_hits_and_invalidation(tmp_path):
    data = str(tmp_path)
    tenant(data, "Acme", "acme.example")
    user(data, "acme.example", "agent@acme.example", "agent")
    user(data, "acme.example", "req@acme.example", "viewer")
    s = Server(data=data)
    try:
        api = Api(s)
        agent = bearer(login(api, "agent@acme.example")["access_token"])
        req = bearer(login(api, "req@acme.example")["access_token"])
        r = api.post("/api/v1/tickets", headers=req, json={"title": "Printer jam", "type": "support"})
        assert r.status_code == 201
        tid = r.json()["id"]
        first = api.get("/api/v1/tickets", headers=agent)
        assert first.json()["total"] == 1 and "x-cache" not in first.headers
        second = api.get("/api/v1/tickets", headers=agent)
        assert second.headers.get("x-cache") == "HIT" and second.json() == first.json()
        # a write by anyone in the tenant ends it at once
        api.request("PUT", f"/api/v1/tickets/{tid}", headers=agent, json={"title": "Printer on fire"})
        third = api.get("/api/v1/tickets", headers=agent)
        assert "x-cache" not in third.headers
        assert third.json()["tickets"][0]["title"] == "Printer on fire"
        api.post("/api/v1/tickets", headers=req, json={"title": "Second", "type": "bug"})
        assert api.get("/api/v1/tickets", headers=agent).json()["total"] == 2
        # callers never share an entry: the requester sees only their own tickets
        assert api.get("/api/v1/tickets", headers=req).json()["total"] == 2
        other = user(data, "acme.example", "other@acme.example", "viewer")
        o = bearer(login(api, "other@acme.example")["access_token"])
        assert api.get("/api/v1/tickets", headers=o).json()["total"] == 0
        api.close()
    finally:
        s.stop()
