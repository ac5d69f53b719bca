"""WebSocket on the same port (RFC 6455): /ws/ops with real clients, frames, limits, shutdown."""
import asyncio
import json
import signal
import socket
import time

import pytest
import websockets

import rawhttp
from conftest import Server


def ws_url(server):
    return f"ws://127.0.0.1:{server.port}/ws/ops"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_snapshot_on_connect_and_on_message(server):
    async def go():
        async with websockets.connect(ws_url(server)) as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "health" and first["ready"] is True
            assert first["checks"]["database"] == "healthy"
            await ws.send("again")
            second = json.loads(await ws.recv())
            assert second["type"] == "health"
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
    run(go())


def test_fragmented_message_is_reassembled(server):
    async def go():
        async with websockets.connect(ws_url(server)) as ws:
            await ws.recv()
            await ws.send(iter(["frag", "mented ", "é"]))  # three frames, one message
            assert json.loads(await ws.recv())["type"] == "health"
    run(go())


def test_oversize_message_closes_1009(tmp_path):
    s = Server("--ws-max-message-kb", "1", data=str(tmp_path))
    try:
        async def go():
            async with websockets.connect(ws_url(s), max_size=None) as ws:
                await ws.recv()
                await ws.send("a" * 1024)  # at the limit: answered
                assert json.loads(await ws.recv())["type"] == "health"
                await ws.send("a" * 1025)  # limit + 1
                with pytest.raises(websockets.ConnectionClosed) as e:
                    await ws.recv()
                assert e.value.code == 1009
        run(go())
    finally:
        s.stop()


def masked_frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_upgrade(server):
    sock = rawhttp.connect(server.port)
    sock.sendall(b"GET /ws/ops HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, headers, _, rest = rawhttp.read_response(sock)
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3
    return sock, rest


def read_close_code(sock, rest):
    buf = rest
    sock.settimeout(5)
    while True:
        # skip whole frames until a close (opcode 8) arrives
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                n = int.from_bytes(buf[2:4], "big")
                off = 4
            if len(buf) < off + n:
                break
            opcode, payload, buf = buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
            if opcode == 8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk


def test_invalid_utf8_closes_1007(server):
    sock, rest = raw_upgrade(server)
    sock.sendall(masked_frame(1, b"\xff\xfe bad"))
    assert read_close_code(sock, rest) == 1007
    sock.close()


def test_unmasked_frame_closes_1002(server):
    sock, rest = raw_upgrade(server)
    sock.sendall(b"\x81\x02hi")  # clients must mask
    assert read_close_code(sock, rest) == 1002
    sock.close()


def test_bad_handshake_is_400_in_surface_format(server):
    status, headers, body = rawhttp.exchange(
        server.port, b"GET /ws/ops HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert status == 400
    assert json.loads(body)["error"]["code"] == "BAD_REQUEST"
    status, headers, body = rawhttp.exchange(
        server.port, b"GET /ws/ops HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert status == 400 and headers["sec-websocket-version"] == "13"


def test_shutdown_closes_with_1001(tmp_path):
    s = Server(data=str(tmp_path))
    async def go():
        async with websockets.connect(ws_url(s)) as ws:
            await ws.recv()
            s.signal()
            with pytest.raises(websockets.ConnectionClosed) as e:
                while True:
                    await ws.recv()
            assert e.value.code == 1001
    run(go())
    s.stop()


def test_http_still_served_alongside_websockets(server):
    import httpx
    async def go():
        async with websockets.connect(ws_url(server)) as ws:
            await ws.recv()
            assert httpx.get(server.url + "/health").status_code == 200
            metrics = httpx.get(server.url + "/metrics").text
            assert 'ws_connections_active{service="tessera"} 1' in metrics
    run(go())
