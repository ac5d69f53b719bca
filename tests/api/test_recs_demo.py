"""`tessera serve --demo` recs data (src/surfaces/recs/demo.c, tools/recs_gen.c) at
--demo-scale 0.05: the documented sizes (scale 1 is 20,000 items, 50,000 users, 1,000,000
interactions, 40 clusters; they scale linearly), catalog text and content embeddings that
reflect the planted taste clusters, interactions of all seven types over 90 days that
concentrate in each user's planted clusters, recs-gen reproducing the demo byte for byte, and
the first model trained at start beating popularity. Figures are read with sqlite3 (read-only)
from the data dir and checked in Python; the planted truth comes from recs-gen --users-out."""
import collections
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import time

import numpy as np
import pytest

from accounts import bearer, login
from conftest import BIN, Api, Server

SCALE = 0.05
# tools/recs_gen.h RG_DEMO_* times SCALE (README "recs / Demo data")
ITEMS, USERS, INTERACTIONS, CLUSTERS, DAYS = 1000, 2500, 50000, 40, 90
DAY_MS = 86400000
DIM = 128
TYPES = {"view", "click", "add_to_cart", "purchase", "like", "dislike", "remove_from_cart"}
GEN = os.path.join(os.path.dirname(os.path.abspath(BIN)), "recs-gen")
PASSWORD = "tessera-demo"


class DemoServer(Server):
    def wait_ready(self, timeout=120):
        return super().wait_ready(timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = tmp_path_factory.mktemp("recs-demo")
    s = DemoServer("--demo", "--demo-scale", str(SCALE), "--rate-limit", "recs=1000000/60",
                   data=str(data))
    api = Api(s)
    db = sqlite3.connect(f"file:{data}/tessera.db?mode=ro", uri=True, timeout=10)
    tenant = db.execute("SELECT id FROM tenants WHERE domain = 'demo.tessera.local'").fetchone()[0]
    end = db.execute("SELECT min(created_at), max(created_at) FROM rc_interactions WHERE "
                     "tenant_id = ?", (tenant,)).fetchone()
    assert end[0] == end[1]  # every row stored at the seeding moment, the window's end
    truth = planted(tmp_path_factory.mktemp("recs-gen"), end[0])
    yield {"server": s, "api": api, "db": db, "tenant": tenant, "end": end[0], "data": data,
           "truth": truth}
    db.close()
    api.close()
    s.stop()


def planted(tmp, end_ms):
    """recs-gen's users with their planted clusters, for the demo's configuration."""
    out = tmp / "users.ndjson"
    p = subprocess.run([GEN, "--scale", str(SCALE), "--end", str(end_ms), "--users-out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return {u["user_id"]: u for u in map(json.loads, out.read_text().splitlines())}


def rows(d, sql, *args):
    return d["db"].execute(sql, (d["tenant"], *args)).fetchall()


def one(d, sql, *args):
    return rows(d, sql, *args)[0][0]


def items_by_id(d):
    out = {}
    for iid, title, desc, cat, tags, meta, created in rows(
            d, "SELECT item_id, title, description, category, tags, metadata, created_at "
               "FROM rc_items WHERE tenant_id = ? ORDER BY ix"):
        out[iid] = {"title": title, "description": desc, "category": cat, "tags": json.loads(tags),
                    "metadata": json.loads(meta), "created_at": created}
    return out


def test_documented_sizes(demo):
    assert one(demo, "SELECT count(*) FROM rc_items WHERE tenant_id = ?") == ITEMS
    assert one(demo, "SELECT count(*) FROM rc_item_content WHERE tenant_id = ?") == ITEMS
    assert one(demo, "SELECT count(*) FROM rc_interactions WHERE tenant_id = ?") == INTERACTIONS
    assert one(demo, "SELECT count(DISTINCT user_id) FROM rc_interactions WHERE tenant_id = ?") \
        == USERS
    assert len(demo["truth"]) == USERS
    clusters = {i["metadata"]["taste_cluster"] for i in items_by_id(demo).values()}
    assert clusters == set(range(CLUSTERS))


def test_catalog_text_reflects_category_and_cluster(demo):
    items = items_by_id(demo)
    by_cluster = collections.defaultdict(list)
    for iid, it in items.items():
        assert re.fullmatch(r"item-\d{5}", iid)
        assert re.fullmatch(r"[a-z0-9-]{1,64}", it["category"])
        assert it["title"] and it["description"]
        assert 1 <= len(it["tags"]) <= 20 and all(1 <= len(t) <= 32 for t in it["tags"])
        by_cluster[it["metadata"]["taste_cluster"]].append(it)
    assert len({it["category"] for it in items.values()}) >= 12
    for members in by_cluster.values():
        # a cluster is one style over a primary (and a secondary) category
        styles = {it["metadata"]["style"] for it in members}
        assert len(styles) == 1
        style = styles.pop()
        assert all(style in it["tags"] for it in members)
        cats = collections.Counter(it["category"] for it in members)
        assert len(cats) <= 2
        assert cats.most_common(1)[0][1] >= 0.6 * len(members)
        # the style's words are in the text a content embedding is computed from: every title
        # of the cluster shares its style adjective, every description names the style
        common = set.intersection(*(set(it["title"].lower().split()) for it in members))
        assert common, [it["title"] for it in members[:5]]
        assert all(f"the {style} collection" in it["description"] for it in members)


def vectors(d):
    out = {}
    for iid, dim, blob, fh in rows(d, "SELECT item_id, dim, vector, features_hash FROM "
                                      "rc_item_content WHERE tenant_id = ?"):
        assert dim == DIM and len(blob) == 4 * DIM and re.fullmatch(r"[0-9a-f]{16}", fh)
        out[iid] = np.frombuffer(blob, dtype="<f4")
    return out


def test_content_embeddings_are_unit_and_cluster_together(demo):
    items, vec = items_by_id(demo), vectors(demo)
    assert set(vec) == set(items)
    ids = sorted(items)
    m = np.stack([vec[i] for i in ids]).astype(np.float64)
    assert np.allclose(np.linalg.norm(m, axis=1), 1, atol=1e-4)
    cl = np.array([items[i]["metadata"]["taste_cluster"] for i in ids])
    sim = m @ m.T
    same = cl[:, None] == cl[None, :]
    np.fill_diagonal(same, False)
    other = cl[:, None] != cl[None, :]
    within, across = sim[same].mean(), sim[other].mean()
    assert within > across + 0.15, (within, across)
    # nearest neighbour of most items is in the item's own cluster
    np.fill_diagonal(sim, -2)
    nn_same = (cl[sim.argmax(axis=1)] == cl).mean()
    assert nn_same > 0.7, nn_same


def test_content_embeddings_equal_what_the_api_computes(demo):
    api = demo["api"]
    tok = bearer(login(api, "admin@demo.tessera.local", PASSWORD)["access_token"])
    r = api.post("/api/v1/api-keys", headers=tok,
                 json={"name": "demo-test", "permissions": ["read", "internal"]})
    assert r.status_code == 201, r.text
    key = bearer(r.json()["key"])
    items, vec = items_by_id(demo), vectors(demo)
    pick = sorted(items)[::97][:8]
    body = {"items": [{"item_id": i, "features": {k: items[i][k] for k in
                                                  ("title", "description", "category", "tags")}}
                      for i in pick]}
    r = api.post("/internal/ml/embeddings", headers=key, json=body)
    assert r.status_code == 200, r.text
    got = {e["item_id"]: np.array(e["embedding"]) for e in r.json()["embeddings"]}
    for i in pick:
        assert np.allclose(got[i], vec[i], atol=1e-6), i


def test_interactions_types_times_and_ids(demo):
    end = demo["end"]
    counts = dict(rows(demo, "SELECT type, count(*) FROM rc_interactions WHERE tenant_id = ? "
                             "GROUP BY type"))
    assert set(counts) == TYPES
    n = sum(counts.values())
    # a funnel: views, then clicks, carts, purchases; likes, dislikes and removals are rarer
    assert 0.5 < counts["view"] / n < 0.65
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"]
    for t in ("like", "dislike", "remove_from_cart"):
        assert 0.005 < counts[t] / n < 0.08, t
    first, last = rows(demo, "SELECT min(timestamp), max(timestamp) FROM rc_interactions "
                             "WHERE tenant_id = ?")[0]
    assert end - DAYS * DAY_MS <= first and last <= end
    assert last - first > (DAYS - 2) * DAY_MS
    # never before the item was listed; ids are UUIDv7 of the interaction's own millisecond
    assert one(demo, "SELECT count(*) FROM rc_interactions x JOIN rc_items i ON i.tenant_id = "
                     "x.tenant_id AND i.item_id = x.item_id WHERE x.tenant_id = ? AND "
                     "x.timestamp < i.created_at") == 0
    bad = 0
    for iid, ts, sid, dev in rows(demo, "SELECT interaction_id, timestamp, session_id, "
                                        "device_type FROM rc_interactions WHERE tenant_id = ?"):
        h = iid.replace("-", "")
        bad += not (re.fullmatch(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", h) and
                    int(h[:12], 16) == ts and sid and dev in ("mobile", "desktop", "tablet"))
    assert bad == 0
    # the week has a shape: the busiest hour of day sees several times the quietest
    hours = collections.Counter(ts // 3600000 % 24 for (ts,) in rows(
        demo, "SELECT timestamp FROM rc_interactions WHERE tenant_id = ?"))
    assert max(hours.values()) > 4 * min(hours.values())


def test_users_concentrate_in_their_planted_clusters(demo):
    items, truth = items_by_id(demo), demo["truth"]
    per_user = collections.defaultdict(collections.Counter)
    for uid, iid in rows(demo, "SELECT user_id, item_id FROM rc_interactions WHERE tenant_id = ?"):
        per_user[uid][items[iid]["metadata"]["taste_cluster"]] += 1
    assert set(per_user) == set(truth)
    inside = total = top_ok = top_n = 0
    for uid, c in per_user.items():
        mine = set(truth[uid]["clusters"])
        assert sum(c.values()) == truth[uid]["interactions"]
        inside += sum(v for k, v in c.items() if k in mine)
        total += sum(c.values())
        if sum(c.values()) >= 10:
            top_n += 1
            top_ok += c.most_common(1)[0][0] in mine
    share = inside / total
    # 85% of engagements are drawn in-taste; the popularity noise lands anywhere
    assert 0.8 < share < 0.95, share
    assert top_ok / top_n > 0.95
    # a user with no taste would put about 1.5 / 40 of their interactions there
    two = sum(1 for u in truth.values() if len(u["clusters"]) == 2) / len(truth)
    assert 0.3 < two < 0.5


def digest(db, tenant):
    h = {}
    for name, sql in {
        "items": "SELECT item_id, title, description, category, tags, metadata, created_at, "
                 "updated_at FROM rc_items WHERE tenant_id = ? ORDER BY ix",
        "content": "SELECT item_id, dim, vector, features_hash, updated_at FROM rc_item_content "
                   "WHERE tenant_id = ? ORDER BY item_id",
        "interactions": "SELECT interaction_id, user_id, item_id, type, timestamp, session_id, "
                        "device_type, context, metadata, created_at FROM rc_interactions WHERE "
                        "tenant_id = ? ORDER BY id",
    }.items():
        d = hashlib.sha256()
        for r in db.execute(sql, (tenant,)):
            d.update(repr(r).encode())
        h[name] = d.hexdigest()
    return h


def test_recs_gen_reproduces_the_demo(demo, tmp_path):
    data = tmp_path / "copy"
    p = subprocess.run([BIN, "admin", "create-tenant", "--data", str(data), "--name", "Copy",
                        "--domain", "copy.example", "--log-level", "error"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    tid = json.loads(p.stdout)["id"]
    p = subprocess.run([GEN, "--scale", str(SCALE), "--end", str(demo["end"]), "--db",
                        str(data / "tessera.db"), "--tenant", tid],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["items"], out["users"], out["interactions"], out["clusters"]) == \
        (ITEMS, USERS, INTERACTIONS, CLUSTERS)
    copy = sqlite3.connect(f"file:{data}/tessera.db?mode=ro", uri=True)
    assert digest(copy, tid) == digest(demo["db"], demo["tenant"])
    copy.close()
    # a second load into the same tenant is refused and changes nothing
    p = subprocess.run([GEN, "--scale", str(SCALE), "--db", str(data / "tessera.db"),
                        "--tenant", tid], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "already has" in p.stderr


def test_recs_gen_same_options_same_bytes(tmp_path):
    outs = []
    for k in range(2):
        f = tmp_path / f"x{k}.ndjson"
        p = subprocess.run([GEN, "--scale", "0.01", "--end", "2025-06-01T00:00:00Z",
                            "--items-out", str(tmp_path / f"i{k}.ndjson"),
                            "--interactions-out", str(f)], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        outs.append((f.read_bytes(), (tmp_path / f"i{k}.ndjson").read_bytes()))
    assert outs[0] == outs[1]
    other = subprocess.run([GEN, "--scale", "0.01", "--end", "2025-06-01T00:00:00Z", "--seed", "7",
                            "--interactions-out", "-"], capture_output=True, timeout=60)
    assert other.returncode == 0 and other.stdout.count(b"\n") == 10001  # + the counts line
    assert outs[0][0] not in other.stdout
    lines = outs[0][0].decode().splitlines()
    assert len(lines) == 10000
    x = json.loads(lines[0])
    assert x["interaction_type"] in TYPES and x["timestamp"].startswith("2025-03-03")


def test_first_model_trained_at_start_beats_popularity(demo):
    db, deadline = demo["db"], time.time() + 180
    while time.time() < deadline:
        r = rows(demo, "SELECT model_version, status, is_current, metrics FROM rc_models WHERE "
                       "tenant_id = ? AND model_type = 'matrix_factorization'")
        if r and r[0][1] != "training":
            break
        time.sleep(0.5)
    assert len(r) == 1, r
    version, status, current, metrics = r[0]
    assert (version, status, current) == ("mf-1", "ready", 1)
    m = json.loads(metrics)
    assert m["recall_at_10"] > 2 * m["popularity_recall_at_10"], m
    assert m["ndcg_at_10"] > 2 * m["popularity_ndcg_at_10"], m
    assert m["ranking"] == "full" and m["interactions"] == INTERACTIONS
    job = db.execute("SELECT kind, status FROM jobs WHERE tenant_id = ? AND kind = 'recs.train'",
                     (demo["tenant"],)).fetchall()
    assert job == [("recs.train", "completed")]
    # serving answers with it, and a user's recommendations come from their planted clusters
    api, items, truth = demo["api"], items_by_id(demo), demo["truth"]
    tok = bearer(login(api, "developer@demo.tessera.local", PASSWORD)["access_token"])
    hits = total = 0
    for uid in sorted(truth)[:40]:
        deadline = time.time() + 30
        while True:
            r = api.post("/api/v1/recommendations", headers=tok, json={"user_id": uid, "count": 10})
            assert r.status_code == 200, r.text
            if r.json()["metadata"]["model_version"] == "mf-1" or time.time() > deadline:
                break
            time.sleep(0.2)  # serving loads the model on a worker after it is ready
        body = r.json()
        assert body["metadata"]["model_version"] == "mf-1"
        recs = [x["item_id"] for x in body["recommendations"]]
        assert len(recs) == 10
        hits += sum(items[i]["metadata"]["taste_cluster"] in truth[uid]["clusters"] for i in recs)
        total += len(recs)
    assert hits / total > 0.7, hits / total


def test_second_start_adds_nothing_and_trains_nothing(tmp_path):
    s = DemoServer("--demo", "--demo-scale", "0.002", data=str(tmp_path))
    s.stop()
    s = DemoServer("--demo", "--demo-scale", "0.002", data=str(tmp_path))
    s.stop()
    db = sqlite3.connect(f"file:{tmp_path}/tessera.db?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM rc_items").fetchone() == (40,)
    assert db.execute("SELECT count(*) FROM rc_interactions").fetchone() == (2000,)
    assert db.execute("SELECT count(*) FROM jobs WHERE kind = 'recs.train'").fetchone() == (1,)
    db.close()


def test_demo_scale_is_bounded(tmp_path):
    for bad in ("0", "1.5", "abc", "nan"):
        p = subprocess.run([BIN, "serve", "--data", str(tmp_path), "--demo", "--demo-scale", bad],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "--demo-scale must be a number in 0.001..1" in p.stderr
