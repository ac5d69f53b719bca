"""Limits that stop resource exhaustion (issue 7), each at `limit` (accepted) and `limit + 1`
(refused with its status, in the surface's error format, and the server still serving):
URL length, query parameters, headers, body sizes per route class, compressed bodies, JSON
depth (bodies and NDJSON lines), multipart parts / part header bytes / part header lines,
records per commerce batch, recs items and interactions per call, the desk export range and
queued + running jobs per tenant. The README's "Limits" table lists the same values.

With LIMITS_REPORT=FILE every test appends one JSON line {test, limit, value, at, over} (the
statuses measured) for tools/check.d/limits."""
import json
import os
import time
from datetime import date, timedelta

import httpx
import pytest

import contract
import rawhttp
from accounts import bearer, login, tenant, user
from conftest import Api, Server

RATES = ["--rate-limit", "default=1000000/60", "--rate-limit", "recs=1000000/60",
         "--rate-limit", "commerce=1000000/60", "--rate-limit", "auth=100000/60"]
BODY_KB = 4          # --max-body-kb for these servers
BATCH_MB = 1         # --max-batch-mb
UPLOAD_MB = 1        # --max-upload-mb
URL_MAX = 8192       # http.h HTTP_URL_MAX
QUERY_MAX = 256      # dispatch.c QUERY_MAX_PARAMS
HEADERS_MAX = 100    # http.h HTTP_HEADERS_MAX
JSON_DEPTH = 32      # core/json.h JSON_MAX_DEPTH
MP_PARTS = 16        # desk/files.c FILES_MAX_PARTS (the parser's own cap is 1000: unit test)
MP_HEADER_BYTES = 8192   # http/multipart.h MP_HEADER_MAX
MP_HEADER_LINES = 16     # http/multipart.h MP_PART_HEADERS_MAX
BATCH_RECORDS = 10000    # commerce ingest.c BATCH_MAX
RECS_BATCH = 10000       # recs data.c MAX_BATCH
EXPORT_DAYS = 366        # desk dashboard.c RANGE_MAX_DAYS
JOBS_CAP = 3             # --max-jobs-per-tenant for the jobs test
BOUNDARY = "limits-boundary"


def report(limit, value, at, over, over_label="+1"):
    path = os.environ.get("LIMITS_REPORT")
    if path:
        test = os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0].split("[")[0]
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "limit": limit, "value": value, "at": at,
                                "over": over, "over_label": over_label}) + "\n")


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def padded(obj, size):
    """obj as JSON, padded with trailing whitespace (still valid JSON) to exactly size bytes."""
    b = compact(obj)
    assert len(b) <= size
    return b + b" " * (size - len(b))


def raw_checked(port, method, path, raw):
    """Sends raw bytes, reads one response and checks it against the contract like Api does."""
    status, headers, body = rawhttp.exchange(port, raw, timeout=30)
    contract.check(method, path, httpx.Response(status, headers=headers, content=body))
    return status, headers, body


def still_serving(server):
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def error_of(r):
    e = r.json()["error"]
    return e


class World:
    def __init__(self, tmp):
        data = str(tmp)
        self.t = tenant(data, "Acme", "acme.example")
        user(data, "acme.example", "admin@acme.example", "admin")
        self.server = Server("--max-body-kb", str(BODY_KB), "--max-batch-mb", str(BATCH_MB),
                             "--max-upload-mb", str(UPLOAD_MB), *RATES, data=data)
        self.api = Api(self.server)
        try:
            self.tok = bearer(login(self.api, "admin@acme.example")["access_token"])
            r = self.api.post("/api/v1/api-keys", headers=self.tok,
                              json={"name": "internal", "permissions": ["internal"]})
            assert r.status_code == 201, r.text
            self.key = bearer(r.json()["key"])
        except BaseException:
            self.close()
            raise

    def close(self):
        self.api.close()
        self.server.stop()


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("limits"))
    yield world
    world.close()


# ---------------------------------------------------------------- URL, query, headers

def test_url_length(w):
    port = w.server.port

    def get(n):
        target = b"/health?x=" + b"a" * (n - len(b"/health?x="))
        assert len(target) == n
        return raw_checked(port, "GET", target.decode(),
                           b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    at, over = get(URL_MAX)[0], get(URL_MAX + 1)
    assert at == 200
    assert over[0] == 414 and json.loads(over[2])["error"]["code"] == "URI_TOO_LONG"
    still_serving(w.server)
    report("request URL bytes", URL_MAX, at, over[0])


def test_query_parameter_count(w):
    def query(n):
        return "&".join(f"p{i}={i}" for i in range(n))

    at = w.api.get("/health?" + query(QUERY_MAX))
    over = w.api.get("/health?" + query(QUERY_MAX + 1))
    assert at.status_code == 200, at.text
    assert over.status_code == 400
    e = error_of(over)
    assert e["code"] == "VALIDATION_ERROR" and e["details"]["field"] == "query"
    assert str(QUERY_MAX) in e["message"]
    # empty pairs are not parameters
    assert w.api.get("/health?" + query(QUERY_MAX) + "&&&").status_code == 200
    # the same bound on an authenticated desk route, in desk's format (validation is 422 there)
    d_at = w.api.get("/api/v1/tickets?" + query(QUERY_MAX), headers=w.tok)
    d_over = w.api.get("/api/v1/tickets?" + query(QUERY_MAX + 1), headers=w.tok)
    assert d_at.status_code == 200, d_at.text
    assert d_over.status_code == 422 and error_of(d_over)["details"]["field"] == "query"
    still_serving(w.server)
    report("query parameters", QUERY_MAX, at.status_code, over.status_code)


def test_header_count(w):
    def get(n):
        hdrs = b"Host: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(n - 1))
        return raw_checked(w.server.port, "GET", "/health", b"GET /health HTTP/1.1\r\n" + hdrs + b"\r\n")

    at, over = get(HEADERS_MAX)[0], get(HEADERS_MAX + 1)
    assert at == 200
    assert over[0] == 431 and json.loads(over[2])["error"]["code"] == "HEADERS_TOO_LARGE"
    still_serving(w.server)
    report("request headers", HEADERS_MAX, at, over[0])


# ---------------------------------------------------------------- body sizes per route class

def post_sized(w, path, auth, body, declared=None, ctype="application/json"):
    """POST over a raw socket. declared: a Content-Length larger than the bytes sent (the
    server must refuse on the declared length alone, before reading)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Authorization: {auth['Authorization']}\r\n"
            f"Content-Length: {declared or len(body)}\r\n\r\n").encode()
    return raw_checked(w.server.port, "POST", path, head + (b"" if declared else body))


def test_body_ordinary_route(w):
    limit = BODY_KB * 1024
    ev = {"user_id": "u1", "item_id": "i1", "interaction_type": "view"}
    at = post_sized(w, "/api/v1/interactions", w.tok, padded(ev, limit))
    over = post_sized(w, "/api/v1/interactions", w.tok, b"", declared=limit + 1)
    assert at[0] == 201, at[2]
    assert over[0] == 413 and json.loads(over[2])["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # a chunked body is counted as it arrives
    chunk = padded(ev, limit + 1)
    raw = (b"POST /api/v1/interactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Authorization: " + w.tok["Authorization"].encode() +
           b"\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
    assert rawhttp.exchange(w.server.port, raw)[0] == 413
    still_serving(w.server)
    report("body, ordinary routes (--max-body-kb)", limit, at[0], over[0])


def test_body_batch_route(w):
    limit = BATCH_MB << 20
    items = {"items": [{"item_id": "big1", "title": "a big upload"}]}
    at = post_sized(w, "/internal/data/items", w.key, padded(items, limit))
    over = post_sized(w, "/internal/data/items", w.key, b"", declared=limit + 1)
    assert at[0] == 200 and json.loads(at[2])["accepted"] == 1, at[2][:300]
    assert over[0] == 413 and json.loads(over[2])["error"]["code"] == "PAYLOAD_TOO_LARGE"
    still_serving(w.server)
    report("body, batch routes (--max-batch-mb)", limit, at[0], over[0])


def multipart(parts, extra_headers=()):
    """parts: (name, filename or None, bytes, [extra header lines]). Returns body bytes."""
    out = b""
    for name, filename, data, extra in parts:
        cd = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {cd}\r\n".encode()
        out += b"".join(line.encode() + b"\r\n" for line in extra)
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MP_CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def upload(w, body):
    return w.api.post("/api/v1/files/upload", content=body,
                      headers={**w.tok, "Content-Type": MP_CTYPE})


def test_body_upload_route(w):
    limit = UPLOAD_MB << 20
    frame = len(multipart([("file", "big.bin", b"", [])]))
    at = post_sized(w, "/api/v1/files/upload", w.tok,
                    multipart([("file", "big.bin", b"z" * (limit - frame), [])]), ctype=MP_CTYPE)
    over = post_sized(w, "/api/v1/files/upload", w.tok, b"", declared=limit + 1, ctype=MP_CTYPE)
    assert at[0] == 201, at[2]
    assert json.loads(at[2])["size"] == limit - frame
    assert over[0] == 413 and json.loads(over[2])["error"]["code"] == "PAYLOAD_TOO_LARGE"
    still_serving(w.server)
    report("body, upload routes (--max-upload-mb)", limit, at[0], over[0])


def test_compressed_bodies_are_refused(w):
    import gzip
    ev = compact({"user_id": "u2", "item_id": "i1", "interaction_type": "view"})
    h = {**w.tok, "Content-Type": "application/json"}
    ok = w.api.post("/api/v1/interactions", content=ev, headers={**h, "Content-Encoding": "identity"})
    assert ok.status_code == 201, ok.text
    for route, body, ctype in [
            ("/api/v1/interactions", ev, "application/json"),
            ("/api/v1/ingest/batch", compact({"source_id": "src-1", "data_type": "orders",
                                              "format": "json", "data": [{}]}), "application/json"),
            ("/api/v1/files/upload", multipart([("file", "a.txt", b"hello", [])]), MP_CTYPE)]:
        for coding in ("gzip", "deflate", "br", "gzip, identity"):
            r = w.api.post(route, content=gzip.compress(body),
                           headers={**w.tok, "Content-Type": ctype, "Content-Encoding": coding})
            assert r.status_code == 415, (route, coding, r.text)
            e = error_of(r)
            assert e["code"] == "UNSUPPORTED_MEDIA_TYPE", e
            field = e.get("details", {}).get("field") if isinstance(e.get("details"), dict) else None
            fe = e.get("field_errors")
            assert field == "Content-Encoding" or (fe and fe[0]["field"] == "Content-Encoding"), e
            assert r.headers["accept-encoding"] == "identity"
    still_serving(w.server)
    report("compressed bodies (Content-Encoding)", "identity", ok.status_code, 415,
           "gzip/deflate/br")


# ---------------------------------------------------------------- JSON depth

def nested(levels):
    """A JSON object nesting `levels` objects deep ({"a":{"a":...}} with 1 = {})."""
    v = {}
    for _ in range(levels - 1):
        v = {"a": v}
    return v


def test_json_depth_of_a_body(w):
    # body { items [ item { metadata {...} } ] }: 3 levels before metadata
    def post(depth):
        item = {"item_id": f"deep{depth}", "title": "t", "metadata": nested(depth - 3)}
        return w.api.post("/api/v1/items", headers={**w.tok, "Content-Type": "application/json"},
                          content=compact({"items": [item]}))

    at, over = post(JSON_DEPTH), post(JSON_DEPTH + 1)
    assert at.status_code == 200 and at.json()["accepted"] == 1, at.text
    assert over.status_code == 400, over.text
    e = error_of(over)
    assert e["code"] == "VALIDATION_ERROR" and e["details"]["field"] == "body"
    assert f"deeper than {JSON_DEPTH}" in e["message"]
    # brackets inside strings are not nesting
    s = w.api.post("/api/v1/items", headers=w.tok,
                   json={"items": [{"item_id": "brackets", "title": "[" * 100 + "{" * 100}]})
    assert s.status_code == 200 and s.json()["accepted"] == 1, s.text
    # a desk body answers in desk's format (validation is 422 there)
    d = w.api.post("/api/v1/tickets", headers={**w.tok, "Content-Type": "application/json"},
                   content=compact({"title": "t", "x": nested(JSON_DEPTH)}))
    assert d.status_code == 422 and error_of(d)["details"]["field"] == "body"
    still_serving(w.server)
    report("JSON nesting depth (bodies)", JSON_DEPTH, at.status_code, over.status_code)


def test_json_depth_of_an_ndjson_line(w):
    def post(depth, oid):
        line = compact({"order_id": oid, "customer_id": "c1", "created_at": "2025-03-01T10:00:00Z",
                        "total": 1, "x": nested(depth - 1)})
        return w.api.post("/api/v1/ingest/batch", content=line + b"\n",
                          params={"source_id": "nd-src", "data_type": "orders"},
                          headers={**w.tok, "Content-Type": "application/x-ndjson"})

    at, over = post(JSON_DEPTH, "nd1"), post(JSON_DEPTH + 1, "nd2")
    assert at.status_code == 201, at.text
    assert over.status_code == 400, over.text
    fe = error_of(over)["field_errors"]
    assert fe[0]["field"] == "body" and f"deeper than {JSON_DEPTH}" in fe[0]["message"], fe
    still_serving(w.server)
    report("JSON nesting depth (NDJSON lines)", JSON_DEPTH, at.status_code, over.status_code)


# ---------------------------------------------------------------- multipart

def test_multipart_parts(w):
    def parts(n):
        return multipart([("file", "p.txt", b"parts", [])] +
                         [(f"f{i}", None, b"v", []) for i in range(n - 1)])

    at, over = upload(w, parts(MP_PARTS)), upload(w, parts(MP_PARTS + 1))
    assert at.status_code == 201, at.text
    assert over.status_code == 400
    e = error_of(over)
    assert e["code"] == "BAD_REQUEST" and e["details"]["field"] == "body"
    assert "too many parts" in e["message"]
    still_serving(w.server)
    report("multipart parts (desk upload)", MP_PARTS, at.status_code, over.status_code)


def test_multipart_part_header_bytes(w):
    def part_with_headers(size):
        cd = 'Content-Disposition: form-data; name="file"; filename="h.txt"\r\n'
        fixed = len(cd) + len("X-Pad: ") + len("\r\n") + len("\r\n")
        block_pad = "p" * (size - fixed)
        body = (f"--{BOUNDARY}\r\n{cd}X-Pad: {block_pad}\r\n\r\nheaders\r\n"
                f"--{BOUNDARY}--\r\n").encode()
        assert body.index(b"\r\n\r\n") + 4 - len(f"--{BOUNDARY}\r\n") == size
        return body

    at = upload(w, part_with_headers(MP_HEADER_BYTES))
    over = upload(w, part_with_headers(MP_HEADER_BYTES + 1))
    assert at.status_code == 201, at.text
    assert over.status_code == 400
    e = error_of(over)
    assert e["details"]["field"] == "body" and "headers are too long" in e["message"]
    still_serving(w.server)
    report("multipart part header bytes", MP_HEADER_BYTES, at.status_code, over.status_code)


def test_multipart_part_header_lines(w):
    def lines(n):  # Content-Disposition plus n - 1 others
        return multipart([("file", "l.txt", b"lines", [f"X-L{i}: v" for i in range(n - 1)])])

    at, over = upload(w, lines(MP_HEADER_LINES)), upload(w, lines(MP_HEADER_LINES + 1))
    assert at.status_code == 201, at.text
    assert over.status_code == 400
    e = error_of(over)
    assert e["details"]["field"] == "body" and "too many header lines" in e["message"]
    still_serving(w.server)
    report("multipart header lines per part", MP_HEADER_LINES, at.status_code, over.status_code)


# ---------------------------------------------------------------- rows per request

def test_commerce_batch_records(w):
    def post(n):
        recs = [{"order_id": f"b{i}", "customer_id": "c1", "created_at": "2025-03-01T10:00:00Z",
                 "total": 1} for i in range(n)]
        return w.api.post("/api/v1/ingest/batch", headers={**w.tok, "Content-Type": "application/json"},
                          content=compact({"source_id": "lim-src", "data_type": "orders",
                                           "format": "json", "data": recs}))

    at, over = post(BATCH_RECORDS), post(BATCH_RECORDS + 1)
    assert at.status_code == 201 and at.json()["data"]["records_received"] == BATCH_RECORDS, at.text
    assert over.status_code == 400
    fe = error_of(over)["field_errors"]
    assert fe[0]["field"] == "data" and "10,000" in fe[0]["message"]
    still_serving(w.server)
    report("records per commerce batch", BATCH_RECORDS, at.status_code, over.status_code)


def test_recs_items_per_call(w):
    def post(n, tag):
        items = [{"item_id": f"{tag}{i}", "title": "t"} for i in range(n)]
        return w.api.post("/internal/data/items", headers={**w.key, "Content-Type": "application/json"},
                          content=compact({"items": items}))

    at, over = post(RECS_BATCH, "a"), post(RECS_BATCH + 1, "b")
    assert at.status_code == 200 and at.json()["accepted"] == RECS_BATCH, at.text[:300]
    assert over.status_code == 400
    e = error_of(over)
    assert e["details"]["field"] == "items" and f"items[{RECS_BATCH}]" in e["message"]
    still_serving(w.server)
    report("recs items per call", RECS_BATCH, at.status_code, over.status_code)


def test_recs_interactions_per_call(w):
    def post(n):
        evs = [{"user_id": f"u{i % 50}", "item_id": f"a{i % 100}", "interaction_type": "view"}
               for i in range(n)]
        return w.api.post("/internal/data/interactions", headers={**w.key, "Content-Type": "application/json"},
                          content=compact({"interactions": evs}))

    at, over = post(RECS_BATCH), post(RECS_BATCH + 1)
    assert at.status_code == 200 and at.json()["accepted"] == RECS_BATCH, at.text[:300]
    assert over.status_code == 400
    assert error_of(over)["details"]["field"] == "interactions"
    still_serving(w.server)
    report("recs interactions per call", RECS_BATCH, at.status_code, over.status_code)


def test_desk_export_range(w):
    end = date.today()

    def export(days):
        start = end - timedelta(days=days - 1)
        return w.api.get("/api/v1/dashboard/reports/export", headers=w.tok,
                         params={"type": "tickets", "format": "csv",
                                 "start_date": start.isoformat(), "end_date": end.isoformat()})

    at, over = export(EXPORT_DAYS), export(EXPORT_DAYS + 1)
    assert at.status_code == 200, at.text
    assert over.status_code == 422
    e = error_of(over)
    assert e["details"]["field"] == "end_date" and "366 days" in e["message"]
    still_serving(w.server)
    report("desk export range (days)", EXPORT_DAYS, at.status_code, over.status_code)


# ---------------------------------------------------------------- jobs per tenant

def test_jobs_per_tenant(tmp_path):
    """One job worker, held by a long training run, then batches: a batch's processing runs on
    the request workers and takes several loop round trips (its start, its chunks, its end),
    so the one-record batches are still active when the next request arrives, and the tenant's
    queued + running count is what the test submitted. (A batch that finished early would let
    the over-cap one in: the test would fail, never pass wrongly.)"""
    data = str(tmp_path)
    tenant(data, "Jobs", "jobs.example")
    user(data, "jobs.example", "admin@jobs.example", "admin")
    s = Server("--job-workers", "1", "--max-jobs-per-tenant", str(JOBS_CAP), *RATES, data=data)
    api = Api(s)
    try:
        tok = bearer(login(api, "admin@jobs.example")["access_token"])
        r = api.post("/api/v1/api-keys", headers=tok, json={"name": "k", "permissions": ["internal"]})
        assert r.status_code == 201, r.text
        key = bearer(r.json()["key"])
        items = [{"item_id": f"i{i}", "title": f"item {i}"} for i in range(200)]
        assert api.post("/internal/data/items", headers=key, json={"items": items}).status_code == 200
        evs = [{"user_id": f"u{u}", "item_id": f"i{(u * 7 + k * 13) % 200}", "interaction_type": "view"}
               for u in range(300) for k in range(20)]
        r = api.post("/internal/data/interactions", headers=key, json={"interactions": evs})
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text[:300]
        r = api.post("/internal/ml/training/trigger", headers=key, json={"training_config": {
            "model_type": "two_tower", "hyperparameters": {"embedding_dim": 512, "epochs": 200}}})
        assert r.status_code == 202, r.text
        train = r.json()["job_id"]

        def batch(i):
            return api.post("/api/v1/ingest/batch", headers=tok, json={
                "source_id": "jobs-src", "data_type": "orders", "format": "json",
                "data": [{"order_id": f"j{i}", "customer_id": "c", "created_at": "2025-03-01T10:00:00Z",
                          "total": 1}]})

        accepted = [batch(i) for i in range(JOBS_CAP - 1)]  # the training job is the first
        over = batch(JOBS_CAP)
        assert [a.status_code for a in accepted] == [201] * (JOBS_CAP - 1), [a.text for a in accepted]
        assert over.status_code == 429, over.text
        e = error_of(over)
        assert e["code"] == "RATE_LIMIT_EXCEEDED"
        assert "as many jobs queued or running" in e["message"], e
        # the premise: nothing finished in between, so the count was exactly JOBS_CAP
        st = api.get(f"/internal/ml/training/{train}", headers=key).json()["status"]
        assert st in ("queued", "running"), st
        still_serving(s)
        report("queued + running jobs per tenant (--max-jobs-per-tenant)", JOBS_CAP,
               accepted[-1].status_code, over.status_code)
    finally:
        api.close()
        s.stop()
