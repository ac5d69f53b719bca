"""Crash safety, fast form of tools/check crash (issue 7): no acknowledged write lost.

The same driver as the long form (tools/check.d/crash_driver.py): stream events, recs
interactions, desk tickets and commerce batches from writer threads while the server is
kill -9ed a few times with --durability normal and restarted on the same data dir; the final
read must find every acknowledged write once, nothing never sent, and PRAGMA integrity_check ok
after every kill. Then a batch job resumed through more restarts than its kind's attempt limit,
each run storing a chunk, must still complete with every record stored once.
"""
import os
import sys
import time

import httpx

from conftest import BIN, SRC

sys.path.insert(0, os.path.join(SRC, "tools", "check.d"))
import crash_driver as cd  # noqa: E402

SANITIZER = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")


def no_sanitizer_report(proc):
    log = proc.tail(1 << 22)
    for s in SANITIZER:
        assert s not in log, log[-4000:]


def test_kill9_loses_no_acknowledged_write(tmp_path):
    run = cd.Run(BIN, str(tmp_path), "normal", 5, uptime=(0.2, 0.6))
    out = run.execute()
    detail = f"seed {out['seed']}\n{cd.describe(out)}"
    t = cd.totals(out)
    assert (t["lost"], t["unexpected"], t["duplicated"]) == (0, 0, 0), detail
    assert out["integrity"]["bad"] == [] and out["integrity"]["files"] == ["tessera.db"], detail
    assert all(out["acknowledged"][k] > 0 for k in cd.KINDS), detail
    assert out["kills"] == 5 and out["exit_code"] == 0, detail
    assert not out["writer_errors"], detail
    no_sanitizer_report(run.proc)


def test_batch_resumed_past_the_attempt_limit_completes(tmp_path):
    """commerce.ingest allows 5 runs in a row without progress; a run that stores a chunk
    starts the count again, so a 10-chunk batch killed after (nearly) every chunk completes.
    Before, the recovery after the 5th kill failed the job and left the batch processing.
    Chunks of 1,000 records (TESSERA_TEST_INGEST_CHUNK): the server's own 5,000 would give a
    10,000-record batch two."""
    run = cd.Run(BIN, str(tmp_path), "normal", 0, env={"TESSERA_TEST_INGEST_CHUNK": "1000"})
    run.setup()
    p = run.proc
    try:
        batch_through_kills(p)
    finally:
        p.discard()


def batch_through_kills(p):
    p.start()
    p.wait_ready()
    tok = cd.Token(p.url, "admin@crash.example")
    tok.refresh(None)
    h = {"Authorization": f"Bearer {tok.get()}"}
    orders = [{"order_id": f"o{k}", "customer_id": f"c{k % 50}", "total": 5,
               "created_at": "2025-03-01T10:00:00Z",
               "items": [{"product_id": f"p{(k + i) % 30}", "quantity": 1, "unit_price": 1.25}
                         for i in range(2)]}  # chunks slow enough to kill between
              for k in range(10000)]
    r = httpx.post(p.url + "/api/v1/ingest/batch", headers=h, timeout=60,
                   json={"source_id": "big", "data_type": "orders", "format": "json",
                         "data": orders})
    assert r.status_code == 201, r.text
    bid = r.json()["data"]["batch_id"]

    client = httpx.Client(base_url=p.url, headers=h, timeout=30)  # keep-alive: quick polls

    def status():
        for _ in range(3):  # the connection of a killed server fails once
            try:
                r = client.get(f"/api/v1/ingest/batches/{bid}/status")
                break
            except httpx.TransportError:
                pass
        assert r.status_code == 200, r.text
        return r.json()["data"]

    seen, kills, moved = -1, 0, time.time()
    while time.time() - moved < 20:  # a job failed for its run count never moves again
        s = status()
        if s["status"] != "processing":
            break
        done = s["progress"]["processed_records"]
        if done > seen:  # this run stored a chunk: kill it before the next one
            seen, moved = done, time.time()
            if seen > 0:
                p.kill9()
                kills += 1
                p.start()
                p.wait_ready()
        else:
            time.sleep(0.001)
    s = status()
    client.close()
    assert p.term() == 0
    no_sanitizer_report(p)
    assert s["status"] == "completed", (kills, s)
    # the 5th kill was the one that failed the job before runs that stored a chunk counted
    assert kills >= 5, f"only {kills} kills landed mid-batch: the test proved nothing"
    assert (s["stored_records"], s["duplicate_records"]) == (10000, 0), s
    assert s["progress"]["processed_records"] == 10000
