"""The HTTP core over a real socket: ops shapes, errors per surface, limits, keep-alive, CORS."""
import json
import os
import socket
import subprocess
import time

import httpx
import pytest

import contract
import rawhttp
from conftest import SRC, Api, Server


def test_health_shape_and_real_checks(api):
    r = api.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["checks"] == {"database": "healthy", "cache": "healthy", "dependencies": "healthy"}
    assert body["version"] == "0.1.0"
    assert isinstance(body["uptime_seconds"], int) and body["uptime_seconds"] >= 0


def test_learning_health_shape(api):
    r = api.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["environment"] == "production"
    assert body["services"]["database"] == "healthy"
    assert body["timestamp"].endswith("Z")


def test_ready_reflects_database(server, api):
    assert api.get("/ready").json() == {"ready": True}


def test_request_id_echoed_or_generated(api):
    r = api.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = api.get("/health")
    generated = r.headers["x-request-id"]
    assert len(generated) == 36
    # an unusable id (too long) is replaced, not echoed
    r = api.get("/health", headers={"X-Request-ID": "x" * 100})
    assert r.headers["x-request-id"] != "x" * 100


def test_request_id_in_error_body_and_log(server, api):
    r = api.get("/no/such/route", headers={"X-Request-ID": "trace-me-1"})
    assert r.status_code == 404
    assert r.json()["error"]["request_id"] == "trace-me-1"
    time.sleep(0.2)
    lines = [l for l in server.log_lines() if l.get("trace_id") == "trace-me-1"]
    assert len(lines) == 1
    line = lines[0]
    assert line["level"] == "WARN" and line["service"] == "tessera"
    assert line["message"] == "Request processed"
    assert line["context"]["status_code"] == 404
    assert line["context"]["endpoint"] == "unmatched"
    assert isinstance(line["context"]["duration_ms"], (int, float))


def test_404_in_surface_format(api):
    # recs/ops format for paths no surface owns
    r = api.get("/definitely/not/here")
    assert r.status_code == 404
    e = r.json()["error"]
    assert e["code"] == "NOT_FOUND" and "timestamp" in e and "request_id" in e
    # learning owns /api/v1/health: a sibling path answers in learning's envelope
    r = api.get("/api/v1/health/extra")
    assert r.status_code == 404
    assert r.json()["success"] is False


def test_405_with_allow(api):
    r = api.request("DELETE", "/health")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, OPTIONS"
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_cors_preflight_and_simple(tmp_path):
    s = Server("--cors-origin", "http://app.example", data=str(tmp_path))
    try:
        with httpx.Client(base_url=s.url) as c:
            r = c.options("/health", headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization, Content-Type"})
            assert r.status_code == 204
            assert r.headers["access-control-allow-origin"] == "http://app.example"
            assert r.headers["access-control-allow-credentials"] == "true"
            assert "GET" in r.headers["access-control-allow-methods"]
            assert r.headers["access-control-allow-headers"] == "Authorization, Content-Type"
            r = c.get("/health", headers={"Origin": "http://app.example"})
            assert r.headers["access-control-allow-origin"] == "http://app.example"
            assert "X-Request-ID" in r.headers["access-control-expose-headers"]
            # an origin not configured gets no CORS headers
            r = c.get("/health", headers={"Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in r.headers
    finally:
        s.stop()


def test_keepalive_and_pipelining_in_order(server):
    sock = rawhttp.connect(server.port)
    try:
        reqs = b"".join(
            b"GET %s HTTP/1.1\r\nHost: x\r\nX-Request-ID: p%d\r\n\r\n" % (p, i)
            for i, p in enumerate([b"/health", b"/nope", b"/ready", b"/api/v1/health"]))
        sock.sendall(reqs)
        buf = b""
        got = []
        for _ in range(4):
            status, headers, body, buf = rawhttp.read_response(sock, buf)
            got.append((headers["x-request-id"], status))
            assert headers["connection"] == "keep-alive"
        assert got == [("p0", 200), ("p1", 404), ("p2", 200), ("p3", 200)]
        # the same connection still serves
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _, _ = rawhttp.read_response(sock)
        assert status == 200
    finally:
        sock.close()


def test_http10_closes(server):
    status, headers, body = rawhttp.exchange(server.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"


@pytest.mark.parametrize("raw,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
])
def test_malformed_requests_get_400_and_server_keeps_serving(server, raw, status):
    got, headers, body = rawhttp.exchange(server.port, raw)
    assert got == status
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "BAD_REQUEST"
    assert httpx.get(server.url + "/health").status_code == 200


def test_url_too_long_414_at_limit_plus_one(server):
    base = b"GET /health?x="
    limit = 8192
    ok_url = base[4:] + b"a" * (limit - len(base[4:]))
    status, _, _ = rawhttp.exchange(server.port, b"GET " + ok_url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    long_url = ok_url + b"a"
    status, _, body = rawhttp.exchange(server.port, b"GET " + long_url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    assert json.loads(body)["error"]["code"] == "URI_TOO_LONG"


def test_headers_too_large_431(server):
    status, _, body = rawhttp.exchange(
        server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert status == 431
    assert json.loads(body)["error"]["code"] == "HEADERS_TOO_LARGE"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    status, _, _ = rawhttp.exchange(server.port, b"GET /health HTTP/1.1\r\n" + many + b"\r\n")
    assert status == 431
    hundred = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
    status, _, _ = rawhttp.exchange(server.port, b"GET /health HTTP/1.1\r\n" + hundred + b"\r\n")
    assert status == 200


def test_body_too_large_413(tmp_path):
    s = Server("--max-body-kb", "1", data=str(tmp_path))
    try:
        status, _, _ = rawhttp.exchange(
            s.port, b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024)
        assert status == 405  # at the limit the body is accepted; the route is GET-only
        status, _, body = rawhttp.exchange(
            s.port, b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n" + b"a" * 1025)
        assert status == 413
        assert json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
        # chunked bodies are counted too
        chunk = b"%x\r\n%s\r\n" % (1025, b"b" * 1025)
        status, _, _ = rawhttp.exchange(
            s.port, b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + b"0\r\n\r\n")
        assert status == 413
    finally:
        s.stop()


def test_slow_headers_get_408_and_idle_closes(tmp_path):
    s = Server("--header-timeout", "1", "--idle-timeout", "1", data=str(tmp_path))
    try:
        sock = rawhttp.connect(s.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        status, headers, body, _ = rawhttp.read_response(sock)
        assert status == 408
        assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
        sock.close()
        idle = rawhttp.connect(s.port)
        assert rawhttp.closed_by_peer(idle, wait=3.0)
        idle.close()
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.stop()


def test_client_disconnect_mid_request_costs_nothing(server):
    for _ in range(50):
        sock = rawhttp.connect(server.port)
        sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        sock.close()
    assert httpx.get(server.url + "/health").status_code == 200


def test_connection_cap(tmp_path):
    s = Server("--max-connections", "3", data=str(tmp_path))
    try:
        time.sleep(0.3)  # the readiness probe's connection is gone
        held = [rawhttp.connect(s.port) for _ in range(3)]
        for h in held:  # each is accepted and served, and stays open (keep-alive)
            h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert rawhttp.read_response(h)[0] == 200
        extra = rawhttp.connect(s.port)
        assert rawhttp.closed_by_peer(extra, wait=2.0)
        extra.close()
        for h in held:
            h.close()
        time.sleep(0.2)
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.stop()


def test_metrics_pass_promtool(api):
    api.get("/health")
    api.get("/nope")
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'http_requests_total{service="tessera",endpoint="/health",method="GET",status_code="200"}' in text
    assert 'http_errors_total{service="tessera",endpoint="unmatched",error_type="NOT_FOUND"} 1' in text
    assert "tessera_build_info{" in text
    assert 'http_connections_active{service="tessera"}' in text
    # /ready and /health ran real queries: SQLite's profile hook counted them
    assert 'db_queries_total{service="tessera",query_type="select",table="schema_migrations"}' in text
    assert 'db_query_duration_seconds_count{service="tessera",query_type="select",table="schema_migrations"}' in text
    promtool = os.path.join(SRC, ".tools/promtool")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def test_metrics_count_requests_exactly(api):
    for _ in range(7):
        api.get("/api/v1/health")
    text = api.get("/metrics").text
    line = [l for l in text.splitlines()
            if l.startswith('http_requests_total{service="tessera",endpoint="/api/v1/health",method="GET",status_code="200"}')]
    assert line and line[0].endswith(" 7")


def test_rate_limit_429_with_headers(tmp_path):
    s = Server("--rate-limit", "default=3/60", data=str(tmp_path))
    try:
        with httpx.Client(base_url=s.url) as c:
            seen = []
            for _ in range(3):
                r = c.get("/api/v1/health")
                assert r.status_code == 200
                assert r.headers["x-ratelimit-limit"] == "3"
                seen.append(int(r.headers["x-ratelimit-remaining"]))
            assert seen == [2, 1, 0]
            r = c.get("/api/v1/health")
            assert r.status_code == 429
            body = r.json()
            assert body["success"] is False and body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
            assert int(r.headers["retry-after"]) == body["error"]["retryAfter"] == 20  # 60 s / 3
            assert int(r.headers["x-ratelimit-reset"]) > 0
            # ops routes are not limited
            assert c.get("/health").status_code == 200
    finally:
        s.stop()
