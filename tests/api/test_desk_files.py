"""desk files: multipart upload streamed to disk, metadata, ranged download, delete, ticket files.

Expected figures come from the bytes the test sends (hashlib, len), never from the server."""
import email
import email.policy
import hashlib
import io
import json
import os
import sqlite3
import time
import urllib.parse
import uuid
import zipfile

import pytest

import rawhttp
from accounts import bearer, login, tenant, user
from conftest import Api, Server

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(64)
PDF = b"%PDF-1.7\n" + os.urandom(200)


def multipart(parts, boundary="tessera-test-boundary"):
    """parts: (name, filename or None, content_type or None, bytes). Returns (body, ctype)."""
    out = b""
    for name, filename, ctype, data in parts:
        cd = f'form-data; name="{name}"'
        if filename is not None:
            cd += '; filename="' + filename.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out += f"--{boundary}\r\nContent-Disposition: {cd}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def add_ticket(db, tenant_id, requester, number):
    tid = str(uuid.uuid4())
    now = int(time.time() * 1000)
    db.execute("INSERT INTO tickets(tenant_id, id, number, title, description, type, priority, "
               "status, requester_id, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
               (tenant_id, tid, number, f"Ticket {number}", "", "bug", "low", "open", requester,
                now, now))
    return tid


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("files"))
    t = tenant(data, "Acme", "acme.example")
    g = tenant(data, "Globex", "globex.example")
    u = {r: user(data, "acme.example", f"{r}@acme.example", role)
         for r, role in (("agent", "agent"), ("viewer", "viewer"), ("viewer2", "viewer"),
                         ("admin", "admin"))}
    u["g"] = user(data, "globex.example", "agent@globex.example", "agent")
    s = Server("--rate-limit", "auth=10000/60", "--rate-limit", "default=100000/60", data=data)
    s.stop()  # the first start applied the migrations; tickets go in while nothing runs
    db = sqlite3.connect(os.path.join(data, "tessera.db"))
    tickets = {"v1": add_ticket(db, t["id"], u["viewer"]["id"], 9001),
               "v2": add_ticket(db, t["id"], u["viewer2"]["id"], 9002),
               "g": add_ticket(db, g["id"], u["g"]["id"], 9001)}
    db.commit()
    db.close()
    s = Server("--rate-limit", "auth=10000/60", "--rate-limit", "default=100000/60", data=data)
    a = Api(s)
    tok = {k: login(a, f"{k}@acme.example")["access_token"] for k in ("agent", "viewer", "viewer2", "admin")}
    tok["g"] = login(a, "agent@globex.example")["access_token"]
    yield {"api": a, "server": s, "data": data, "users": u, "tickets": tickets, "tok": tok}
    a.close()
    s.stop()


def spool_settled(tmp_dir):
    """The spooled request body is unlinked when the request is freed, just after its response
    is written: wait for that, then list what is left."""
    deadline = time.time() + 5
    while os.listdir(tmp_dir) and time.time() < deadline:
        time.sleep(0.02)
    return sorted(os.listdir(tmp_dir))


def stored(desk):
    """(files in DATA/files, files in DATA/files/tmp, rows)"""
    root = os.path.join(desk["data"], "files")
    tmp = spool_settled(os.path.join(root, "tmp"))
    names = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n)))
    db = sqlite3.connect(f"file:{os.path.join(desk['data'], 'tessera.db')}?mode=ro", uri=True)
    rows = sorted(r[0] for r in db.execute("SELECT id FROM desk_files"))
    db.close()
    return names, tmp, rows


def upload(desk, who, parts, boundary="tessera-test-boundary", ctype=None, **kw):
    body, ct = multipart(parts, boundary)
    return desk["api"].post("/api/v1/files/upload", content=body,
                            headers={**bearer(desk["tok"][who]), "Content-Type": ctype or ct}, **kw)


def test_round_trip_and_metadata(desk):
    api, tok = desk["api"], desk["tok"]
    data = os.urandom(300_000) + b"\r\n--tessera-test-boundar" + os.urandom(1000)
    r = upload(desk, "viewer", [("ticket_id", None, None, desk["tickets"]["v1"].encode()),
                                ("file", "report.bin", "application/octet-stream", data)])
    assert r.status_code == 201, r.text
    f = r.json()
    assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert f["filename"] == "report.bin" and f["content_type"] == "application/octet-stream"
    assert f["ticket_id"] == desk["tickets"]["v1"] and f["uploaded_by"] == desk["users"]["viewer"]["id"]
    assert f["url"] == f"{desk['server'].url}/api/v1/files/{f['file_id']}/download"
    names, tmp, rows = stored(desk)
    assert f["file_id"] in names and f["file_id"] in rows and tmp == []
    with open(os.path.join(desk["data"], "files", f["file_id"]), "rb") as fh:
        assert fh.read() == data
    meta = api.get(f"/api/v1/files/{f['file_id']}", headers=bearer(tok["viewer"]))
    assert meta.status_code == 200 and meta.json() == f
    d = api.get(f"/api/v1/files/{f['file_id']}/download", headers=bearer(tok["agent"]))
    assert d.status_code == 200 and d.content == data
    assert d.headers["content-type"] == "application/octet-stream"
    assert d.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert d.headers["accept-ranges"] == "bytes"
    assert int(d.headers["content-length"]) == len(data)


def test_range_requests(desk):
    api, tok = desk["api"], desk["tok"]["viewer"]
    data = os.urandom(10_000)
    fid = upload(desk, "viewer", [("file", "r.bin", None, data)]).json()["file_id"]
    url = f"/api/v1/files/{fid}/download"
    n = len(data)
    for spec, lo, hi in (("bytes=0-99", 0, 99), ("bytes=9000-", 9000, n - 1), ("bytes=-50", n - 50, n - 1),
                         ("bytes=5-5", 5, 5), ("bytes=9990-20000", 9990, n - 1), ("bytes=-20000", 0, n - 1)):
        r = api.get(url, headers={**bearer(tok), "Range": spec})
        assert r.status_code == 206, spec
        assert r.content == data[lo:hi + 1], spec
        assert r.headers["content-range"] == f"bytes {lo}-{hi}/{n}", spec
        assert r.reason_phrase == "Partial Content"
    for spec in ("bytes=10000-", "bytes=20000-30000", "bytes=-0"):
        r = api.get(url, headers={**bearer(tok), "Range": spec})
        assert r.status_code == 416, spec
        assert r.headers["content-range"] == f"bytes */{n}"
        assert r.reason_phrase == "Range Not Satisfiable"
        assert r.json()["error"]["details"]["field"] == "Range"
    for spec in ("bytes=10-5", "items=0-1", "bytes=0-1,5-6", "bytes=x-"):  # ignored: the whole file
        r = api.get(url, headers={**bearer(tok), "Range": spec})
        assert r.status_code == 200 and r.content == data, spec
    empty = upload(desk, "viewer", [("file", "empty.bin", None, b"")]).json()
    assert empty["size"] == 0 and empty["sha256"] == hashlib.sha256(b"").hexdigest()
    r = api.get(f"/api/v1/files/{empty['file_id']}/download", headers=bearer(tok))
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
    r = api.get(f"/api/v1/files/{empty['file_id']}/download", headers={**bearer(tok), "Range": "bytes=-1"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"
    etag = hashlib.sha256(data).hexdigest()
    r = api.get(url, headers={**bearer(tok), "Range": "bytes=0-9", "If-Range": f'"{etag}"'})
    assert r.status_code == 206 and r.content == data[:10]
    r = api.get(url, headers={**bearer(tok), "Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data


def test_unicode_filename_and_text(desk):
    api, tok = desk["api"], desk["tok"]["viewer"]
    text = "Grüße, 世界 — ok\n".encode() * 50
    name = "../../etc/C:\\Users\\x\\naïve résumé\x01 报告 \"q\".txt"
    r = upload(desk, "viewer", [("file", name, "text/plain", text)])
    assert r.status_code == 201, r.text
    f = r.json()
    assert f["filename"] == 'naïve résumé 报告 "q".txt'  # path and control characters gone
    assert f["content_type"] == "text/plain"
    d = api.get(f"/api/v1/files/{f['file_id']}/download", headers=bearer(tok))
    assert d.content == text and d.headers["content-type"] == "text/plain; charset=utf-8"
    cd = d.headers["content-disposition"]
    m = email.message_from_string(f"Content-Disposition: {cd}\n\n", policy=email.policy.default)
    assert m.get_content_disposition() == "attachment"
    assert m.get_filename().isascii()  # Python reads the first parameter: the ASCII fallback
    star_only = "; ".join(p for p in cd.split("; ") if not p.startswith("filename="))
    m = email.message_from_string(f"Content-Disposition: {star_only}\n\n", policy=email.policy.default)
    assert m.get_filename() == f["filename"]  # filename* decoded as RFC 2231/5987
    star = cd.split("filename*=", 1)[1]
    assert star.startswith("UTF-8''") and urllib.parse.unquote(star[7:], "utf-8") == f["filename"]
    ascii_part = cd.split('filename="', 1)[1].split('"', 1)[0]
    assert ascii_part.isascii() and ascii_part.endswith(".txt")
    # a long name is cut to 255 bytes on a character boundary, keeping its extension
    for name, want in (("é" * 200 + ".txt", "é" * 125 + ".txt"),   # 250 + 4 bytes
                       ("a" + "é" * 200, "a" + "é" * 127),          # no extension: 255 bytes
                       ("\x02 /x/ ..", "unnamed"), ("..", "unnamed"), ("   ", "unnamed")):
        r = upload(desk, "viewer", [("file", name, None, b"x")])
        assert r.status_code == 201, (name, r.text)
        fn = r.json()["filename"]
        assert len(fn.encode()) <= 255 and fn == want, (name, fn)


def test_type_detection(desk):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    docx = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "a")
    plainzip = buf.getvalue()
    cases = [(PNG, "image/png", "image/png"), (PNG, None, "image/png"),
             (b"\xff\xd8\xff\xe0" + os.urandom(50), "image/jpeg", "image/jpeg"),
             (b"GIF89a" + os.urandom(20), "application/octet-stream", "image/gif"),
             (PDF, "application/pdf", "application/pdf"),
             (docx, "application/octet-stream",
              "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
             (plainzip, "application/zip", "application/zip"),
             (b"\x00\x01\x02binary", "video/mp4", "application/octet-stream"),
             (b"a,b\n1,2\n", "text/csv", "text/plain"), (b"", "text/plain", "text/plain"),
             (b"", "image/png", "application/octet-stream"),
             ("caf\u00e9\n".encode("latin-1"), None, "application/octet-stream")]  # not UTF-8
    for data, declared, want in cases:
        r = upload(desk, "viewer", [("file", "f", declared, data)])
        assert r.status_code == 201 and r.json()["content_type"] == want, (declared, want, r.text)
    before = stored(desk)
    for data, declared in ((PNG, "application/pdf"), (PDF, "image/png"), (b"hello\n", "image/png"),
                           (PNG, "text/plain"), (PNG, "image/webp"), (docx, "image/gif")):
        r = upload(desk, "viewer", [("file", "f", declared, data)])
        assert r.status_code == 422, (declared, r.text)
        assert r.json()["error"]["details"]["field"] == "file"
    assert stored(desk) == before


def test_bad_bodies_leave_nothing(desk):
    api, tok = desk["api"], desk["tok"]["viewer"]
    before = stored(desk)
    good, ct = multipart([("file", "a.bin", None, os.urandom(5000))])

    def post(body, ctype):
        return api.post("/api/v1/files/upload", content=body, headers={**bearer(tok), "Content-Type": ctype})

    cases = [
        (good[:-30], ct, 400, "body"),                                  # truncated
        (good, "multipart/form-data; boundary=other-boundary", 400, "body"),  # wrong boundary
        (good, "multipart/form-data", 400, "Content-Type"),             # no boundary
        (good, "multipart/form-data; boundary=" + "x" * 71, 400, "Content-Type"),
        (good, "application/octet-stream", 415, "Content-Type"),
        (multipart([("ticket_id", None, None, desk["tickets"]["v1"].encode())])[0], ct, 422, "file"),
        (multipart([("file", None, None, b"not a file")])[0], ct, 422, "file"),
        (multipart([("file", "", None, b"")])[0], ct, 422, "file"),
        (multipart([("file", "a", None, b"1"), ("file", "b", None, b"2")])[0], ct, 422, "file"),
        (multipart([("ticket_id", None, None, desk["tickets"]["g"].encode()),
                    ("file", "a", None, b"1")])[0], ct, 422, "ticket_id"),   # other tenant
        (multipart([("ticket_id", None, None, desk["tickets"]["v2"].encode()),
                    ("file", "a", None, b"1")])[0], ct, 422, "ticket_id"),   # not visible
        (multipart([("ticket_id", None, None, b"x" * 100), ("file", "a", None, b"1")])[0], ct, 422, "ticket_id"),
        (multipart([("f%d" % i, None, None, b"v") for i in range(17)])[0], ct, 400, "body"),
    ]
    for body, ctype, status, field in cases:
        r = post(body, ctype)
        assert r.status_code == status, (ctype, field, r.text)
        assert r.json()["error"]["details"]["field"] == field, r.text
        assert stored(desk) == before, field


def test_upload_limit():
    s = Server("--max-upload-mb", "1")
    try:
        a = Api(s)
        from accounts import tenant as mk_tenant, user as mk_user
        mk_tenant(s.data, "Lim", "lim.example")
        mk_user(s.data, "lim.example", "v@lim.example", "viewer")
        tok = login(a, "v@lim.example")["access_token"]
        empty, ct = multipart([("file", "big.bin", None, b"")])
        limit = 1 << 20
        fill = os.urandom(limit - len(empty))
        body, _ = multipart([("file", "big.bin", None, fill)])
        assert len(body) == limit
        r = a.post("/api/v1/files/upload", content=body, headers={**bearer(tok), "Content-Type": ct})
        assert r.status_code == 201 and r.json()["sha256"] == hashlib.sha256(fill).hexdigest()
        body, _ = multipart([("file", "big.bin", None, fill + b"!")])
        assert len(body) == limit + 1
        head = (f"POST /api/v1/files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                f"Content-Type: {ct}\r\n").encode()
        # declared too long: refused after the headers; chunked: refused once the count passes it
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        for raw in (head + b"Content-Length: %d\r\n\r\n" % len(body) + body,
                    head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked):
            sock = rawhttp.connect(s.port)
            try:
                try:
                    sock.sendall(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered and closed before reading it all
                status, _, err, _ = rawhttp.read_response(sock)
            finally:
                sock.close()
            assert status == 413 and json.loads(err)["error"]["code"] == "PAYLOAD_TOO_LARGE"
        root = os.path.join(s.data, "files")
        assert len([n for n in os.listdir(root) if n != "tmp"]) == 1
        assert spool_settled(os.path.join(root, "tmp")) == []
        a.close()
    finally:
        s.stop()


def test_visibility_and_cross_tenant(desk):
    api, tok, t = desk["api"], desk["tok"], desk["tickets"]
    on_v1 = upload(desk, "viewer", [("ticket_id", None, None, t["v1"].encode()),
                                    ("file", "a.bin", None, b"\x00a")]).json()
    loose = upload(desk, "viewer", [("file", "loose.bin", None, b"\x00b")]).json()
    for fid in (on_v1["file_id"], loose["file_id"]):
        for who, status in (("viewer", 200), ("agent", 200), ("viewer2", 404), ("g", 404)):
            r = api.get(f"/api/v1/files/{fid}", headers=bearer(tok[who]))
            assert r.status_code == status, (who, fid)
            r = api.get(f"/api/v1/files/{fid}/download", headers=bearer(tok[who]))
            assert r.status_code == status, (who, fid)
        r = api.request("DELETE", f"/api/v1/files/{fid}", headers=bearer(tok["g"]))
        assert r.status_code == 404
    r = api.get(f"/api/v1/files/ticket/{t['v1']}", headers=bearer(tok["g"]))
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "ticket_id"
    r = api.get(f"/api/v1/files/ticket/{t['v1']}", headers=bearer(tok["viewer2"]))
    assert r.status_code == 404
    assert api.get("/api/v1/files/" + str(uuid.uuid4()), headers=bearer(tok["agent"])).status_code == 404
    assert api.get("/api/v1/files/nope").status_code == 401


def test_ticket_files_and_delete(desk):
    api, tok, t = desk["api"], desk["tok"], desk["tickets"]
    mine = upload(desk, "viewer2", [("ticket_id", None, None, t["v2"].encode()),
                                    ("file", "one.bin", None, b"\x001")]).json()
    agents = upload(desk, "agent", [("ticket_id", None, None, t["v2"].encode()),
                                    ("file", "two.bin", None, b"\x002")]).json()
    lst = api.get(f"/api/v1/files/ticket/{t['v2']}", headers=bearer(tok["viewer2"]))
    assert lst.status_code == 200
    assert [f["file_id"] for f in lst.json()["files"]] == [mine["file_id"], agents["file_id"]]
    assert lst.json()["files"][1] == agents
    # the requester sees the agent's file but may not delete it; an admin may
    r = api.request("DELETE", f"/api/v1/files/{agents['file_id']}", headers=bearer(tok["viewer2"]))
    assert r.status_code == 403
    r = api.request("DELETE", f"/api/v1/files/{agents['file_id']}", headers=bearer(tok["admin"]))
    assert r.status_code == 200
    assert not os.path.exists(os.path.join(desk["data"], "files", agents["file_id"]))
    assert agents["file_id"] not in stored(desk)[2]
    assert api.get(f"/api/v1/files/{agents['file_id']}", headers=bearer(tok["agent"])).status_code == 404
    # the uploader deletes their own
    r = api.request("DELETE", f"/api/v1/files/{mine['file_id']}", headers=bearer(tok["viewer2"]))
    assert r.status_code == 200
    assert api.get(f"/api/v1/files/ticket/{t['v2']}", headers=bearer(tok["agent"])).json() == {"files": []}
    r = api.request("DELETE", f"/api/v1/files/{mine['file_id']}", headers=bearer(tok["viewer2"]))
    assert r.status_code == 404
