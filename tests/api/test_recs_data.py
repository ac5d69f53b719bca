"""recs catalog, interactions, content embeddings, usage and quotas (contracts/recs.md sections
2, 5, 8, 9) against the real binary: every section 9 rule one by one, accepted/rejected counts,
upserts, the internal-key rules, cross-tenant isolation, content-embedding neighbours, usage
counters equal to the calls made, and the plan quota's 429."""
import math
import sqlite3
import struct
import time
from datetime import datetime, timedelta, timezone

import pytest

from accounts import bearer, login, tenant, user
from conftest import Api, Server

ITYPES = ["view", "click", "purchase", "like", "dislike", "add_to_cart", "remove_from_cart"]


def wait_for(pred, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class World:
    def __init__(self, data, server, tenants):
        self.data, self.server, self.tenants = data, server, tenants
        self.api = Api(server)
        self.tok = {}
        self.keys = {}

    def db(self):
        return sqlite3.connect(f"file:{self.data}/tessera.db?mode=ro", uri=True)

    def rows(self, sql, *args):
        c = self.db()
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.close()

    def key(self, tenant_name, perms):
        r = self.api.post("/api/v1/api-keys", headers=self.tok[tenant_name + ":dev"],
                          json={"name": "k-" + "-".join(perms), "permissions": perms})
        assert r.status_code == 201, r.text
        return bearer(r.json()["key"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("recs-data"))
    t = {"acme": tenant(data, "Acme", "acme.example"),
         "globex": tenant(data, "Globex", "globex.example", "--plan", "pro"),
         "initech": tenant(data, "Initech", "initech.example", "--plan", "enterprise")}
    for name in t:
        user(data, f"{name}.example", f"dev@{name}.example", "developer")
    user(data, "acme.example", "viewer@acme.example", "viewer")
    s = Server("--rate-limit", "recs=1000000/60", data=data)
    w = World(data, s, t)
    for name in t:
        w.tok[name + ":dev"] = bearer(login(w.api, f"dev@{name}.example")["access_token"])
    w.tok["acme:viewer"] = bearer(login(w.api, "viewer@acme.example")["access_token"])
    w.keys["acme:read"] = w.key("acme", ["read"])
    w.keys["acme:write"] = w.key("acme", ["write"])
    w.keys["acme:internal"] = w.key("acme", ["internal"])
    w.keys["globex:internal"] = w.key("globex", ["internal"])
    w.keys["initech:write"] = w.key("initech", ["write"])
    w.keys["initech:internal"] = w.key("initech", ["internal"])
    yield w
    w.api.close()
    s.stop()


def item(i, **kw):
    base = {"item_id": f"it-{i}", "title": f"Item {i}", "description": "d", "category": "misc",
            "tags": ["t"]}
    base.update(kw)
    return base


def post_items(w, items, who="acme:dev", internal=False, **extra):
    hdr = w.keys[who] if who in w.keys else w.tok[who]
    path = "/internal/data/items" if internal else "/api/v1/items"
    return w.api.post(path, headers=hdr, json={"items": items, **extra})


def err_field(r):
    e = r.json()["error"]
    return e["details"].get("field"), e["code"]


# ---------- items ----------

def test_items_upload_upsert_and_counts(world):
    w = world
    tid = w.tenants["acme"]["id"]
    r = post_items(w, [item("u1", title="Alpha", created_at="2024-03-01T10:00:00+02:00",
                            metadata={"brand": "A", "n": 1}),
                       item("u2", title="Beta"), {"item_id": "u3"}])
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["validation_errors"] == [{"index": 2, "item_id": "u3", "field": "title",
                                          "error": "Missing required field: title"}]
    rows = w.rows("SELECT item_id, title, category, tags, metadata, created_at FROM rc_items "
                  "WHERE tenant_id = ? AND item_id IN ('it-u1', 'it-u2', 'u3') ORDER BY item_id", tid)
    created = int(datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
    assert rows[0] == ("it-u1", "Alpha", "misc", '["t"]', '{"brand":"A","n":1}', created)
    assert rows[1][:2] == ("it-u2", "Beta") and len(rows) == 2
    # upsert: same ids replace the item (no new row); created_at kept when not given
    r = post_items(w, [item("u1", title="Alpha 2", category=None, tags=None), item("u2", title="Beta 2")])
    assert r.json() == {"accepted": 2, "rejected": 0, "validation_errors": []}
    rows = w.rows("SELECT item_id, title, category, tags, metadata, created_at FROM rc_items "
                  "WHERE tenant_id = ? AND item_id IN ('it-u1', 'it-u2') ORDER BY item_id", tid)
    assert rows[0] == ("it-u1", "Alpha 2", "", "[]", "{}", created)
    assert rows[1][1] == "Beta 2"
    # a duplicate inside one call: both count, the later one stands
    r = post_items(w, [item("u9", title="first"), item("u9", title="second")])
    assert (r.json()["accepted"], r.json()["rejected"]) == (2, 0)
    assert w.rows("SELECT title FROM rc_items WHERE tenant_id = ? AND item_id = 'it-u9'", tid) == [("second",)]
    # an empty batch is fine
    assert post_items(w, []).json() == {"accepted": 0, "rejected": 0, "validation_errors": []}


RULES = [  # (changes to a good item, field named, what the error says)
    ({"item_id": "a b"}, "item_id", "letter, digit"),
    ({"item_id": "a/b"}, "item_id", "letter, digit"),
    ({"item_id": "caf\u00e9"}, "item_id", "letter, digit"),
    ({"item_id": "x" * 129}, "item_id", "1-128"),
    ({"item_id": ""}, "item_id", "1-128"),
    ({"item_id": 5}, "item_id", "1-128"),
    ({"item_id": None}, "item_id", "Missing required field: item_id"),
    ({"title": None}, "title", "Missing required field: title"),
    ({"title": ""}, "title", "Missing required field: title"),
    ({"title": 7}, "title", "title must be a string"),
    ({"title": "t" * 1001}, "title", "at most 1000"),
    ({"description": "d" * 10001}, "description", "at most 10000"),
    ({"category": "Books"}, "category", "lowercase"),
    ({"category": "home_garden"}, "category", "lowercase"),
    ({"category": "c" * 65}, "category", "1-64"),
    ({"category": ""}, "category", "1-64"),
    ({"tags": [f"t{i}" for i in range(21)]}, "tags", "at most 20"),
    ({"tags": "t"}, "tags", "array"),
    ({"tags": ["ok", "x" * 33]}, "tags[1]", "at most 32"),
    ({"tags": ["ok", ""]}, "tags[1]", "non-empty"),
    ({"tags": [3]}, "tags[0]", "string"),
    ({"metadata": [1, 2]}, "metadata", "JSON object"),
    ({"metadata": {"x": "y" * 17000}}, "metadata", "16384 bytes"),
    ({"created_at": "yesterday"}, "created_at", "ISO 8601"),
    ({"created_at": "2025-02-30T00:00:00Z"}, "created_at", "ISO 8601"),
]
LIMITS_OK = [  # the values right at each limit are accepted
    {"item_id": "x" * 128}, {"item_id": "A-z_0-9"}, {"category": "c" * 64}, {"category": "home-garden-2"},
    {"tags": [f"t{i}" for i in range(20)]}, {"tags": ["x" * 32, "\u00e9" * 32]}, {"title": "t" * 1000},
    {"title": "\u00e9" * 1000}, {"description": None, "category": None, "tags": None, "metadata": None},
    {"created_at": "2025-01-31"},
]


@pytest.mark.parametrize("internal", [False, True])
def test_item_rules_one_by_one(world, internal):
    w = world
    who = "acme:internal" if internal else "acme:dev"
    prefix = "in" if internal else "pub"
    batch = []
    for n, (change, _, _) in enumerate(RULES):
        batch.append(item(f"{prefix}-bad-{n}", **change))
    for n, change in enumerate(LIMITS_OK):
        good = item(f"{prefix}-ok-{n}", **change)
        if "item_id" in change:  # the same limit, a different id for each route
            good["item_id"] = prefix[0] + change["item_id"][1:]
        batch.append(good)
    r = post_items(w, batch, who=who, internal=internal)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == len(LIMITS_OK) and body["rejected"] == len(RULES)
    errors = {e["index"]: e for e in body["validation_errors"]}
    assert sorted(errors) == list(range(len(RULES)))
    for n, (change, field, words) in enumerate(RULES):
        e = errors[n]
        assert e["field"] == field, (change, e)
        assert words in e["error"], (change, e)
        sent = batch[n]["item_id"]
        assert e["item_id"] == (sent if isinstance(sent, str) else None)
    stored = {r[0] for r in w.rows("SELECT item_id FROM rc_items WHERE tenant_id = ?", w.tenants["acme"]["id"])}
    for n in range(len(RULES)):
        assert batch[n]["item_id"] not in stored, batch[n]
    for g in batch[len(RULES):]:
        assert g["item_id"] in stored


def test_item_batch_limit_and_body_errors(world):
    w = world
    tid = w.tenants["acme"]["id"]
    over = [{"item_id": f"lim-{i}", "title": "x"} for i in range(10001)]
    r = post_items(w, over)
    assert r.status_code == 400 and err_field(r) == ("items", "VALIDATION_ERROR")
    assert "items[10000]" in r.json()["error"]["message"]
    assert w.rows("SELECT COUNT(*) FROM rc_items WHERE tenant_id = ? AND item_id LIKE 'lim-%'", tid) == [(0,)]
    r = post_items(w, over[:10000])
    assert r.status_code == 200 and r.json()["accepted"] == 10000
    assert w.rows("SELECT COUNT(*) FROM rc_items WHERE tenant_id = ? AND item_id LIKE 'lim-%'", tid) == [(10000,)]
    for bad, field in [({}, "items"), ({"items": {"a": 1}}, "items"), ({"items": "x"}, "items")]:
        r = w.api.post("/api/v1/items", headers=w.tok["acme:dev"], json=bad)
        assert r.status_code == 400 and err_field(r) == (field, "VALIDATION_ERROR"), bad
    r = w.api.post("/api/v1/items", headers={**w.tok["acme:dev"], "Content-Type": "application/json"},
                   content=b'{"items": [')
    assert r.status_code == 400
    r = w.api.post("/api/v1/items", headers={**w.tok["acme:dev"], "Content-Type": "text/plain"},
                   content=b'{"items": []}')
    assert r.status_code == 415
    # the 10,000 stored items all get their content vectors, in chunks, while the server serves
    wait_for(lambda: w.rows("SELECT COUNT(*) FROM rc_item_content WHERE tenant_id = ? AND item_id LIKE 'lim-%'",
                            tid) == [(10000,)], timeout=60)
    assert w.api.get("/health").status_code == 200


# ---------- interactions ----------

def test_track_every_type_and_defaults(world):
    w = world
    tid = w.tenants["acme"]["id"]
    ids = []
    before = int(time.time() * 1000) - 1000
    for t in ITYPES:
        r = w.api.post("/api/v1/interactions", headers=w.keys["acme:write"],
                       json={"user_id": "user_7", "item_id": "not-in-catalog", "interaction_type": t})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "accepted"
        ids.append(r.json()["interaction_id"])
    after = int(time.time() * 1000) + 1000
    assert len(set(ids)) == 7 and all(i[14] == "7" for i in ids)  # UUIDv7
    rows = w.rows("SELECT interaction_id, type, timestamp, user_id, item_id FROM rc_interactions "
                  "WHERE tenant_id = ? AND user_id = 'user_7' ORDER BY id", tid)
    assert [r[0] for r in rows] == ids and [r[1] for r in rows] == ITYPES
    assert all(before <= r[2] <= after for r in rows)  # default: now (UTC)
    # a given time in another zone is stored as its UTC instant; context and metadata kept
    r = w.api.post("/api/v1/interactions", headers=w.tok["acme:dev"],
                   json={"user_id": "user-8", "item_id": "it-u1", "interaction_type": "purchase",
                         "timestamp": "2025-06-01T12:00:00+05:30",
                         "context": {"device_type": "mobile", "session_id": "s-1", "page": 3},
                         "metadata": {"price": 9.5}})
    assert r.status_code == 201
    row = w.rows("SELECT timestamp, device_type, session_id, context, metadata FROM rc_interactions "
                 "WHERE tenant_id = ? AND interaction_id = ?", tid, r.json()["interaction_id"])[0]
    assert row[0] == int(datetime(2025, 6, 1, 6, 30, tzinfo=timezone.utc).timestamp() * 1000)
    assert row[1:] == ("mobile", "s-1", '{"device_type":"mobile","session_id":"s-1","page":3}', '{"price":9.5}')


EVENT_RULES = [
    ({"user_id": "a b"}, "user_id"), ({"user_id": "u" * 129}, "user_id"), ({"user_id": None}, "user_id"),
    ({"user_id": ""}, "user_id"), ({"item_id": "i;drop"}, "item_id"), ({"item_id": "i" * 129}, "item_id"),
    ({"item_id": None}, "item_id"), ({"interaction_type": "share"}, "interaction_type"),
    ({"interaction_type": "VIEW"}, "interaction_type"), ({"interaction_type": None}, "interaction_type"),
    ({"timestamp": "2025-13-01T00:00:00Z"}, "timestamp"), ({"timestamp": "now"}, "timestamp"),
    ({"timestamp": 1700000000}, "timestamp"),
    ({"timestamp": (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")}, "timestamp"),
    ({"context": "mobile"}, "context"), ({"context": {"session_id": "s" * 129}}, "context.session_id"),
    ({"context": {"device_type": 4}}, "context.device_type"), ({"metadata": 3}, "metadata"),
]


def good_event(**kw):
    e = {"user_id": "u-1", "item_id": "i-1", "interaction_type": "click"}
    e.update(kw)
    return e


def test_track_rules_one_by_one(world):
    w = world
    tid = w.tenants["acme"]["id"]
    n0 = w.rows("SELECT COUNT(*) FROM rc_interactions WHERE tenant_id = ?", tid)[0][0]
    for change, field in EVENT_RULES:
        r = w.api.post("/api/v1/interactions", headers=w.tok["acme:dev"], json=good_event(**change))
        assert r.status_code == 400, (change, r.text)
        assert err_field(r) == (field, "VALIDATION_ERROR"), (change, r.text)
        assert r.json()["error"]["details"]["reason"]
    assert w.rows("SELECT COUNT(*) FROM rc_interactions WHERE tenant_id = ?", tid)[0][0] == n0
    # at the limits
    for change in [{"user_id": "u" * 128}, {"item_id": "I-_9" * 32}, {"timestamp": "2025-01-01"},
                   {"context": None, "metadata": None, "timestamp": None}]:
        r = w.api.post("/api/v1/interactions", headers=w.tok["acme:dev"], json=good_event(**change))
        assert r.status_code == 201, (change, r.text)


def test_internal_interactions_batch(world):
    w = world
    tid = w.tenants["acme"]["id"]
    batch = [good_event(user_id=f"bu-{i % 3}", item_id=f"bi-{i}", interaction_type=ITYPES[i % 7])
             for i in range(10)]
    bad_at = {}
    for k, (change, field) in enumerate(EVENT_RULES):
        bad_at[len(batch)] = field
        batch.append({**good_event(user_id=f"bad-{k}"), **change})
    batch.append("not an object")
    bad_at[len(batch) - 1] = "interactions"
    r = w.api.post("/internal/data/interactions", headers=w.keys["acme:internal"],
                   json={"tenant_id": tid, "interactions": batch})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 10 and body["rejected"] == len(bad_at)
    got = {e["index"]: e for e in body["validation_errors"]}
    assert {i: e["field"] for i, e in got.items()} == bad_at
    e = got[10]
    assert e["user_id"] == "a b" and e["item_id"] == "i-1"
    assert got[len(batch) - 1]["user_id"] is None
    rows = w.rows("SELECT user_id, item_id, type FROM rc_interactions WHERE tenant_id = ? AND user_id LIKE 'bu-%' "
                  "ORDER BY id", tid)
    assert rows == [(f"bu-{i % 3}", f"bi-{i}", ITYPES[i % 7]) for i in range(10)]
    # limits: 10,001 refused whole, naming the array
    r = w.api.post("/internal/data/interactions", headers=w.keys["acme:internal"],
                   json={"interactions": [good_event()] * 10001})
    assert r.status_code == 400 and err_field(r) == ("interactions", "VALIDATION_ERROR")
    assert "interactions[10000]" in r.json()["error"]["message"]
    r = w.api.post("/internal/data/interactions", headers=w.keys["acme:internal"],
                   json={"interactions": [good_event(user_id=f"big-{i % 50}", item_id=f"x{i}") for i in range(10000)]})
    assert r.status_code == 200 and r.json()["accepted"] == 10000
    assert w.rows("SELECT COUNT(*) FROM rc_interactions WHERE tenant_id = ? AND user_id LIKE 'big-%'", tid) == [(10000,)]
    r = w.api.post("/internal/data/interactions", headers=w.keys["acme:internal"], json={"tenant_id": tid})
    assert r.status_code == 400 and err_field(r)[0] == "interactions"


# ---------- who may call ----------

def test_internal_routes_need_internal_keys(world):
    w = world
    acme, globex = w.tenants["acme"]["id"], w.tenants["globex"]["id"]
    one_item = {"items": [item("auth-1")]}
    one_event = {"interactions": [good_event()]}
    for path, body in [("/internal/data/items", one_item), ("/internal/data/interactions", one_event)]:
        for who in ["acme:dev", "acme:viewer"]:
            r = w.api.post(path, headers=w.tok[who], json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", (path, who)
        for who in ["acme:read", "acme:write"]:
            r = w.api.post(path, headers=w.keys[who], json=body)
            assert r.status_code == 403, (path, who)
        assert w.api.post(path, json=body).status_code == 401
        r = w.api.post(path, headers=w.keys["acme:internal"], json=body)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = w.api.post(path, headers=w.keys["acme:internal"], json={**body, "tenant_id": acme})
        assert r.status_code == 200
        # another tenant's id in the body: refused, never used to pick the tenant
        r = w.api.post(path, headers=w.keys["acme:internal"], json={**body, "tenant_id": globex})
        assert r.status_code == 403 and err_field(r) == ("tenant_id", "FORBIDDEN")
        r = w.api.post(path, headers=w.keys["acme:internal"], json={**body, "tenant_id": 12})
        assert r.status_code == 400 and err_field(r) == ("tenant_id", "VALIDATION_ERROR")
    # public routes: writers and write/internal keys; not viewers or read keys
    for hdr in [w.tok["acme:viewer"], w.keys["acme:read"]]:
        assert w.api.post("/api/v1/items", headers=hdr, json=one_item).status_code == 403
        assert w.api.post("/api/v1/interactions", headers=hdr, json=good_event()).status_code == 403
    for hdr in [w.keys["acme:write"], w.keys["acme:internal"]]:
        assert w.api.post("/api/v1/items", headers=hdr, json=one_item).status_code == 200
        assert w.api.post("/api/v1/interactions", headers=hdr, json=good_event()).status_code == 201
    assert w.api.post("/api/v1/interactions", json=good_event()).status_code == 401
    for hdr in [w.tok["acme:viewer"], w.keys["acme:read"], w.keys["acme:internal"]]:
        assert w.api.get("/api/v1/usage", headers=hdr).status_code == 200
    assert w.api.get("/api/v1/usage", headers=w.keys["acme:write"]).status_code == 403


def test_cross_tenant_isolation(world):
    w = world
    acme, globex = w.tenants["acme"]["id"], w.tenants["globex"]["id"]
    post_items(w, [item("shared", title="Acme thing")])
    r = post_items(w, [item("shared", title="Globex thing")], who="globex:internal", internal=True,
                   tenant_id=globex)
    assert r.json()["accepted"] == 1
    got = dict(w.rows("SELECT tenant_id, title FROM rc_items WHERE item_id = 'it-shared'"))
    assert got == {acme: "Acme thing", globex: "Globex thing"}
    r = w.api.post("/internal/data/interactions", headers=w.keys["globex:internal"],
                   json={"interactions": [good_event(user_id="iso-user")] * 3})
    assert r.json()["accepted"] == 3
    assert w.rows("SELECT tenant_id, COUNT(*) FROM rc_interactions WHERE user_id = 'iso-user' GROUP BY 1") == [(globex, 3)]
    # vectors are per tenant too, each from its own title
    wait_for(lambda: len(w.rows("SELECT 1 FROM rc_item_content WHERE item_id = 'it-shared'")) == 2)
    vecs = dict(w.rows("SELECT tenant_id, vector FROM rc_item_content WHERE item_id = 'it-shared'"))
    assert vecs[acme] != vecs[globex]


# ---------- content embeddings ----------

GROUPS = {
    "audio": [("Wireless noise cancelling headphones", "Over-ear headphones with 30 hours of battery", "audio", ["headphones", "wireless", "bluetooth"]),
              ("Bluetooth earbuds with charging case", "Wireless in-ear headphones, noise cancelling", "audio", ["earbuds", "wireless", "bluetooth"]),
              ("Studio monitor headphones", "Closed-back wired headphones for mixing", "audio", ["headphones", "studio"])],
    "books": [("A history of ancient Rome", "Emperors, senate and legions of the Roman empire", "books", ["history", "rome", "ancient"]),
              ("The fall of the Roman republic", "Caesar, Pompey and the end of the republic", "books", ["history", "rome"]),
              ("Ancient Greece: a history", "From Homer to Alexander: Athens, Sparta and the ancient world", "books", ["history", "ancient", "greece"])],
    "kitchen": [("Cast iron skillet 12 inch", "Pre-seasoned cast iron pan for searing and baking", "kitchen", ["cookware", "cast-iron", "skillet"]),
                ("Enamelled cast iron dutch oven", "Heavy pot for braising, stews and baking bread", "kitchen", ["cookware", "cast-iron"]),
                ("Carbon steel wok", "Wok pan for stir fry, seasoned like cast iron", "kitchen", ["cookware", "wok"])],
    "garden": [("Cordless hedge trimmer", "Battery hedge trimmer for the garden, 50 cm blade", "garden", ["garden", "trimmer", "cordless"]),
               ("Electric lawn mower", "Corded lawn mower for small gardens", "garden", ["garden", "lawn", "mower"]),
               ("Garden hose reel 30 m", "Hose reel cart for watering the garden and lawn", "garden", ["garden", "hose", "watering"])],
}


def vec(blob):
    v = struct.unpack(f"<{len(blob) // 4}f", blob)
    return v


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_content_embeddings_neighbours(world):
    w = world
    tid = w.tenants["initech"]["id"]
    items, group_of = [], {}
    for g, rows in GROUPS.items():
        for n, (title, desc, cat, tags) in enumerate(rows):
            iid = f"{g}-{n}"
            group_of[iid] = g
            items.append({"item_id": iid, "title": title, "description": desc, "category": cat, "tags": tags})
    r = post_items(w, items, who="initech:write")
    assert r.json()["accepted"] == len(items)
    rows = wait_for(lambda: (lambda got: got if len(got) == len(items) else None)(
        w.rows("SELECT item_id, dim, vector, features_hash, updated_at FROM rc_item_content WHERE tenant_id = ?", tid)))
    vecs = {}
    for iid, dim, blob, fh, _ in rows:
        assert dim == 128 and len(blob) == 512 and len(fh) == 16
        v = vec(blob)
        assert abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4  # L2-normalised
        vecs[iid] = v
    within, across = [], []
    for a in vecs:
        others = sorted((b for b in vecs if b != a), key=lambda b: -cos(vecs[a], vecs[b]))
        assert group_of[others[0]] == group_of[a], (a, others[:3])  # nearest neighbour: same group
        assert group_of[others[1]] == group_of[a], (a, others[:3])
        for b in vecs:
            if b > a:
                (within if group_of[a] == group_of[b] else across).append(cos(vecs[a], vecs[b]))
    # each item is closer, on average, to its own group than to any other group
    for a in vecs:
        by = {}
        for b in vecs:
            if b != a:
                by.setdefault(group_of[b], []).append(cos(vecs[a], vecs[b]))
        own = sum(by[group_of[a]]) / len(by[group_of[a]])
        for g, cs in by.items():
            if g != group_of[a]:
                assert own > sum(cs) / len(cs) + 0.2, (a, g, own, cs)
    assert sum(within) / len(within) > 0.4 and abs(sum(across) / len(across)) < 0.1

    # unchanged features: the stored vector is not recomputed; a changed title is
    before = {r[0]: (r[2], r[4]) for r in rows}
    again = [dict(i) for i in items]
    again[0]["metadata"] = {"only": "metadata changed"}   # not an embedding feature
    again[1]["title"] = "Bluetooth speaker, waterproof"
    assert post_items(w, again, who="initech:write").json()["accepted"] == len(items)
    changed = wait_for(lambda: w.rows("SELECT vector FROM rc_item_content WHERE tenant_id = ? AND item_id = ? "
                                      "AND vector <> ?", tid, "audio-1", before["audio-1"][0]))
    assert changed
    time.sleep(0.3)
    after = {r[0]: (r[1], r[2]) for r in w.rows("SELECT item_id, vector, updated_at FROM rc_item_content "
                                                   "WHERE tenant_id = ?", tid)}
    for iid in before:
        if iid != "audio-1":
            assert after[iid] == before[iid], iid  # same vector, same write time: skipped


def test_content_vectors_rebuilt_at_start(tmp_path):
    """Vectors lost (deleted here, as a crash before the pool task would) are found missing and
    computed at the next start; a stale features_hash is recomputed too."""
    data = str(tmp_path)
    tenant(data, "Solo", "solo.example")
    user(data, "solo.example", "dev@solo.example", "developer")
    s = Server(data=data)
    try:
        api = Api(s)
        hdr = bearer(login(api, "dev@solo.example")["access_token"])
        items = [{"item_id": f"s{i}", "title": f"Solo item {i}", "tags": ["solo"]} for i in range(700)]
        assert api.post("/api/v1/items", headers=hdr, json={"items": items}).json()["accepted"] == 700
        db = f"file:{data}/tessera.db?mode=ro"
        wait_for(lambda: sqlite3.connect(db, uri=True).execute("SELECT COUNT(*) FROM rc_item_content").fetchone()[0] == 700)
        api.close()
    finally:
        s.stop()
    c = sqlite3.connect(f"{data}/tessera.db")
    good = c.execute("SELECT vector FROM rc_item_content WHERE item_id = 's5'").fetchone()[0]
    c.execute("DELETE FROM rc_item_content WHERE item_id <> 's5' AND item_id <> 's6'")
    c.execute("UPDATE rc_item_content SET features_hash = '0000000000000000', vector = zeroblob(512) WHERE item_id = 's5'")
    c.commit()
    c.close()
    s = Server(data=data)
    try:
        def done():
            with sqlite3.connect(f"file:{data}/tessera.db?mode=ro", uri=True) as r:
                return r.execute("SELECT COUNT(*) FROM rc_item_content WHERE features_hash <> '0000000000000000'").fetchone()[0] == 700
        wait_for(done)
        with sqlite3.connect(f"file:{data}/tessera.db?mode=ro", uri=True) as r:
            assert r.execute("SELECT vector FROM rc_item_content WHERE item_id = 's5'").fetchone()[0] == good
    finally:
        s.stop()


# ---------- usage ----------

def usage(w, hdr, query=""):
    r = w.api.get("/api/v1/usage" + query, headers=hdr)
    assert r.status_code == 200, r.text
    return r.json()


def test_usage_counts_the_calls_made(world):
    w = world
    tid = w.tenants["initech"]["id"]
    hdr = w.keys["initech:internal"]
    start = usage(w, hdr)["metrics"]  # earlier tests of this tenant; this call counts itself
    calls, stored = 0, 0
    for i in range(4):
        r = w.api.post("/api/v1/items", headers=hdr, json={"items": [item(f"use-{i}"), item(f"use-x{i}"), {"item_id": "bad id"}]})
        assert r.json()["accepted"] == 2
        calls, stored = calls + 1, stored + 2
    for i in range(5):
        assert w.api.post("/api/v1/interactions", headers=hdr, json=good_event()).status_code == 201
        calls += 1
    assert w.api.post("/api/v1/interactions", headers=hdr, json=good_event(user_id="x y")).status_code == 400
    calls += 1  # a call refused for bad input still counts
    r = w.api.post("/internal/data/interactions", headers=hdr, json={"interactions": [good_event()] * 7})
    assert r.json()["accepted"] == 7
    calls += 1
    r = w.api.post("/internal/data/items", headers=hdr, json={"items": [item("use-int")]})
    calls, stored = calls + 1, stored + 1
    now = usage(w, hdr)
    calls += 1
    m = now["metrics"]
    assert m["api_calls"] - start["api_calls"] == calls
    assert m["items_indexed"] - start["items_indexed"] == stored
    assert m["recommendations_served"] - start["recommendations_served"] == 0
    today = datetime.now(timezone.utc).date()
    first = today.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    assert now["period"] == {"start": first.isoformat(), "end": last.isoformat()}
    assert now["quota"] == {"plan": "enterprise", "api_calls_limit": None, "api_calls_used": m["api_calls"],
                            "percentage_used": None}
    # the counters reach rc_usage_daily within about a second; the figures agree with it
    def flushed():
        rows = w.rows("SELECT api_calls, items_indexed, recommendations_served, latency_ms_sum, latency_count "
                      "FROM rc_usage_daily WHERE tenant_id = ? AND day = ?", tid, today.isoformat())
        return rows and rows[0][0] == m["api_calls"] and rows[0]
    row = wait_for(flushed, timeout=5)
    assert row[1] == m["items_indexed"]
    assert abs(m["average_latency_ms"] - row[3] / row[4]) <= 0.006 and row[4] >= calls - 2
    # explicit periods
    day = usage(w, hdr, f"?start_date={today}&end_date={today}")
    assert day["period"] == {"start": str(today), "end": str(today)}
    assert day["metrics"]["api_calls"] == m["api_calls"] + 1  # this usage call itself
    empty = usage(w, hdr, "?start_date=2020-01-01&end_date=2020-01-31")
    assert empty["metrics"] == {"api_calls": 0, "recommendations_served": 0, "items_indexed": 0, "average_latency_ms": 0}
    assert usage(w, hdr, "?start_date=2020-02-10")["period"] == {"start": "2020-02-10", "end": "2020-02-29"}
    assert usage(w, hdr, "?end_date=2021-02-10T23:00:00-05:00")["period"] == {"start": "2021-02-01", "end": "2021-02-11"}
    # other tenants see only their own counts
    other = usage(w, w.tok["globex:dev"])
    assert other["quota"]["plan"] == "pro" and other["quota"]["api_calls_limit"] == 2000000
    g = w.rows("SELECT COALESCE(SUM(api_calls), 0) FROM rc_usage_daily WHERE tenant_id = ?", w.tenants["globex"]["id"])[0][0]
    assert g <= other["metrics"]["api_calls"]


@pytest.mark.parametrize("query,field", [
    ("?start_date=2025-13-01", "start_date"), ("?start_date=yesterday", "start_date"),
    ("?end_date=2025-02-30", "end_date"), ("?start_date=2025-03-01&end_date=2025-02-01", "end_date"),
    ("?start_date=2024-01-01&end_date=2025-01-02", "end_date"),
])
def test_usage_bad_dates(world, query, field):
    r = world.api.get("/api/v1/usage" + query, headers=world.tok["acme:viewer"])
    assert r.status_code == 400 and err_field(r) == (field, "VALIDATION_ERROR")


def test_usage_366_days_is_fine(world):
    u = usage(world, world.tok["acme:viewer"], "?start_date=2024-01-01&end_date=2024-12-31")
    assert u["period"] == {"start": "2024-01-01", "end": "2024-12-31"}


def test_quota_exceeded(tmp_path):
    data = str(tmp_path)
    tenant(data, "Small", "small.example")
    tenant(data, "Big", "big.example", "--plan", "pro")
    user(data, "small.example", "dev@small.example", "developer")
    user(data, "big.example", "dev@big.example", "developer")
    args = ["--recs-quota-starter", "6", "--recs-quota-pro", "0", "--rate-limit", "recs=100000/60"]
    s = Server(*args, data=data)
    try:
        api = Api(s)
        small = bearer(login(api, "dev@small.example")["access_token"])
        big = bearer(login(api, "dev@big.example")["access_token"])
        for i in range(4):
            assert api.post("/api/v1/interactions", headers=small, json=good_event()).status_code == 201
        assert api.post("/api/v1/items", headers=small, json={"items": [item("q")]}).status_code == 200
        u = api.get("/api/v1/usage", headers=small).json()  # the 6th call: usage is never refused
        assert u["quota"] == {"plan": "starter", "api_calls_limit": 6, "api_calls_used": 6, "percentage_used": 100.0}
        for path, body in [("/api/v1/interactions", good_event()), ("/api/v1/items", {"items": [item("q2")]})]:
            r = api.post(path, headers=small, json=body)
            assert r.status_code == 429 and r.json()["error"]["code"] == "QUOTA_EXCEEDED", r.text
            assert "starter" in r.json()["error"]["message"]
        assert api.get("/api/v1/usage", headers=small).status_code == 200
        # refused calls are not counted; another tenant (unlimited pro) is not affected
        assert api.get("/api/v1/usage", headers=small).json()["metrics"]["api_calls"] == 8
        for i in range(10):
            assert api.post("/api/v1/interactions", headers=big, json=good_event()).status_code == 201
        q = api.get("/api/v1/usage", headers=big).json()["quota"]
        assert q == {"plan": "pro", "api_calls_limit": None, "api_calls_used": 11, "percentage_used": None}
        api.close()
    finally:
        s.stop()
    # the month's count survives a restart (flushed at shutdown, loaded at start)
    s = Server(*args, data=data)
    try:
        api = Api(s)
        small = bearer(login(api, "dev@small.example")["access_token"])
        r = api.post("/api/v1/interactions", headers=small, json=good_event())
        assert r.status_code == 429 and r.json()["error"]["code"] == "QUOTA_EXCEEDED"
        u = api.get("/api/v1/usage", headers=small).json()
        assert u["quota"]["api_calls_used"] == 9 and u["quota"]["percentage_used"] == round(100 * 9 / 6, 2)
        api.close()
    finally:
        s.stop()
    with sqlite3.connect(f"file:{data}/tessera.db?mode=ro", uri=True) as c:
        assert c.execute("SELECT SUM(api_calls) FROM rc_usage_daily").fetchone()[0] == 9 + 11


def test_quota_resets_with_the_month(tmp_path):
    """On the server's test clock: a tenant over its quota may call again once the UTC month
    turns, and last month's calls stay in last month's usage."""
    data = str(tmp_path / "d")
    import os
    os.mkdir(data)
    clock = tmp_path / "clock"
    clock.write_text("0")
    tenant(data, "Small", "small.example")
    user(data, "small.example", "dev@small.example", "developer")
    s = Server("--recs-quota-starter", "3", data=data,
               env={"TESSERA_TEST_CLOCK_FILE": str(clock)})
    try:
        api = Api(s)
        hdr = bearer(login(api, "dev@small.example")["access_token"])
        for _ in range(3):
            assert api.post("/api/v1/interactions", headers=hdr, json=good_event()).status_code == 201
        assert api.post("/api/v1/interactions", headers=hdr, json=good_event()).status_code == 429
        now = datetime.now(timezone.utc)
        this_month = now.date().replace(day=1)
        nxt = (this_month + timedelta(days=32)).replace(day=1)
        shift = datetime(nxt.year, nxt.month, 1, 1, 0, tzinfo=timezone.utc) - now
        clock.write_text(str(int(shift.total_seconds() * 1000)))
        time.sleep(0.3)  # the server reads the clock file every 50 ms
        hdr = bearer(login(api, "dev@small.example")["access_token"])  # the old token expired
        r = wait_for(lambda: (lambda r: r if r.status_code == 201 else None)(
            api.post("/api/v1/interactions", headers=hdr, json=good_event())))
        assert r.status_code == 201
        u = api.get("/api/v1/usage", headers=hdr).json()
        assert u["period"]["start"] == nxt.isoformat()
        assert u["metrics"]["api_calls"] == 2 and u["quota"]["api_calls_used"] == 2
        last = (nxt - timedelta(days=1)).isoformat()
        old = api.get(f"/api/v1/usage?start_date={this_month}&end_date={last}", headers=hdr).json()
        assert old["metrics"]["api_calls"] == 3
        api.close()
    finally:
        s.stop()
