"""Fault injection against the real tessera binary (issue 7): the cases that
tests/api/test_faults.py runs in their fast form and tools/check.d/faults runs longer and
randomised, each returning an Outcome of measured figures.

Faults and how they are made:
  SQLite I/O errors, full disk, failed fsync  libfiu's POSIX preload (fiu-run -x, Debian
      fiu-utils): the server runs with LD_PRELOAD=fiu_run_preload.so fiu_posix_preload.so and
      fiu-ctrl turns posix/io/rw/pwrite, .../pread or posix/io/sync/* on (failinfo = the errno:
      5 EIO, 28 ENOSPC) and off again in the running process. SQLite's unix VFS does its page
      I/O with pread/pwrite; sockets use read/write/writev, so these points hit storage only.
      The preload cannot run with ASan (the two wrap the same libc calls; the server hangs at
      start), so these cases need a build without sanitizers.
  a real full disk  the data dir on a small tmpfs (mount needs root), filled by a file.
  failed allocations  SQLite's allocator, wrapped by src/store/db.c when libfiu is loaded, fails
      while the fiu point tessera/sqlite/malloc is on (as SQLite's own OOM tests fail it). Only
      fiu_run_preload.so is needed: this runs under ASan too (verify_asan_link_order=0).
      Tessera's own small allocations abort on failure by design (src/core/arena.c, as redis
      does), so failing libc's malloc as a whole is not a fault the server claims to survive.
  a busy database  another process holds SQLite's write lock (BEGIN IMMEDIATE).
  an SMTP upstream that hangs or refuses  tools/check.d/smtp_fault.py on --smtp-url: silent
      after accept, silent after the message, connection refused, 451, 550.

Bars every case measures: the process never dies; no 5xx other than 503/507; each 503/507 in
the surface's error format (the OpenAPI Error schema, tests/api/contract.py) with Retry-After;
PRAGMA integrity_check ok; nothing half-written (a failed request leaves no row, an acknowledged
one all of its rows); and the same requests succeed once the fault is cleared, without a
restart, with /health answering 503 during a storage fault and 200 after.
"""
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("TESSERA_SRC", os.path.join(HERE, "..", ".."))
import sys  # noqa: E402

sys.path.insert(0, os.path.join(SRC, "tests", "api"))
sys.path.insert(0, HERE)
import httpx  # noqa: E402

import accounts  # noqa: E402
import conftest  # noqa: E402
import contract  # noqa: E402
import rawhttp  # noqa: E402
from accounts import PASSWORD, tenant, user  # noqa: E402
from conftest import Server  # noqa: E402
from smtp_fault import SmtpFault  # noqa: E402

FIU_DIR = "/usr/lib/fiu"
FIU_RUN = os.path.join(FIU_DIR, "fiu_run_preload.so")
FIU_POSIX = os.path.join(FIU_DIR, "fiu_posix_preload.so")
EIO, ENOSPC = 5, 28
FAULT_STATUSES = (503, 507)
# the checks poll hundreds of batch statuses a second (class commerce): no rate limit may answer
# for the fault (stop 11's "97 batches still processing" were 429s to those polls)
RATE_FLAGS = ("--rate-limit", "default=1000000/60", "--rate-limit", "auth=1000000/60",
              "--rate-limit", "stream=1000000/3600", "--rate-limit", "analytics=1000000/3600",
              "--rate-limit", "commerce=1000000/60")


def use_binary(path):
    """Runs the cases against another tessera binary (tools/check: the ASan build too)."""
    conftest.BIN = accounts.BIN = path


def fiu_available():
    return bool(shutil.which("fiu-ctrl")) and os.path.exists(FIU_RUN) and os.path.exists(FIU_POSIX)


def asan_build(binary=None):
    """True when the binary is linked with a sanitizer runtime (the fiu POSIX preload then
    cannot run)."""
    binary = binary or conftest.BIN
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libasan" in out or "libtsan" in out


def can_mount_tmpfs():
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d = tempfile.mkdtemp(prefix="tessera-tmpfs-probe-")
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                            capture_output=True, timeout=10).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True, timeout=10)
        return ok
    finally:
        os.rmdir(d)


@dataclass
class Outcome:
    """What one case measured. ok() is the bar; rows() the scorecard lines."""
    case: str
    crashed: bool = False                 # the server died or did not exit cleanly
    statuses: Counter = field(default_factory=Counter)
    bad_5xx: int = 0                      # 5xx other than 503 / 507
    wrong: list = field(default_factory=list)   # responses that broke the case's expectation
    integrity: str = "not run"
    half_written: int = 0                 # rows of failed requests, or acknowledged ones incomplete
    findings: list = field(default_factory=list)  # what the file check found, one line each
    lost: int = 0                         # acknowledged writes missing
    recovered: bool = False               # the same requests succeeded after the fault cleared
    health_honest: bool = True            # /health 503 during the fault (where it applies), 200 after
    figures: dict = field(default_factory=dict)

    def ok(self):
        return (not self.crashed and self.bad_5xx == 0 and not self.wrong
                and self.integrity == "ok" and self.half_written == 0 and self.lost == 0
                and self.recovered and self.health_honest)

    def summary(self):
        return (f"{self.case}: crashed={self.crashed} statuses={dict(self.statuses)} "
                f"bad_5xx={self.bad_5xx} wrong={self.wrong[:5]} integrity={self.integrity} "
                f"half_written={self.half_written} lost={self.lost} {self.findings[:5]} "
                f"recovered={self.recovered} "
                f"health_honest={self.health_honest} {self.figures}")


# ---------------------------------------------------------------- the world under test

class World:
    """A tessera server with one tenant, a desk agent and a commerce admin, and a record of
    every write sent and how it was answered.

    fiu: None, "own" (libfiu loaded: the tessera/sqlite/malloc point) or "posix" (plus the
    POSIX preload: storage I/O points)."""

    def __init__(self, *flags, fiu=None, data=None):
        self.tmp = None
        if data is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="tessera-faults-")
            data = self.tmp.name
        self.data = data
        self.db_path = os.path.join(data, "tessera.db")
        tenant(data, "Acme", "acme.example")
        user(data, "acme.example", "agent@acme.example", "agent")
        user(data, "acme.example", "admin@acme.example", "admin")
        env = {}
        self.fifo = None
        if fiu:
            self.fifo_dir = tempfile.mkdtemp(prefix="tessera-fiu-")
            self.fifo = os.path.join(self.fifo_dir, "ctrl")
            libs = [FIU_RUN] + ([FIU_POSIX] if fiu == "posix" else [])
            env = {"LD_PRELOAD": " ".join(libs), "FIU_CTRL_FIFO": self.fifo, "FIU_ENABLE": ""}
            if asan_build():
                env["ASAN_OPTIONS"] = ":".join(
                    x for x in (os.environ.get("ASAN_OPTIONS"), "verify_asan_link_order=0") if x)
        self.server = Server(*RATE_FLAGS, *flags, data=data, env=env)
        self.client = httpx.Client(base_url=self.server.url, timeout=20)
        self.tok = {who: self._login(f"{who}@acme.example") for who in ("agent", "admin")}
        self.tickets = {}   # title -> (status, request_id, ticket id or None)
        self.events = {}    # event_id -> status
        self.batches = {}   # batch_id -> the order ids it carried (acknowledged batches)
        self.settled = set()
        self.n = 0
        self.known_ticket = None

    def _login(self, email):
        r = self.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    # ---- fault control ----

    def fiu(self, *commands):
        args = ["fiu-ctrl", "-f", self.fifo]
        for c in commands:
            args += ["-c", c]
        subprocess.run(args + [str(self.server.proc.pid)], check=True, timeout=20,
                       capture_output=True)

    # ---- requests ----

    def request(self, out, method, path, token=None, expect=None, **kw):
        """Sends one request and scores it into out: a transport error or a 5xx other than
        503/507 counts against the bar, and so does a status outside expect (a set, or None for
        anything) or an answer that breaks the surface's contract. Returns the response or None."""
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        rid = headers.setdefault("X-Request-ID", uuid.uuid4().hex)
        try:
            r = self.client.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as e:
            out.wrong.append(f"{method} {path}: no answer ({type(e).__name__})")
            out.statuses["no answer"] += 1
            return None
        r.request_id = rid
        out.statuses[r.status_code] += 1
        if r.status_code >= 500 and r.status_code not in FAULT_STATUSES:
            out.bad_5xx += 1
            out.wrong.append(f"{method} {path}: {r.status_code} {r.text[:160]}")
        try:
            contract.check(method, path, r)
        except AssertionError as e:
            out.wrong.append(f"{method} {path}: off contract: {str(e)[:300]}")
        if r.status_code in FAULT_STATUSES:
            fault_format(out, method, path, r)
        if expect is not None and r.status_code not in expect:
            out.wrong.append(f"{method} {path}: {r.status_code}, expected {sorted(expect)}: "
                             f"{r.text[:160]}")
        return r

    def create_ticket(self, out, expect=None, description="written under a fault"):
        self.n += 1
        title = f"fault-{self.n}-{uuid.uuid4().hex[:8]}"
        r = self.request(out, "POST", "/api/v1/tickets", self.tok["agent"], expect,
                         json={"title": title, "description": description, "type": "bug",
                               "priority": "low"})
        self.tickets[title] = (r.status_code if r is not None else None,
                               r.request_id if r is not None else None,
                               r.json().get("id") if r is not None and r.status_code == 201 else None)
        return r

    def stream_event(self, out, expect=None):
        self.n += 1
        eid = f"ev-{self.n}-{uuid.uuid4().hex[:8]}"
        r = self.request(out, "POST", "/api/v1/ingest/stream", self.tok["admin"], expect,
                         json={"source_id": "faults", "data_type": "events",
                               "timestamp": "2025-05-05T05:05:05Z",
                               "data": {"event_id": eid, "type": "page_view",
                                        "session_id": "s1"}})
        self.events[eid] = r.status_code if r is not None else None
        return r

    def ingest_batch(self, out, expect=None):
        """A commerce batch of two orders: accepted on the loop, stored by a durable job."""
        self.n += 1
        oids = [f"o-{self.n}-{k}-{uuid.uuid4().hex[:6]}" for k in range(2)]
        r = self.request(out, "POST", "/api/v1/ingest/batch", self.tok["admin"], expect,
                         json={"source_id": "faults", "data_type": "orders", "format": "json",
                               "data": [{"order_id": o, "customer_id": "c1", "total": 10,
                                         "created_at": "2025-03-01T10:00:00Z"} for o in oids]})
        if r is not None and r.status_code == 201:
            self.batches[r.json()["data"]["batch_id"]] = oids
        return r

    def login(self, out, expect=None):
        """The shared auth route: argon2id on the pool, the session written on the loop."""
        return self.request(out, "POST", "/api/v1/auth/login", None, expect,
                            json={"email": "agent@acme.example", "password": PASSWORD})

    def batches_settle(self, out, timeout=30):
        """Every acknowledged batch reaches completed or failed (its job is not left stuck), and
        a completed one stored what it carried."""
        deadline = time.monotonic() + timeout
        pending = {b: o for b, o in self.batches.items() if b not in self.settled}
        while pending and time.monotonic() < deadline:
            for bid in list(pending):
                r = self.client.get(f"/api/v1/ingest/batches/{bid}/status",
                                    headers={"Authorization": f"Bearer {self.tok['admin']}"})
                if r.status_code == 429:  # told to wait: the batch may well be done
                    time.sleep(min(float(r.headers.get("Retry-After", "1")), 5))
                    break
                if r.status_code == 200 and r.json()["data"]["status"] != "processing":
                    out.figures.setdefault("batches", Counter())[r.json()["data"]["status"]] += 1
                    self.settled.add(bid)
                    del pending[bid]
            time.sleep(0.2)
        for bid in pending:
            out.wrong.append(f"batch {bid} not seen settled (completed or failed) {timeout} s "
                             f"after the fault cleared")

    def read_ticket(self, out, expect=None):
        return self.request(out, "GET", f"/api/v1/tickets/{self.known_ticket}", self.tok["agent"],
                            expect)

    def dashboard(self, out, expect=None):
        """A pool route: read through a worker's read-only connection."""
        return self.request(out, "GET", "/api/v1/dashboard/overview?period=30d",
                            self.tok["agent"], expect)

    def upload(self, out, expect=None):
        """A small desk upload, sent in one write: the server may answer a failed spool before
        reading the body, and a client still writing would not see that answer."""
        req = self.client.build_request(
            "POST", "/api/v1/files/upload", headers={"Authorization": f"Bearer {self.tok['agent']}"},
            data={"ticket_id": self.known_ticket},
            files={"file": ("a.txt", b"hello " * 300, "text/plain")})
        body = req.read()
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items()
                       if k.lower() not in ("host", "connection"))
        raw = (f"POST /api/v1/files/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{head}\r\n"
               .encode() + body)
        try:
            status, headers, content = rawhttp.exchange(self.server.port, raw, timeout=20)
        except (OSError, EOFError) as e:
            out.wrong.append(f"POST /api/v1/files/upload: no answer ({type(e).__name__})")
            out.statuses["no answer"] += 1
            return None
        r = httpx.Response(status, headers=headers, content=content)
        out.statuses[status] += 1
        if status >= 500 and status not in FAULT_STATUSES:
            out.bad_5xx += 1
            out.wrong.append(f"POST /api/v1/files/upload: {status} {content[:160]!r}")
        try:
            contract.check("POST", "/api/v1/files/upload", r)
        except AssertionError as e:
            out.wrong.append(f"POST /api/v1/files/upload: off contract: {str(e)[:300]}")
        if status in FAULT_STATUSES:
            fault_format(out, "POST", "/api/v1/files/upload", r)
        if expect is not None and status not in expect:
            out.wrong.append(f"POST /api/v1/files/upload: {status}, expected {sorted(expect)}: "
                             f"{content[:160]!r}")
        return r

    def writes(self, out, n, expect=None):
        for _ in range(n):
            self.create_ticket(out, expect)
            self.stream_event(out, expect)

    def warm(self, out):
        r = self.create_ticket(out, {201})
        self.known_ticket = r.json()["id"]
        self.stream_event(out, {202})
        self.dashboard(out, {200})

    def health(self):
        r = self.client.get("/health")
        return r.status_code, r.json()

    def wait_health(self, status, timeout=4.0):
        """Polls /health (its database check is cached for a second) until it answers status."""
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.health()
            if code == status or time.monotonic() > deadline:
                return code == status, code, body
            time.sleep(0.1)

    def alive(self):
        return self.server.proc.poll() is None

    # ---- the end ----

    def finish(self, out):
        """Stops the server (a crash or an unclean exit is recorded), then checks the file."""
        if not self.alive():
            out.crashed = True
            out.figures["exit"] = self.server.proc.returncode
        self.client.close()
        try:
            self.server.stop()
        except AssertionError as e:
            out.crashed = True
            out.figures["stop"] = str(e)[-600:]
        if self.fifo:
            shutil.rmtree(self.fifo_dir, ignore_errors=True)
        check_db(self, out)
        if self.tmp:
            self.tmp.cleanup()
        return out


def fault_format(out, method, path, r):
    """A 503/507: Retry-After, and the error code the table gives it."""
    if not r.headers.get("retry-after", "").isdigit():
        out.wrong.append(f"{method} {path}: {r.status_code} without Retry-After")
    want = "INSUFFICIENT_STORAGE" if r.status_code == 507 else "SERVICE_UNAVAILABLE"
    try:
        code = r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if code != want and path != "/health":
        out.wrong.append(f"{method} {path}: {r.status_code} with error code {code}, not {want}")


def check_db(world, out):
    """integrity_check, then every write against what its answer said."""
    db = sqlite3.connect(f"file:{world.db_path}?mode=ro", uri=True)
    try:
        out.integrity = ", ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
        fk = db.execute("PRAGMA foreign_key_check").fetchall()
        out.half_written += len(fk)
        out.findings += [f"foreign key: {r}" for r in fk[:5]]
        for title, (status, rid, tid) in world.tickets.items():
            rows = db.execute("SELECT id FROM tickets WHERE title = ?", (title,)).fetchall()
            # the audit row records the call as it was answered (a failed one too, if its
            # tick committed): never as a success that was not
            audit = [r[0] for r in db.execute("SELECT status FROM audit_log WHERE request_id = ?",
                                              (rid,))] if rid else []
            if status == 201:
                if len(rows) != 1:
                    out.lost += 1
                    out.findings.append(f"ticket {title} acknowledged, {len(rows)} rows")
                    continue
                parts = [db.execute(f"SELECT count(*) FROM {t} WHERE ticket_id = ?",
                                    (rows[0][0],)).fetchone()[0]
                         for t in ("ticket_history", "ticket_sla")]
                if 0 in parts or audit != [201]:
                    out.half_written += 1
                    out.findings.append(f"ticket {title} acknowledged: history, sla {parts}, "
                                        f"audit {audit}")
            elif status in FAULT_STATUSES and (rows or audit not in ([], [status])):
                out.half_written += 1   # answered as failed, yet (part of) it is there
                out.findings.append(f"ticket {title} answered {status}: {len(rows)} rows, "
                                    f"audit {audit}")
        for bid, oids in world.batches.items():
            st = db.execute("SELECT status, processed_records = records_received FROM cm_batches "
                            "WHERE batch_id = ?", (bid,)).fetchone()
            if st is None:
                out.lost += 1
                out.findings.append(f"batch {bid} acknowledged, not stored")
            elif st[0] == "completed":
                n = db.execute(f"SELECT count(*) FROM cm_orders WHERE order_id IN "
                               f"({','.join('?' * len(oids))})", oids).fetchone()[0]
                if n != len(oids) or not st[1]:
                    out.half_written += 1
                    out.findings.append(f"batch {bid} completed with {n} of {len(oids)} orders, "
                                        f"processed = received: {bool(st[1])}")
        for eid, status in world.events.items():
            n = db.execute("SELECT count(*) FROM cm_events WHERE event_id = ?",
                           (eid,)).fetchone()[0]
            if status == 202 and n != 1:
                out.lost += 1
                out.findings.append(f"event {eid} acknowledged, {n} rows")
            elif status in FAULT_STATUSES and n:
                out.half_written += 1
                out.findings.append(f"event {eid} answered {status}, stored")
    finally:
        db.close()


# ---------------------------------------------------------------- storage cases

def _storage_case(name, world, enable, disable, during_expect, n=4, reads_expect=None,
                  health_during=True):
    """The shape of every storage case: warm up, turn the fault on, write (and read), check
    /health, turn it off, write again, check /health; then the file."""
    out = Outcome(name)
    try:
        world.warm(out)
        enable()
        world.writes(out, n, during_expect)
        if reads_expect is not None:
            world.create_ticket(out, during_expect)   # a commit: the readers' caches go stale
            world.read_ticket(out, reads_expect)
            world.dashboard(out, reads_expect)
        if health_during:
            ok, code, body = world.wait_health(503)
            out.figures["health during"] = code
            out.health_honest = ok and body["checks"]["database"] == "unhealthy"
        disable()
        before = len(out.wrong)
        world.writes(out, n, {201, 202})
        world.read_ticket(out, {200})
        world.dashboard(out, {200})
        ok, code, _ = world.wait_health(200)
        out.figures["health after"] = code
        out.health_honest = out.health_honest and ok
        out.recovered = world.alive() and len(out.wrong) == before
    except Exception as e:  # the server died mid-case, or a step could not run
        out.wrong.append(f"case aborted: {type(e).__name__}: {str(e)[:300]}")
    return world.finish(out)


def _fiu_point(world, point, failinfo=None, probability=None):
    opts = f"name={point}" + (f",failinfo={failinfo}" if failinfo is not None else "")
    if probability is not None:
        return (lambda: world.fiu(f"enable_random {opts},probability={probability}"),
                lambda: world.fiu(f"disable name={point}"))
    return lambda: world.fiu(f"enable {opts}"), lambda: world.fiu(f"disable name={point}")


def case_io_error_write(n=4):
    """pwrite fails with EIO: every write is 503 SERVICE_UNAVAILABLE, the tick rolled back."""
    w = World(fiu="posix")
    on, off = _fiu_point(w, "posix/io/rw/pwrite", EIO)
    return _storage_case("SQLite I/O error on write (EIO)", w, on, off, {503}, n)


def case_disk_full_fiu(n=4):
    """pwrite fails with ENOSPC: every write is 507 INSUFFICIENT_STORAGE."""
    w = World(fiu="posix")
    on, off = _fiu_point(w, "posix/io/rw/pwrite", ENOSPC)
    return _storage_case("disk full on write (ENOSPC)", w, on, off, {507}, n)


def case_io_error_read(n=3):
    """pread fails with EIO: reads that miss the page cache (a pool reader after a commit) are
    503; writes whose pages are cached may still succeed."""
    w = World(fiu="posix")
    on, off = _fiu_point(w, "posix/io/rw/pread", EIO)
    return _storage_case("SQLite I/O error on read (EIO)", w, on, off, {201, 202, 503}, n,
                         reads_expect={200, 503}, health_during=False)


def case_fsync_error(n=4):
    """--durability full: fsync/fdatasync fail, so no commit can be made durable: 503."""
    w = World("--durability", "full", fiu="posix")
    on, off = _fiu_point(w, "posix/io/sync/*", EIO)
    return _storage_case("fsync fails (--durability full)", w, on, off, {503}, n)


def case_sqlite_oom(n=4):
    """Every SQLite allocation fails: every request that needs the database, the login and
    the token check included, is 503; none is a 401 or a 500."""
    w = World(fiu="own")
    on, off = _fiu_point(w, "tessera/sqlite/malloc")
    return _storage_case("SQLite allocations fail", w, on, off, {503}, n)


def case_random(point, probability, seconds, failinfo=None, flags=(), fiu="posix"):
    """A mixed load for `seconds` while `point` fails at random: crashes, bad 5xx, integrity,
    half-written and lost writes, and recovery afterwards (long form, tools/check)."""
    w = World(*flags, fiu=fiu)
    on, off = _fiu_point(w, point, failinfo, probability)
    out = Outcome(f"random {point} p={probability}"
                  + (f" errno {failinfo}" if failinfo is not None else "") + f" {seconds}s")
    try:
        w.warm(out)
        on()
        end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < end and w.alive():
            w.create_ticket(out, {201} | set(FAULT_STATUSES))
            w.stream_event(out, {202} | set(FAULT_STATUSES))
            w.read_ticket(out, {200} | set(FAULT_STATUSES))
            w.dashboard(out, {200} | set(FAULT_STATUSES))
            if k % 5 == 0:   # 429: the tenant's jobs wait for the fault to pass, up to its cap
                w.ingest_batch(out, {201, 429} | set(FAULT_STATUSES))
                w.login(out, {200} | set(FAULT_STATUSES))
            k += 1
        off()
        before = len(out.wrong)
        w.writes(out, 4, {201, 202})
        w.read_ticket(out, {200})
        w.dashboard(out, {200})
        w.login(out, {200})
        w.batches_settle(out)
        w.ingest_batch(out, {201})
        w.batches_settle(out)
        ok, code, _ = w.wait_health(200)
        out.figures["health after"] = code
        out.health_honest = ok
        out.recovered = w.alive() and len(out.wrong) == before
        out.figures["requests"] = sum(out.statuses.values())
    except Exception as e:
        out.wrong.append(f"case aborted: {type(e).__name__}: {str(e)[:300]}")
    return w.finish(out)


def case_busy(n=3):
    """Another process holds the write lock: writes are 503 (busy) at once — the loop waits
    5 ms, never stalls — reads go on; released, the same writes succeed."""
    w = World()
    out = Outcome("database locked by another process")
    other = None
    try:
        w.warm(out)
        other = sqlite3.connect(w.db_path, isolation_level=None, timeout=10)
        other.execute("BEGIN IMMEDIATE")
        t0 = time.monotonic()
        w.writes(out, n, {503})
        out.figures["write answer ms (mean)"] = round((time.monotonic() - t0) / (2 * n) * 1000, 1)
        w.read_ticket(out, {200})
        other.execute("ROLLBACK")
        other.close()
        other = None
        before = len(out.wrong)
        w.writes(out, n, {201, 202})
        out.recovered = w.alive() and len(out.wrong) == before
        out.health_honest = w.wait_health(200)[0]
    except Exception as e:
        out.wrong.append(f"case aborted: {type(e).__name__}: {str(e)[:300]}")
    finally:
        if other is not None:
            other.close()
    return w.finish(out)


class Tmpfs:
    """A small tmpfs mounted on a fresh directory, unmounted (and removed) on exit."""

    def __init__(self, size_mb):
        self.dir = tempfile.mkdtemp(prefix="tessera-tmpfs-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs",
                        self.dir], check=True, capture_output=True, timeout=10)

    def fill(self):
        """Writes a filler file until the filesystem is full; returns its path."""
        path = os.path.join(self.dir, "filler")
        with open(path, "wb", buffering=0) as f:
            for chunk in (1 << 20, 1 << 12, 1 << 9):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass
        return path

    def close(self):
        subprocess.run(["umount", "-l", self.dir], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def case_disk_full_tmpfs(size_mb=24, max_writes=400):
    """A real full disk: the data dir on a tmpfs, filled. Writes (tickets of 16 KiB) go on until
    the WAL cannot grow; from then on they are 507, an upload too. Freed, they succeed again."""
    fs = Tmpfs(size_mb)
    out = Outcome("disk full (tmpfs)")
    w = None
    try:
        w = World(data=fs.dir)
        w.warm(out)
        filler = fs.fill()
        big = "x" * 16384
        first_full = None
        for i in range(max_writes):
            r = w.create_ticket(out, {201, 507}, description=big)
            if r is not None and r.status_code == 507:
                first_full = i
                break
        out.figures["writes before the first 507"] = first_full
        if first_full is None:
            out.wrong.append(f"no 507 within {max_writes} writes of 16 KiB on a full disk")
        w.writes(out, 3, {507})
        w.upload(out, {507})
        ok, code, body = w.wait_health(503)
        out.figures["health during"] = code
        out.health_honest = ok and body["checks"]["database"] == "unhealthy"
        os.unlink(filler)
        before = len(out.wrong)
        w.writes(out, 3, {201, 202})
        w.upload(out, {201})
        ok, code, _ = w.wait_health(200)
        out.figures["health after"] = code
        out.health_honest = out.health_honest and ok
        out.recovered = w.alive() and len(out.wrong) == before
    except Exception as e:
        out.wrong.append(f"case aborted: {type(e).__name__}: {str(e)[:300]}")
    finally:
        if w is not None:
            w.finish(out)
        fs.close()
    return out


# ---------------------------------------------------------------- SMTP cases

class LatencyProbe:
    """Polls /health from a thread and keeps the slowest answer: a stalled loop shows here."""

    def __init__(self, url, every=0.05):
        self.url, self.every = url, every
        self.worst = 0.0
        self.errors = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with httpx.Client(timeout=30) as c:
            while not self.stop_ev.is_set():
                t = time.monotonic()
                try:
                    c.get(self.url + "/health")
                except httpx.HTTPError:
                    self.errors += 1
                self.worst = max(self.worst, time.monotonic() - t)
                self.stop_ev.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.thread.join(35)


class MailWorld:
    """A tessera server whose --smtp-url is an SmtpFault, with users to send resets to."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tessera-faults-mail-")
        self.data = self.tmp.name
        tenant(self.data, "Acme", "acme.example")
        self.smtp = SmtpFault().start()
        self.users = 0
        self.server = Server(*RATE_FLAGS, "--smtp-url", self.smtp.url, data=self.data)
        self.client = httpx.Client(base_url=self.server.url, timeout=20)

    def new_user(self):
        self.users += 1
        email = f"u{self.users}@acme.example"
        user(self.data, "acme.example", email, "agent")
        return email

    def reset(self, out, email):
        """POST reset-password, which queues a mail: answered at once whatever SMTP does."""
        t = time.monotonic()
        try:
            r = self.client.post("/api/v1/auth/reset-password", json={"email": email})
        except httpx.HTTPError as e:
            out.wrong.append(f"reset {email}: no answer ({type(e).__name__})")
            return
        ms = (time.monotonic() - t) * 1000
        out.statuses[r.status_code] += 1
        out.figures["reset answer ms (max)"] = max(out.figures.get("reset answer ms (max)", 0),
                                                   round(ms, 1))
        if r.status_code >= 500 and r.status_code not in FAULT_STATUSES:
            out.bad_5xx += 1
        if r.status_code != 200:
            out.wrong.append(f"reset {email}: {r.status_code} {r.text[:160]}")
        if ms > 1000:
            out.wrong.append(f"reset {email}: answered after {ms:.0f} ms")

    def row(self, email):
        db = sqlite3.connect(f"file:{self.data}/tessera.db?mode=ro", uri=True)
        try:
            r = db.execute("SELECT status, attempts, coalesce(last_error, '') FROM outbox "
                           "WHERE to_addr = ? ORDER BY created_at DESC LIMIT 1",
                           (email,)).fetchone()
            return r or ("none", 0, "")
        finally:
            db.close()

    def wait_row(self, email, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(email)
            if pred(row) or time.monotonic() > deadline:
                return pred(row), row
            time.sleep(0.1)

    def delivered(self, email, timeout=10):
        try:
            self.smtp.wait_for(lambda m: email in m.rcpt, timeout)
        except TimeoutError:
            return False
        return self.wait_row(email, lambda r: r[0] == "sent", 5)[0]

    def finish(self, out):
        if self.server.proc.poll() is not None:
            out.crashed = True
        self.client.close()
        try:
            self.server.stop()
        except AssertionError as e:
            out.crashed = True
            out.figures["stop"] = str(e)[-600:]
        self.smtp.stop()
        db = sqlite3.connect(f"file:{self.data}/tessera.db?mode=ro", uri=True)
        out.integrity = ", ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
        db.close()
        self.tmp.cleanup()
        return out


def case_smtp_hang(wait_data_timeout=False, latency_bar_s=1.0):
    """Two messages at once to an SMTP server that hangs: one connection is never greeted, the
    other never gets the reply to its final "." (libcurl waits for that one blocking, which
    used to stall the loop for the response timeout). Reset requests are answered at once, the
    loop keeps answering /health, the silent greeting times out and is retried; then the
    server answers again and both messages are delivered, without a restart. With
    wait_data_timeout the second also runs into its own timeout first (long form)."""
    mw = MailWorld()
    out = Outcome("SMTP upstream hangs (no greeting; no reply after the message)")
    try:
        a, b = mw.new_user(), mw.new_user()
        mw.smtp.script.extend(["hang", "hang_data"])
        mw.smtp.default = "ok"
        with LatencyProbe(mw.server.url) as probe:
            mw.reset(out, a)
            mw.reset(out, b)
            # the greeting's timeout (5 s) passes first; the message's (5 s, then 5 s for QUIT)
            timed_out = lambda: [r for r in (mw.row(a), mw.row(b))
                                 if r[1] >= 1 and "Timeout" in r[2] and r[0] != "failed"]
            deadline = time.monotonic() + 12
            while not timed_out() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not timed_out():
                out.wrong.append(f"no attempt timed out and was queued again: "
                                 f"{[mw.row(a), mw.row(b)]}")
            if wait_data_timeout:
                both = [mw.wait_row(e, lambda r: r[1] >= 1 and "Timeout" in r[2], 20)
                        for e in (a, b)]
                if not all(ok for ok, _ in both):
                    out.wrong.append(f"the silent server was not timed out on both: {both}")
            out.figures["outbox while hung"] = [mw.row(a), mw.row(b)]
            mw.smtp.stop_listening()   # the fault clears: held connections drop
            mw.smtp.listen()
            out.recovered = mw.delivered(a, 15) and mw.delivered(b, 15)
        out.figures["/health worst latency s"] = round(probe.worst, 3)
        out.figures["smtp connections"] = list(mw.smtp.seen)
        if probe.worst > latency_bar_s or probe.errors:
            out.wrong.append(f"the loop stalled: /health took {probe.worst:.2f} s "
                             f"({probe.errors} errors) while SMTP hung")
    except Exception as e:
        out.wrong.append(f"case aborted: {type(e).__name__}: {str(e)[:300]}")
    return mw.finish(out)


def case_smtp_refuses():
    """Connection refused, then 451, then 550: the first two are retried and delivered once
    the server accepts again; 550 is final (failed, never retried); a message after it is
    delivered. The API answers every reset at once throughout."""
    mw = MailWorld()
    out = Outcome("SMTP upstream refuses (connection refused, 451, 550)")
    try:
        with LatencyProbe(mw.server.url) as probe:
            refused, busy, reject, after = (mw.new_user() for _ in range(4))
            mw.smtp.stop_listening()
            mw.reset(out, refused)
            ok, row = mw.wait_row(refused, lambda r: r[1] >= 1 and r[0] != "sent", 8)
            out.figures["refused"] = row
            if not ok or "connect" not in row[2].lower() or row[0] == "failed":
                out.wrong.append(f"connection refused: not retried as expected: {row}")
            mw.smtp.listen()
            got_refused = mw.delivered(refused, 10)

            mw.smtp.default = "451"
            mw.reset(out, busy)
            ok, row = mw.wait_row(busy, lambda r: r[1] >= 1, 8)
            out.figures["451"] = row
            if not ok or row[0] == "failed" or "451" not in row[2]:
                out.wrong.append(f"451: not retried as expected: {row}")
            mw.smtp.default = "ok"
            got_busy = mw.delivered(busy, 10)

            mw.smtp.default = "550"
            mw.reset(out, reject)
            ok, row = mw.wait_row(reject, lambda r: r[0] == "failed", 8)
            out.figures["550"] = row
            if not ok or row[1] != 1 or "550" not in row[2]:
                out.wrong.append(f"550: not failed for good after one attempt: {row}")
            mw.smtp.default = "ok"
            mw.reset(out, after)
            got_after = mw.delivered(after, 10)
            if mw.row(reject)[:2] != ("failed", 1):   # 'failed' is final: never scanned again
                out.wrong.append(f"550 was retried: {mw.row(reject)}")
            out.recovered = got_refused and got_busy and got_after
        out.figures["/health worst latency s"] = round(probe.worst, 3)
        if probe.errors:
            out.wrong.append(f"/health failed {probe.errors} times")
    except Exception as e:
        out.wrong.append(f"case aborted: {type(e).__name__}: {str(e)[:300]}")
    return mw.finish(out)
