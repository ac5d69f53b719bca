"""WebSocket conformance (RFC 6455) in the manner of the Autobahn|Testsuite, sections 1-7 and 9,
over raw sockets so that malformed frames can be sent (client frames are masked unless a case
says otherwise).

Every frame the server sends is checked against what RFC 6455 requires of a server (Peer.event):
unmasked (5.1), RSV bits 0 with no extension negotiated (5.2), no reserved opcode (5.2), the
minimal length encoding (5.2), control frames whole and at most 125 bytes (5.5), data messages
not interleaved (5.4), text valid UTF-8 (5.6, 8.1), a close payload of 0 or 2+ bytes carrying a
code allowed on the wire (5.5.1, 7.4) and nothing after the close (5.5.1). Each case's
docstring cites the section it holds the server to.

Test names carry their Autobahn section (test_s1_ ... test_s9_); tools/check.d/ws prints one
scorecard row per section. The cases run against /ws/ops, which is public and answers every data
message with one health snapshot: "accepted" is observable as exactly one reply, "ignored" as
the next frame being the pong to a later ping. A subset runs against every other /ws/ route (desk
/ws/notifications and /ws/sla, commerce /ws/dashboards/{id}, authenticated with
`Sec-WebSocket-Protocol: bearer, <token>`), since all share src/http/ws.c.

Knobs (tools/check ws sets them for the long form): TESSERA_WS_MAX_KB, the server's
--ws-max-message-kb and the largest message sent (default 4096); TESSERA_WS_MESSAGES, the
count of small messages and pings in section 9 (default 1000).
"""
import base64
import codecs
import hashlib
import json
import os
import socket
import threading
import time

import pytest

import rawhttp
from accounts import login, tenant, user
from conftest import Api, Server

MAX_KB = int(os.environ.get("TESSERA_WS_MAX_KB", "4096"))
LIMIT = MAX_KB * 1024
MESSAGES = int(os.environ.get("TESSERA_WS_MESSAGES", "1000"))
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
CLOSE_TCP_S = 2.0   # the server drops TCP this soon after the closing handshake


# ---------- frames ----------

def mask_bytes(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv=0, masked=True, form=None):
    """One client frame; form forces the length encoding (7, 16 or 64 bits)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if masked else 0
    form = form or (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        head = bytes([b0, m | n])
    elif form == 16:
        head = bytes([b0, m | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, m | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def close_frame(code=None, reason=b""):
    return frame(CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason)


def fragments(opcode, parts):
    """A message as len(parts) frames: opcode first, continuations after, FIN on the last."""
    out = b""
    for i, p in enumerate(parts):
        out += frame(opcode if i == 0 else CONT, p, fin=i == len(parts) - 1)
    return out


def wire_code_ok(code):
    """7.4.1/7.4.2 and the IANA registry: what an endpoint may put in a Close frame."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


# ---------- a raw client ----------

class Peer:
    """A WebSocket client over a raw socket that checks every server frame (see module doc)."""

    def __init__(self, port, path="/ws/ops", token=None, greet=None):
        self.path = path
        self.sock = rawhttp.connect(port, timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
                "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if token:
            head.append(f"Sec-WebSocket-Protocol: bearer, {token}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        status, headers, _, rest = rawhttp.read_response(self.sock)
        assert status == 101, (status, headers)
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == want                       # 4.2.2
        assert headers["upgrade"].lower() == "websocket"                     # 4.2.2
        assert "upgrade" in headers["connection"].lower()                    # 4.2.2
        assert "sec-websocket-extensions" not in headers   # none offered, none may be chosen
        if token:
            assert headers.get("sec-websocket-protocol") == "bearer"          # one we offered
        self.buf = bytearray(rest)
        self.msg = None          # (opcode, bytearray) of a fragmented server message
        self.closed = None       # the server's close code (1005 = empty) once it came
        self.pushes = path != "/ws/ops"   # routes that push on their own: skip data messages
        if greet is None:
            greet = path == "/ws/ops"
        if greet:
            self.reply()

    def send(self, data, chop=None, pause=0.0):
        """Writes data, in writes of chop bytes (TCP_NODELAY is on) if given."""
        if not chop:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chop):
            self.sock.sendall(data[i:i + chop])
            if pause:
                time.sleep(pause)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame from the server in time ({len(self.buf)} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError
            self.buf += chunk

    def _frame(self, deadline):
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        fin, rsv, op = b0 >> 7, (b0 >> 4) & 7, b0 & 15
        assert b1 & 0x80 == 0, "5.1: a server MUST NOT mask its frames"
        assert rsv == 0, "5.2: RSV1-3 MUST be 0 when no extension was negotiated"
        assert op in (CONT, TEXT, BINARY, CLOSE, PING, PONG), f"5.2: reserved opcode {op}"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, off = int.from_bytes(self.buf[2:4], "big"), 4
            assert n >= 126, "5.2: the minimal number of bytes MUST encode the length"
        elif n == 127:
            self._fill(10, deadline)
            n, off = int.from_bytes(self.buf[2:10], "big"), 10
            assert 65536 <= n < 1 << 63, "5.2: minimal length, most significant bit 0"
        self._fill(off + n, deadline)
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return fin, op, payload

    def event(self, timeout=5.0):
        """The next complete server message or control frame as (opcode, payload); None at EOF.
        The server's own keepalive pings are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fin, op, payload = self._frame(deadline)
            except EOFError:
                assert not self.buf, "the server closed TCP inside a frame"
                return None
            assert self.closed is None, "5.5.1: nothing may follow the server's Close"
            if op >= CLOSE:
                assert fin and len(payload) <= 125, "5.5: control frames are whole, <= 125 bytes"
            if op == CLOSE:
                assert len(payload) != 1, "5.5.1: a close body starts with a 2-byte code"
                self.closed = int.from_bytes(payload[:2], "big") if payload else 1005
                if payload:
                    assert wire_code_ok(self.closed), f"7.4: {self.closed} is not for the wire"
                    payload[2:].decode("utf-8")  # 5.5.1: the reason is UTF-8
                return op, payload
            if op == PING:
                continue
            if op == PONG:
                return op, payload
            if op in (TEXT, BINARY):
                assert self.msg is None, "5.4: a data message started inside a fragmented one"
                self.msg = (op, bytearray())
            else:
                assert self.msg is not None, "5.4: a continuation with nothing to continue"
            self.msg[1].extend(payload)
            if fin:
                mop, data = self.msg[0], bytes(self.msg[1])
                self.msg = None
                if mop == TEXT:
                    data.decode("utf-8")  # 5.6, 8.1: text messages are UTF-8
                return mop, data

    def reply(self, timeout=10.0):
        """The next event must be a data message; from /ws/ops, one health snapshot."""
        ev = self.event(timeout)
        assert ev is not None and ev[0] in (TEXT, BINARY), f"expected a reply, got {ev!r}"
        if self.path == "/ws/ops":
            assert ev[0] == TEXT and json.loads(ev[1])["type"] == "health"
        return ev[1]

    def _next_skipping_pushes(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            ev = self.event(max(0.01, deadline - time.monotonic()))
            if not (self.pushes and ev is not None and ev[0] in (TEXT, BINARY)):
                return ev

    def pong(self, payload, timeout=5.0):
        ev = self._next_skipping_pushes(timeout)
        assert ev == (PONG, payload), f"expected the pong {payload[:40]!r}, got {str(ev)[:200]}"

    def close_code(self, timeout=5.0):
        ev = self._next_skipping_pushes(timeout)
        assert ev is not None and ev[0] == CLOSE, f"expected a close, got {str(ev)[:200]}"
        return self.closed

    def eof(self, timeout=CLOSE_TCP_S):
        """True once the server has closed TCP within timeout (frames before it are an error
        after its close: event() asserts that)."""
        try:
            return self.event(timeout) is None
        except TimeoutError:
            return False

    def fails(self, code, timeout=5.0):
        """_Fail the WebSocket Connection_ (7.1.7): the server's next frame is a close with code;
        after our answering close it closes TCP (7.1.1)."""
        got = self.close_code(timeout)
        assert got == code, f"expected close {code}, got {got}"
        try:
            self.send(close_frame(1000 if code == 1005 else code))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert self.eof(), "the server kept TCP open after the closing handshake"

    def alive(self):
        """Still open and not failed: a ping with a fresh payload gets exactly its pong."""
        token = os.urandom(8)
        self.send(frame(PING, token))
        self.pong(token)

    def accepted(self, n=1):
        """The server took n data messages (one reply each on /ws/ops) and is still open."""
        if self.path == "/ws/ops":
            for _ in range(n):
                self.reply()
        self.alive()

    def bye(self):
        """A normal close: our 1000 is echoed and the server closes TCP (7.1.1, 5.5.1)."""
        self.send(close_frame(1000))
        assert self.close_code() == 1000
        assert self.eof()

    def shut(self):
        self.sock.close()


# ---------- servers ----------

@pytest.fixture(scope="module")
def srv():
    s = Server("--ws-max-message-kb", str(MAX_KB))
    yield s
    s.stop()


@pytest.fixture
def peer(srv):
    peers = []

    def make(path="/ws/ops", **kw):
        p = Peer(srv.port, path, **kw)
        peers.append(p)
        return p
    yield make
    for p in peers:
        p.shut()


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    """A second server with a tenant, a user and a dashboard, for the authenticated routes."""
    data = str(tmp_path_factory.mktemp("wsroutes"))
    tenant(data, "Acme", "acme.example")
    user(data, "acme.example", "admin@acme.example", "admin")
    s = Server(data=data)
    api = Api(s)
    token = login(api, "admin@acme.example")["access_token"]
    r = api.post("/api/v1/dashboards", headers={"Authorization": f"Bearer {token}"},
                 json={"name": "Live", "category": "operations", "widgets": []})
    assert r.status_code == 201, r.text
    dash = r.json()["data"]["dashboard_id"]
    yield {"server": s, "token": token, "paths": ["/ws/notifications", "/ws/sla",
                                                  f"/ws/dashboards/{dash}"]}
    api.close()
    s.stop()


# ======================================================================================
# 1 framing
# ======================================================================================

LENGTHS = [0, 1, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("n", LENGTHS)
def test_s1_payload_lengths(peer, opcode, n):
    """5.2: payload lengths 0-125 in 7 bits, 126-65535 as 126 + 16 bits, 65536+ as 127 + 64
    bits; a data frame of each length is one message (one reply) and the connection stays."""
    p = peer()
    p.send(frame(opcode, b"*" * n))
    p.accepted()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("n", [65535, 65536])
def test_s1_payload_chopped(peer, opcode, n):
    """5.2 and 5.4 ("intermediaries may coalesce or split"): a frame split into TCP writes of
    997 bytes is still one frame."""
    p = peer()
    p.send(frame(opcode, b"x" * n), chop=997)
    p.accepted()


def test_s1_messages_back_to_back(peer):
    """5.2: frames are delimited by their lengths alone: ten frames in one TCP write are ten
    messages, answered in order."""
    p = peer()
    p.send(b"".join(frame(TEXT if i % 2 else BINARY, b"m" * (i * 40)) for i in range(10)))
    p.accepted(10)


@pytest.mark.parametrize("n,form", [(125, 16), (65535, 64)], ids=["16bit-for-125", "64bit-for-65535"])
def test_s1_non_minimal_length(peer, n, form):
    """5.2: "the minimal number of bytes MUST be used to encode the length": a frame that does
    not is malformed, failed with 1002 (its payload is skipped, so our close is still read)."""
    p = peer()
    p.send(frame(TEXT, b"x" * n, form=form))
    p.fails(1002)


def test_s1_length_msb_set(peer):
    """5.2: "the most significant bit MUST be 0" in a 64-bit length: failed with 1002; the
    frame's end cannot be found, so TCP goes when the server's close grace runs out."""
    p = peer()
    p.send(bytes([0x81, 0xFF]) + (1 << 63 | 5).to_bytes(8, "big") + os.urandom(4) + b"abcde")
    assert p.close_code() == 1002
    p.send(close_frame(1002))
    assert p.eof(timeout=3)


def test_s1_unmasked_client_frame(peer):
    """5.1: "a server MUST close the connection upon receiving a frame that is not masked",
    with 1002 (7.4.1)."""
    p = peer()
    p.send(frame(TEXT, b"hello", masked=False))
    p.fails(1002)


# ======================================================================================
# 2 pings and pongs
# ======================================================================================

@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes([0, 255, 254, 253, 252, 251, 0, 255]),
                                     bytes(range(125))], ids=["empty", "text", "binary", "125"])
def test_s2_ping_answered_with_same_payload(peer, payload):
    """5.5.2/5.5.3: "upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
    response" with "identical Application data"."""
    p = peer()
    p.send(frame(PING, payload))
    p.pong(payload)
    p.bye()


def test_s2_ping_125_chopped(peer):
    """5.5.2: a 125-byte ping written one byte at a time is still one ping, answered."""
    p = peer()
    payload = os.urandom(125)
    p.send(frame(PING, payload), chop=1)
    p.pong(payload)


@pytest.mark.parametrize("form", [16, 64])
def test_s2_ping_over_125_fails(peer, form):
    """5.5: "All control frames MUST have a payload length of 125 bytes or less": a 126-byte
    ping is failed with 1002, not answered."""
    p = peer()
    p.send(frame(PING, b"p" * 126, form=form))
    p.fails(1002)


def test_s2_fragmented_ping_fails(peer):
    """5.5: "Control frames ... MUST NOT be fragmented": a ping without FIN is failed, 1002."""
    p = peer()
    p.send(frame(PING, b"frag", fin=False) + frame(CONT, b"ment"))
    p.fails(1002)


@pytest.mark.parametrize("payload", [b"", b"unsolicited"], ids=["empty", "payload"])
def test_s2_unsolicited_pong_ignored(peer, payload):
    """5.5.3: "A Pong frame MAY be sent unsolicited ... A response to an unsolicited Pong frame
    is not expected": the next frame is the pong to our later ping."""
    p = peer()
    p.send(frame(PONG, payload))
    p.alive()


def test_s2_pong_then_ping(peer):
    """5.5.3: an unsolicited pong followed by a ping: only the ping is answered."""
    p = peer()
    p.send(frame(PONG, b"unsolicited") + frame(PING, b"solicited"))
    p.pong(b"solicited")
    p.bye()


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
def test_s2_ten_pings(peer, chop):
    """5.5.3: pongs answer pings in order ("MAY elect to send a Pong frame for only the most
    recently processed Ping" - this server answers each; the last one MUST be answered)."""
    p = peer()
    pings = [f"ping {i}".encode() for i in range(10)]
    p.send(b"".join(frame(PING, x) for x in pings), chop=chop)
    got = []
    while not got or got[-1] != pings[-1]:
        ev = p.event()
        assert ev is not None and ev[0] == PONG
        got.append(ev[1])
    assert got == [x for x in pings if x in got]  # in order, nothing invented
    p.bye()


def test_s2_ping_mid_message(peer):
    """5.4/5.5: a ping between the fragments of a message is answered at once, before the
    message completes."""
    p = peer()
    p.send(frame(TEXT, b"part one ", fin=False) + frame(PING, b"between"))
    p.pong(b"between")
    p.send(frame(CONT, b"part two"))
    p.accepted()


# ======================================================================================
# 3 reserved bits
# ======================================================================================

@pytest.mark.parametrize("rsv", range(1, 8))
def test_s3_rsv_on_text(peer, rsv):
    """5.2: "If a nonzero value is received and none of the negotiated extensions defines the
    meaning of such a nonzero value, the receiving endpoint MUST _Fail the WebSocket
    Connection_" (1002, 7.4.1)."""
    p = peer()
    p.send(frame(TEXT, b"reserved", rsv=rsv))
    p.fails(1002)


@pytest.mark.parametrize("op,rsv,payload", [(BINARY, 5, b"\x00\xff"), (PING, 6, b"ping"),
                                            (PONG, 3, b"pong"), (CLOSE, 7, b"\x03\xe8")],
                         ids=["binary", "ping", "pong", "close"])
def test_s3_rsv_on_other_frames(peer, op, rsv, payload):
    """5.2: RSV bits on any frame type, control frames included, fail the connection (1002);
    a ping with RSV set is not answered."""
    p = peer()
    p.send(frame(op, payload, rsv=rsv))
    p.fails(1002)


def test_s3_rsv_after_valid_message(peer):
    """5.2: frames are processed in order: the valid message before the bad frame is answered,
    then the connection fails with 1002 and the ping after it is never answered."""
    p = peer()
    p.send(frame(TEXT, b"good") + frame(TEXT, b"bad", rsv=2) + frame(PING, b"never"))
    p.reply()
    p.fails(1002)


def test_s3_rsv_chopped(peer):
    """5.2: RSV1+2 on a text frame written byte by byte after a valid one."""
    p = peer()
    p.send(frame(TEXT, b"good") + frame(TEXT, b"bad", rsv=3), chop=1)
    p.reply()
    p.fails(1002)


def test_s3_rsv_on_continuation(peer):
    """5.2: RSV on a continuation frame of a fragmented message fails it (1002)."""
    p = peer()
    p.send(frame(TEXT, b"one", fin=False) + frame(CONT, b"two", rsv=1))
    p.fails(1002)


# ======================================================================================
# 4 opcodes
# ======================================================================================

@pytest.mark.parametrize("op", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("payload", [b"", b"reserved opcode"], ids=["empty", "payload"])
def test_s4_reserved_opcode(peer, op, payload):
    """5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket
    Connection_" - data opcodes 0x3-0x7 and control opcodes 0xB-0xF, 1002."""
    p = peer()
    p.send(frame(op, payload))
    p.fails(1002)


@pytest.mark.parametrize("op", [5, 13])
def test_s4_reserved_opcode_between_frames(peer, op):
    """5.2: a valid message, a reserved opcode, a ping: the message is answered, the
    connection fails with 1002, the ping gets no pong."""
    p = peer()
    p.send(frame(TEXT, b"before") + frame(op, b"x") + frame(PING, b"after"))
    p.reply()
    p.fails(1002)


def test_s4_reserved_opcode_mid_fragments(peer):
    """5.2/5.4: a reserved opcode between the fragments of a message fails the connection."""
    p = peer()
    p.send(frame(TEXT, b"one", fin=False) + frame(3, b"x") + frame(CONT, b"two"))
    p.fails(1002)


# ======================================================================================
# 5 fragmentation
# ======================================================================================

@pytest.mark.parametrize("op", [PING, PONG])
def test_s5_fragmented_control_fails(peer, op):
    """5.4/5.5: "Control frames themselves MUST NOT be fragmented" - ping or pong without
    FIN followed by a continuation: 1002."""
    p = peer()
    p.send(frame(op, b"fragment1", fin=False) + frame(CONT, b"fragment2"))
    p.fails(1002)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
def test_s5_two_fragments(peer, opcode, chop):
    """5.4: a message in two frames (FIN clear, then a FIN continuation) is one message."""
    p = peer()
    p.send(fragments(opcode, [b"fragment1", b"fragment2"]), chop=chop)
    p.accepted()


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
def test_s5_ping_between_fragments(peer, chop):
    """5.4: "Control frames MAY be injected in the middle of a fragmented message" and 5.5.3:
    the pong comes first, then the reply to the one message."""
    p = peer()
    p.send(frame(TEXT, b"fragment1", fin=False) + frame(PING, b"ping payload") +
           frame(CONT, b"fragment2"), chop=chop)
    p.pong(b"ping payload")
    p.reply()
    p.alive()


def test_s5_pong_between_fragments(peer):
    """5.4: an unsolicited pong between fragments is ignored and the message stays one."""
    p = peer()
    p.send(frame(BINARY, b"\x00" * 10, fin=False) + frame(PONG, b"x") + frame(CONT, b"\x01" * 10))
    p.accepted()


def test_s5_five_fragments_two_pings_paced(peer):
    """5.4: a message in five fragments with two pings between, sent with pauses: each pong
    arrives while the message is still open, then one reply."""
    p = peer()
    parts = [b"fragment%d" % i for i in range(5)]
    p.send(frame(TEXT, parts[0], fin=False))
    p.send(frame(CONT, parts[1], fin=False) + frame(PING, b"pongme 1!"))
    p.pong(b"pongme 1!")
    time.sleep(0.05)
    p.send(frame(CONT, parts[2], fin=False) + frame(PING, b"pongme 2!"))
    p.pong(b"pongme 2!")
    p.send(frame(CONT, parts[3], fin=False) + frame(CONT, parts[4]))
    p.accepted()


@pytest.mark.parametrize("n", [2, 10, 300])
def test_s5_many_fragments(peer, n):
    """5.4: "A fragmented message consists of a single frame with the FIN bit clear and an
    opcode other than 0, followed by zero or more frames with the FIN bit clear and the opcode
    set to 0, and terminated by a single frame with the FIN bit set and an opcode of 0"."""
    p = peer()
    p.send(fragments(TEXT, [b"f"] * n))
    p.accepted()


def test_s5_empty_fragments(peer):
    """5.4/5.6: zero-length fragments (first, middle, last) still make one message."""
    p = peer()
    p.send(fragments(TEXT, [b"", b"middle", b"", b""]))
    p.accepted()


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
def test_s5_continuation_without_start(peer, fin, chop):
    """5.4: a continuation frame with no message to continue is a protocol error (1002)."""
    p = peer()
    p.send(frame(CONT, b"non-continuation payload", fin=fin), chop=chop)
    p.fails(1002)


def test_s5_continuation_after_finished_message(peer):
    """5.4: text(FIN clear), continuation(FIN), continuation again: the first message is
    answered, the stray continuation fails the connection (1002)."""
    p = peer()
    p.send(frame(TEXT, b"one", fin=False) + frame(CONT, b"two") + frame(CONT, b"three", fin=False)
           + frame(TEXT, b"four"))
    p.reply()
    p.fails(1002)


@pytest.mark.parametrize("second", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_s5_new_message_mid_fragments(peer, second, fin):
    """5.4: "the fragments of one message MUST NOT be interleaved between the fragments of
    another message": a new data frame while a message is open fails it (1002)."""
    p = peer()
    p.send(frame(TEXT, b"fragment1", fin=False) + frame(second, b"fragment2", fin=fin))
    p.fails(1002)


def test_s5_two_messages_fragmented_back_to_back(peer):
    """5.4: after a fragmented message ends, a new one may start (twice, in one write)."""
    p = peer()
    p.send(fragments(TEXT, [b"a", b"b", b"c"]) + fragments(BINARY, [b"d", b"e"]))
    p.accepted(2)


# ======================================================================================
# 6 UTF-8
# ======================================================================================

VALID = [
    ("hello", "Hello-µ@ßöäüàá-UTF-8!!".encode()),
    ("kosme", "κόσμε".encode()),
    ("first-1", b"\x00"), ("first-2", b"\xc2\x80"), ("first-3", b"\xe0\xa0\x80"),
    ("first-4", b"\xf0\x90\x80\x80"),
    ("last-1", b"\x7f"), ("last-2", b"\xdf\xbf"), ("last-3", b"\xef\xbf\xbf"),
    ("last-4", b"\xf4\x8f\xbf\xbf"),
    ("U+D7FF", b"\xed\x9f\xbf"), ("U+E000", b"\xee\x80\x80"), ("U+FFFD", b"\xef\xbf\xbd"),
    ("U+FFFE", b"\xef\xbf\xbe"), ("U+FEFF", b"\xef\xbb\xbf"), ("U+FDD0", b"\xef\xb7\x90"),
    ("U+1FFFF", b"\xf0\x9f\xbf\xbf"), ("emoji", "😀 ok".encode()),
    ("scripts", "日本語 עברית العربية".encode()),
]
INVALID = [
    ("5-byte", b"\xf8\x88\x80\x80\x80"), ("6-byte", b"\xfc\x84\x80\x80\x80\x80"),
    ("U+110000", b"\xf4\x90\x80\x80"), ("U+1FFFFF", b"\xf7\xbf\xbf\xbf"),
    ("cont-80", b"\x80"), ("cont-bf", b"\xbf"), ("cont-80bf80", b"\x80\xbf\x80"),
    ("lonely-c0", b"\xc0 "), ("lonely-df", b"\xdf "), ("lonely-e0", b"\xe0 "),
    ("lonely-f0", b"\xf0 "), ("lonely-f8", b"\xf8 "),
    ("short-2", b"\xc2"), ("short-3", b"\xe0\xa0"), ("short-4", b"\xf0\x90\x80"),
    ("concat-short", b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80"),
    ("fe", b"\xfe"), ("ff", b"\xff"), ("fefeffff", b"\xfe\xfe\xff\xff"),
    ("overlong-2", b"\xc0\xaf"), ("overlong-3", b"\xe0\x80\xaf"), ("overlong-4", b"\xf0\x80\x80\xaf"),
    ("maxlong-2", b"\xc1\xbf"), ("maxlong-3", b"\xe0\x9f\xbf"), ("maxlong-4", b"\xf0\x8f\xbf\xbf"),
    ("nul-2", b"\xc0\x80"), ("nul-3", b"\xe0\x80\x80"),
    ("U+D800", b"\xed\xa0\x80"), ("U+DBFF", b"\xed\xaf\xbf"), ("U+DC00", b"\xed\xb0\x80"),
    ("U+DFFF", b"\xed\xbf\xbf"), ("pair", b"\xed\xa0\x80\xed\xb0\x80"), ("f5", b"\xf5\x80\x80\x80"),
    ("kosme-then-surrogate", "κόσμε".encode() + b"\xed\xa0\x80edited"),
]


def first_invalid(data):
    """Index of the byte at which a strict incremental UTF-8 decoder (Python's, an independent
    judge) rejects data; len(data) when only the end of the message shows it."""
    dec = codecs.getincrementaldecoder("utf-8")()
    for i in range(len(data)):
        try:
            dec.decode(data[i:i + 1])
        except UnicodeDecodeError:
            return i
    try:
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return len(data)
    raise AssertionError("valid UTF-8 in the invalid list")


def test_s6_lists_agree_with_python():
    """The case lists are judged by Python's strict UTF-8 codec, not by hand."""
    for _, data in VALID:
        data.decode("utf-8")
    for _, data in INVALID:
        first_invalid(data)


@pytest.mark.parametrize("mode", ["frame", "fragments", "chopped"])
@pytest.mark.parametrize("data", [d for _, d in VALID], ids=[n for n, _ in VALID])
def test_s6_valid_utf8_accepted(peer, data, mode):
    """5.6/8.1: valid UTF-8 text (noncharacters included) is accepted whole, split into
    one-byte fragments (multi-byte sequences across frames) or written byte by byte."""
    p = peer()
    if mode == "fragments":
        p.send(fragments(TEXT, [data[i:i + 1] for i in range(len(data))]))
    else:
        p.send(frame(TEXT, data), chop=1 if mode == "chopped" else None)
    p.accepted()


@pytest.mark.parametrize("data", [d for _, d in INVALID], ids=[n for n, _ in INVALID])
def test_s6_invalid_utf8_whole(peer, data):
    """8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte
    stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
    Connection_" - 1007 (7.4.1), no reply."""
    p = peer()
    p.send(frame(TEXT, data))
    p.fails(1007)


@pytest.mark.parametrize("data", [d for _, d in INVALID], ids=[n for n, _ in INVALID])
def test_s6_invalid_utf8_fragments_fail_fast(peer, data):
    """8.1/5.6 (and the Autobahn fail-fast cases 6.4): the message in one-byte fragments; only
    the fragments up to the first invalid byte are sent, and the close 1007 must come without
    the rest (a sequence cut short by the message end fails at the final fragment)."""
    p = peer()
    k = first_invalid(data)
    parts = [data[i:i + 1] for i in range(len(data))]
    if k == len(data):
        p.send(fragments(TEXT, parts))
    else:
        p.send(b"".join(frame(TEXT if i == 0 else CONT, parts[i], fin=False) for i in range(k + 1)))
    p.fails(1007)


KOSME = "κόσμε".encode()


@pytest.mark.parametrize("case", ["fragment-2", "fragment-boundary"])
def test_s6_fail_fast_fragmented(peer, case):
    """8.1, Autobahn 6.4.1/6.4.2: fragment 1 valid, fragment 2 invalid (U+110000; in the second
    case its first byte ends fragment 1); the server fails 1007 before fragment 3 is sent."""
    p = peer()
    a, b = (KOSME, b"\xf4\x90\x80\x80") if case == "fragment-2" else (KOSME + b"\xf4", b"\x90\x80\x80")
    p.send(frame(TEXT, a, fin=False))
    time.sleep(0.1)
    p.send(frame(CONT, b, fin=False))
    assert p.close_code(timeout=3) == 1007
    p.send(frame(CONT, b"edited"))  # fragment 3, after the close: ignored
    p.send(close_frame(1007))
    assert p.eof()


@pytest.mark.parametrize("cut", [4, 2], ids=["whole-sequence", "two-bytes"])
def test_s6_fail_fast_in_one_frame(peer, cut):
    """8.1, Autobahn 6.4.3/6.4.4: one text frame written in three parts; the second part holds
    the invalid sequence (or only its first two bytes, already invalid); the server fails with
    1007 before the third part is written, not at the frame's end."""
    data = KOSME + b"\xf4\x90\x80\x80" + b"edited"
    raw = frame(TEXT, data)
    head = len(raw) - len(data)
    a, b = head + len(KOSME), head + len(KOSME) + cut
    p = peer()
    p.send(raw[:a])
    time.sleep(0.1)
    p.send(raw[a:b])
    assert p.close_code(timeout=3) == 1007
    p.send(raw[b:])
    p.send(close_frame(1007))
    assert p.eof()


def test_s6_binary_is_not_utf8_checked(peer):
    """5.6: binary data is "arbitrary": invalid UTF-8 in a binary message is accepted."""
    p = peer()
    p.send(frame(BINARY, b"\xff\xfe\xed\xa0\x80\xc0"))
    p.accepted()


def test_s6_invalid_after_valid_messages(peer):
    """8.1: valid messages before the invalid one are answered; the invalid one fails (1007)."""
    p = peer()
    p.send(frame(TEXT, KOSME) + fragments(TEXT, [b"\xce", b"\xba"]) + frame(TEXT, b"\xce\xba\xff"))
    p.reply()
    p.reply()
    p.fails(1007)


# ======================================================================================
# 7 the closing handshake
# ======================================================================================

def test_s7_message_then_close(peer):
    """5.5.1/7.1.1: a message, then our close 1000: the reply, the echoed close, then the
    server closes TCP ("the server SHOULD close the underlying TCP connection first")."""
    p = peer()
    p.send(frame(TEXT, b"Hello World!"))
    p.reply()
    p.bye()


@pytest.mark.parametrize("after", ["close", "ping", "text", "fragment"])
def test_s7_frames_after_close_ignored(peer, after):
    """5.5.1: after a Close the endpoint "MUST NOT send any more data frames" and the server
    discards what follows: a second close, a ping (no pong), a text (no reply)."""
    p = peer()
    extra = {"close": close_frame(1000), "ping": frame(PING, b"late"), "text": frame(TEXT, b"late"),
             "fragment": frame(TEXT, b"late", fin=False)}[after]
    p.send(close_frame(1000) + extra)
    assert p.close_code() == 1000
    assert p.eof()


def test_s7_close_mid_fragments(peer):
    """5.4/5.5.1: a close between the fragments of a message: the close is echoed, the message
    never completes, the last fragment is ignored."""
    p = peer()
    p.send(frame(TEXT, b"fragment1", fin=False) + close_frame(1000) + frame(CONT, b"fragment2"))
    assert p.close_code() == 1000
    assert p.eof()


def test_s7_large_message_ping_close(peer):
    """5.4/5.5/5.5.1: a 256 KiB message, a ping, a close, in one write: the reply and the pong
    (a control frame may go between messages, so in either order), then the echoed close - the
    reply owed before the close is not dropped."""
    p = peer()
    p.send(frame(TEXT, b"*" * 262144) + frame(PING, b"ping") + close_frame(1000))
    got = sorted([p.event(), p.event()], key=lambda ev: ev[0])
    assert got[0][0] == TEXT and json.loads(got[0][1])["type"] == "health"
    assert got[1] == (PONG, b"ping")
    assert p.close_code() == 1000
    assert p.eof()


def test_s7_close_empty(peer):
    """5.5.1: a Close with no body is answered by a Close; with nothing to echo the server
    sends no code (1005 is never on the wire, 7.4.1)."""
    p = peer()
    p.send(close_frame())
    assert p.close_code() in (1005, 1000)
    assert p.eof()


def test_s7_close_one_byte(peer):
    """5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte unsigned
    integer" - a 1-byte body is a protocol error (1002)."""
    p = peer()
    p.send(frame(CLOSE, b"\x03"))
    p.fails(1002)


@pytest.mark.parametrize("reason", [b"", b"Hello World!", b"*" * 123, "κόσμε".encode()],
                         ids=["none", "short", "123", "kosme"])
def test_s7_close_1000_with_reason(peer, reason):
    """5.5/5.5.1: a close 1000 with a reason of up to 123 bytes (125 with the code) is echoed
    with 1000."""
    p = peer()
    p.send(close_frame(1000, reason))
    assert p.close_code() == 1000
    assert p.eof()


def test_s7_close_reason_too_long(peer):
    """5.5: a close of 126 bytes (code + 124-byte reason) breaks the 125-byte control frame
    limit: 1002."""
    p = peer()
    p.send(frame(CLOSE, b"\x03\xe8" + b"*" * 124, form=16))
    p.fails(1002)


@pytest.mark.parametrize("reason", [b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
                                    b"\xff", b"ok\xc0\xaf"], ids=["surrogate", "ff", "overlong"])
def test_s7_close_reason_invalid_utf8(peer, reason):
    """5.5.1/8.1: the close reason is UTF-8 text; invalid UTF-8 there fails the connection with
    1007."""
    p = peer()
    p.send(close_frame(1000, reason))
    p.fails(1007)


@pytest.mark.parametrize("split", [1, 2, 3, 4])
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
def test_s7_close_reason_split_across_writes(peer, split, valid):
    """5.5.1/8.1: a close frame written in two parts (after `split` payload bytes) is judged as
    a whole: a valid multi-byte reason is echoed 1000, an invalid one gets 1007 (wherever the
    TCP segments fall)."""
    reason = "é!κ".encode() if valid else b"\xc3\x28!!"
    raw = close_frame(1000, reason)
    cut = 6 + split  # 2 header bytes, 4 mask bytes
    p = peer()
    p.send(raw[:cut])
    time.sleep(0.05)
    p.send(raw[cut:])
    if valid:
        assert p.close_code() == 1000
        assert p.eof()
    else:
        p.fails(1007)


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
               3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_s7_valid_close_code_echoed(peer, code):
    """7.4.1/7.4.2 and 5.5.1 ("typically echos the status code it received"): every code that
    may be sent is accepted and echoed."""
    p = peer()
    p.send(close_frame(code, b"reason"))
    assert p.close_code() == code
    assert p.eof()


@pytest.mark.parametrize("code", INVALID_CODES)
def test_s7_invalid_close_code_fails(peer, code):
    """7.4.1/7.4.2: 0-999 are not used, 1004-1006 and 1015 MUST NOT be set in a Close frame,
    1016-2999 are unassigned, 5000+ is out of range: a protocol error, 1002."""
    p = peer()
    p.send(close_frame(code))
    p.fails(1002)


def test_s7_fragmented_close_fails(peer):
    """5.5: a close without FIN (a fragmented control frame) fails with 1002."""
    p = peer()
    p.send(frame(CLOSE, b"\x03\xe8", fin=False) + frame(CONT, b"ok"))
    p.fails(1002)


@pytest.mark.parametrize("opener", ["client", "server"])
def test_s7_tcp_closed_promptly(peer, opener):
    """7.1.1: "the server SHOULD close the underlying TCP connection" once the handshake is
    done - right away, not when its 1 s wait for a missing close runs out: the median of five
    handshakes (opened by us, or by the server failing the connection) is under 0.3 s."""
    waits = []
    for _ in range(5):
        p = peer()
        p.send(close_frame(1000) if opener == "client" else frame(TEXT, b"\xff"))
        code = p.close_code()
        t0 = time.monotonic()
        if opener == "server":
            p.send(close_frame(code))
        assert p.eof()
        waits.append(time.monotonic() - t0)
    waits.sort()
    assert waits[2] < 0.3, waits


def test_s7_tcp_closed_after_fail_without_answer(peer):
    """7.1.1/7.1.7: after failing the connection the server closes TCP even when the peer never
    answers its close (a bounded wait, not forever)."""
    p = peer()
    p.send(frame(TEXT, b"\xff"))
    assert p.close_code() == 1007
    t0 = time.monotonic()
    assert p.eof(timeout=5)
    assert time.monotonic() - t0 < 3


# ======================================================================================
# 9 limits and performance
# ======================================================================================

SIZES = sorted({min(s, LIMIT) for s in (65536, 262144, 1 << 20, LIMIT)})


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("n", SIZES)
def test_s9_large_message(peer, opcode, n):
    """10.4 (implementations SHOULD limit frame and message size) against 5.2: messages up to
    --ws-max-message-kb are accepted whole."""
    p = peer()
    p.send(frame(opcode, b"a" * n))
    p.accepted()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_s9_one_over_limit(peer, opcode):
    """10.4/7.4.1: a message of --ws-max-message-kb + 1 byte is refused with 1009 ("a message
    that is too big for it to process")."""
    p = peer()
    p.send(frame(opcode, b"a" * (LIMIT + 1)))
    p.fails(1009)


def test_s9_fragments_over_limit(peer):
    """10.4: fragments that together pass the limit get 1009 as soon as a frame header pushes
    the message over, before its payload is sent."""
    p = peer()
    half = LIMIT // 2
    p.send(frame(TEXT, b"a" * half, fin=False) + frame(CONT, b"a" * half, fin=False))
    last = frame(CONT, b"a")
    p.send(last[:2 + 4])  # header and mask only: one byte over
    assert p.close_code() == 1009
    p.send(last[6:] + close_frame(1009))
    assert p.eof()


def test_s9_limit_in_fragments(peer):
    """5.4/10.4: a message of exactly the limit in 64 KiB fragments is accepted."""
    p = peer()
    chunk = 65536
    parts = [b"b" * chunk] * (LIMIT // chunk) + ([b"b" * (LIMIT % chunk)] if LIMIT % chunk else [])
    p.send(fragments(BINARY, parts))
    p.accepted()


@pytest.mark.parametrize("chop", [64, 4096])
def test_s9_large_message_chopped(peer, chop):
    """5.2: a 1 MiB (or limit) text message written in small TCP writes is one message."""
    p = peer()
    p.send(frame(TEXT, b"c" * min(LIMIT, 1 << 20)), chop=chop)
    p.accepted()


def test_s9_many_small_messages(peer):
    """5.2/5.4: MESSAGES small text messages pipelined in one write: each answered, in order."""
    p = peer()
    t0 = time.monotonic()
    p.send(b"".join(frame(TEXT, b"%08d" % i) for i in range(MESSAGES)))
    for _ in range(MESSAGES):
        p.reply()
    p.alive()
    print(f"{MESSAGES} messages answered in {time.monotonic() - t0:.2f} s")


def test_s9_many_small_frames(peer):
    """5.4: one message in MESSAGES fragments of 10 bytes is one message."""
    p = peer()
    p.send(fragments(TEXT, [b"0123456789"] * MESSAGES))
    p.accepted()


def test_s9_many_pings(peer):
    """5.5.2: MESSAGES pings one after another, each answered before the next is sent; the
    slowest round trip stays under a second."""
    p = peer()
    worst = 0.0
    for i in range(MESSAGES):
        t0 = time.monotonic()
        payload = b"%d" % i
        p.send(frame(PING, payload))
        p.pong(payload)
        worst = max(worst, time.monotonic() - t0)
    print(f"{MESSAGES} pings, slowest round trip {worst * 1000:.1f} ms")
    assert worst < 1.0
    p.bye()


def test_s9_responsive_during_large_upload(peer):
    """The loop is not held by one big message: while one client is half-way through a message
    at the limit, another client's ping is answered; then the first message completes."""
    a, b = peer(), peer()
    raw = frame(BINARY, b"z" * LIMIT)
    half = len(raw) // 2
    a.send(raw[:half])
    t0 = time.monotonic()
    b.alive()
    assert time.monotonic() - t0 < 1.0
    a.send(raw[half:])
    a.accepted()


def test_s9_responsive_while_peer_sends_slowly(peer):
    """A client trickling a frame (one byte every 20 ms) does not stall others."""
    a, b = peer(), peer()
    raw = frame(TEXT, b"slow")
    stop = threading.Event()

    def trickle():
        for i in range(len(raw)):
            if stop.is_set():
                return
            a.sock.sendall(raw[i:i + 1])
            time.sleep(0.02)
    t = threading.Thread(target=trickle)
    t.start()
    try:
        for _ in range(5):
            b.alive()
    finally:
        t.join()
    a.accepted()


# ======================================================================================
# the same framing layer behind every /ws/ route
# ======================================================================================

ROUTE_IDS = ["notifications", "sla", "dashboards"]


@pytest.fixture(params=range(3), ids=ROUTE_IDS)
def route_peer(request, routes):
    p = Peer(routes["server"].port, routes["paths"][request.param], token=routes["token"])
    yield p
    p.shut()


def test_s1_routes_take_messages(route_peer):
    """5.2: on every route a text and a binary message are taken without failing the
    connection (routes that do not read messages ignore them)."""
    route_peer.send(frame(TEXT, b'{"type":"refresh"}') + frame(BINARY, b"\x00\x01"))
    route_peer.alive()
    route_peer.bye()


def test_s2_routes_ping(route_peer):
    """5.5.2/5.5.3: every route answers a ping with the same payload."""
    route_peer.send(frame(PING, b"route ping"))
    route_peer.pong(b"route ping")


def test_s4_routes_reserved_opcode(route_peer):
    """5.2: every route fails an unknown opcode with 1002."""
    route_peer.send(frame(6, b"x"))
    route_peer.fails(1002)


def test_s6_routes_invalid_utf8(route_peer):
    """8.1: every route fails invalid UTF-8 text with 1007."""
    route_peer.send(frame(TEXT, b"\xed\xa0\x80"))
    route_peer.fails(1007)


def test_s7_routes_close(route_peer):
    """5.5.1/7.1.1: every route echoes a close and then closes TCP."""
    route_peer.send(close_frame(4000, b"bye"))
    assert route_peer.close_code() == 4000
    assert route_peer.eof()
