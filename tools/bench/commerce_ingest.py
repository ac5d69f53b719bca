"""Batch-ingest client for tools/bench/commerce: posts ready-made POST /api/v1/ingest/batch
bodies (commerce-gen --format batch) with at most WINDOW batches in flight, polls each batch's
status until it says completed (or failed), and prints one JSON line: records, seconds from
the first POST to the last completion, records/s, what the server says it stored and refused,
and POST answer times. The bodies are read into memory before the clock starts.

usage: commerce_ingest.py BASE_URL TOKEN WINDOW FILE...
"""
import http.client
import json
import sys
import time
import urllib.parse

POLL_S = 0.01


def main():
    base, token, window, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    u = urllib.parse.urlsplit(base)
    bodies = [open(f, "rb").read() for f in files]
    post = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    poll = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    auth = {"Authorization": f"Bearer {token}"}
    hdrs = dict(auth, **{"Content-Type": "application/json"})
    pending = list(range(len(bodies)))
    inflight = {}          # batch_id -> index
    done = {}              # index -> final status body
    post_ms = []
    t0 = time.perf_counter()
    while pending or inflight:
        while pending and len(inflight) < window:
            i = pending.pop(0)
            s = time.perf_counter()
            post.request("POST", "/api/v1/ingest/batch", bodies[i], hdrs)
            r = post.getresponse()
            b = r.read()
            post_ms.append((time.perf_counter() - s) * 1000)
            if r.status != 201:
                sys.exit(f"POST batch {files[i]} answered {r.status}: {b[:300]!r}")
            inflight[json.loads(b)["data"]["batch_id"]] = i
        changed = False
        for bid in list(inflight):
            poll.request("GET", f"/api/v1/ingest/batches/{bid}/status", headers=auth)
            r = poll.getresponse()
            b = r.read()
            if r.status != 200:
                sys.exit(f"status of {bid} answered {r.status}: {b[:300]!r}")
            st = json.loads(b)["data"]
            if st["status"] in ("completed", "failed", "cancelled"):
                done[inflight.pop(bid)] = st
                changed = True
        if not changed and inflight:
            time.sleep(POLL_S)
    secs = time.perf_counter() - t0
    total = sum(d["progress"]["total_records"] for d in done.values())
    failed = sum(d["progress"]["failed_records"] for d in done.values())
    bad = [d["status"] for d in done.values() if d["status"] != "completed"]
    post_ms.sort()
    print(json.dumps({"batches": len(done), "records": total, "failed": failed,
                      "not_completed": len(bad), "seconds": round(secs, 3),
                      "rate": round(total / secs, 1) if secs > 0 else 0,
                      "post_ms_p50": round(post_ms[len(post_ms) // 2], 1),
                      "post_ms_max": round(post_ms[-1], 1)}))


if __name__ == "__main__":
    main()
