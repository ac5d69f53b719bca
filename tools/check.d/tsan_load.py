"""Concurrent load for tools/check tsan: where the loop, the pool, the jobs and SQLite meet.

The API tests mostly send one request at a time, so a worker's task and the loop's next step are
ordered by the pool's own queue and TSan sees no overlap. This drives a --demo server from
several threads at once with a mix that keeps every meeting point busy together: loop writes
(tickets, stream events, interactions), pool reads (dashboards, exports, analytics,
recommendations, argon2id logins, /metrics), durable jobs (batch ingests and the rollups they
cause, model training) and item uploads whose content vectors are computed in the pool; then it
stops the server with SIGTERM while the load is still running (jobs cancelled mid-write, the
pool drained, the checkpointer stopped).

    python3 tools/check.d/tsan_load.py --bin build-tsan/tessera --seconds 60
prints one JSON line {requests, by_status, while_stopping, five_xx, exit_ok, exit_error}: the
counts are of answers before the SIGTERM (five_xx among them); while_stopping is after it.
"""
import argparse
import json
import os
import random
import sys
import threading
import time

import httpx

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))

DOMAIN = "demo.tessera.local"
PASSWORD = "tessera-demo"
RATES = ["--rate-limit", "default=1000000/60", "--rate-limit", "recs=1000000/60",
         "--rate-limit", "commerce=1000000/60", "--rate-limit", "auth=1000000/60",
         "--rate-limit", "stream=1000000/60", "--rate-limit", "analytics=1000000/60"]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Mix:
    """One request of each kind; every kind returns (method, path, kwargs)."""

    def __init__(self, tokens, key):
        self.tokens, self.key = tokens, key
        self.n = 0
        self.lock = threading.Lock()

    def next_n(self):
        with self.lock:
            self.n += 1
            return self.n

    def user(self, n):
        return {"Authorization": "Bearer " + self.tokens[n % len(self.tokens)]}

    def api_key(self):
        return {"Authorization": "Bearer " + self.key}

    def kinds(self):
        now = time.time()
        return [
            (4, lambda n: ("GET", "/api/v1/users/me", {"headers": self.user(n)})),
            (3, lambda n: ("GET", f"/api/v1/tickets?page={n % 5 + 1}&per_page=20",
                           {"headers": self.user(n)})),
            (2, lambda n: ("POST", "/api/v1/tickets", {"headers": self.user(n), "json": {
                "title": f"tsan load {n}", "description": "the export page times out",
                "type": "bug", "priority": "medium"}})),
            (2, lambda n: ("GET", "/api/v1/dashboard/overview", {"headers": self.user(n)})),
            (1, lambda n: ("GET", "/api/v1/dashboard/reports/export?type=tickets&format=csv",
                           {"headers": self.user(n)})),
            (2, lambda n: ("GET", "/api/v1/analytics/metrics", {"headers": self.user(n), "params": {
                "metric_type": "revenue", "granularity": "daily",
                "time_range[start]": iso(now - (7 + n % 90) * 86400), "time_range[end]": iso(now)}})),
            (4, lambda n: ("POST", "/api/v1/ingest/stream", {"headers": self.user(n), "json": {
                "source_id": "tsan", "data_type": "events", "timestamp": iso(time.time()),
                "data": {"event_id": f"tsan-{n}", "type": "page_view", "session_id": f"s{n % 50}",
                         "product_id": f"prod-{n % 40 + 1:05d}", "timestamp": iso(time.time())}}})),
            (1, lambda n: ("POST", "/api/v1/ingest/batch", {"headers": self.user(n), "json": {
                "source_id": "tsan-batch", "data_type": "orders", "format": "json",
                "data": [{"order_id": f"tsan-{n}-{i}", "customer_id": f"c{i % 7}",
                          "created_at": iso(time.time() - i * 3600), "total": 10 + i}
                         for i in range(50)]}})),
            (3, lambda n: ("POST", "/api/v1/recommendations", {"headers": self.api_key(), "json": {
                "user_id": f"user-{n * 104729 % 1000 + 1:06d}", "count": 10}})),
            (4, lambda n: ("POST", "/api/v1/interactions", {"headers": self.api_key(), "json": {
                "user_id": f"user-{n * 7 % 1000 + 1:06d}", "item_id": f"item-{n * 13 % 400 + 1:05d}",
                "interaction_type": random.choice(["view", "click", "purchase"])}})),
            (1, lambda n: ("POST", "/internal/data/items", {"headers": self.api_key(), "json": {
                "items": [{"item_id": f"tsan-{n}-{i}", "title": f"tsan item {i}",
                           "description": "a thing for the load", "category": "tsan",
                           "tags": ["load"]} for i in range(20)]}})),
            (1, lambda n: ("POST", "/internal/ml/training/trigger", {"headers": self.api_key(), "json": {
                "training_config": {"model_type": random.choice(["matrix_factorization", "two_tower",
                                                                  "gnn"]),
                                    "hyperparameters": {"epochs": 2, "embedding_dim": 16}}}})),
            (1, lambda n: ("GET", "/metrics", {})),
            (1, lambda n: ("POST", "/api/v1/auth/login", {"json": {
                "email": f"agent@{DOMAIN}", "password": PASSWORD}})),
        ]


def worker(base, mix, deadline, stats, stop, signalled):
    kinds = mix.kinds()
    weights = [w for w, _ in kinds]
    c = httpx.Client(base_url=base, timeout=120)
    try:
        while time.time() < deadline and not stop.is_set():
            n = mix.next_n()
            make = random.choices(kinds, weights)[0][1]
            method, path, kw = make(n)
            try:
                st = c.request(method, path, **kw).status_code
            except httpx.HTTPError:
                if signalled.is_set():
                    break  # the server stopping under us (the SIGTERM phase)
                st = "conn"
            phase = stats["stopping" if signalled.is_set() else "serving"]
            with mix.lock:
                phase[st] = phase.get(st, 0) + 1
    finally:
        c.close()


def subscribers(port, token, dashboard_ids, signalled, counts):
    """WebSocket clients on every channel kind, reading until the server closes them: the
    hub's cross-thread publish queue and the dashboards' pool-computed pushes meet here."""
    import asyncio

    import websockets

    paths = ["/ws/notifications", "/ws/sla", "/ws/ops"] + [f"/ws/dashboards/{d}" for d in dashboard_ids]

    async def one(path):
        url = f"ws://127.0.0.1:{port}{path}?access_token={token}"
        while not signalled.is_set():
            try:
                async with websockets.connect(url, max_size=None, open_timeout=120) as ws:
                    async for _ in ws:
                        counts["messages"] = counts.get("messages", 0) + 1
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                await asyncio.sleep(0.2)

    async def run():
        await asyncio.gather(*(one(p) for p in paths))

    asyncio.run(run())


def login(base, role):
    r = httpx.post(base + "/api/v1/auth/login", json={"email": f"{role}@{DOMAIN}", "password": PASSWORD},
                   timeout=120)
    r.raise_for_status()
    return r.json()["access_token"]


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args(argv)
    os.environ["TESSERA_BIN"] = os.path.abspath(a.bin)
    import conftest  # reads TESSERA_BIN at import
    # --shed-queue-ms 0: under TSan one argon2id login keeps a worker for seconds, and eight
    # closed-loop clients would then see pool work shed for its queue time; this load is about
    # races, so only the count bound (never reached by eight clients) stays
    s = conftest.Server("--demo", "--demo-scale", "0.02", "--workers", "4", "--shed-queue-ms", "0",
                        *RATES, env={"TESSERA_QUERY_GUARD_MS": "60000"})
    try:
        tokens = [login(s.url, r) for r in ("admin", "manager", "developer")]
        r = httpx.post(s.url + "/api/v1/api-keys", headers={"Authorization": "Bearer " + tokens[0]},
                       json={"name": "tsan", "permissions": ["read", "write", "internal"]}, timeout=120)
        r.raise_for_status()
        mix = Mix(tokens, r.json()["key"])
        stats, stop, signalled = {"serving": {}, "stopping": {}}, threading.Event(), threading.Event()
        deadline = time.time() + a.seconds
        threads = [threading.Thread(target=worker, args=(s.url, mix, deadline + 30, stats, stop,
                                                         signalled))
                   for _ in range(a.threads)]
        r = httpx.get(s.url + "/api/v1/dashboards", headers={"Authorization": "Bearer " + tokens[0]},
                      timeout=120)
        boards = [d["dashboard_id"] for d in r.json()["data"]["dashboards"]][:3] if r.status_code == 200 else []
        ws_counts = {}
        threads.append(threading.Thread(target=subscribers, args=(s.port, tokens[0], boards,
                                                                   signalled, ws_counts)))
        for t in threads:
            t.start()
        time.sleep(max(0.0, deadline - time.time()))
        signalled.set()
        s.signal()  # SIGTERM with the load still running
        exit_error = ""
        try:
            s.stop(timeout=300)
        except AssertionError as e:
            exit_error = str(e)[-1500:]
        stop.set()
        for t in threads:
            t.join()
    except BaseException:
        s.proc.kill()
        raise
    serving = stats["serving"]
    five = sum(v for k, v in serving.items() if isinstance(k, int) and k >= 500)
    print(json.dumps({"requests": sum(serving.values()),
                      "by_status": {str(k): v for k, v in serving.items()},
                      "while_stopping": {str(k): v for k, v in stats["stopping"].items()},
                      "ws_messages": ws_counts.get("messages", 0), "dashboards": len(boards),
                      "five_xx": five, "exit_ok": exit_error == "", "exit_error": exit_error}))


if __name__ == "__main__":
    main(sys.argv[1:])
