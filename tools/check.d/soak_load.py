#!/usr/bin/python3
"""Paced (open-loop) load for tools/check soak: requests leave on a schedule, not when the
previous answer came back, so a slow server meets a growing queue as it would in production.

    soak_load.py mix URL RATE SECONDS ACCOUNTS.json SCALE RUN OUT.npz [USERS [flood]]
    soak_load.py probe URL PATH INTERVAL SECONDS OUT.npz

mix: USERS clients (1000), each with one keep-alive connection; request i is due at
t0 + i/RATE and belongs to client i % USERS, which sends it at once if its connection is
free, else after its earlier requests. Latency is counted from the moment a request was due
(as wrk2 does, so a stalled server cannot hide behind the queue it caused). A client answered
503/429 honours Retry-After as SDKs do: it sends nothing until then, and the requests that
fall due meanwhile are counted as deferred, not sent ("flood": clients that ignore it). probe: one keep-alive connection asking
PATH every INTERVAL s, closed loop. Both write numpy arrays: due (s from start), latency (s),
status (0: connection lost or refused, or 10 s without an answer), kind (index into
soak_mix.KINDS), plus the client's own schedule lag and the counts above.
"""
import asyncio
import collections
import json
import socket
import sys
import time
from array import array

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import soak_mix  # noqa: E402

try:
    import uvloop
except ImportError:  # slower, still correct
    uvloop = None

TIMEOUT_S = 10.0


class Results:
    def __init__(self):
        self.due, self.lat, self.status, self.kind = array("d"), array("d"), array("h"), array("h")
        self.lag_max = 0.0
        self.no_retry_after = 0  # 503/429 answers without Retry-After
        self.deferred = 0        # requests a user did not send while told to retry later

    def add(self, due, lat, status, kind):
        self.due.append(due)
        self.lat.append(lat)
        self.status.append(status)
        self.kind.append(kind)

    def save(self, path, **extra):
        np.savez(path, due=np.frombuffer(self.due, dtype=np.float64),
                 lat=np.frombuffer(self.lat, dtype=np.float64),
                 status=np.frombuffer(self.status, dtype=np.int16),
                 kind=np.frombuffer(self.kind, dtype=np.int16),
                 lag_max=self.lag_max, no_retry_after=self.no_retry_after,
                 deferred=self.deferred, **extra)


class Conn(asyncio.Protocol):
    """A user's keep-alive connection, one request at a time."""

    def __init__(self, driver, user):
        self.d, self.user = driver, user
        self.t = None
        self.job = None
        self.buf = b""
        self.need = -1
        self.hend = 0
        self.sent_at = 0.0

    def connection_made(self, t):
        self.t = t
        t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, job):
        self.job = job
        self.buf = b""
        self.need = -1
        self.sent_at = self.d.loop.time()
        self.t.write(job[2])

    def data_received(self, data):
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            i = self.buf.find(b"Content-Length: ", 0, end)
            n = int(self.buf[i + 16:self.buf.index(b"\r\n", i)]) if i >= 0 else 0
            self.need = end + 4 + n
            self.hend = end
        if len(self.buf) >= self.need and self.job is not None:
            status = int(self.buf[9:12])
            head = self.buf[:self.hend]
            retry = 0
            if status in (503, 429):
                i = head.find(b"Retry-After: ")
                if i < 0:
                    self.d.res.no_retry_after += 1
                else:
                    j = head.find(b"\r\n", i)
                    retry = int(head[i + 13:j if j >= 0 else len(head)])
            job, self.job = self.job, None
            if b"Connection: close" in head:
                self.t.close()  # connection_lost will find no job and reopen on demand
                self.d.finished(self.user, job, status, retry, None)
            else:
                self.d.finished(self.user, job, status, retry, self)

    def connection_lost(self, exc):
        self.d.lost(self)


class User:
    """One client: its own connection and queue; it honours Retry-After, as SDKs do."""
    __slots__ = ("conn", "queue", "paused_until", "opening")

    def __init__(self):
        self.conn, self.queue, self.paused_until, self.opening = None, collections.deque(), 0.0, False


class Driver:
    def __init__(self, loop, host, port, res, users, flood=False):
        self.loop, self.host, self.port, self.res = loop, host, port, res
        self.flood = flood
        self.users = [User() for _ in range(users)]
        self.busy = set()
        self.t0 = 0.0

    def record(self, job, status):
        self.res.add(job[0] - self.t0, self.loop.time() - job[0], status, job[1])

    def submit(self, ui, job):
        u = self.users[ui]
        if self.loop.time() < u.paused_until:
            self.res.deferred += 1  # told to come back later: it does not send now
            return
        if u.conn is not None and u.conn.job is None and not u.queue:
            self.busy.add(u.conn)
            u.conn.send(job)
            return
        u.queue.append(job)
        if u.conn is None and not u.opening:
            u.opening = True
            self.loop.create_task(self.open(ui))

    async def open(self, ui):
        u = self.users[ui]
        try:
            _, c = await self.loop.create_connection(lambda: Conn(self, ui), self.host, self.port)
        except OSError:
            u.opening = False
            while u.queue:  # refused: every waiting request of this user failed
                self.record(u.queue.popleft(), 0)
            return
        u.opening = False
        u.conn = c
        self.next(u)

    def next(self, u):
        if u.conn is not None and u.conn.job is None and u.queue:
            self.busy.add(u.conn)
            u.conn.send(u.queue.popleft())

    def finished(self, ui, job, status, retry, conn):
        self.record(job, status)
        u = self.users[ui]
        if conn is None:
            self.busy.discard(u.conn)
            u.conn = None
        else:
            self.busy.discard(conn)
        if retry > 0 and not self.flood:
            u.paused_until = self.loop.time() + retry
            self.res.deferred += len(u.queue)
            u.queue.clear()
        if u.queue and u.conn is None and not u.opening:
            u.opening = True
            self.loop.create_task(self.open(ui))
        else:
            self.next(u)

    def lost(self, c):
        self.busy.discard(c)
        u = self.users[c.user]
        if u.conn is c:
            u.conn = None
        if c.job is not None:
            job, c.job = c.job, None
            self.record(job, 0)
        if u.queue and u.conn is None and not u.opening:
            u.opening = True
            self.loop.create_task(self.open(c.user))

    def sweep(self):
        """Requests without an answer after TIMEOUT_S count as failures (status 0)."""
        now = self.loop.time()
        for c in list(self.busy):
            if c.job is not None and now - c.sent_at > TIMEOUT_S:
                c.t.abort()

    def waiting(self):
        return bool(self.busy) or any(u.queue for u in self.users)


async def run_mix(url, rate, seconds, acc_path, scale, run, out, users, flood):
    loop = asyncio.get_running_loop()
    host, port = url.split("//")[1].split(":")
    acc = soak_mix.Accounts.__new__(soak_mix.Accounts)
    acc.__dict__.update(json.load(open(acc_path)))
    maker = soak_mix.Maker(acc, scale, run)
    kind_index = {k[0]: i for i, k in enumerate(soak_mix.KINDS)}
    res = Results()
    d = Driver(loop, host, int(port), res, users, flood)
    d.t0 = loop.time() + 0.05
    await asyncio.sleep(0.05)
    i, last_sweep = 0, d.t0
    while True:
        now = loop.time()
        el = now - d.t0
        if el >= seconds:
            break
        due = int(el * rate) + 1
        if i < due:  # how far behind its own schedule the client fell (its CPU, not the server)
            res.lag_max = max(res.lag_max, now - (d.t0 + i / rate))
        while i < due:
            name, raw = maker.next()
            d.submit(i % users, (d.t0 + i / rate, kind_index[name], raw))
            i += 1
        if now - last_sweep > 1.0:
            d.sweep()
            last_sweep = now
        await asyncio.sleep(0.001)
    end = loop.time() + TIMEOUT_S + 1
    while d.waiting() and loop.time() < end:
        d.sweep()
        await asyncio.sleep(0.05)
    for u in d.users:
        for job in u.queue:
            d.record(job, 0)
        if u.conn is not None:
            u.conn.t.close()
    res.save(out, offered=i, seconds=seconds, rate=rate, users=users)


async def run_probe(url, path, interval, seconds, out):
    """Closed loop on one connection: request, answer, sleep; reconnects if the server closes."""
    host, port = url.split("//")[1].split(":")
    req = f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode()
    res = Results()
    t0 = time.monotonic()
    reader = writer = None
    while time.monotonic() - t0 < seconds:
        start = time.monotonic()
        status = 0
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), TIMEOUT_S)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
            i = head.find(b"Content-Length: ")
            n = int(head[i + 16:head.index(b"\r\n", i)]) if i >= 0 else 0
            await asyncio.wait_for(reader.readexactly(n), TIMEOUT_S)
            status = int(head[9:12])
            if b"Connection: close" in head:
                writer.close()
                writer = None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            if writer is not None:
                writer.close()
            writer = None
        res.add(start - t0, time.monotonic() - start, status, -1)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))
    if writer is not None:
        writer.close()
    res.save(out)


def main(argv):
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if argv[1] == "mix":
        url, rate, secs, acc, scale, run, out = argv[2:9]
        users = int(argv[9]) if len(argv) > 9 else 1000
        asyncio.run(run_mix(url, float(rate), float(secs), acc, float(scale), int(run), out,
                            users, argv[10:11] == ["flood"]))
    elif argv[1] == "probe":
        url, path, interval, secs, out = argv[2:7]
        asyncio.run(run_probe(url, path, float(interval), float(secs), out))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
