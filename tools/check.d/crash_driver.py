"""Crash-safety driver (issue 7): Jepsen's set workload against a real tessera process.

Writer threads send a steady mix of uniquely identified writes and record the answer each one
got; meanwhile the server is `kill -9`ed at random moments and restarted on the same data dir.
At the end the server is started once more, every acknowledged batch job is waited for, the
writes are read back and each id is classified:

  acknowledged   a success answer came back (2xx)
  refused        an error answer came back, or the connection was never made
  unknown        no answer (the request was in flight when the server died)

  lost        acknowledged, absent from the final read                       bar 0
  unexpected  present, but never sent or refused                            bar 0
  duplicated  present more than once, or counted twice                      bar 0

Writes and how they are read back (README: commerce Ingestion, recs Catalog and interactions,
desk):
  stream       POST /api/v1/ingest/stream, one event each (202). cm_events by event_id; the
               stream source's total_records (GET /ingest/sources) must equal the distinct
               events stored (more = counted twice).
  interaction  POST /api/v1/interactions (201, interaction_id), the write's id in
               context.session_id. rc_interactions by session_id; the stored interaction_id
               must be the one answered.
  ticket       POST /api/v1/tickets (201, id), the write's id in the title. GET /api/v1/tickets
               paged through; the id answered must be the one listed; ticket numbers unique.
  batch        POST /api/v1/ingest/batch, 1..200 orders with 1..3 items each (201, batch_id).
               The 201 promises a durable batch and job; records are stored later by the job,
               which resumes after a restart. So after the last restart every acknowledged
               batch must reach completed (GET /ingest/batches/{id}/status) with stored_records
               = records and duplicate_records = 0, and every one of its orders must be in
               cm_orders with exactly its items in cm_order_items. A record counts once.
There is no GET route for single events, interactions or orders, so those are read with
sqlite3 from the data dir after the final clean shutdown. PRAGMA integrity_check runs on every
*.db file under the data dir after each kill (the files as the crash left them) and at the end.
"""
import glob
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from datetime import datetime, timezone

import httpx

PASSWORD = "crash-check-password"
RATE_FLAGS = []
for cls in ("default", "auth", "commerce", "stream", "recs", "analytics"):
    RATE_FLAGS += ["--rate-limit", f"{cls}=10000000/60"]
KINDS = ("stream", "interaction", "ticket", "batch")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Proc:
    """tessera serve on a fixed port and data dir, started again and again."""

    def __init__(self, binary, data, port, flags, env):
        self.binary, self.data, self.port = binary, data, port
        self.args = [binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}", *flags]
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.log_path = os.path.join(os.path.dirname(data), "server.log")
        self.p = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self):
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=self.log, env=self.env)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"tessera exited {self.p.returncode}: {self.tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError("tessera did not become ready: " + self.tail())

    def kill9(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self.log.close()

    def term(self, timeout=60):
        self.p.send_signal(signal.SIGTERM)
        try:
            code = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            code = "timeout"
        self.log.close()
        return code

    def discard(self):
        """After a failure: no server left behind."""
        if self.p and self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


class Token:
    """The writers' bearer token; logs in again on a 401 (a power cut may lose the session)."""

    def __init__(self, url, email):
        self.url, self.email = url, email
        self.lock = threading.Lock()
        self.value = None

    def get(self):
        with self.lock:
            return self.value

    def refresh(self, stale):
        with self.lock:
            if self.value != stale:
                return
            r = httpx.post(self.url + "/api/v1/auth/login", timeout=30,
                           json={"email": self.email, "password": PASSWORD})
            if r.status_code == 200:
                self.value = r.json()["access_token"]


class Ledger:
    """What was sent and what each write was answered; one entry per write id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes = {k: {} for k in KINDS}   # kind -> id -> [outcome, server id]
        self.batches = {}                       # batch write id -> [(order_id, items)]

    def sent(self, kind, wid):
        with self.lock:
            self.writes[kind][wid] = ["unknown", None]

    def answer(self, kind, wid, outcome, server_id=None):
        with self.lock:
            self.writes[kind][wid] = [outcome, server_id]

    def ids(self, kind, outcome):
        return {w for w, (o, _) in self.writes[kind].items() if o == outcome}

    def refusals(self, kind):
        """{answer: count} of the refused writes of kind (status code or "no connection")."""
        out = {}
        for o, why in self.writes[kind].values():
            if o == "refused":
                out[str(why)] = out.get(str(why), 0) + 1
        return out

    def count(self, kind, outcome):
        with self.lock:
            return sum(1 for o, _ in self.writes[kind].values() if o == outcome)


class Workload:
    """The writer threads. They send only while `up` is set, so the kill loop decides when."""

    def __init__(self, url, token, ledger, run_id, rng_seed):
        self.url, self.token, self.ledger, self.run = url, token, ledger, run_id
        self.up = threading.Event()
        self.stop = threading.Event()
        self.seed = rng_seed
        self.threads = []
        self.errors = []

    def start(self):
        for i, kind in enumerate(KINDS):
            t = threading.Thread(target=self.writer, args=(kind, random.Random(self.seed + i)),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self):
        self.stop.set()
        self.up.set()  # let waiting writers see stop
        for t in self.threads:
            t.join(timeout=60)
        self.up.clear()

    def writer(self, kind, rng):
        client = httpx.Client(base_url=self.url, timeout=10)
        n = 0
        try:
            while not self.stop.is_set():
                if not self.up.wait(0.1) or self.stop.is_set():
                    continue
                n += 1
                wid = f"{self.run}-{kind[0]}{n}"
                self.send(client, kind, wid, rng)
                if kind == "batch":
                    time.sleep(rng.uniform(0.01, 0.06))
        except Exception as e:  # a driver bug must not pass for a quiet writer
            self.errors.append(f"{kind}: {e!r}")
        finally:
            client.close()

    def request(self, kind, wid, rng):
        if kind == "stream":
            return "/api/v1/ingest/stream", {
                "source_id": f"{self.run}-stream", "data_type": "events", "timestamp": iso_now(),
                "data": {"event_id": wid, "type": rng.choice(["page_view", "add_to_cart"]),
                         "timestamp": iso_now(), "session_id": f"s{rng.randrange(50)}"}}
        if kind == "interaction":
            return "/api/v1/interactions", {
                "user_id": f"cu{rng.randrange(20)}", "item_id": f"ci{rng.randrange(40)}",
                "interaction_type": "click", "context": {"session_id": wid}}
        if kind == "ticket":
            return "/api/v1/tickets", {"title": f"crash {wid}", "type": "bug",
                                       "description": "written by the crash check"}
        orders = []
        # 200 orders pass 16 KiB (parsed in the pool); 1,200 take two chunks (a resumed job)
        size = 1200 if rng.random() < 0.05 else rng.choice([1, 5, 20, 60, 200])
        for k in range(size):
            items = [{"product_id": f"p{rng.randrange(30)}", "quantity": 1 + rng.randrange(3),
                      "unit_price": 2.5} for _ in range(1 + rng.randrange(3))]
            orders.append({"order_id": f"{wid}-{k}", "customer_id": f"c{rng.randrange(30)}",
                           "created_at": "2025-03-01T10:00:00Z",
                           "total": sum(i["quantity"] * 2.5 for i in items), "items": items})
        with self.ledger.lock:
            self.ledger.batches[wid] = [(o["order_id"], len(o["items"])) for o in orders]
        return "/api/v1/ingest/batch", {"source_id": f"{self.run}-batch", "data_type": "orders",
                                        "format": "json", "data": orders}

    def send(self, client, kind, wid, rng):
        path, body = self.request(kind, wid, rng)
        token = self.token.get()
        self.ledger.sent(kind, wid)
        try:
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.ConnectError:
            self.ledger.answer(kind, wid, "refused", "no connection")  # never reached it
            time.sleep(0.01)
            return
        except httpx.HTTPError:
            return  # in flight when the server died: unknown
        if 200 <= r.status_code < 300:
            d = r.json()
            sid = {"stream": lambda: d["data"]["record_id"],
                   "interaction": lambda: d["interaction_id"],
                   "ticket": lambda: d["id"],
                   "batch": lambda: d["data"]["batch_id"]}[kind]()
            self.ledger.answer(kind, wid, "acknowledged", sid)
        else:
            self.ledger.answer(kind, wid, "refused", r.status_code)
            if r.status_code == 401:
                self.token.refresh(token)
            elif r.status_code >= 500:
                self.errors.append(f"{kind}: {r.status_code} {r.text[:200]}")


def integrity(data):
    """PRAGMA integrity_check on every database file under the data dir: [(file, result)]."""
    out = []
    for path in sorted(glob.glob(os.path.join(data, "**", "*.db"), recursive=True)):
        try:
            # read-only: it runs WAL recovery (into the -shm) like the next start would, but
            # never checkpoints or deletes the WAL the restarted server has to recover itself
            c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            res = "; ".join(r[0] for r in c.execute("PRAGMA integrity_check"))
            c.close()
        except sqlite3.Error as e:
            res = f"error: {e}"
        out.append((os.path.relpath(path, data), res))
    return out


def admin(binary, data, *args, input=None):
    p = subprocess.run([binary, "admin", *args, "--data", data], input=input,
                       capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode())
    return json.loads(p.stdout)


class Run:
    """One crash run: fresh data dir, `kills` kills, the final read and its classification.

    durability: "normal" or "full"; env: extra environment of the server (the power-cut VFS);
    uptime: (lo, hi) seconds of load before a kill; early: share of kills that land at a random
    moment right after the start (start-up, recovery, resumed jobs) instead."""

    def __init__(self, binary, workdir, durability, kills, env=None, uptime=(0.2, 1.5),
                 early=0.2, seed=None, log=print):
        self.binary, self.kills, self.uptime, self.early = binary, kills, uptime, early
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.log = log
        self.data = os.path.join(workdir, "data")
        os.makedirs(self.data, exist_ok=True)
        self.proc = Proc(binary, self.data, free_port(),
                         ["--durability", durability, *RATE_FLAGS], env)
        self.run_id = f"r{self.seed % 100000}"
        self.ledger = Ledger()
        self.kills_done = 0
        self.integrity_bad = []

    def setup(self):
        admin(self.binary, self.data, "create-tenant", "--name", "Crash", "--domain",
              "crash.example", "--plan", "enterprise")
        admin(self.binary, self.data, "create-user", "--tenant", "crash.example", "--email",
              "admin@crash.example", "--name", "Crash Admin", "--role", "admin",
              "--password-stdin", input=(PASSWORD + "\n").encode())

    def execute(self):
        try:
            return self.steps()
        finally:
            self.proc.discard()
            if hasattr(self, "work"):
                self.work.finish()

    def steps(self):
        self.setup()
        self.proc.start()
        self.proc.wait_ready()
        self.token = Token(self.proc.url, "admin@crash.example")
        self.token.refresh(None)
        self.work = Workload(self.proc.url, self.token, self.ledger, self.run_id, self.seed)
        self.work.start()
        t0, spent = time.time(), {"start-up": 0.0, "load": 0.0, "integrity_check": 0.0}
        for k in range(self.kills):
            t = time.time()
            if k:
                self.proc.start()
            if k and self.rng.random() < self.early:
                time.sleep(self.rng.uniform(0, 0.4))  # wherever start-up is by then
            else:
                self.proc.wait_ready()
                spent["start-up"] += time.time() - t
                t = time.time()
                self.work.up.set()
                time.sleep(self.rng.uniform(*self.uptime))
                self.work.up.clear()
            spent["load"] += time.time() - t
            self.proc.kill9()
            self.kills_done += 1
            t = time.time()
            for f, res in integrity(self.data):
                if res != "ok":
                    self.integrity_bad.append(f"kill {k + 1}: {f}: {res}")
            spent["integrity_check"] += time.time() - t
        self.work.finish()
        self.log(f"# {self.kills_done} kills in {time.time() - t0:.1f} s (" +
                 ", ".join(f"{k} {v:.1f} s" for k, v in spent.items()) + ")")
        return self.final_read()

    def wait_batches(self, client, headers, timeout=300):
        """Final status of every batch the server acknowledged: {batch_id: status data}."""
        pending = {sid for o, sid in self.ledger.writes["batch"].values() if o == "acknowledged"}
        done, deadline = {}, time.time() + timeout
        while pending and time.time() < deadline:
            for bid in sorted(pending):
                r = client.get(f"/api/v1/ingest/batches/{bid}/status", headers=headers)
                if r.status_code == 200 and r.json()["data"]["status"] != "processing":
                    done[bid] = r.json()["data"]
                elif r.status_code == 404:
                    done[bid] = None
            pending -= set(done)
            if pending:
                time.sleep(0.2)
        for bid in pending:
            done[bid] = {"status": "still processing"}
        return done

    def api_read(self):
        self.proc.start()
        self.proc.wait_ready()
        self.token.refresh(self.token.get())
        headers = {"Authorization": f"Bearer {self.token.get()}"}
        with httpx.Client(base_url=self.proc.url, timeout=60) as c:
            statuses = self.wait_batches(c, headers)
            tickets, page = [], 1
            while True:
                r = c.get(f"/api/v1/tickets?limit=100&page={page}&sort=created_at&order=asc",
                          headers=headers)
                r.raise_for_status()
                body = r.json()
                tickets += body["tickets"]
                if page * 100 >= body["total"]:
                    break
                page += 1
            r = c.get("/api/v1/ingest/sources?active_only=false&size=100", headers=headers)
            r.raise_for_status()
            sources = {s["source_id"]: s for s in r.json()["data"]["content"]}
        code = self.proc.term()
        return statuses, tickets, sources, code

    def final_read(self):
        statuses, tickets, sources, code = self.api_read()
        db = sqlite3.connect(os.path.join(self.data, "tessera.db"))
        q = lambda sql, *a: db.execute(sql, a).fetchall()
        like = f"{self.run_id}-%"
        present = {
            "stream": [r[0] for r in q("SELECT event_id FROM cm_events WHERE event_id LIKE ?",
                                       like)],
            "interaction": q("SELECT session_id, interaction_id FROM rc_interactions "
                             "WHERE session_id LIKE ?", like),
        }
        orders = dict(q("SELECT o.order_id, (SELECT count(*) FROM cm_order_items i WHERE "
                        "i.tenant_id = o.tenant_id AND i.order_id = o.order_id) FROM cm_orders o "
                        "WHERE o.order_id LIKE ?", like))
        db.close()
        res = {k: {"lost": 0, "unexpected": 0, "duplicated": 0, "notes": []} for k in KINDS}
        self.classify_simple("stream", [(e, None) for e in present["stream"]], res)
        stored = sources.get(f"{self.run_id}-stream", {}).get("total_records", 0)
        if stored > len(set(present["stream"])):
            res["stream"]["duplicated"] += stored - len(set(present["stream"]))
            res["stream"]["notes"].append(f"source total_records {stored} > "
                                          f"{len(set(present['stream']))} stored")
        self.classify_simple("interaction", present["interaction"], res)
        self.classify_tickets(tickets, res)
        self.classify_batches(statuses, orders, sources, res)
        final = integrity(self.data)
        self.integrity_bad += [f"final: {f}: {r}" for f, r in final if r != "ok"]
        return {
            "seed": self.seed, "kills": self.kills_done, "result": res,
            "acknowledged": {k: self.ledger.count(k, "acknowledged") for k in KINDS},
            "acknowledged_orders": sum(len(self.ledger.batches.get(w, []))
                                       for w in self.ledger.ids("batch", "acknowledged")),
            "unknown": {k: self.ledger.count(k, "unknown") for k in KINDS},
            "refused": {k: self.ledger.count(k, "refused") for k in KINDS},
            "refused_why": {k: self.ledger.refusals(k) for k in KINDS},
            "integrity": {"checked": self.kills_done + 1, "bad": self.integrity_bad,
                          "files": [f for f, _ in final]},
            "exit_code": code, "writer_errors": self.work.errors,
        }

    def classify_simple(self, kind, rows, res, server_id_of=None):
        """rows: [(write id, server id or None)] as read back."""
        r, w = res[kind], self.ledger.writes[kind]
        seen = {}
        for wid, sid in rows:
            seen.setdefault(wid, []).append(sid)
        for wid, sids in seen.items():
            r["duplicated"] += len(sids) - 1
            out = w.get(wid)
            if out is None or out[0] == "refused":
                r["unexpected"] += 1
                r["notes"].append(f"{wid} present, {'never sent' if out is None else 'refused'}")
            elif out[0] == "acknowledged" and sids[0] is not None and out[1] not in sids:
                r["notes"].append(f"{wid}: answered id {out[1]}, stored {sids}")
                r["lost"] += 1
        for wid in self.ledger.ids(kind, "acknowledged") - set(seen):
            r["lost"] += 1
            if len(r["notes"]) < 20:
                r["notes"].append(f"{wid} acknowledged, absent")

    def classify_tickets(self, tickets, res):
        mine = [t for t in tickets if t["title"].startswith(f"crash {self.run_id}-")]
        rows = [(t["title"][len("crash "):], t["id"]) for t in mine]
        self.classify_simple("ticket", rows, res)
        numbers = [t["ticket_number"] for t in tickets]
        if len(numbers) != len(set(numbers)):
            res["ticket"]["duplicated"] += len(numbers) - len(set(numbers))
            res["ticket"]["notes"].append("ticket numbers reused")

    def classify_batches(self, statuses, orders, sources, res):
        r, w = res["batch"], self.ledger.writes["batch"]
        sent_orders = {}
        for wid, recs in self.ledger.batches.items():
            for oid, nitems in recs:
                sent_orders[oid] = (wid, nitems)
        for wid, (outcome, bid) in w.items():
            recs = self.ledger.batches.get(wid, [])
            if outcome != "acknowledged":
                continue
            st = statuses.get(bid)
            if st is None or st.get("status") != "completed":
                r["notes"].append(f"batch {bid} ({wid}): {st and st.get('status')}"
                                  f"{' ' + str(st.get('error')) if st else ''}")
            elif st["stored_records"] != len(recs) or st["duplicate_records"] != 0 or \
                    st["progress"]["processed_records"] != len(recs):
                extra = max(st["stored_records"] - len(recs), 0) + st["duplicate_records"]
                r["duplicated"] += extra
                r["notes"].append(f"batch {bid}: {len(recs)} sent, stored {st['stored_records']}, "
                                  f"duplicates {st['duplicate_records']}, processed "
                                  f"{st['progress']['processed_records']}")
            for oid, nitems in recs:
                have = orders.get(oid)
                if have is None or have < nitems:
                    r["lost"] += 1
                    if len(r["notes"]) < 20:
                        r["notes"].append(f"order {oid} of acknowledged batch {bid}: "
                                          f"{'absent' if have is None else f'{have}/{nitems} items'}")
        for oid, have in orders.items():
            wid, nitems = sent_orders.get(oid, (None, 0))
            outcome = w.get(wid, ["never sent"])[0] if wid else "never sent"
            if outcome in ("refused", "never sent"):
                r["unexpected"] += 1
                r["notes"].append(f"order {oid} present, batch {outcome}")
            elif have > nitems:
                r["duplicated"] += have - nitems
                r["notes"].append(f"order {oid}: {have} items stored, {nitems} sent")
        stored = sources.get(f"{self.run_id}-batch", {}).get("total_records", 0)
        if stored > len(orders):
            r["duplicated"] += stored - len(orders)
            r["notes"].append(f"batch source total_records {stored} > {len(orders)} stored")


def totals(out):
    """Sums over the kinds: lost, unexpected, duplicated, acknowledged, all counted in records
    (a batch's orders one by one, as lost counts them)."""
    res, ack = out["result"], out["acknowledged"]
    return {m: sum(res[k][m] for k in KINDS) for m in ("lost", "unexpected", "duplicated")} | {
        "acknowledged": sum(ack[k] for k in KINDS if k != "batch") + out["acknowledged_orders"]}


def acknowledged_text(out):
    ack = out["acknowledged"]
    return ", ".join(f"{k} {ack[k]}" for k in KINDS) + f" ({out['acknowledged_orders']} orders)"


def describe(out):
    """One line per kind for the log."""
    lines = []
    for k in KINDS:
        r = out["result"][k]
        lines.append(f"#   {k:12s} acknowledged {out['acknowledged'][k]:6d}  unknown "
                     f"{out['unknown'][k]:4d}  refused {out['refused'][k]:5d}  lost {r['lost']}  "
                     f"unexpected {r['unexpected']}  duplicated {r['duplicated']}")
        for n in r["notes"][:10]:
            lines.append(f"#     {n}")
    lines.append(f"#   (a batch's lost, unexpected and duplicated count its orders: "
                 f"{out['acknowledged_orders']} orders in acknowledged batches)")
    for k, why in out.get("refused_why", {}).items():
        if why:
            lines.append(f"#   {k} refused: {why}")
    for b in out["integrity"]["bad"][:10]:
        lines.append(f"#   integrity: {b}")
    for e in out["writer_errors"][:10]:
        lines.append(f"#   writer: {e}")
    return "\n".join(lines)
