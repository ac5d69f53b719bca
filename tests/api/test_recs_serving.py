"""recs serving (contracts/recs.md sections 1, 5, 7, 9) against the real binary: the content
model before any training (rankings recomputed here from the stored content vectors), filters,
seen items, count and user_id rules, the per-user cache and its invalidation by a new
interaction, fold-in, cold users on popularity (recomputed here from the interactions sent),
a catalog change reaching the matrix, the embedding routes, internal-key rules, the per-tenant
rate limit and the quota, the ML metric families (checked by promtool), and a trained mf model
taking over with ALS fold-in checked against numpy."""
import math
import os
import sqlite3
import struct
import subprocess
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from accounts import bearer, login, tenant, user
from conftest import SRC, Api, Server

WEIGHTS = {"view": 1, "click": 2, "add_to_cart": 3, "like": 4, "purchase": 5, "dislike": -4,
           "remove_from_cart": -2}
NOW = datetime.now(timezone.utc).replace(microsecond=0)
CATS = {
    "audio": ["headphones", "wireless", "bass"],
    "books": ["novel", "fiction", "paperback"],
    "toys": ["lego", "kids", "bricks"],
    "garden": ["plants", "soil", "seeds"],
    "kitchen": ["espresso", "grinder", "coffee"],
}
PER_CAT = 8


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_for(pred, timeout=20, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("condition not met in time")


def catalog(prefix=""):
    out = []
    for c, tags in CATS.items():
        for i in range(PER_CAT):
            out.append({"item_id": f"{prefix}{c}-{i}", "title": f"{tags[0]} {tags[1]} {c} {i}",
                        "description": f"a {tags[2]} product for {c} lovers, model {i}",
                        "category": c, "tags": [tags[0], tags[1], f"m{i}"]})
    return out


def unpack(blob):
    return np.array(struct.unpack(f"<{len(blob) // 4}f", blob), dtype=np.float64)


class World:
    def __init__(self, data, server, tenants):
        self.data, self.server, self.tenants = data, server, tenants
        self.api = Api(server)
        self.tok, self.keys = {}, {}
        self.clock = 0

    def rows(self, sql, *args):
        c = sqlite3.connect(f"file:{self.data}/tessera.db?mode=ro", uri=True)
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.close()

    def key(self, name, perms):
        r = self.api.post("/api/v1/api-keys", headers=self.tok[name],
                          json={"name": "k-" + "-".join(perms), "permissions": perms})
        assert r.status_code == 201, r.text
        return bearer(r.json()["key"])

    def tid(self, name):
        return self.tenants[name]["id"]

    def items(self, name, items):
        r = self.api.post("/internal/data/items", headers=self.keys[name + ":internal"],
                          json={"items": items})
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text
        tid = self.tid(name)
        ids = {it["item_id"] for it in items}
        # content vectors are computed in the pool after the write: wait for them
        wait_for(lambda: len(ids & {r[0] for r in self.rows(
            "SELECT item_id FROM rc_item_content WHERE tenant_id = ?", tid)}) == len(ids))

    def events(self, name, evs):
        """Interactions with increasing timestamps (so history order is the order sent)."""
        out = []
        for e in evs:
            self.clock += 1
            out.append({"timestamp": iso(NOW - timedelta(hours=2) + timedelta(seconds=self.clock)), **e})
        r = self.api.post("/internal/data/interactions", headers=self.keys[name + ":internal"],
                          json={"interactions": out})
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text

    def rec(self, name, body, internal=True, expect=200, headers=None):
        path = "/internal/ml/recommendations" if internal else "/api/v1/recommendations"
        hdr = headers or self.keys[name + (":internal" if internal else ":read")]
        r = self.api.post(path, headers=hdr, json=body)
        assert r.status_code == expect, r.text
        return r.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("recs-serving"))
    t = {n: tenant(data, n.title(), f"{n}.example", "--plan", "enterprise")
         for n in ("acme", "globex", "initech", "umbrella")}
    for n in t:
        user(data, f"{n}.example", f"dev@{n}.example", "developer")
    user(data, "acme.example", "viewer@acme.example", "viewer")
    # the exact search through the cluster index (the default from 10,000 items), and the
    # int8 copy it would fall back on (from 1,024), on these small catalogs: every ranking
    # below is checked against numpy (test_the_int8_scan_... checks the scan on its own)
    s = Server("--rate-limit", "recs=1000000/60", "--recs-q8-min-items", "1",
               "--recs-exact-index-min-items", "1", data=data)
    w = World(data, s, t)
    for n in t:
        w.tok[n] = bearer(login(w.api, f"dev@{n}.example")["access_token"])
        w.keys[n + ":internal"] = w.key(n, ["internal"])
        w.keys[n + ":read"] = w.key(n, ["read"])
    w.tok["acme:viewer"] = bearer(login(w.api, "viewer@acme.example")["access_token"])
    for n in ("acme", "globex", "initech"):
        w.items(n, catalog())
    yield w
    w.api.close()
    s.stop()


# ---------------------------------------------------------------- the independent model

def content_vectors(w, name):
    """item_id -> content vector, and the matrix row order (item_id order)."""
    rows = w.rows("SELECT c.item_id, c.vector FROM rc_item_content c JOIN rc_items i "
                  "ON i.tenant_id = c.tenant_id AND i.item_id = c.item_id WHERE c.tenant_id = ? "
                  "ORDER BY c.item_id", w.tid(name))
    return {r[0]: unpack(r[1]) for r in rows}, [r[0] for r in rows]


def history(w, name, user_id):
    """The user's distinct items newest first, with summed weights (as serving keeps them)."""
    rows = w.rows("SELECT item_id, type FROM rc_interactions WHERE tenant_id = ? AND user_id = ? "
                  "ORDER BY timestamp DESC, id DESC", w.tid(name), user_id)
    order, weight = [], {}
    for item_id, typ in rows:
        if item_id not in weight:
            order.append(item_id)
            weight[item_id] = 0.0
        weight[item_id] += WEIGHTS[typ]
    return [(i, weight[i]) for i in order]


def content_user_vector(vecs, hist):
    u = np.zeros(len(next(iter(vecs.values()))))
    for pos, (item_id, wgt) in enumerate(hist):
        if item_id in vecs and wgt != 0:
            u += wgt * 0.5 ** (pos / 10) * vecs[item_id]
    n = np.linalg.norm(u)
    return u / n if n > 0 else None


def expected_content(w, name, user_id, count=10, categories=None, exclude=(), include_seen=False,
                     min_score=None):
    vecs, order = content_vectors(w, name)
    hist = history(w, name, user_id)
    u = content_user_vector(vecs, hist)
    assert u is not None
    seen = set() if include_seen else {i for i, _ in hist}
    cat = dict(w.rows("SELECT item_id, category FROM rc_items WHERE tenant_id = ?", w.tid(name)))
    cands = [(float(vecs[i] @ u), i) for i in order
             if i not in seen and i not in exclude and (not categories or cat[i] in categories)]
    cands.sort(key=lambda x: -x[0])
    out = cands[:count]
    if min_score is not None:
        out = [c for c in out if c[0] >= min_score]
    return out, u, vecs


def popularity(w, name, rows_order):
    """Weighted counts over the 30 days up to the tenant's newest interaction, / the maximum;
    ties in matrix row order."""
    evs = w.rows("SELECT item_id, type, timestamp FROM rc_interactions WHERE tenant_id = ?", w.tid(name))
    last = max(e[2] for e in evs)
    start = min(last, int(time.time() * 1000)) - 30 * 86400000
    pop = {i: 0.0 for i in rows_order}
    for item_id, typ, ts in evs:
        if ts >= start and item_id in pop:
            pop[item_id] += WEIGHTS[typ]
    mx = max(pop.values())
    ranked = sorted(rows_order, key=lambda i: (-pop[i], rows_order.index(i)))
    return [(i, pop[i] / mx) for i in ranked]


def same_ranking(got, want, tol=1e-4):
    assert [r["item_id"] for r in got] == [i for _, i in want], (got, want)
    for r, (s, _) in zip(got, want):
        assert abs(r["score"] - s) < tol, (r, s)


def err(r):
    e = r.json()["error"]
    return r.status_code, e["code"], e["details"].get("field")


# ---------------------------------------------------------------- the content model

def test_content_model_before_training(world):
    w = world
    w.events("acme", [{"user_id": "u-audio", "item_id": "audio-1", "interaction_type": "purchase"},
                      {"user_id": "u-audio", "item_id": "audio-2", "interaction_type": "view"},
                      {"user_id": "u-audio", "item_id": "audio-1", "interaction_type": "like"}])
    body = w.rec("acme", {"user_id": "u-audio", "count": 10})
    assert body["model_version"] == "content-pop-0" and body["strategy"] == "personalized"
    got = body["recommendations"]
    # items sharing tags and words with what the user touched come first: the other audio items
    assert {r["item_id"] for r in got[:PER_CAT - 2]} == {f"audio-{i}" for i in range(PER_CAT)} - {"audio-1", "audio-2"}
    assert all(r["metadata"]["category"] == "audio" for r in got[:PER_CAT - 2])
    want, u, vecs = expected_content(w, "acme", "u-audio")
    same_ranking(got, want)
    assert "content-pop-0 int8 copy: " in w.server.stderr()
    assert "content-pop-0 exact index: " in w.server.stderr()
    for r in got:
        v = vecs[r["item_id"]]
        cos = float(u @ v / np.linalg.norm(v))
        assert abs(r["embedding_distance"] - (1 - cos)) < 1e-4
        assert r["metadata"]["created_at"].endswith("Z")
    assert body["latency_ms"] >= 0 and body["request_id"]
    # the public route: the same ranking in section 5's shape
    pub = w.rec("acme", {"user_id": "u-audio"}, internal=False)
    assert [r["item_id"] for r in pub["recommendations"]] == [r["item_id"] for r in got]
    assert set(pub["recommendations"][0]) == {"item_id", "score"}
    assert pub["metadata"]["model_version"] == "content-pop-0" and pub["metadata"]["latency_ms"] >= 0


def test_filters_and_seen_items(world):
    w = world
    w.events("acme", [{"user_id": "u-filt", "item_id": "books-0", "interaction_type": "purchase"},
                      {"user_id": "u-filt", "item_id": "books-3", "interaction_type": "click"},
                      {"user_id": "u-filt", "item_id": "toys-1", "interaction_type": "view"}])
    base = w.rec("acme", {"user_id": "u-filt", "count": 40})["recommendations"]
    ids = [r["item_id"] for r in base]
    assert not {"books-0", "books-3", "toys-1"} & set(ids) and len(ids) == 37
    same_ranking(base, expected_content(w, "acme", "u-filt", count=40)[0])
    # categories: only those, in the same relative order
    got = w.rec("acme", {"user_id": "u-filt", "count": 10,
                         "filters": {"categories": ["garden", "kitchen"]}})["recommendations"]
    assert len(got) == 10 and {r["metadata"]["category"] for r in got} <= {"garden", "kitchen"}
    assert [r["item_id"] for r in got] == [i for i in ids if i.split("-")[0] in ("garden", "kitchen")][:10]
    # a category without items answers nothing
    assert w.rec("acme", {"user_id": "u-filt", "filters": {"categories": ["none-here"]}})["recommendations"] == []
    # min_score: the unfiltered list cut where scores drop below it
    cut = base[5]["score"]
    got = w.rec("acme", {"user_id": "u-filt", "count": 40, "filters": {"min_score": cut}})["recommendations"]
    assert [r["item_id"] for r in got] == [r["item_id"] for r in base if r["score"] >= cut], ([(r["item_id"], r["score"]) for r in got], [(r["item_id"], r["score"]) for r in base[:8]], cut)
    assert all(r["score"] >= cut for r in got)
    # exclude_ids: those out, the next ones in
    ex = [ids[0], ids[2], "no-such-item"]
    got = w.rec("acme", {"user_id": "u-filt", "count": 5, "filters": {"exclude_ids": ex}})["recommendations"]
    assert [r["item_id"] for r in got] == [i for i in ids if i not in ex][:5]
    # include_seen brings back what the user touched
    got = w.rec("acme", {"user_id": "u-filt", "count": 40, "filters": {"include_seen": True}})["recommendations"]
    assert {"books-0", "books-3", "toys-1"} <= {r["item_id"] for r in got}
    same_ranking(got, expected_content(w, "acme", "u-filt", count=40, include_seen=True)[0])
    # everything combined agrees with the independent computation
    f = {"categories": ["books", "toys"], "exclude_ids": ["books-1"], "min_score": -1}
    got = w.rec("acme", {"user_id": "u-filt", "count": 7, "filters": f})["recommendations"]
    same_ranking(got, expected_content(w, "acme", "u-filt", count=7, categories={"books", "toys"},
                                       exclude={"books-1"}, min_score=-1)[0])


@pytest.mark.parametrize("body,field", [
    ({}, "user_id"), ({"user_id": None}, "user_id"), ({"user_id": ""}, "user_id"),
    ({"user_id": "a" * 129}, "user_id"), ({"user_id": "bad id"}, "user_id"),
    ({"user_id": "x.y"}, "user_id"), ({"user_id": 12}, "user_id"), ({"user_id": ["u"]}, "user_id"),
    ({"user_id": "u", "count": 0}, "count"), ({"user_id": "u", "count": 101}, "count"),
    ({"user_id": "u", "count": "5"}, "count"), ({"user_id": "u", "count": 2.5}, "count"),
    ({"user_id": "u", "count": True}, "count"), ({"user_id": "u", "count": -3}, "count"),
    ({"user_id": "u", "filters": []}, "filters"),
    ({"user_id": "u", "filters": {"categories": "books"}}, "filters.categories"),
    ({"user_id": "u", "filters": {"categories": ["Books"]}}, "filters.categories[0]"),
    ({"user_id": "u", "filters": {"categories": ["ok", 3]}}, "filters.categories[1]"),
    ({"user_id": "u", "filters": {"categories": ["c"] * 101}}, "filters.categories"),
    ({"user_id": "u", "filters": {"min_score": "0.5"}}, "filters.min_score"),
    ({"user_id": "u", "filters": {"exclude_ids": ["fine", "not fine"]}}, "filters.exclude_ids[1]"),
    ({"user_id": "u", "filters": {"exclude_ids": ["x"] * 1001}}, "filters.exclude_ids"),
    ({"user_id": "u", "filters": {"include_seen": "yes"}}, "filters.include_seen"),
    ({"user_id": "u", "context": "mobile"}, "context"),
    ({"user_id": "u", "context": {"device_type": "watch"}}, "context.device_type"),
    ({"user_id": "u", "context": {"session_id": "s" * 129}}, "context.session_id"),
    ({"user_id": "u", "model_version": "MF 1"}, "model_version"),
    ({"user_id": "u", "tenant_id": 5}, "tenant_id"),
])
def test_request_rules_one_by_one(world, body, field):
    w = world
    r = w.api.post("/internal/ml/recommendations", headers=w.keys["acme:internal"], json=body)
    assert err(r) == (400, "VALIDATION_ERROR", field), r.text
    if field != "tenant_id":
        r = w.api.post("/api/v1/recommendations", headers=w.keys["acme:read"], json=body)
        assert err(r) == (400, "VALIDATION_ERROR", field), r.text


def test_count_bounds_and_good_ids(world):
    w = world
    w.events("acme", [{"user_id": "A_b-9" + "z" * 123, "item_id": "garden-2", "interaction_type": "like"}])
    long_id = "A_b-9" + "z" * 123
    assert len(long_id) == 128
    assert len(w.rec("acme", {"user_id": long_id})["recommendations"]) == 10  # the default
    assert len(w.rec("acme", {"user_id": long_id, "count": 1})["recommendations"]) == 1
    # 100 asked, 39 items not seen: every one of them, best first
    got = w.rec("acme", {"user_id": long_id, "count": 100})["recommendations"]
    assert len(got) == 39 and "garden-2" not in {r["item_id"] for r in got}
    assert [r["score"] for r in got] == sorted([r["score"] for r in got], reverse=True)
    r = w.api.post("/api/v1/recommendations", headers=w.keys["acme:read"],
                   json={"user_id": "u", "count": 100, "context": {"device_type": "tablet", "location": "x"}})
    assert r.status_code == 200
    r = w.api.post("/api/v1/recommendations", content=b"{nope",
                   headers={**w.keys["acme:read"], "Content-Type": "application/json"})
    assert err(r) == (400, "VALIDATION_ERROR", "body")
    r = w.api.post("/api/v1/recommendations", headers={**w.keys["acme:read"], "Content-Type": "text/plain"},
                   content=b'{"user_id":"u"}')
    assert r.status_code == 415


def test_cache_hit_and_fold_in(world):
    w = world
    u = "u-cache"
    w.events("acme", [{"user_id": u, "item_id": "toys-0", "interaction_type": "purchase"},
                      {"user_id": u, "item_id": "toys-5", "interaction_type": "add_to_cart"}])
    first = w.rec("acme", {"user_id": u, "count": 6})
    assert first["cache_hit"] is False
    second = w.rec("acme", {"user_id": u, "count": 6})
    assert second["cache_hit"] is True
    assert second["recommendations"] == first["recommendations"]
    # another shape is another entry; context does not change the answer
    assert w.rec("acme", {"user_id": u, "count": 7})["cache_hit"] is False
    assert w.rec("acme", {"user_id": u, "count": 6, "context": {"device_type": "mobile"}})["cache_hit"] is True
    assert w.rec("acme", {"user_id": u, "count": 6}, internal=False)["metadata"]["cache_hit"] is True
    assert all(r["metadata"]["category"] == "toys" for r in first["recommendations"])
    # a new interaction: the cache is void and the vector folds it in at once (no training)
    for item_id, typ in [("kitchen-4", "purchase"), ("kitchen-6", "like")]:
        r = w.api.post("/api/v1/interactions", headers=w.keys["acme:internal"],
                       json={"user_id": u, "item_id": item_id, "interaction_type": typ})
        assert r.status_code == 201, r.text
    third = w.rec("acme", {"user_id": u, "count": 6})
    assert third["cache_hit"] is False
    assert third["recommendations"] != first["recommendations"]
    assert "kitchen" in {r["metadata"]["category"] for r in third["recommendations"]}
    assert not {"kitchen-4", "kitchen-6"} & {r["item_id"] for r in third["recommendations"]}
    same_ranking(third["recommendations"], expected_content(w, "acme", u, count=6)[0])
    assert w.rec("acme", {"user_id": u, "count": 6})["cache_hit"] is True
    # other users' caches are untouched by this user's interaction
    assert w.rec("acme", {"user_id": "u-audio", "count": 10})["cache_hit"] is True


def test_cold_user_gets_popular_items(world):
    w = world
    w.events("globex", [{"user_id": f"g{k}", "item_id": it, "interaction_type": t}
                        for k in range(3)
                        for it, t in [("garden-3", "purchase"), ("books-6", "view"), ("toys-2", "click"),
                                      ("garden-3", "view")]] +
             [{"user_id": "g9", "item_id": "audio-4", "interaction_type": "like"},
              {"user_id": "g9", "item_id": "toys-2", "interaction_type": "dislike"},
              {"user_id": "g9", "item_id": "not-in-catalog", "interaction_type": "purchase"}])
    body = w.rec("globex", {"user_id": "never-seen", "count": 8})
    assert body["strategy"] == "popularity" and body["model_version"] == "content-pop-0"
    _, order = content_vectors(w, "globex")
    want = popularity(w, "globex", order)[:8]
    assert [r["item_id"] for r in body["recommendations"]] == [i for i, _ in want]
    for r, (_, s) in zip(body["recommendations"], want):
        assert abs(r["score"] - s) < 1e-6 and r["embedding_distance"] is None
    assert body["recommendations"][0]["item_id"] == "garden-3"
    # popularity moves with new interactions of other users (the cached answer is not reused)
    w.events("globex", [{"user_id": f"h{k}", "item_id": "kitchen-7", "interaction_type": "purchase"}
                        for k in range(5)])
    again = w.rec("globex", {"user_id": "never-seen", "count": 8})
    assert again["cache_hit"] is False and again["recommendations"][0]["item_id"] == "kitchen-7"
    want = popularity(w, "globex", order)[:8]
    assert [r["item_id"] for r in again["recommendations"]] == [i for i, _ in want]
    # a category filter on popularity
    got = w.rec("globex", {"user_id": "never-seen", "filters": {"categories": ["books"]}, "count": 3})
    assert [r["item_id"] for r in got["recommendations"]] == [i for i, _ in popularity(w, "globex", order)
                                                                if i.startswith("books-")][:3]
    # one interaction later the user is no longer cold: items close to what they touched
    w.events("globex", [{"user_id": "never-seen", "item_id": "kitchen-1", "interaction_type": "view"}])
    warm = w.rec("globex", {"user_id": "never-seen", "count": 5})
    assert warm["strategy"] == "personalized"
    assert all(r["metadata"]["category"] == "kitchen" for r in warm["recommendations"])
    same_ranking(warm["recommendations"], expected_content(w, "globex", "never-seen", count=5)[0])


def test_catalog_change_reaches_the_matrix(world):
    w = world
    w.events("initech", [{"user_id": "u-new", "item_id": "audio-0", "interaction_type": "purchase"}])
    before = w.rec("initech", {"user_id": "u-new", "count": 40})["recommendations"]
    assert "audio-new" not in {r["item_id"] for r in before}
    w.items("initech", [{"item_id": "audio-new", "title": "headphones wireless audio 0",
                         "description": "a bass product for audio lovers, model 0", "category": "audio",
                         "tags": ["headphones", "wireless", "m0"]}])
    # its content vector is computed in the pool after the write: it joins the matrix shortly
    got = wait_for(lambda: (lambda g: g if g and g[0]["item_id"] == "audio-new" else None)(
        w.rec("initech", {"user_id": "u-new", "count": 3})["recommendations"]))
    assert got[0]["item_id"] == "audio-new"  # the same features as the item the user bought
    same_ranking(got, expected_content(w, "initech", "u-new", count=3)[0])
    # a category change moves it out of a category filter
    w.items("initech", [{"item_id": "audio-new", "title": "headphones wireless audio 0",
                         "description": "a bass product for audio lovers, model 0", "category": "garden",
                         "tags": ["headphones", "wireless", "m0"]}])
    got = wait_for(lambda: (lambda g: g if g and g[0]["item_id"] != "audio-new" else None)(
        w.rec("initech", {"user_id": "u-new", "count": 3, "filters": {"categories": ["audio"]}})["recommendations"]))
    assert all(r["metadata"]["category"] == "audio" for r in got)


# ---------------------------------------------------------------- embeddings

def test_item_embedding_routes(world):
    w = world
    vecs, _ = content_vectors(w, "acme")
    for hdr in (w.keys["acme:read"], w.tok["acme:viewer"]):
        r = w.api.get("/api/v1/items/books-2/embedding", headers=hdr)
        assert r.status_code == 200, r.text
        b = r.json()
        assert b["item_id"] == "books-2" and b["dimension"] == 128 == len(b["embedding"])
        assert b["model_version"] == "content-pop-0"
        assert abs(np.linalg.norm(b["embedding"]) - 1) < 1e-5
        assert np.allclose(b["embedding"], vecs["books-2"], atol=1e-7)
    r = w.api.get("/api/v1/items/books-2/embedding?model_version=content-pop-0", headers=w.keys["acme:read"])
    assert r.status_code == 200 and r.json()["model_version"] == "content-pop-0"
    assert err(w.api.get("/api/v1/items/nope-1/embedding", headers=w.keys["acme:read"])) == (404, "NOT_FOUND", "item_id")
    assert err(w.api.get("/api/v1/items/bad%20id/embedding", headers=w.keys["acme:read"])) == (400, "VALIDATION_ERROR", "item_id")
    assert err(w.api.get("/api/v1/items/books-2/embedding?model_version=mf-99", headers=w.keys["acme:read"])) == (404, "NOT_FOUND", "model_version")
    assert err(w.api.get("/api/v1/items/books-2/embedding?model_version=MF!", headers=w.keys["acme:read"])) == (400, "VALIDATION_ERROR", "model_version")
    # another tenant's item is unknown here
    assert w.api.get("/api/v1/items/books-2/embedding", headers=w.keys["umbrella:read"]).status_code == 404
    assert w.api.get("/api/v1/items/books-2/embedding").status_code == 401


def test_internal_embeddings(world):
    w = world
    hdr = w.keys["acme:internal"]
    vecs, _ = content_vectors(w, "acme")
    cat = {it["item_id"]: it for it in catalog()}
    # features of stored items give their stored content vectors (the same embedding)
    req = [{"item_id": i, "features": {k: cat[i][k] for k in ("title", "description", "category", "tags")}}
           for i in ("audio-3", "kitchen-0")]
    r = w.api.post("/internal/ml/embeddings", headers=hdr,
                   json={"tenant_id": w.tid("acme"), "items": req})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["model_version"] == "content-pop-0" and [e["item_id"] for e in b["embeddings"]] == ["audio-3", "kitchen-0"]
    for e in b["embeddings"]:
        assert e["dimension"] == 128 and np.allclose(e["embedding"], vecs[e["item_id"]], atol=1e-7)
    # new features: unit vectors, near the items that share their words
    r = w.api.post("/internal/ml/embeddings", headers=hdr, json={"items": [
        {"item_id": "draft-1", "features": {"title": "espresso grinder", "tags": ["coffee"],
                                            "image_url": "https://example.com/x.png"}}]})
    e = np.array(r.json()["embeddings"][0]["embedding"])
    assert abs(np.linalg.norm(e) - 1) < 1e-5
    nearest = max(vecs, key=lambda i: float(vecs[i] @ e))
    assert nearest.startswith("kitchen-")
    # no features: the stored vectors of the model
    r = w.api.post("/internal/ml/embeddings", headers=hdr,
                   json={"items": [{"item_id": "toys-4"}, {"item_id": "garden-1"}], "model_version": "content-pop-0"})
    assert r.status_code == 200
    for got in r.json()["embeddings"]:
        assert np.allclose(got["embedding"], vecs[got["item_id"]], atol=1e-7)
    r = w.api.post("/internal/ml/embeddings", headers=hdr, json={"items": [{"item_id": "toys-4"}, {"item_id": "ghost"}]})
    assert err(r) == (404, "NOT_FOUND", "items[1].item_id")
    r = w.api.post("/internal/ml/embeddings", headers=hdr, json={"items": [{"item_id": "toys-4"}], "model_version": "gnn-7"})
    assert err(r) == (404, "NOT_FOUND", "model_version")
    one = {"item_id": "x", "features": {"title": "t"}}
    for body, field in [
        ({}, "items"), ({"items": []}, "items"), ({"items": "x"}, "items"),
        ({"items": [one] * 1001}, "items"), ({"items": ["x"]}, "items[0]"),
        ({"items": [one, {"features": {"title": "t"}}]}, "items[1].item_id"),
        ({"items": [{"item_id": "a b"}]}, "items[0].item_id"),
        ({"items": [one, {"item_id": "y"}]}, "items"),
        ({"items": [{"item_id": "x", "features": "t"}]}, "items[0].features"),
        ({"items": [{"item_id": "x", "features": {}}]}, "items[0].features"),
        ({"items": [{"item_id": "x", "features": {"title": "t" * 1001}}]}, "items[0].features.title"),
        ({"items": [{"item_id": "x", "features": {"title": "t", "category": "Bad"}}]}, "items[0].features.category"),
        ({"items": [{"item_id": "x", "features": {"tags": ["ok", "t" * 33]}}]}, "items[0].features.tags[1]"),
        ({"items": [{"item_id": "x", "features": {"tags": ["t"] * 21}}]}, "items[0].features.tags"),
        ({"items": [{"item_id": "x", "features": {"title": "t", "image_url": 5}}]}, "items[0].features.image_url"),
        ({"items": [one], "model_version": "mf-1"}, "model_version"),
        ({"items": [one], "tenant_id": []}, "tenant_id"),
    ]:
        r = w.api.post("/internal/ml/embeddings", headers=hdr, json=body)
        assert err(r) == (400, "VALIDATION_ERROR", field), (body if len(str(body)) < 300 else field, r.text)
    assert w.api.post("/internal/ml/embeddings", headers=hdr, json={"items": [one] * 1000}).status_code == 200


def test_internal_key_rules(world):
    w = world
    body = {"user_id": "u-audio"}
    emb = {"items": [{"item_id": "audio-1"}]}
    for path, b in [("/internal/ml/recommendations", body), ("/internal/ml/embeddings", emb)]:
        # JWT users (even developers) and keys without the internal permission: 403
        for hdr in (w.tok["acme"], w.tok["acme:viewer"], w.keys["acme:read"]):
            assert err(w.api.post(path, headers=hdr, json=b))[:2] == (403, "FORBIDDEN")
        # another tenant's id in the body: 403 naming tenant_id; its own: fine
        r = w.api.post(path, headers=w.keys["acme:internal"], json={**b, "tenant_id": w.tid("globex")})
        assert err(r) == (403, "FORBIDDEN", "tenant_id")
        r = w.api.post(path, headers=w.keys["acme:internal"], json={**b, "tenant_id": w.tid("acme")})
        assert r.status_code == 200
        assert w.api.post(path, json=b).status_code == 401
    # the public routes take user tokens of every role and read or internal keys
    for hdr in (w.tok["acme"], w.tok["acme:viewer"], w.keys["acme:read"], w.keys["acme:internal"]):
        assert w.api.post("/api/v1/recommendations", headers=hdr, json=body).status_code == 200
    # the key's tenant is the one served: umbrella has no catalog, so nothing to recommend
    got = w.rec("umbrella", {"user_id": "u-audio"})
    assert got["recommendations"] == [] and got["strategy"] == "popularity"


# ---------------------------------------------------------------- metrics

def metric_lines(text, name, **labels):
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            out.append(line)
    return out


def metric_value(text, name, **labels):
    lines = metric_lines(text, name, **labels)
    assert len(lines) == 1, (name, labels, lines)
    return float(lines[0].rsplit(" ", 1)[1])


def promtool_ok(text):
    promtool = os.path.join(SRC, ".tools/promtool")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def test_ml_metrics_exposition(world):
    w = world
    tid = w.tid("initech")
    text = w.api.get("/metrics", headers=w.keys["initech:read"]).text
    base_count = (metric_value(text, "ml_recommendations_per_request_count", tenant_id=tid)
                  if metric_lines(text, "ml_recommendations_per_request_count", tenant_id=tid) else 0)
    base_sum = (metric_value(text, "ml_recommendations_per_request_sum", tenant_id=tid)
                if base_count else 0)
    w.events("initech", [{"user_id": "m-1", "item_id": "books-1", "interaction_type": "view"}])
    served = 0
    for n in (3, 3, 5, 40):
        served += len(w.rec("initech", {"user_id": "m-1", "count": n})["recommendations"])
    served += len(w.rec("initech", {"user_id": "m-cold", "count": 4})["recommendations"])
    text = w.api.get("/metrics", headers=w.keys["initech:read"]).text
    for fam, kind in [("ml_recommendation_quality", "gauge"), ("ml_training_duration_seconds", "gauge"),
                      ("ml_training_loss", "gauge"), ("ml_embedding_cache_hit_rate", "gauge"),
                      ("ml_ann_search_duration_seconds", "histogram"),
                      ("ml_recommendations_per_request", "histogram")]:
        assert f"# TYPE {fam} {kind}" in text, fam
    assert metric_value(text, "ml_recommendations_per_request_count", tenant_id=tid) - base_count == 5
    assert metric_value(text, "ml_recommendations_per_request_sum", tenant_id=tid) - base_sum == served
    assert metric_value(text, "ml_recommendations_per_request_bucket", tenant_id=tid, le="100") - base_count == 5
    # personalized scans over initech's matrix (41 items: index_size 50), not the cache hit
    # nor the popularity ranking
    items = w.rows("SELECT count(*) FROM rc_item_content WHERE tenant_id = ?", tid)[0][0]
    assert items == 41
    scans = metric_value(text, "ml_ann_search_duration_seconds_count", tenant_id=tid, index_size="50")
    assert scans >= 3
    assert metric_value(text, "ml_ann_search_duration_seconds_bucket", tenant_id=tid, index_size="50",
                        le="+Inf") == scans
    rate = metric_value(text, "ml_embedding_cache_hit_rate", tenant_id=tid)
    assert 0 < rate < 1
    # every personalized ranking went through the exact index: rows it scored, as a share of
    # a scan's, and none gave up on a catalog this small
    share = metric_value(text, "ml_exact_index_rows_scored_share", tenant_id=tid,
                         model_version="content-pop-0")
    assert 0 < share <= 1
    assert metric_value(text, "ml_exact_index_gave_up_share", tenant_id=tid,
                        model_version="content-pop-0") == 0
    promtool_ok(text)


def test_the_int8_scan_serves_catalogs_below_the_index_size(tmp_path):
    """Without the cluster index (--recs-exact-index-min-items above the catalog), the exact
    top k comes from the scan through the int8 copy: the same ranking numpy computes."""
    data = str(tmp_path)
    t = {"solo": tenant(data, "Solo", "solo.example", "--plan", "enterprise")}
    user(data, "solo.example", "dev@solo.example", "developer")
    s = Server("--rate-limit", "recs=1000000/60", "--recs-q8-min-items", "1",
               "--recs-exact-index-min-items", "1000", data=data)
    w = World(data, s, t)
    try:
        w.tok["solo"] = bearer(login(w.api, "dev@solo.example")["access_token"])
        w.keys["solo:internal"] = w.key("solo", ["internal"])
        w.items("solo", catalog())
        w.events("solo", [{"user_id": "u-k", "item_id": "kitchen-1", "interaction_type": "like"},
                          {"user_id": "u-k", "item_id": "garden-2", "interaction_type": "view"}])
        for body, kw in (({"user_id": "u-k", "count": 10}, {}),
                         ({"user_id": "u-k", "count": 7, "filters": {"categories": ["garden"]}},
                          {"count": 7, "categories": ["garden"]})):
            got = w.rec("solo", body)["recommendations"]
            want, _, _ = expected_content(w, "solo", "u-k", **kw)
            same_ranking(got, want)
        err_text = s.stderr()
        assert "content-pop-0 int8 copy: " in err_text
        assert "exact index" not in err_text
    finally:
        w.api.close()
        s.stop()


# ---------------------------------------------------------------- rate limit and quota

def test_rate_limit_per_tenant_and_quota(tmp_path):
    data = str(tmp_path)
    tenant(data, "One", "one.example", "--plan", "enterprise")
    tenant(data, "Two", "two.example", "--plan", "enterprise")
    tenant(data, "Small", "small.example")
    for n in ("one", "two", "small"):
        user(data, f"{n}.example", f"dev@{n}.example", "developer")
    s = Server("--rate-limit", "recs=5/60", "--recs-quota-starter", "3", data=data)
    try:
        api = Api(s)
        tok = {n: bearer(login(api, f"dev@{n}.example")["access_token"]) for n in ("one", "two", "small")}
        k1 = bearer(api.post("/api/v1/api-keys", headers=tok["one"], json={"name": "a", "permissions": ["read"]}).json()["key"])
        k2 = bearer(api.post("/api/v1/api-keys", headers=tok["one"], json={"name": "b", "permissions": ["internal"]}).json()["key"])
        body = {"user_id": "u"}
        seen = []
        # one bucket for the tenant: two keys and a user token share it, across both routes
        for hdr, path in [(k1, "/api/v1/recommendations"), (k2, "/internal/ml/recommendations"),
                          (tok["one"], "/api/v1/recommendations"), (k1, "/api/v1/recommendations"),
                          (k2, "/internal/ml/recommendations")]:
            r = api.post(path, headers=hdr, json=body)
            assert r.status_code == 200, r.text
            assert r.headers["X-RateLimit-Limit"] == "5"
            seen.append(int(r.headers["X-RateLimit-Remaining"]))
        assert seen == [4, 3, 2, 1, 0]
        r = api.post("/api/v1/recommendations", headers=k1, json=body)
        assert err(r)[:2] == (429, "RATE_LIMIT_EXCEEDED") and int(r.headers["Retry-After"]) > 0
        assert r.headers["X-RateLimit-Remaining"] == "0" and "X-RateLimit-Reset" in r.headers
        assert err(api.post("/internal/ml/recommendations", headers=k2, json=body))[:2] == (429, "RATE_LIMIT_EXCEEDED")
        # another tenant has its own bucket
        assert api.post("/api/v1/recommendations", headers=tok["two"], json=body).status_code == 200
        # the starter plan's 3 calls a month, then QUOTA_EXCEEDED (429) before any work
        for _ in range(3):
            assert api.post("/api/v1/recommendations", headers=tok["small"], json=body).status_code == 200
        r = api.post("/api/v1/recommendations", headers=tok["small"], json=body)
        assert err(r)[:2] == (429, "QUOTA_EXCEEDED")
        r = api.get("/api/v1/items/x/embedding", headers=tok["small"])
        assert err(r)[:2] == (429, "QUOTA_EXCEEDED")
        u = api.get("/api/v1/usage", headers=tok["one"]).json()
        assert u["metrics"]["api_calls"] == 6  # five served and this usage call; the 429s are not counted
        api.close()
    finally:
        s.stop()


# ---------------------------------------------------------------- a trained model takes over

def als_fold_in(V, VtV, pairs, reg, alpha):
    """numpy: (VtV + sum (c-1) v v^T + reg I) u = sum c p v, c = 1 + alpha |w|, p = w > 0."""
    d = V.shape[1]
    A = VtV + reg * np.eye(d)
    b = np.zeros(d)
    for row, wgt in pairs:
        v = V[row]
        c = 1 + alpha * abs(wgt)
        A += (c - 1) * np.outer(v, v)
        b += c * (1.0 if wgt > 0 else 0.0) * v
    return np.linalg.solve(A, b)


def test_trained_mf_model_takes_over(world):
    w = world
    name = "umbrella"
    items = catalog("t")
    w.items(name, items)
    ids = [it["item_id"] for it in items]
    cats = list(CATS)
    evs = []
    for u in range(60):
        c = cats[u % 5]
        own = [i for i in ids if i.startswith(f"t{c}-")]
        for k in range(6):
            evs.append({"user_id": f"tu{u}", "item_id": own[(u + 3 * k) % PER_CAT],
                        "interaction_type": ["view", "click", "purchase"][k % 3]})
        evs.append({"user_id": f"tu{u}", "item_id": ids[(7 * u) % len(ids)], "interaction_type": "view"})
    w.events(name, evs)
    r = w.api.post("/internal/ml/training/trigger", headers=w.keys[name + ":internal"], json={
        "training_config": {"model_type": "matrix_factorization",
                            "hyperparameters": {"embedding_dim": 16, "epochs": 6, "solver": "cholesky"}}})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    j = wait_for(lambda: (lambda b: b if b["status"] in ("completed", "failed") else None)(
        w.api.get(f"/internal/ml/training/{job}", headers=w.keys[name + ":internal"]).json()), timeout=120)
    assert j["status"] == "completed", j
    tid = w.tid(name)
    (version, hyper, metrics_json, losses_json), = w.rows(
        "SELECT model_version, hyperparameters, metrics, losses FROM rc_models WHERE tenant_id = ? "
        "AND is_current = 1", tid)
    assert version == "mf-1"
    import json
    hyper, metrics, losses = json.loads(hyper), json.loads(metrics_json), json.loads(losses_json)
    V = {e: unpack(b) for e, b in w.rows("SELECT entity_id, vector FROM rc_model_vectors WHERE tenant_id = ? "
                                           "AND model_version = ? AND kind = 'item'", tid, version)}
    U = {e: unpack(b) for e, b in w.rows("SELECT entity_id, vector FROM rc_model_vectors WHERE tenant_id = ? "
                                           "AND model_version = ? AND kind = 'user'", tid, version)}
    # serving switches to mf-1 and ranks by the stored factors: u . v over every unseen item
    user_id = "tu7"
    body = wait_for(lambda: (lambda b: b if b["model_version"] == version else None)(
        w.rec(name, {"user_id": user_id, "count": 8})), timeout=10)
    seen = {i for i, _ in history(w, name, user_id)}
    want = sorted(((float(V[i] @ U[user_id]), i) for i in V if i not in seen), key=lambda x: -x[0])[:8]
    same_ranking(body["recommendations"], want, tol=1e-3)
    assert body["strategy"] == "personalized"
    # the item embedding is the trained factor; the content vector stays selectable
    e = w.api.get(f"/api/v1/items/{ids[0]}/embedding", headers=w.keys[name + ":read"]).json()
    assert e["model_version"] == version and e["dimension"] == 16
    assert np.allclose(e["embedding"], V[ids[0]], atol=1e-6)
    e = w.api.get(f"/api/v1/items/{ids[0]}/embedding?model_version=content-pop-0", headers=w.keys[name + ":read"]).json()
    assert e["model_version"] == "content-pop-0" and e["dimension"] == 128
    old = w.rec(name, {"user_id": user_id, "count": 3, "model_version": "content-pop-0"})
    assert old["model_version"] == "content-pop-0"
    same_ranking(old["recommendations"], expected_content(w, name, user_id, count=3)[0])
    # a new interaction: exact ALS fold-in over the user's items, checked against numpy
    w.events(name, [{"user_id": user_id, "item_id": "tkitchen-2", "interaction_type": "purchase"},
                    {"user_id": user_id, "item_id": "tkitchen-6", "interaction_type": "like"}])
    after = w.rec(name, {"user_id": user_id, "count": 8})
    assert after["cache_hit"] is False and after["recommendations"] != body["recommendations"]
    order = list(V)
    Vm = np.array([V[i] for i in order])
    hist = history(w, name, user_id)
    pairs = [(order.index(i), wgt) for i, wgt in hist if i in V and wgt != 0]
    u = als_fold_in(Vm, Vm.T @ Vm, pairs, hyper["regularization"], hyper["alpha"])
    seen = {i for i, _ in hist}
    want = sorted(((float(V[i] @ u), i) for i in V if i not in seen), key=lambda x: -x[0])[:8]
    same_ranking(after["recommendations"], want, tol=2e-3)
    # a user unknown to the model with a few interactions folds in too (no retraining)
    w.events(name, [{"user_id": "t-newbie", "item_id": "tgarden-1", "interaction_type": "purchase"}])
    nb = w.rec(name, {"user_id": "t-newbie", "count": 5})
    u = als_fold_in(Vm, Vm.T @ Vm, [(order.index("tgarden-1"), 5.0)], hyper["regularization"], hyper["alpha"])
    want = sorted(((float(V[i] @ u), i) for i in V if i != "tgarden-1"), key=lambda x: -x[0])[:5]
    same_ranking(nb["recommendations"], want, tol=2e-3)
    # the metrics come from rc_models
    text = w.api.get("/metrics", headers=w.keys[name + ":internal"]).text
    for key in ("recall_at_10", "ndcg_at_10"):
        got = metric_value(text, "ml_recommendation_quality", tenant_id=tid, model_version=version, metric_name=key)
        assert abs(got - metrics[key]) < 1e-9
    for epoch, loss in enumerate(losses, 1):
        got = metric_value(text, "ml_training_loss", tenant_id=tid, model_version=version, epoch=str(epoch))
        assert math.isclose(got, loss, rel_tol=1e-9)
    (created, completed), = w.rows("SELECT created_at, completed_at FROM rc_models WHERE tenant_id = ? "
                                   "AND model_version = ?", tid, version)
    got = metric_value(text, "ml_training_duration_seconds", tenant_id=tid, model_type="matrix_factorization")
    assert abs(got - (completed - created) / 1000) < 1e-9
    promtool_ok(text)


def test_trained_gnn_mixing_rule_and_older_versions(world):
    """gnn (and two_tower) keep no fold-in solver: serving moves the trained vector towards the
    weighted mean of the items stored since training (README "### Serving"). Runs after the mf
    test on the same tenant."""
    w = world
    name, tid = "umbrella", w.tid("umbrella")
    r = w.api.post("/internal/ml/training/trigger", headers=w.keys[name + ":internal"], json={
        "training_config": {"model_type": "gnn", "hyperparameters": {"embedding_dim": 16, "epochs": 4}}})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    j = wait_for(lambda: (lambda b: b if b["status"] in ("completed", "failed") else None)(
        w.api.get(f"/internal/ml/training/{job}", headers=w.keys[name + ":internal"]).json()), timeout=120)
    assert j["status"] == "completed", j
    (version, trained_ms), = w.rows("SELECT model_version, created_at FROM rc_models WHERE tenant_id = ? "
                                    "AND is_current = 1", tid)
    assert version == "gnn-1"
    V = {e: unpack(b) for e, b in w.rows("SELECT entity_id, vector FROM rc_model_vectors WHERE tenant_id = ? "
                                           "AND model_version = ? AND kind = 'item'", tid, version)}
    U = {e: unpack(b) for e, b in w.rows("SELECT entity_id, vector FROM rc_model_vectors WHERE tenant_id = ? "
                                           "AND model_version = ? AND kind = 'user'", tid, version)}
    user_id = "tu11"
    body = wait_for(lambda: (lambda b: b if b["model_version"] == version else None)(
        w.rec(name, {"user_id": user_id, "count": 6})), timeout=10)
    seen = {i for i, _ in history(w, name, user_id)}
    want = sorted(((float(V[i] @ U[user_id]), i) for i in V if i not in seen), key=lambda x: -x[0])[:6]
    same_ranking(body["recommendations"], want, tol=1e-3)
    # two new interactions: u' = (1 - b) u + b |u| m, m the unit weighted mean of the new items'
    # vectors (weight x 0.5^(position / 10), newest first), b = n / (n + 4)
    w.events(name, [{"user_id": user_id, "item_id": "tbooks-3", "interaction_type": "purchase"},
                    {"user_id": user_id, "item_id": "tbooks-5", "interaction_type": "click"}])
    after = w.rec(name, {"user_id": user_id, "count": 6})
    hist = history(w, name, user_id)
    stored = dict(w.rows("SELECT item_id, max(created_at) FROM rc_interactions WHERE tenant_id = ? "
                         "AND user_id = ? GROUP BY item_id", tid, user_id))
    m, n = np.zeros(16), 0
    for pos, (i, wgt) in enumerate(hist):
        if stored[i] > trained_ms and i in V and wgt != 0:
            m += wgt * 0.5 ** (pos / 10) * V[i]
            n += 1
    assert n == 2
    m /= np.linalg.norm(m)
    u0 = U[user_id]
    b = n / (n + 4)
    u = (1 - b) * u0 + b * np.linalg.norm(u0) * m
    seen = {i for i, _ in hist}
    want = sorted(((float(V[i] @ u), i) for i in V if i not in seen), key=lambda x: -x[0])[:6]
    same_ranking(after["recommendations"], want, tol=1e-3)
    # the previous version stays selectable (loaded again on demand), and so does content-pop-0
    old = w.rec(name, {"user_id": user_id, "count": 3, "model_version": "mf-1"})
    assert old["model_version"] == "mf-1"
    assert w.rec(name, {"user_id": user_id, "count": 3, "model_version": "content-pop-0"})["model_version"] == "content-pop-0"
    assert err(w.api.post("/internal/ml/recommendations", headers=w.keys[name + ":internal"],
                          json={"user_id": user_id, "model_version": "tt-1"})) == (404, "NOT_FOUND", "model_version")


def test_index_served_catalog(tmp_path):
    """A catalog at --recs-ann-min-items is served through the IVF index: every answer still
    honours seen items, exclude_ids and categories, its scores are the exact dot products
    (numpy), and the first search, which is also run exactly, sets ml_ann_recall_sampled to
    the share of numpy's exact top 10 the answer holds."""
    data = str(tmp_path)
    t = {"acme": tenant(data, "Acme", "acme.example", "--plan", "enterprise")}
    user(data, "acme.example", "dev@acme.example", "developer")
    s = Server("--rate-limit", "recs=1000000/60", "--recs-ann-min-items", "40", data=data)
    try:
        w = World(data, s, t)
        w.tok["acme"] = bearer(login(w.api, "dev@acme.example")["access_token"])
        w.keys["acme:internal"] = w.key("acme", ["internal"])
        w.items("acme", catalog())
        w.events("acme", [{"user_id": "u-ann", "item_id": "audio-1", "interaction_type": "purchase"},
                          {"user_id": "u-ann", "item_id": "audio-4", "interaction_type": "click"}])
        got = w.rec("acme", {"user_id": "u-ann", "count": 10,
                             "filters": {"exclude_ids": ["audio-2"]}})["recommendations"]
        want, u, vecs = expected_content(w, "acme", "u-ann", count=10, exclude={"audio-2"})
        ids = [r["item_id"] for r in got]
        assert "content-pop-0 index: " in s.stderr()  # 40 items: the model has an index
        assert len(ids) == 10 and not {"audio-1", "audio-4", "audio-2"} & set(ids)
        for r in got:  # exact scores, best first
            assert abs(r["score"] - float(vecs[r["item_id"]] @ u)) < 1e-4
        assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
        hits = len(set(ids) & {i for _, i in want})
        text = w.api.get("/metrics", headers=w.keys["acme:internal"]).text
        assert metric_value(text, "ml_ann_recall_sampled", tenant_id=w.tid("acme"),
                            model_version="content-pop-0") == pytest.approx(hits / len(want))
        # a category filter leaving fewer items than asked for: every one of them, in order
        got = w.rec("acme", {"user_id": "u-ann", "count": 10,
                             "filters": {"categories": ["audio"]}})["recommendations"]
        same_ranking(got, expected_content(w, "acme", "u-ann", count=10, categories={"audio"})[0])
    finally:
        w.api.close()
        s.stop()
