"""HTTP request-smuggling probes over raw sockets: every ambiguous framing is a 400 and a close.

Each case is a request whose framing two HTTP parsers could read differently (the attacks of
RFC 9112 section 11.2, CVE-2023-30589, CVE-2024-27982 and the classic CL.TE / TE.CL / TE.TE
desyncs), followed on the same connection by a second, "smuggled" request. The server passes a
case only when its whole answer is one 400 in the core error format followed by EOF: a second
response means it parsed the smuggled request, a non-400 means it acted on ambiguous framing.

CASES is also run by tools/check.d/transport, which prints the count as a scorecard row.
"""
import json
import socket
import time

import pytest

import rawhttp
from conftest import Server

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(headers, body=b"", line=b"POST /health HTTP/1.1"):
    """A request with `headers` (already CRLF-terminated lines) and `body`, raw."""
    return line + b"\r\nHost: x\r\n" + headers + b"\r\n" + body


CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"

# (id, raw bytes of the hostile request; SMUGGLED is appended to each)
CASES = [
    # Content-Length together with Transfer-Encoding (CL.TE and TE.CL)
    ("cl-then-te", post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")),
    ("te-then-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 30\r\n", b"0\r\n\r\n")),
    # duplicate and malformed Content-Length
    ("cl-duplicate-equal", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
    ("cl-duplicate-different", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello")),
    ("cl-list", post(b"Content-Length: 5, 5\r\n", b"hello")),
    ("cl-plus-sign", post(b"Content-Length: +5\r\n", b"hello")),
    ("cl-minus-sign", post(b"Content-Length: -5\r\n", b"hello")),
    ("cl-hex", post(b"Content-Length: 0x5\r\n", b"hello")),
    ("cl-inner-space", post(b"Content-Length: 1 0\r\n", b"helloworld")),
    ("cl-empty", post(b"Content-Length:\r\n", b"hello")),
    ("cl-overflow", post(b"Content-Length: 184467440737095516160\r\n", b"hello")),
    ("cl-vertical-tab", post(b"Content-Length: 5\x0b\r\n", b"hello")),
    # header names
    ("space-before-colon", post(b"Content-Length : 5\r\n", b"hello")),
    ("tab-before-colon", post(b"Content-Length\t: 5\r\n", b"hello")),
    ("space-before-name", post(b" Content-Length: 5\r\n", b"hello", line=b"POST /health HTTP/1.1\r\nX: y")),
    ("empty-header-name", post(b": 5\r\n")),
    ("nul-in-name", post(b"X-A\x00b: 1\r\n")),
    # obs-fold (a line starting with SP or HTAB continues the previous value)
    ("obs-fold-space", post(b"X-A: 1\r\n 2\r\n")),
    ("obs-fold-tab", post(b"X-A: 1\r\n\t2\r\n")),
    ("obs-fold-te", post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_HELLO)),
    # bare CR and bare LF (CVE-2023-30589)
    ("bare-cr-in-value", post(b"X-A: 1\r2\r\n")),
    ("bare-cr-line-end", post(b"X-A: 1\rContent-Length: 5\r\n", b"hello")),
    ("bare-lf-line-end", post(b"X-A: 1\nContent-Length: 5\r\n", b"hello")),
    ("bare-lf-everywhere", b"GET /health HTTP/1.1\nHost: x\n\n"),
    ("bare-lf-request-line", b"GET /health HTTP/1.1\nHost: x\r\n\r\n"),
    ("bare-lf-end-of-head", b"GET /health HTTP/1.1\r\nHost: x\r\n\n"),
    ("bare-cr-end-of-head", b"GET /health HTTP/1.1\r\nHost: x\r\n\r"),
    ("nul-in-value", post(b"X-A: 1\x002\r\n")),
    ("del-in-value", post(b"X-A: 1\x7f2\r\n")),
    # chunked framing
    ("chunk-size-overflow", post(b"Transfer-Encoding: chunked\r\n",
                                 b"FFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-64bit", post(b"Transfer-Encoding: chunked\r\n",
                              b"10000000000000005\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n")),
    ("chunk-data-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\n0\r\n\r\n")),
    ("chunk-last-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\n\n")),
    ("chunk-ext-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5;a=b\nhello\r\n0\r\n\r\n")),
    ("chunk-ext-bare-cr", post(b"Transfer-Encoding: chunked\r\n", b"5;a=b\rhello\r\n0\r\n\r\n")),
    ("chunk-ext-cr-in-name", post(b"Transfer-Encoding: chunked\r\n", b"5;a\rb\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-space", post(b"Transfer-Encoding: chunked\r\n", b"5 3\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-sign", post(b"Transfer-Encoding: chunked\r\n", b"+5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-trailer-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX: y\n\r\n")),
    ("chunk-trailer-bare-cr", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX: a\rb\r\n\r\n")),
    ("chunk-trailer-obs-fold", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n")),
    ("chunk-end-bare-cr", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r")),
    ("chunk-trailers-end-bare-cr", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX: a\r\n\r")),
    # Transfer-Encoding variants (TE.TE)
    ("te-chunked-identity", post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_HELLO)),
    ("te-identity", post(b"Transfer-Encoding: identity\r\n", b"hello")),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_HELLO)),
    ("te-chunked-junk", post(b"Transfer-Encoding: chunked x\r\n", CHUNKED_HELLO)),
    ("te-chunked-comma-junk", post(b"Transfer-Encoding: chunked,\r\n", CHUNKED_HELLO)),
    ("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_HELLO)),
    ("te-duplicate", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO)),
    ("te-duplicate-identity", post(b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                                   CHUNKED_HELLO)),
    ("te-http10", post(b"Transfer-Encoding: chunked\r\n", CHUNKED_HELLO, line=b"POST /health HTTP/1.0")),
    ("te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_HELLO)),
    # request line
    ("absolute-form-other-host", b"GET http://evil.example/health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("double-space-before-target", b"GET  /health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("double-space-before-version", b"GET /health  HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("trailing-space-request-line", b"GET /health HTTP/1.1 \r\nHost: x\r\n\r\n"),
    ("tab-in-request-line", b"GET\t/health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("nul-in-target", b"GET /hea\x00lth HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("duplicate-host", b"GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
]


def read_all(sock, wait=2.0):
    """Every response the server sends until EOF or `wait` seconds of silence:
    ([(status, headers, body)], closed)."""
    sock.settimeout(wait)
    buf, responses = b"", []
    closed = False
    while True:
        while b"\r\n\r\n" in buf:
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            if len(rest) < n:
                break
            status = int(lines[0].split(" ")[1])
            if status != 100:
                responses.append((status, headers, rest[:n]))
            buf = rest[n:]
        if closed:
            return responses, True
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return responses, True
        except socket.timeout:
            return responses, False
        if not chunk:
            closed = True
        buf += chunk


def probe(port, raw):
    """Sends one case plus the smuggled request; returns (ok, what happened)."""
    sock = rawhttp.connect(port)
    try:
        try:
            sock.sendall(raw + SMUGGLED)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read everything
        responses, closed = read_all(sock)
    finally:
        sock.close()
    statuses = [r[0] for r in responses]
    ok = statuses == [400] and closed
    if ok:
        try:
            ok = json.loads(responses[0][2])["error"]["code"] == "BAD_REQUEST"
        except (ValueError, KeyError, TypeError):
            ok = False
    return ok, f"statuses {statuses}, {'closed' if closed else 'left open'}"


@pytest.fixture(scope="module")
def shared():
    """One server for every probe: each must leave it serving the next."""
    s = Server()
    yield s
    s.stop()


@pytest.mark.parametrize("raw", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_ambiguous_framing_is_400_and_close(shared, raw):
    ok, what = probe(shared.port, raw)
    assert ok, what


def test_well_formed_neighbours_still_served(shared):
    """The controls: the legal forms next to the hostile ones keep working, pipelined."""
    sock = rawhttp.connect(shared.port)
    try:
        reqs = [
            post(b"Content-Length: 5\r\n", b"hello"),
            post(b"Content-Length:   5   \r\n", b"hello"),           # OWS around the value
            post(b"Transfer-Encoding: chunked\r\n", CHUNKED_HELLO),
            post(b"Transfer-Encoding: Chunked\r\n", CHUNKED_HELLO),   # codings are case-insensitive
            post(b"Transfer-Encoding: chunked\r\n", b"5;name=value\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
            post(b"Transfer-Encoding: chunked\r\n", b"05\r\nhello\r\n000\r\n\r\n"),
            b"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n",     # absolute-form, same host
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n",  # HTAB inside a value
            SMUGGLED,
        ]
        sock.sendall(b"".join(reqs))
        statuses = []
        buf = b""
        for _ in reqs:
            status, headers, body, buf = rawhttp.read_response(sock, buf)
            statuses.append(status)
        # POST /health is a 405 (the body framed and read), GET /health a 200, /smuggled a 404
        assert statuses == [405] * 6 + [200, 200, 404], statuses
    finally:
        sock.close()


def test_framing_split_across_reads(shared):
    """The head scan and the trailer pause keep their place when every byte is its own read."""
    sock = rawhttp.connect(shared.port)
    try:
        raw = post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
        for i in range(len(raw)):
            sock.sendall(raw[i:i + 1])
            time.sleep(0.002)
        status, headers, _, buf = rawhttp.read_response(sock)
        assert status == 405 and headers["connection"] == "keep-alive"
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\n\r":
            sock.sendall(bytes([b]))
            time.sleep(0.002)
        sock.sendall(b"X")  # a bare CR at the end of the head, in its own read
        responses, closed = read_all(sock)
        assert [r[0] for r in responses] == [400] and closed
    finally:
        sock.close()


def test_server_keeps_serving_after_probes(shared):
    status, _, _ = rawhttp.exchange(shared.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
