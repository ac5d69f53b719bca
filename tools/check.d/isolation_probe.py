"""The isolation and access probe (issue 7): every registered route, as every kind of caller.

The routes come from `tessera routes` (the tables the server registers), so a new route is
probed, or fails the check, without anyone remembering this file. Tenant B is seeded through
the API with data in every surface: every text field carries the run's marker, and every id the
server hands B is collected. Then every route is called as each role of tenant A, A's API keys
(read, write, internal), tenant C's admin, no token, an expired token, a token whose tenant claim
was changed to B's (signed with the real secret), and a token signed with another key, with B's
ids in the path, the query and the body; also a viewer whose token was re-signed claiming every
role. GET requests (and recs reads) are first made by B itself, so a cache keyed without the
tenant would answer A with B's copy. Each response is judged:

- leak: a response to an A-side caller holding B's marker or an id the server gave B (strings
  the request itself carried are removed first, so an echo is not a leak), or a 2xx for a
  request that names one of B's objects (B's ids are never A's), or a 409 naming a client-chosen
  key that only B holds;
- 5xx: any;
- malformed denial: a 4xx not in the route's surface error format (contracts/README.md,
  src/api/errors.c), its code not the status's, or its request_id not the one sent;
- bad credentials: no token, an expired, forged or foreign-signed one on a non-public route must
  be a 401 (a 2xx is a bypass);
- permission: a 2xx for a caller whose role or key scope the route's permission (from
  `tessera routes`) does not grant;
- B changed: views of B's records read by B before and after the probe must be equal; A moved:
  A's lists and figures read before and after B's live writes must be equal;
- live: while every A-side caller holds every WebSocket route open, B makes a notification, an
  SLA breach and a dashboard update; B's own sockets must get them, A's nothing of B's;
- controls: B reading its own objects by the same ids gets 2xx with its marker or ids, so the
  ids the probe uses are live and the marker would be seen.

A route in the table without a rule in RULES fails the check: teach the probe the new route.

    /usr/bin/python3 tools/check.d/isolation_probe.py [--fast] [--bin build/tessera]

run(bin_path, principals) is what tools/check.d/isolation and tests/api/test_isolation.py call.
"""
import argparse
import base64
import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))

import httpx  # noqa: E402
import jwt  # noqa: E402  (Debian python3-jwt)
from conftest import Server  # noqa: E402

ROLES = ("admin", "org_admin", "manager", "viewer", "learner", "trainer", "approver", "agent",
         "developer", "master_admin")
KEYS = ("read", "write", "internal")
NOCRED = ("anon", "expired", "forged_tenant", "bad_signature")
FULL_PRINCIPALS = tuple(f"role:{r}" for r in ROLES) + tuple(f"key:{k}" for k in KEYS) + \
    ("tenant_c", "claims_escalated") + NOCRED
# every route, fewer callers: the fast form in tools/test
FAST_PRINCIPALS = ("role:admin", "role:master_admin", "role:viewer", "role:agent", "key:read",
                   "key:internal", "tenant_c", "claims_escalated", "anon", "expired",
                   "forged_tenant")
# what the route table says each caller holds: a role, or an API-key scope
HOLDS = {**{f"role:{r}": ("role", r) for r in ROLES}, **{f"key:{k}": ("scope", k) for k in KEYS},
         "tenant_c": ("role", "admin"),
         "claims_escalated": ("role", "viewer")}  # a viewer whose token claims every role
PASSWORD = "isolation-probe-pw"
UUID_RX = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
SURFACE_CODES = {400: {"BAD_REQUEST", "VALIDATION_ERROR"},
                 401: {"UNAUTHORIZED", "AUTHENTICATION_FAILED"}, 403: {"FORBIDDEN"},
                 404: {"NOT_FOUND"}, 405: {"METHOD_NOT_ALLOWED"}, 409: {"CONFLICT"},
                 413: {"PAYLOAD_TOO_LARGE"}, 415: {"UNSUPPORTED_MEDIA_TYPE"},
                 422: {"UNPROCESSABLE_ENTITY", "VALIDATION_ERROR"},
                 429: {"RATE_LIMIT_EXCEEDED", "QUOTA_EXCEEDED"}}


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc():
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- server and accounts

def start_server(bin_path, data, flags):
    """tests/api's Server (logging at warn, 30 s to become ready): stop() there asserts, so the
    probe ends it with finish() and reports what it found as a row."""
    return Server("--log-level", "warn", *flags, data=data, bin=bin_path)


def admin(bin_path, data, *args, password=None):
    p = subprocess.run([bin_path, "admin", *args, "--data", data], capture_output=True,
                       input=(password + "\n").encode() if password else None, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"tessera admin {' '.join(args)}: {p.stderr.decode()}")
    return json.loads(p.stdout)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def multipart(parts, boundary="isolation-probe-boundary"):
    """parts: (name, filename or None, content_type or None, bytes) -> (body, content type)"""
    out = b""
    for name, filename, ctype, data in parts:
        cd = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {cd}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------- the world: tenants A, B, C

class World:
    """Tenants, callers, B's objects (b[name] = id), B's markers and every id B was given."""

    def __init__(self, bin_path, data, principals=FULL_PRINCIPALS):
        self.bin, self.data, self.principals = bin_path, data, principals
        self.mark = "zq" + secrets.token_hex(5)          # in every text field of B
        self.b = {}                                       # B's named objects
        self.a = {}                                       # A's, to mix with B's
        self.b_ids = set()                                # every uuid the server gave B
        self.markers = [self.mark]                        # B-only strings (lower case)
        self.headers = {}                                 # principal -> headers
        self.tok = {}                                     # "a:<role>", "b:<role>", "c:admin"
        self.users = {}
        self.sent = set()                                 # strings A-side requests carried
        self.created = set()                              # (tenant, key) a create made
        self.a_batches = []                               # A's batch ids (probe writes)
        self.a_range = _range()
        self.api = None
        self.srv = None

    # -- seeding helpers
    def call(self, method, path, who=None, expect=None, **kw):
        h = dict(kw.pop("headers", {}))
        if who:
            h.update(who if isinstance(who, dict) else bearer(self.tok[who]))
        r = self.api.request(method, path, headers=h, **kw)
        if expect is not None and r.status_code not in (expect if isinstance(expect, tuple)
                                                        else (expect,)):
            raise RuntimeError(f"seeding {method} {path}: {r.status_code} {r.text[:500]}")
        return r

    def b_call(self, method, path, who="b:master_admin", expect=(200, 201, 202), **kw):
        """A call made by tenant B while seeding: every uuid it returns is one of B's ids."""
        r = self.call(method, path, who, expect, **kw)
        rid = r.headers.get("x-request-id", "")
        self.b_ids.update(u.lower() for u in UUID_RX.findall(r.text) if u.lower() != rid.lower())
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r

    def wait(self, what, fn, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.05)
        raise RuntimeError(f"seeding: timed out waiting for {what}")


def create_accounts(w):
    bin_path, data, m = w.bin, w.data, w.mark
    w.tenant = {"a": admin(bin_path, data, "create-tenant", "--name", "Probe A",
                           "--domain", "probe-a.example", "--allow-registration"),
                "b": admin(bin_path, data, "create-tenant", "--name", f"Tenant B {m}",
                           "--domain", f"b-{m}.example"),
                "c": admin(bin_path, data, "create-tenant", "--name", "Probe C",
                           "--domain", "probe-c.example")}
    w.b_ids.add(w.tenant["b"]["id"].lower())
    # A's users: the roles probed, and those seeding and token minting use
    need = {p.split(":")[1] for p in w.principals if p.startswith("role:")} | \
        {"admin", "agent", "approver", "master_admin", "viewer"}
    plan = [("a", r, f"{r}@probe-a.example", "Probe " + r) for r in ROLES if r in need]
    plan += [("b", r, f"{r}@b-{m}.example", f"B {r} {m}") for r in
             ("master_admin", "approver", "agent", "viewer")]
    plan += [("c", "admin", "admin@probe-c.example", "Probe C admin")]
    domains = {"a": "probe-a.example", "b": f"b-{m}.example", "c": "probe-c.example"}

    def one(p):
        t, role, email, name = p
        return admin(bin_path, data, "create-user", "--tenant", domains[t], "--email", email,
                     "--name", name, "--role", role, "--password-stdin", password=PASSWORD)
    with ThreadPoolExecutor(4) as ex:  # each hashes a password: use both cores
        for (t, role, email, _), u in zip(plan, ex.map(one, plan)):
            w.users[f"{t}:{role}"] = {**u, "email": email}
            if t == "b":
                w.b_ids.add(u["id"].lower())
    w.b["user"] = w.users["b:agent"]["id"]
    w.b["user_email"] = w.users["b:viewer"]["email"]


def seed_export_job(w):
    """A desk.export job of B's (a real one needs more than 50,000 tickets): its error names B."""
    job = str(uuid.uuid4())
    db = sqlite3.connect(os.path.join(w.data, "tessera.db"), timeout=30)
    db.execute("INSERT INTO jobs(id, tenant_id, kind, status, progress, params, error, "
               "created_at, finished_at) VALUES(?, ?, 'desk.export', 'failed', 1, ?, ?, ?, ?)",
               (job, w.tenant["b"]["id"], json.dumps({"rows": 50001, "filename": f"{w.mark}.csv"}),
                f"export of {w.mark} failed", int(time.time() * 1000), int(time.time() * 1000)))
    db.commit()
    db.close()
    w.b["export_job"] = job
    w.b_ids.add(job)


def login_all(w):
    def one(key):
        with httpx.Client(base_url=w.srv.url, timeout=60) as c:
            r = c.post("/api/v1/auth/login", json={"email": w.users[key]["email"],
                                                   "password": PASSWORD})
        if r.status_code != 200:
            raise RuntimeError(f"seeding: login of {key}: {r.status_code} {r.text[:300]}")
        return r.json()["access_token"]
    with ThreadPoolExecutor(4) as ex:  # argon2id on the worker pool
        for key, tok in zip(list(w.users), ex.map(one, list(w.users))):
            w.tok[key] = tok
    w.b["refresh_shape"] = "rt_" + secrets.token_hex(16)


def seed_desk(w):
    m, b = w.mark, w.b
    t1 = w.b_call("POST", "/api/v1/tickets", "b:viewer",
                  json={"title": f"B ticket {m}", "description": f"secret {m}", "type": "bug",
                        "priority": "high"})
    b["ticket"] = t1["id"]
    b["comment"] = w.b_call("POST", f"/api/v1/tickets/{t1['id']}/comments", "b:viewer",
                            json={"content": f"B comment {m}"})["id"]
    w.b_call("POST", f"/api/v1/tickets/{t1['id']}/comments",
             json={"content": f"B internal {m}", "is_internal": True})
    w.b_call("POST", f"/api/v1/tickets/{t1['id']}/assign",
             json={"assignee_id": w.users["b:approver"]["id"]})
    body, ctype = multipart([("ticket_id", None, None, t1["id"].encode()),
                             ("file", f"b-{m}.txt", "text/plain", f"B file {m}\n".encode())])
    b["file"] = w.b_call("POST", "/api/v1/files/upload", "b:viewer", content=body,
                         headers={"Content-Type": ctype})["file_id"]
    w.b_call("PUT", "/api/v1/sla/rules", json={"ticket_type": "task",
                                                "response_time_hours": 1.23457,
                                                "resolution_time_hours": 6.78913})
    w.markers += ["1.23457", "6.78913"]
    # around the clock, so the live phase's 3.6 s deadline passes while A listens
    w.b_call("PUT", "/api/v1/sla/calendar", json={"timezone": "Pacific/Chatham",
                                                   "working_days": ["mon", "tue", "wed", "thu",
                                                                    "fri", "sat", "sun"],
                                                   "start_time": "00:00", "end_time": "24:00",
                                                   "holidays": ["2031-07-19"]})
    w.b_call("PUT", "/api/v1/sla/rules", json={"ticket_type": "incident",
                                                "response_time_hours": 0.001,
                                                "resolution_time_hours": 0.002})
    w.markers += ["pacific/chatham", "2031-07-19"]
    # approvals and staging: one approved and deployed ticket, one pending request
    t3 = w.b_call("POST", "/api/v1/tickets", json={"title": f"B feature {m}", "type": "feature"})
    b["ticket_feature"] = t3["id"]
    req = w.b_call("POST", "/api/v1/approvals/requests",
                   json={"ticket_id": t3["id"], "description": f"ship {m}",
                         "approver_id": w.users["b:approver"]["id"]})
    w.b_call("POST", f"/api/v1/approvals/requests/{req['id']}/approve", "b:approver",
             json={"comments": f"ok {m}"})
    t4 = w.b_call("POST", "/api/v1/tickets", json={"title": f"B pending {m}", "type": "feature"})
    b["ticket_pending"] = t4["id"]
    b["approval"] = w.b_call("POST", "/api/v1/approvals/requests",
                             json={"ticket_id": t4["id"], "description": f"wait {m}",
                                   "approver_id": w.users["b:approver"]["id"]})["id"]
    b["environment"] = w.b_call("POST", "/api/v1/staging/environments",
                                json={"name": f"b-env-{m}", "url": f"https://{m}.example"})["id"]
    b["deployment"] = w.b_call("POST", "/api/v1/staging/deployments",
                               json={"ticket_id": t3["id"], "environment_id": b["environment"],
                                     "version": "9.9.9", "deployment_notes": f"notes {m}"})["id"]
    notes = w.b_call("GET", "/api/v1/notifications", "b:approver")
    items = notes.get("notifications") or notes.get("items") or []
    if not items:
        raise RuntimeError(f"seeding: B's approver has no notification: {notes}")
    b["notification"] = items[0]["id"]
    b["api_key"] = w.b_call("POST", "/api/v1/api-keys",
                            json={"name": f"b-key-{m}", "permissions": ["read"]})["id"]
    w.b_internal = w.b_call("POST", "/api/v1/api-keys",
                            json={"name": f"b-int-{m}", "permissions": ["read", "write",
                                                                         "internal"]})["key"]
    w.markers.append(w.b_internal.lower())


def seed_commerce(w):
    m, b = w.mark, w.b
    # client-chosen keys: K_R ones (with the marker) A never writes; K_W ones A also writes,
    # so an upsert that is not tenant-scoped would change B's record
    b["source_r"], b["source_w"], b["source_c"] = f"r{m}-src", "kw-src-1", "kw-src-2"
    b["customer_r"], b["customer_w"] = f"r{m}-cust-1", "kw-cust-1"
    for sid in (b["source_r"], b["source_w"], b["source_c"]):
        w.b_call("POST", "/api/v1/ingest/sources", json={"source_id": sid, "name": f"B source {m}"})
    at = now_utc() - timedelta(hours=2)
    batches = [
        ("customers", [{"customer_id": c, "name": f"B customer {m}", "email": f"c@{m}.example",
                        "region": "EU"} for c in (b["customer_r"], b["customer_w"])]),
        ("products", [{"product_id": p, "name": f"B product {m}", "category": f"cat{m}",
                       "price": 10} for p in (f"r{m}-prod-1", "kw-prod-1")]),
        ("orders", [{"order_id": o, "customer_id": c, "created_at": iso(at), "total": 41.5,
                     "status": "paid", "region": "EU", "channel": "web",
                     "items": [{"product_id": p, "quantity": 1, "unit_price": 41.5}]}
                    for o, c, p in ((f"r{m}-order-1", b["customer_r"], f"r{m}-prod-1"),
                                    ("kw-order-1", b["customer_w"], "kw-prod-1"))]),
        ("events", [{"event_id": f"r{m}-ev-1", "type": "product_view", "timestamp": iso(at),
                     "session_id": f"r{m}-s1", "customer_id": b["customer_r"],
                     "product_id": f"r{m}-prod-1"}]),
    ]
    for data_type, records in batches:
        st = w.b_call("POST", "/api/v1/ingest/batch",
                      json={"source_id": b["source_r"], "data_type": data_type, "format": "json",
                            "data": records})
        bid = st["data"]["batch_id"]
        b["batch"] = bid
        w.wait(f"B's {data_type} batch", lambda: w.b_call(
            "GET", f"/api/v1/ingest/batches/{bid}/status")["data"]["status"] != "processing")
    w.b_call("POST", "/api/v1/ingest/stream",
             json={"source_id": b["source_w"], "data_type": "orders", "timestamp": iso(at),
                   "data": {"order_id": f"r{m}-order-2", "customer_id": b["customer_r"],
                            "created_at": iso(at), "total": 3.25}})
    widget = {"widget_id": f"w{m}", "type": "metric_card", "title": f"B widget {m}",
              "position": {"x": 0, "y": 0, "w": 4, "h": 3}, "refresh_interval": 300,
              "configuration": {"metric_type": "revenue", "granularity": "daily",
                                "time_window": "7d"}}
    b["dashboard"] = w.b_call("POST", "/api/v1/dashboards",
                              json={"name": f"B dashboard {m}", "description": f"d {m}",
                                    "category": "finance", "is_public": True,
                                    "widgets": [widget]})["data"]["dashboard_id"]
    b["rule"] = w.b_call("POST", "/api/v1/alerts/rules",
                         json={"name": f"B rule {m}", "description": f"watch {m}",
                               "query": {"metric_type": "revenue", "granularity": "daily",
                                         "time_window": "7d"},
                               "comparison": "gt", "threshold": 1, "severity": "high"}
                         )["data"]["rule_id"]

    def alert():
        a = w.b_call("GET", "/api/v1/alerts")["data"]
        rows = a.get("alerts") if isinstance(a, dict) else a
        return rows[0]["alert_id"] if rows else None
    b["alert"] = w.wait("B's alert", alert)


def seed_recs(w):
    m, b = w.mark, w.b
    key = bearer(w.b_internal)
    b["item_r"], b["item_w"] = f"r{m}-item-1", "kw-item-1"
    items = [b["item_r"]] + [f"r{m}-item-{i}" for i in range(2, 5)] + [b["item_w"]]
    w.b_call("POST", "/internal/data/items", key,
             json={"items": [{"item_id": i, "title": f"B item {m} {i}", "description": f"d {m}",
                              "category": f"cat{m}", "tags": [m]} for i in items]})
    users = [f"r{m}-user-{u}" for u in range(4)]
    w.b["rec_user"] = users[0]
    w.b_call("POST", "/internal/data/interactions", key,
             json={"interactions": [{"user_id": u, "item_id": i, "interaction_type": "purchase"}
                                    for u in users for i in items]})
    job = w.b_call("POST", "/internal/ml/training/trigger", key,
                   json={"training_config": {"model_type": "matrix_factorization",
                                             "hyperparameters": {"embedding_dim": 8,
                                                                 "epochs": 2}}})
    b["train_job"] = job.get("job_id") or job.get("id")

    def done():
        j = w.b_call("GET", f"/internal/ml/training/{b['train_job']}", key)
        return j.get("status") in ("completed", "failed")
    w.wait("B's training job", done, timeout=60)
    # the content vector of B's items is computed in the pool after the write
    w.wait("B's item embedding", lambda: w.call(
        "GET", f"/api/v1/items/{b['item_r']}/embedding", key).status_code == 200)


def seed_a(w):
    """A's own objects, for requests that mix them with B's."""
    a = w.a
    a["ticket"] = w.call("POST", "/api/v1/tickets", "a:agent", 201,
                         json={"title": "A ticket", "type": "feature"}).json()["id"]
    a["ticket_req"] = w.call("POST", "/api/v1/tickets", "a:agent", 201,
                             json={"title": "A ticket 2", "type": "feature"}).json()["id"]
    req = w.call("POST", "/api/v1/approvals/requests", "a:agent", 201,
                 json={"ticket_id": a["ticket"], "description": "A"}).json()
    w.call("POST", f"/api/v1/approvals/requests/{req['id']}/approve", "a:approver", 200,
           json={})
    a["environment"] = w.call("POST", "/api/v1/staging/environments", "a:admin", 201,
                              json={"name": "a-env"}).json()["id"]
    a["agent"] = w.users["a:agent"]["id"]


def make_principals(w):
    """headers per principal name (see FULL_PRINCIPALS)"""
    for r in ROLES:
        if f"a:{r}" in w.tok:
            w.headers[f"role:{r}"] = bearer(w.tok[f"a:{r}"])
    for k in KEYS:
        perms = [k] if k != "internal" else ["internal"]
        r = w.call("POST", "/api/v1/api-keys", "a:admin", 201,
                   json={"name": f"probe-{k}", "permissions": perms})
        w.headers[f"key:{k}"] = bearer(r.json()["key"])
    w.headers["tenant_c"] = bearer(w.tok["c:admin"])
    w.headers["anon"] = {}
    claims = jwt.decode(w.tok["a:master_admin"], options={"verify_signature": False})
    with open(os.path.join(w.data, "jwt.secret")) as f:
        secret = bytes.fromhex(f.read().strip())
    t = int(time.time())
    w.headers["expired"] = bearer(jwt.encode({**claims, "iat": t - 7200, "exp": t - 3600},
                                             secret, algorithm="HS256"))
    w.headers["forged_tenant"] = bearer(jwt.encode({**claims, "tid": w.tenant["b"]["id"]},
                                                   secret, algorithm="HS256"))
    w.headers["bad_signature"] = bearer(jwt.encode(claims, secrets.token_bytes(32),
                                                   algorithm="HS256"))
    viewer = jwt.decode(w.tok["a:viewer"], options={"verify_signature": False})
    w.headers["claims_escalated"] = bearer(jwt.encode({**viewer, "roles": list(ROLES)}, secret,
                                                      algorithm="HS256"))


def seed(w):
    create_accounts(w)
    seed_export_job(w)


def seed_live(w):
    login_all(w)
    seed_desk(w)
    seed_commerce(w)
    seed_recs(w)
    seed_a(w)
    make_principals(w)
    # ids are compared in lower case; a marker must be something B's own reads show
    w.b_ids.discard("00000000-0000-0000-0000-000000000000")


# ---------------------------------------------------------------- rules: how to call each route

def P(params=None, query=None, json=None, raw=None, b_object=None, conflict_key=None,
      history=False, warm=None):
    """One probe request. params: path parameters; raw: (bytes, content type); b_object: the
    request names one of B's objects, so a 2xx is a leak (default: when params are given);
    conflict_key: a client-chosen key B holds, so a 409 before the caller's tenant created it
    is a leak; history: the answer lists the caller's own earlier calls (the audit log), so
    what the probe sent before is not a leak either; warm: B sends the same request first, so
    a cache keyed without the tenant would answer A with B's copy (default: GET requests)."""
    return {"params": params or {}, "query": query, "json": json, "raw": raw,
            "b_object": bool(params) if b_object is None else b_object,
            "conflict_key": conflict_key, "history": history, "warm": warm}


def _range():
    return {"time_range[start]": iso(now_utc() - timedelta(days=30)),
            "time_range[end]": iso(now_utc() + timedelta(hours=1))}


def _order(w, oid):
    return {"order_id": oid, "customer_id": w.b["customer_w"], "total": 1.0,
            "created_at": iso(now_utc() - timedelta(hours=1)),
            "items": [{"product_id": "kw-prod-1", "quantity": 1, "unit_price": 1.0}]}


def _upload(w):
    return multipart([("ticket_id", None, None, w.b["ticket"].encode()),
                      ("file", "probe.txt", "text/plain", b"probe\n")])


def _widget():
    return {"widget_id": "probe", "type": "metric_card", "title": "probe",
            "position": {"x": 0, "y": 0, "w": 4, "h": 3},
            "configuration": {"metric_type": "revenue", "granularity": "daily",
                              "time_window": "7d"}}


def _rule_body():
    return {"name": "probe rule", "query": {"metric_type": "revenue", "granularity": "daily",
                                            "time_window": "7d"},
            "comparison": "gt", "threshold": 1e12, "severity": "low"}


_TRAIN = {"training_config": {"model_type": "matrix_factorization",
                              "hyperparameters": {"embedding_dim": 8, "epochs": 1}}}

# "METHOD path" -> rule(w) -> [P(...), ...]. Order of the probes inside a rule is kept.
RULES = {
    # ops, docs, learning health: public, nothing of a tenant's may show
    "GET /health": lambda w: [P()],
    "GET /ready": lambda w: [P()],
    "GET /metrics": lambda w: [P()],
    "GET /ws/ops": lambda w: [P()],
    "GET /openapi/{file}": lambda w: [P({"file": "desk.json"}, b_object=False)],
    "GET /docs": lambda w: [P()],
    "GET /docs/assets/{file}": lambda w: [P({"file": "favicon-32x32.png"}, b_object=False)],
    "GET /api/v1/health": lambda w: [P()],
    # shared and desk auth: B's people, wrong or made-up secrets
    "POST /api/v1/auth/login": lambda w: [
        P(json={"email": w.b["user_email"], "password": "not-the-password"}),
        P(json={"email": w.b["user_email"], "password": "not-the-password",
                "customer_domain": "probe-a.example"})],
    "POST /api/v1/auth/refresh": lambda w: [P(json={"refresh_token": w.b["refresh_shape"]})],
    "GET /api/v1/auth/me": lambda w: [P()],
    "POST /api/v1/auth/register": lambda w: [
        P(json={"email": f"new-{secrets.token_hex(4)}@probe.example", "password": PASSWORD,
                "full_name": "Probe", "customer_domain": f"b-{w.mark}.example"})],
    "POST /api/v1/auth/logout": lambda w: [P()],
    "POST /api/v1/auth/confirm-email": lambda w: [P(json={"token": secrets.token_hex(24)})],
    "POST /api/v1/auth/reset-password": lambda w: [
        P(json={"email": w.b["user_email"], "customer_domain": f"b-{w.mark}.example"})],
    "POST /api/v1/auth/reset-password/confirm": lambda w: [
        P(json={"token": secrets.token_hex(24), "new_password": PASSWORD})],
    # directory
    "GET /api/v1/users/me": lambda w: [P()],
    "PUT /api/v1/users/me": lambda w: [P(json={"full_name": "Probe renamed"})],
    "GET /api/v1/users": lambda w: [P(), P(query={"search": w.b["user_email"]})],
    "GET /api/v1/users/{user_id}": lambda w: [P({"user_id": w.b["user"]})],
    "PUT /api/v1/users/{user_id}/role": lambda w: [P({"user_id": w.b["user"]},
                                                     json={"role": "viewer"})],
    "GET /api/v1/customers/me": lambda w: [P()],
    "GET /api/v1/customers/me/users": lambda w: [P()],
    "GET /api/v1/tenant": lambda w: [P()],
    "GET /api/v1/api-keys": lambda w: [P()],
    "POST /api/v1/api-keys": lambda w: [P(json={"name": "probe", "permissions": ["read"]})],
    "DELETE /api/v1/api-keys/{id}": lambda w: [P({"id": w.b["api_key"]})],
    "GET /api/v1/audit": lambda w: [P(query={"per_page": "100"}, history=True)],
    # desk notifications
    "GET /api/v1/notifications": lambda w: [P()],
    "PUT /api/v1/notifications/read-all": lambda w: [P()],
    "PUT /api/v1/notifications/{notification_id}/read": lambda w: [
        P({"notification_id": w.b["notification"]})],
    "GET /api/v1/notifications/preferences": lambda w: [P()],
    "PUT /api/v1/notifications/preferences": lambda w: [P(json={"in_app_comments": True})],
    "GET /ws/notifications": lambda w: [P()],
    # desk files
    "POST /api/v1/files/upload": lambda w: [P(raw=_upload(w), b_object=True)],
    "GET /api/v1/files/ticket/{ticket_id}": lambda w: [P({"ticket_id": w.b["ticket"]})],
    "GET /api/v1/files/{file_id}": lambda w: [P({"file_id": w.b["file"]})],
    "GET /api/v1/files/{file_id}/download": lambda w: [P({"file_id": w.b["file"]})],
    "DELETE /api/v1/files/{file_id}": lambda w: [P({"file_id": w.b["file"]})],
    # desk dashboards
    "GET /api/v1/dashboard/overview": lambda w: [P()],
    "GET /api/v1/dashboard/analytics/tickets": lambda w: [P()],
    "GET /api/v1/dashboard/analytics/sla": lambda w: [P()],
    "GET /api/v1/dashboard/reports/export": lambda w: [P(query={"type": "tickets",
                                                                "format": "csv"})],
    "GET /api/v1/dashboard/reports/export/{job_id}": lambda w: [
        P({"job_id": w.b["export_job"]})],
    # desk SLA
    "GET /api/v1/sla/rules": lambda w: [P()],
    "PUT /api/v1/sla/rules": lambda w: [P(json={"ticket_type": "bug", "response_time_hours": 2,
                                                 "resolution_time_hours": 20})],
    "GET /api/v1/sla/calendar": lambda w: [P()],
    "PUT /api/v1/sla/calendar": lambda w: [P(json={})],
    "GET /api/v1/sla/tickets/{ticket_id}": lambda w: [P({"ticket_id": w.b["ticket"]})],
    "GET /api/v1/sla/breaches": lambda w: [P()],
    "GET /api/v1/sla/metrics": lambda w: [P()],
    "GET /ws/sla": lambda w: [P()],
    # desk approvals
    "POST /api/v1/approvals/requests": lambda w: [
        P(json={"ticket_id": w.b["ticket_pending"], "description": "probe"}, b_object=True),
        P(json={"ticket_id": w.a["ticket_req"], "description": "probe",
                "approver_id": w.users["b:approver"]["id"]}, b_object=True),
        P(json={"ticket_id": w.b["ticket"], "description": "probe",
                "approver_id": w.users["b:approver"]["id"]}, b_object=True)],
    "GET /api/v1/approvals/requests": lambda w: [
        P(), P(query={"approver_id": w.users["b:approver"]["id"]})],
    "GET /api/v1/approvals/requests/{request_id}": lambda w: [P({"request_id": w.b["approval"]})],
    "POST /api/v1/approvals/requests/{request_id}/approve": lambda w: [
        P({"request_id": w.b["approval"]}, json={"comments": "probe"})],
    "POST /api/v1/approvals/requests/{request_id}/reject": lambda w: [
        P({"request_id": w.b["approval"]}, json={"comments": "probe"})],
    "GET /api/v1/approvals/history/{ticket_id}": lambda w: [
        P({"ticket_id": w.b["ticket_feature"]})],
    # desk staging
    "GET /api/v1/staging/environments": lambda w: [P()],
    "POST /api/v1/staging/environments": lambda w: [
        P(json={"name": f"probe-{secrets.token_hex(3)}"})],
    "POST /api/v1/staging/deployments": lambda w: [
        P(json={"ticket_id": w.b["ticket_feature"], "environment_id": w.b["environment"],
                "version": "1.0.0"}, b_object=True),
        P(json={"ticket_id": w.a["ticket"], "environment_id": w.b["environment"],
                "version": "1.0.0"}, b_object=True),
        P(json={"ticket_id": w.b["ticket_feature"], "environment_id": w.a["environment"],
                "version": "1.0.0"}, b_object=True)],
    "GET /api/v1/staging/deployments": lambda w: [
        P(), P(query={"ticket_id": w.b["ticket_feature"], "environment_id": w.b["environment"]})],
    "GET /api/v1/staging/deployments/{deployment_id}": lambda w: [
        P({"deployment_id": w.b["deployment"]})],
    "POST /api/v1/staging/deployments/{deployment_id}/status": lambda w: [
        P({"deployment_id": w.b["deployment"]}, json={"status": "failed"})],
    "POST /api/v1/staging/deployments/{deployment_id}/rollback": lambda w: [
        P({"deployment_id": w.b["deployment"]}, json={"reason": "probe"})],
    # desk tickets
    "POST /api/v1/tickets": lambda w: [
        P(json={"title": "probe", "type": "bug"}),
        P(json={"title": "probe", "type": "bug", "assignee_id": w.users["b:approver"]["id"]},
          b_object=True)],
    "GET /api/v1/tickets": lambda w: [
        P(), P(query={"limit": "100"}), P(query={"assignee_id": w.users["b:approver"]["id"]}),
        P(query={"requester_id": w.users["b:viewer"]["id"]}), P(query={"search": w.mark})],
    "GET /api/v1/tickets/{ticket_id}": lambda w: [P({"ticket_id": w.b["ticket"]})],
    "PUT /api/v1/tickets/{ticket_id}": lambda w: [
        P({"ticket_id": w.b["ticket"]}, json={"title": "probe"}),
        P({"ticket_id": w.a["ticket_req"]}, json={"assignee_id": w.users["b:agent"]["id"]},
          b_object=True)],
    "DELETE /api/v1/tickets/{ticket_id}": lambda w: [P({"ticket_id": w.b["ticket_pending"]})],
    "POST /api/v1/tickets/{ticket_id}/comments": lambda w: [
        P({"ticket_id": w.b["ticket"]}, json={"content": "probe"})],
    "GET /api/v1/tickets/{ticket_id}/comments": lambda w: [P({"ticket_id": w.b["ticket"]})],
    "POST /api/v1/tickets/{ticket_id}/assign": lambda w: [
        P({"ticket_id": w.b["ticket"]}, json={"assignee_id": w.users["b:agent"]["id"]}),
        P({"ticket_id": w.b["ticket"]}, json={"assignee_id": w.a["agent"]}),
        P({"ticket_id": w.a["ticket_req"]}, json={"assignee_id": w.users["b:agent"]["id"]})],
    "POST /api/v1/tickets/{ticket_id}/status": lambda w: [
        P({"ticket_id": w.b["ticket"]}, json={"status": "closed"})],
    # commerce ingestion: A writes under B's shared keys; B's keys-only ids are looked up
    "POST /api/v1/ingest/batch": lambda w: [
        P(json={"source_id": w.b["source_w"], "data_type": "orders", "format": "json",
                "data": [_order(w, "kw-order-1")]})],
    "GET /api/v1/ingest/batches/{batch_id}/status": lambda w: [P({"batch_id": w.b["batch"]})],
    "POST /api/v1/ingest/stream": lambda w: [
        P(json={"source_id": w.b["source_w"], "data_type": "orders",
                "timestamp": iso(now_utc()), "data": _order(w, "kw-order-1")})],
    "GET /api/v1/ingest/sources": lambda w: [P(query={"active_only": "false", "size": "100"})],
    "POST /api/v1/ingest/sources": lambda w: [
        P(json={"source_id": w.b["source_c"], "name": "probe"}, conflict_key=w.b["source_c"])],
    "PUT /api/v1/ingest/sources/{source_id}": lambda w: [
        P({"source_id": w.b["source_r"]}, json={"name": "probe"})],
    # commerce analytics
    "GET /api/v1/analytics/metrics": lambda w: [P(query={"metric_type": "revenue", **_range()})],
    "GET /api/v1/analytics/customers/segments": lambda w: [P(query=_range())],
    "GET /api/v1/analytics/customers/{customer_id}/profile": lambda w: [
        P({"customer_id": w.b["customer_r"]})],
    "GET /api/v1/analytics/products/performance": lambda w: [P(query=_range())],
    "GET /api/v1/data-quality/reports": lambda w: [P(query=_range())],
    # commerce dashboards and alerts
    "GET /api/v1/dashboards": lambda w: [P()],
    "POST /api/v1/dashboards": lambda w: [
        P(json={"name": "probe", "category": "finance", "widgets": [_widget()]})],
    "GET /api/v1/dashboards/{dashboard_id}": lambda w: [P({"dashboard_id": w.b["dashboard"]})],
    "PUT /api/v1/dashboards/{dashboard_id}": lambda w: [P({"dashboard_id": w.b["dashboard"]},
                                                          json={"name": "probe"})],
    "DELETE /api/v1/dashboards/{dashboard_id}": lambda w: [P({"dashboard_id": w.b["dashboard"]})],
    "GET /api/v1/dashboards/{dashboard_id}/data": lambda w: [
        P({"dashboard_id": w.b["dashboard"]})],
    "GET /ws/dashboards/{dashboard_id}": lambda w: [P({"dashboard_id": w.b["dashboard"]})],
    "GET /api/v1/alerts": lambda w: [P()],
    "POST /api/v1/alerts/{alert_id}/acknowledge": lambda w: [P({"alert_id": w.b["alert"]})],
    "GET /api/v1/alerts/rules": lambda w: [P()],
    "POST /api/v1/alerts/rules": lambda w: [P(json=_rule_body())],
    "GET /api/v1/alerts/rules/{rule_id}": lambda w: [P({"rule_id": w.b["rule"]})],
    "PUT /api/v1/alerts/rules/{rule_id}": lambda w: [P({"rule_id": w.b["rule"]},
                                                       json={"severity": "low"})],
    "DELETE /api/v1/alerts/rules/{rule_id}": lambda w: [P({"rule_id": w.b["rule"]})],
    # recs: A's own writes under B's shared keys; B's key-only ids are looked up
    "POST /api/v1/items": lambda w: [P(json={"items": [{"item_id": w.b["item_w"],
                                                        "title": "probe item"}]})],
    "POST /internal/data/items": lambda w: [
        P(json={"tenant_id": w.tenant["b"]["id"], "items": [{"item_id": w.b["item_w"],
                                                             "title": "probe item"}]},
          b_object=True),
        P(json={"items": [{"item_id": w.b["item_w"], "title": "probe item"}]})],
    "POST /api/v1/interactions": lambda w: [
        P(json={"user_id": "kw-user-1", "item_id": w.b["item_w"], "interaction_type": "click"})],
    "POST /internal/data/interactions": lambda w: [
        P(json={"tenant_id": w.tenant["b"]["id"],
                "interactions": [{"user_id": "kw-user-1", "item_id": w.b["item_w"],
                                  "interaction_type": "click"}]}, b_object=True)],
    "GET /api/v1/usage": lambda w: [P()],
    "POST /internal/ml/training/trigger": lambda w: [
        P(json={"tenant_id": w.tenant["b"]["id"], **_TRAIN}, b_object=True)],
    "GET /internal/ml/training/{job_id}": lambda w: [P({"job_id": w.b["train_job"]})],
    "GET /internal/ml/models": lambda w: [P()],
    "POST /api/v1/recommendations": lambda w: [P(json={"user_id": w.b["rec_user"], "count": 20},
                                                 warm=True)],
    "POST /internal/ml/recommendations": lambda w: [
        P(json={"tenant_id": w.tenant["b"]["id"], "user_id": w.b["rec_user"]}, b_object=True),
        P(json={"user_id": w.b["rec_user"], "count": 20}, warm=True)],
    "GET /api/v1/items/{item_id}/embedding": lambda w: [P({"item_id": w.b["item_r"]})],
    "POST /internal/ml/embeddings": lambda w: [
        P(json={"tenant_id": w.tenant["b"]["id"], "items": [{"item_id": w.b["item_r"]}]},
          b_object=True),
        P(json={"items": [{"item_id": w.b["item_r"]}]}, b_object=True, warm=True)],
}

# Runs after every other route, for each caller: it ends the caller's session.
LAST = ("POST /api/v1/auth/logout",)

# B reading its own objects by the ids the probe uses: each must be a 2xx showing B's marker.
CONTROLS = [
    ("GET /api/v1/users/{user_id}", "b:master_admin"),
    ("GET /api/v1/files/ticket/{ticket_id}", "b:master_admin"),
    ("GET /api/v1/files/{file_id}", "b:master_admin"),
    ("GET /api/v1/files/{file_id}/download", "b:master_admin"),
    ("GET /api/v1/dashboard/reports/export/{job_id}", "b:master_admin"),
    ("GET /api/v1/sla/tickets/{ticket_id}", "b:master_admin"),
    ("GET /api/v1/sla/rules", "b:master_admin"),
    ("GET /api/v1/sla/calendar", "b:master_admin"),
    ("GET /api/v1/approvals/requests/{request_id}", "b:master_admin"),
    ("GET /api/v1/approvals/history/{ticket_id}", "b:master_admin"),
    ("GET /api/v1/staging/deployments/{deployment_id}", "b:master_admin"),
    ("GET /api/v1/tickets/{ticket_id}", "b:master_admin"),
    ("GET /api/v1/tickets/{ticket_id}/comments", "b:master_admin"),
    ("GET /api/v1/tickets", "b:master_admin"),
    ("GET /api/v1/users", "b:master_admin"),
    ("GET /api/v1/audit", "b:master_admin"),
    ("GET /api/v1/ingest/batches/{batch_id}/status", "b:master_admin"),
    ("GET /api/v1/ingest/sources", "b:master_admin"),
    ("GET /api/v1/analytics/customers/{customer_id}/profile", "b:master_admin"),
    ("GET /api/v1/analytics/products/performance", "b:master_admin"),
    ("GET /api/v1/dashboards/{dashboard_id}", "b:master_admin"),
    ("GET /api/v1/dashboards/{dashboard_id}/data", "b:master_admin"),
    ("GET /api/v1/alerts", "b:master_admin"),
    ("GET /api/v1/alerts/rules/{rule_id}", "b:master_admin"),
    ("GET /internal/ml/training/{job_id}", "b:internal"),
    ("GET /internal/ml/models", "b:internal"),
    ("GET /api/v1/items/{item_id}/embedding", "b:internal"),
    ("POST /internal/ml/embeddings", "b:internal"),
    ("GET /api/v1/tenant", "b:master_admin"),
    ("GET /api/v1/api-keys", "b:master_admin"),
    ("GET /metrics", "b:internal"),                     # B's own ml_* series
]

# Views of B's records compared before and after the probe (keys that move on their own are
# dropped: request ids, clocks, usage stamps).
B_VIEWS = [
    ("GET", "/api/v1/tickets?limit=100", "b:master_admin"),
    ("GET", "/api/v1/tickets/{ticket}", "b:master_admin"),
    ("GET", "/api/v1/tickets/{ticket_pending}", "b:master_admin"),
    ("GET", "/api/v1/files/ticket/{ticket}", "b:master_admin"),
    ("GET", "/api/v1/sla/rules", "b:master_admin"),
    ("GET", "/api/v1/sla/calendar", "b:master_admin"),
    ("GET", "/api/v1/approvals/requests", "b:master_admin"),
    ("GET", "/api/v1/staging/environments", "b:master_admin"),
    ("GET", "/api/v1/staging/deployments", "b:master_admin"),
    ("GET", "/api/v1/users", "b:master_admin"),
    ("GET", "/api/v1/api-keys", "b:master_admin"),
    ("GET", "/api/v1/notifications", "b:approver"),
    ("GET", "/api/v1/notifications", "b:viewer"),
    ("GET", "/api/v1/notifications/preferences", "b:viewer"),
    ("GET", "/api/v1/users/me", "b:viewer"),
    ("GET", "/api/v1/ingest/sources?active_only=false", "b:master_admin"),
    ("GET", "/api/v1/analytics/customers/{customer_w}/profile", "b:master_admin"),
    ("GET", "/api/v1/analytics/customers/{customer_r}/profile", "b:master_admin"),
    ("GET", "/api/v1/dashboards/{dashboard}", "b:master_admin"),
    ("GET", "/api/v1/alerts/rules/{rule}", "b:master_admin"),
    ("GET", "/api/v1/alerts", "b:master_admin"),
    ("GET", "/api/v1/items/{item_w}/embedding", "b:internal"),
    ("GET", "/internal/ml/models", "b:internal"),
    ("GET", "/api/v1/tenant", "b:master_admin"),
]
# A's views, compared before and after B's live writes (a ticket, an assignment, an order, an
# interaction): B's data may not move A's lists or figures.
A_VIEWS = [
    ("GET", "/api/v1/tickets?limit=100", "a:admin", None),
    ("GET", "/api/v1/dashboard/overview", "a:admin", None),
    ("GET", "/api/v1/dashboard/analytics/tickets", "a:admin", None),
    ("GET", "/api/v1/sla/metrics", "a:admin", None),
    ("GET", "/api/v1/sla/breaches", "a:admin", None),
    ("GET", "/api/v1/notifications", "a:agent", None),
    ("GET", "/api/v1/analytics/metrics?metric_type=revenue&{range}", "a:admin", None),
    ("GET", "/api/v1/analytics/metrics?metric_type=customers&{range}", "a:admin", None),
    ("GET", "/api/v1/analytics/customers/segments?{range}", "a:admin", None),
    ("GET", "/api/v1/analytics/products/performance?{range}", "a:admin", None),
    ("GET", "/api/v1/data-quality/reports?{range}", "a:admin", None),
    ("GET", "/api/v1/alerts", "a:admin", None),
    ("GET", "/api/v1/ingest/sources?active_only=false", "a:admin", None),
    ("POST", "/api/v1/recommendations", "a:admin", {"user_id": "kw-user-1", "count": 20}),
]

VOLATILE = {"timestamp", "request_id", "last_used_at", "uptime_seconds", "generated_at",
            "computed_at", "last_updated", "next_refresh", "last_evaluated_at", "last_login",
            "expires_at", "sla_status", "time_remaining_hours", "age", "current_value",
            "processing_latency_ms", "remaining", "updated_at_ms", "risk_score", "query_time_ms",
            "segmentation_date", "cache_hit", "latency_ms"}


# ---------------------------------------------------------------- sending one probe

def fill(template, params):
    """The path with each {name} replaced by params[name], percent-encoded."""
    return re.sub(r"\{([^}]+)\}", lambda mt: quote(params[mt.group(1)], safe=""), template)


def request_strings(path, query, body, raw):
    """Strings the request itself carried (at least 6 characters): removed from the answer
    before it is searched, so an echo of the request is not taken for a leak."""
    out = set(s for s in path.split("/") if len(s) >= 6)
    for v in (query or {}).values():
        out.add(str(v))

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                walk(k)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str):
            out.add(o)
    walk(body)
    if raw:
        out.update(re.findall(r"[A-Za-z0-9@._-]{6,}", raw[0].decode("latin-1")))
    return sorted((s for s in out if len(s) >= 6), key=len, reverse=True)


def ws_exchange(port, path, headers, rid):
    """A WebSocket upgrade: (status, headers, body bytes). On 101 whatever the server sends
    in its first 150 ms is the body; then a close frame."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             f"X-Request-ID: {rid}"] + [f"{k}: {v}" for k, v in headers.items()]
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("closed before a response head")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        hl = head.decode("latin-1").split("\r\n")
        status = int(hl[0].split(" ")[1])
        hdrs = {}
        for line in hl[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status == 101:
            s.settimeout(0.15)
            try:
                while len(rest) < 1 << 20:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            except socket.timeout:
                pass
            mask = os.urandom(4)
            s.sendall(b"\x88\x82" + mask + bytes(b ^ mask[i] for i, b in enumerate(b"\x03\xe8")))
            return status, hdrs, rest
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, hdrs, rest[:n]
    finally:
        s.close()


class WsConn:
    """An open WebSocket whose incoming bytes are kept (frames are scanned, not parsed)."""

    def __init__(self, port, path, headers):
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"] + [f"{k}: {v}" for k, v in headers.items()]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, self.data = buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head else 0

    def close(self):
        self.sock.close()


def drain_all(conns, seconds):
    """Reads whatever arrives on any of conns for `seconds`."""
    import selectors
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    end = time.time() + seconds
    while time.time() < end:
        for k, _ in sel.select(max(0.0, end - time.time())):
            try:
                chunk = k.fileobj.recv(65536)
            except (BlockingIOError, OSError):
                continue
            if not chunk or len(k.data.data) > 4 << 20:
                sel.unregister(k.fileobj)
            else:
                k.data.data += chunk
    sel.close()


def live_phase(w, routes, principals, t):
    """A-side callers hold every WebSocket route open while B makes events on its channels
    (a notification, a comment, an SLA breach, a dashboard update): nothing of B's may reach
    them; B's own sockets must see the events. Returns (A sockets open, B events seen, problems)."""
    port, problems = w.srv.port, []
    ws_routes = [r for r in routes if "websocket" in r["flags"]]
    a_dash = w.call("POST", "/api/v1/dashboards", "a:admin", 201,
                    json={"name": "A live", "category": "finance", "is_public": True,
                          "widgets": [_widget()]}).json()["data"]["dashboard_id"]
    paths = {r["path"]: fill(r["path"], {"dashboard_id": a_dash}) for r in ws_routes}
    socks = []
    for who in principals:
        if who in NOCRED:
            continue
        for r in ws_routes:
            c = WsConn(port, paths[r["path"]], w.headers[who])
            if c.status == 101:
                socks.append((who, r["path"], c))
            else:
                c.close()
    b_paths = {"/ws/notifications": ("b:agent", "/ws/notifications"),
               "/ws/sla": ("b:master_admin", "/ws/sla"),
               "/ws/dashboards/{dashboard_id}": ("b:master_admin",
                                                 f"/ws/dashboards/{w.b['dashboard']}")}
    b_socks = {k: WsConn(port, p, b_headers(w, who)) for k, (who, p) in b_paths.items()}
    drain_all(list(b_socks.values()) + [c for _, _, c in socks], 0.3)  # what came on connect
    seen_before = {id(c): len(c.data) for c in b_socks.values()}
    a_before = {id(c): len(c.data) for _, _, c in socks}
    m = w.mark
    incident = w.b_call("POST", "/api/v1/tickets", "b:viewer",
                        json={"title": f"B incident {m}", "type": "incident"})["id"]
    w.b_call("POST", f"/api/v1/tickets/{incident}/assign",
             json={"assignee_id": w.users["b:agent"]["id"]})
    w.b_call("POST", "/api/v1/ingest/stream",
             json={"source_id": w.b["source_w"], "data_type": "orders", "timestamp": iso(now_utc()),
                   "data": {"order_id": f"r{m}-order-live", "customer_id": w.b["customer_r"],
                            "created_at": iso(now_utc()), "total": 99.5}})
    w.b_call("POST", "/internal/data/interactions", bearer(w.b_internal),
             json={"interactions": [{"user_id": "kw-user-1", "item_id": i,
                                     "interaction_type": "purchase"}
                                    for i in (w.b["item_r"], w.b["item_w"])]})
    deadline = time.time() + 15   # the incident's 3.6 s response deadline, then the timer
    while time.time() < deadline:
        drain_all(list(b_socks.values()), 0.1)
        if all(len(c.data) > seen_before[id(c)] for c in b_socks.values()) and \
                b"sla_breach" in b_socks["/ws/sla"].data:
            break
    seen = 0
    for k, c in b_socks.items():
        new = c.data[seen_before[id(c)]:]
        if new and (k != "/ws/sla" or b"sla_breach" in new):
            seen += 1
        else:
            problems.append(f"B's own {k} socket saw no event: {new[:200]!r}")
        c.close()
    drain_all([c for _, _, c in socks], 0.1)
    for who, path, c in socks:
        new = c.data[a_before[id(c)]:].decode("latin-1").lower()
        found = [mk for mk in w.markers if mk in new] + \
            [u for u in set(x.lower() for x in UUID_RX.findall(new)) if u in w.b_ids]
        if found:
            t.note(t.leaks, f"GET {path} (live)", who, 101, f"B's event on A's socket: {found[:4]}",
                   c.data[a_before[id(c)]:])
        c.close()
    return len(socks), seen, problems


# ---------------------------------------------------------------- judging answers

def _is_str(v):
    return isinstance(v, str) and v != ""


def envelope_problem(surface, status, headers, body, rid):
    """None when a denial is in the surface's error format (contracts/README.md), else why."""
    ctype = headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        return f"Content-Type {ctype!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        return "body is not JSON"
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict):
        return "no error object"
    e = doc["error"]
    if not _is_str(e.get("code")) or not re.fullmatch(r"[A-Z][A-Z_]*", e["code"]):
        return f"error.code {e.get('code')!r}"
    if not _is_str(e.get("message")):
        return "error.message missing"
    want = SURFACE_CODES.get(status)
    if want and e["code"] not in want:
        return f"code {e['code']} for status {status}"
    top, inner = set(doc), set(e)
    if surface == "lms":
        ok = top == {"error", "request_id"} and inner == {"code", "message", "details"} and \
            isinstance(e["details"], dict) and doc["request_id"] == rid
    elif surface == "desk":
        ok = top == {"error"} and inner == {"code", "message", "details"} and \
            isinstance(e["details"], dict)
    elif surface == "commerce":
        ok = top == {"success", "error", "timestamp", "request_id"} and doc["success"] is False \
            and inner == {"code", "message", "details", "field_errors"} and \
            isinstance(e["details"], dict) and isinstance(e["field_errors"], list) and \
            doc["request_id"] == rid and _is_str(doc["timestamp"])
    elif surface == "learning":
        ok = top == {"success", "error"} and doc["success"] is False and \
            inner - {"retryAfter"} == {"code", "message", "details"} and \
            isinstance(e["details"], str)
    elif surface == "recs":
        ok = top == {"error"} and inner == {"code", "message", "details", "request_id",
                                            "timestamp"} and \
            isinstance(e["details"], dict) and e["request_id"] == rid
    elif surface == "shared":
        ok = top == {"success", "error", "request_id"} and doc["success"] is False and \
            inner == {"code", "message", "details", "request_id", "timestamp"} and \
            doc["request_id"] == rid == e["request_id"]
    else:
        return f"unknown surface {surface}"
    return None if ok else f"not the {surface} error envelope: {body[:200]!r}"


class Tally:
    def __init__(self):
        self.sent = 0
        self.warmed = 0
        self.leaks, self.fivexx, self.malformed, self.badcred, self.perm = [], [], [], [], []
        self.statuses = {}

    def note(self, bucket, route, who, status, why, body=b""):
        snippet = body[:240].decode("utf-8", "replace") if isinstance(body, bytes) else body
        snippet = " ".join(snippet.split())
        bucket.append(f"{route} as {who}: {status} {why} | {snippet}")


def tenant_of(who):
    return "c" if who == "tenant_c" else "a"


def judge(w, t, route, who, req, status, headers, body, rid, strip):
    key = f"{route['method']} {route['path']}"
    t.statuses[status] = t.statuses.get(status, 0) + 1
    text = body.decode("latin-1").lower() if isinstance(body, bytes) else body.lower()
    for s in strip + (sorted(w.sent, key=len, reverse=True) if req["history"] else []):
        text = text.replace(s.lower(), " ")
    found = [mk for mk in w.markers if mk in text]
    found += [u for u in set(x.lower() for x in UUID_RX.findall(text)) if u in w.b_ids]
    ok = 200 <= status < 300 or status == 101
    public = route["auth"] == "public"
    if status >= 500:
        t.note(t.fivexx, key, who, status, "server error", body)
    if found:
        t.note(t.leaks, key, who, status, f"B's data in the answer: {found[:4]}", body)
    elif ok and req["b_object"] and not public:
        t.note(t.leaks, key, who, status, "2xx for a request naming B's object", body)
    elif status == 409 and req["conflict_key"] and \
            (tenant_of(who), req["conflict_key"]) not in w.created:
        t.note(t.leaks, key, who, status, "409: a key only B holds is visible", body)
    if ok and key == "POST /api/v1/ingest/batch" and tenant_of(who) == "a":
        try:
            w.a_batches.append(json.loads(body)["data"]["batch_id"])
        except (ValueError, KeyError, TypeError):
            pass
    if ok and req["conflict_key"]:
        w.created.add((tenant_of(who), req["conflict_key"]))
    kind, held = HOLDS.get(who, (None, None))
    if ok and kind and not public and \
            held not in (route["roles"] if kind == "role" else route["scopes"]):
        t.note(t.perm, key, who, status,
               f"2xx though the route's permission {route['permission']} is not held", body)
    if who in NOCRED and not public:
        if ok:
            t.note(t.badcred, key, who, status, "2xx without a valid credential", body)
        elif status != 401:
            t.note(t.badcred, key, who, status, "bad credential not answered 401", body)
    if 400 <= status < 600:
        why = envelope_problem(route["surface"], status, headers,
                               body.decode("utf-8", "replace"), rid)
        if why:
            t.note(t.malformed, key, who, status, why, body)


def send(w, client, route, who, headers, req, t):
    path = fill(route["path"], req["params"])
    rid = f"iso-{t.sent}-{secrets.token_hex(4)}"
    h = {**headers, "X-Request-ID": rid}
    strip = request_strings(path, req["query"], req["json"], req["raw"]) + \
        [s for v in headers.values() for s in v.split()]
    t.sent += 1
    w.sent.update(strip)
    try:
        if "websocket" in route["flags"]:
            q = ("?" + str(httpx.QueryParams(req["query"]))) if req["query"] else ""
            status, rh, body = ws_exchange(w.srv.port, path + q, h, rid)
        else:
            kw = {"params": req["query"]} if req["query"] else {}
            if req["json"] is not None:
                kw["json"] = req["json"]
            elif req["raw"] is not None:
                kw["content"] = req["raw"][0]
                h["Content-Type"] = req["raw"][1]
            r = client.request(route["method"], path, headers=h, **kw)
            status, rh, body = r.status_code, r.headers, r.content
    except (httpx.HTTPError, OSError, EOFError) as e:
        t.note(t.fivexx, f"{route['method']} {route['path']}", who, "-", f"no answer: {e!r}")
        return
    judge(w, t, route, who, req, status, rh, body, rid, strip)


# ---------------------------------------------------------------- B's views and controls

def b_headers(w, who):
    return bearer(w.b_internal) if who == "b:internal" else bearer(w.tok[who])


def normalise(o):
    if isinstance(o, dict):
        return {k: normalise(v) for k, v in sorted(o.items()) if k not in VOLATILE}
    if isinstance(o, list):
        return [normalise(v) for v in o]
    return o


def diff(a, b, at=""):
    """The first few places where two JSON values differ, as text."""
    if type(a) is not type(b):
        return [f"{at or '.'}: {a!r:.80} -> {b!r:.80}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k), b.get(k), f"{at}.{k}") if k in a and k in b else \
                [f"{at}.{k}: {a.get(k)!r:.80} -> {b.get(k)!r:.80}"]
        return out[:6]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{at}: {len(a)} entries -> {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{at}[{i}]")
        return out[:6]
    return [] if a == b else [f"{at or '.'}: {a!r:.80} -> {b!r:.80}"]


def b_snapshot(w):
    out = {}
    for method, tmpl, who in B_VIEWS:
        path = tmpl.format(**w.b)
        r = w.api.request(method, path, headers=b_headers(w, who))
        body = normalise(r.json()) if r.headers.get("content-type", "").startswith(
            "application/json") else r.text
        out[f"{method} {path} as {who}"] = (r.status_code, body)
    return out


def a_snapshot(w):
    rng = str(httpx.QueryParams(w.a_range))
    out = {}
    for method, tmpl, who, body in A_VIEWS:
        path = tmpl.replace("{range}", rng)
        r = w.api.request(method, path, headers=bearer(w.tok[who]),
                          **({"json": body} if body else {}))
        doc = normalise(r.json()) if r.headers.get("content-type", "").startswith(
            "application/json") else r.text
        out[f"{method} {tmpl} as {who}"] = (r.status_code, doc)
    return out


def wait_a_batches(w):
    """A's batches from the probe run as jobs: let them finish before A's views are read."""
    for bid in w.a_batches:
        w.wait(f"A's batch {bid}", lambda: w.call(
            "GET", f"/api/v1/ingest/batches/{bid}/status", "a:admin").json()["data"]["status"]
            != "processing")


def run_controls(w, routes):
    """(passed, problems): B's own reads through the probe's rules answer 2xx with B's data."""
    by_key = {f"{r['method']} {r['path']}": r for r in routes}
    problems = []
    for key, who in CONTROLS:
        route = by_key.get(key)
        if route is None:
            problems.append(f"{key}: not in the route table")
            continue
        req = RULES[key](w)[-1]
        if key == "POST /internal/ml/embeddings":
            req = P(json={"items": [{"item_id": w.b["item_r"]}]})
        path = fill(route["path"], req["params"])
        kw = {"params": req["query"]} if req["query"] else {}
        if req["json"] is not None:
            kw["json"] = req["json"]
        r = w.api.request(route["method"], path, headers=b_headers(w, who), **kw)
        text = r.text.lower()
        seen = any(mk in text for mk in w.markers) or \
            any(u.lower() in w.b_ids for u in UUID_RX.findall(text))
        if not (200 <= r.status_code < 300) or not seen:
            problems.append(f"{key} as {who}: {r.status_code}, B's data "
                            f"{'seen' if seen else 'not seen'}: {r.text[:200]}")
    return len(CONTROLS) - len(problems), problems


# ---------------------------------------------------------------- the run

def load_routes(bin_path):
    p = subprocess.run([bin_path, "routes"], capture_output=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"tessera routes: exit {p.returncode}: {p.stderr.decode()}")
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def rate_flags(routes):
    classes = sorted({r["rate_class"] for r in routes} - {"none"})
    out = ["--sla-check-ms", "100"]
    for c in classes:
        out += ["--rate-limit", f"{c}=1000000/60"]
    return out


def probe_routes(w, client, routes, principals, res):
    for route in routes:
        key = f"{route['method']} {route['path']}"
        if key not in RULES:
            continue
        res.probed += 1
        if route["auth"] != "public" and "websocket" not in route["flags"]:
            b_who = "b:master_admin" if "user" in route["auth"] else "b:internal"
            for req in RULES[key](w):
                if req["warm"] or (req["warm"] is None and route["method"] == "GET"):
                    warm(w, client, route, b_headers(w, b_who), req, res.tally)
        for who in principals:
            for req in RULES[key](w):
                send(w, client, route, who, w.headers[who], req, res.tally)


def warm(w, client, route, headers, req, t):
    """B makes the request first: a cache that forgot the tenant would now hold B's answer."""
    kw = {"params": req["query"]} if req["query"] else {}
    if req["json"] is not None:
        kw["json"] = req["json"]
    client.request(route["method"], fill(route["path"], req["params"]), headers=headers, **kw)
    t.warmed += 1


class Result:
    def __init__(self):
        self.routes = 0
        self.probed = 0
        self.unprobed = []
        self.stale_rules = []
        self.tally = Tally()
        self.changed = []
        self.controls = (0, [])
        self.live = (0, 0, [])
        self.a_moved = []
        self.exit_code = None
        self.sanitizer = None
        self.principals = ()
        self.seconds = 0.0
        self.error = None


def run(bin_path, principals=FULL_PRINCIPALS, log=print):
    """Starts a server on a fresh data dir, seeds it, probes every route; returns a Result."""
    import tempfile
    res = Result()
    res.principals = principals
    t0 = time.time()
    routes = load_routes(bin_path)
    res.routes = len(routes)
    keys = {f"{r['method']} {r['path']}" for r in routes}
    res.unprobed = sorted(k for k in keys if k not in RULES)
    res.stale_rules = sorted(k for k in RULES if k not in keys)
    with tempfile.TemporaryDirectory(prefix="tessera-isolation-") as data:
        w = World(bin_path, data, principals)
        seed(w)
        w.srv = start_server(bin_path, data, rate_flags(routes))
        try:
            w.api = httpx.Client(base_url=w.srv.url, timeout=30)
            seed_live(w)
            log(f"seeded in {time.time() - t0:.1f} s: B has {len(w.b_ids)} ids, marker {w.mark}")
            before = b_snapshot(w)
            res.controls = run_controls(w, routes)
            t1 = time.time()
            client = httpx.Client(base_url=w.srv.url, timeout=30)
            keys_ = lambda r: f"{r['method']} {r['path']}"  # noqa: E731
            probe_routes(w, client, [r for r in routes if keys_(r) not in LAST], principals, res)
            after = b_snapshot(w)
            res.changed = [f"{k}: {diff(before[k], after[k])}" for k in before
                           if before[k] != after[k]]
            t2 = time.time()
            wait_a_batches(w)
            a_before = a_snapshot(w)
            res.live = live_phase(w, routes, principals, res.tally)
            a_after = a_snapshot(w)
            res.a_moved = [f"{k}: {diff(a_before[k], a_after[k])}" for k in a_before
                           if a_before[k] != a_after[k]]
            log(f"live phase: {time.time() - t2:.1f} s; main probe {t2 - t1:.1f} s")
            probe_routes(w, client, [r for r in routes if keys_(r) in LAST], principals, res)
            client.close()
            log(f"probed {res.probed} routes x {len(principals)} callers: "
                f"{res.tally.sent} requests ({res.tally.warmed} warm-ups by B) in "
                f"{time.time() - t1:.1f} s; statuses "
                + ", ".join(f"{k}: {v}" for k, v in sorted(res.tally.statuses.items(),
                                                             key=lambda kv: str(kv[0]))))
        except Exception as e:  # a seeding failure is a FAIL row, never a crash of the check
            import traceback
            tb = "".join(traceback.format_tb(e.__traceback__)[-3:])
            res.error = f"{type(e).__name__}: {e}\n{tb}"
        finally:
            if w.api:
                w.api.close()
            res.exit_code, res.sanitizer = w.srv.finish(timeout=60)
            if res.sanitizer is None and res.exit_code != 0:
                res.sanitizer = f"exit {res.exit_code}; log tail: {w.srv.stderr()[-2000:]}"
    res.seconds = time.time() - t0
    return res


def report(res, row, log=print):
    """Prints the details and one scorecard row per claim."""
    t = res.tally
    for title, items in (("route without a probe rule", res.unprobed),
                         ("rule for a route not in the table", res.stale_rules),
                         ("LEAK", t.leaks), ("5xx", t.fivexx), ("malformed denial", t.malformed),
                         ("bad credential", t.badcred), ("permission", t.perm),
                         ("B changed", res.changed), ("A moved", res.a_moved),
                         ("control", res.controls[1]), ("live", res.live[2])):
        for it in items[:40]:
            log(f"  {title}: {it}")
        if len(items) > 40:
            log(f"  {title}: ... {len(items) - 40} more")
    if res.error:
        log(f"  probe error: {res.error}")
    if res.sanitizer:
        log(f"  sanitizer: {res.sanitizer}")
    row("routes probed / routes in table", "all", f"{res.probed}/{res.routes}",
        res.probed == res.routes and not res.unprobed and res.routes > 0 and not res.error)
    row("leaks (B's data or a 2xx on B's object to an A-side caller)", "0", len(t.leaks),
        not t.leaks and not res.error)
    row("5xx answers", "0", len(t.fivexx), not t.fivexx and not res.error)
    row("denials not in the surface's error format", "0", len(t.malformed),
        not t.malformed and not res.error)
    row("bad credentials not answered 401", "0", len(t.badcred), not t.badcred and not res.error)
    row("2xx for a caller the route's permission excludes", "0", len(t.perm),
        not t.perm and not res.error)
    row("B's records changed by A-side calls", "0", len(res.changed),
        not res.changed and not res.error)
    row("A's views moved by B's writes", "0", len(res.a_moved), not res.a_moved and not res.error)
    ok_controls = res.controls[0]
    row("controls: B reads its own objects by the probe's ids", f"{len(CONTROLS)}/{len(CONTROLS)}",
        f"{ok_controls}/{len(CONTROLS)}", ok_controls == len(CONTROLS) and not res.error)
    n_socks, seen, _ = res.live
    row("live: B's events reach B's sockets, none of A's open ones", "3/3, A sockets > 0",
        f"{seen}/3, {n_socks} A sockets", seen == 3 and n_socks > 0 and not res.error)
    want = res.routes * len(res.principals)
    row("requests sent (routes x callers, some routes twice)", f">= {want}", t.sent,
        t.sent >= want and not res.error)
    row("server exit after the probe", "0, no sanitizer report",
        f"{res.exit_code}{', sanitizer report' if res.sanitizer else ''}",
        res.exit_code == 0 and not res.sanitizer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("TESSERA_BIN",
                                                    os.path.join(ROOT, "build", "tessera")))
    ap.add_argument("--fast", action="store_true", help="the reduced caller set of tools/test")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    from scorecard import exit_status, row
    res = run(args.bin, FAST_PRINCIPALS if args.fast else FULL_PRINCIPALS)
    report(res, row)
    print(f"isolation probe: {res.seconds:.1f} s")
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
