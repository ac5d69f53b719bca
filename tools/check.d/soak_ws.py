#!/usr/bin/python3
"""WebSocket clients for tools/check soak and tests/api/test_overload.py.

    soak_ws.py hold URL TOKEN N    opens N idle /ws/notifications sessions (pongs answered by
                                   the library), prints "READY <open> <failed>", holds them
                                   until stdin closes, then prints "END <still open> <closed>"

stalled(): a raw-socket subscriber with a tiny receive buffer that never reads: what a
client that stopped reading looks like to the server (its send queue fills).
"""
import asyncio
import base64
import os
import socket
import sys


def stalled(port, path, token, rcvbuf=4096):
    """Opens a WebSocket on a socket that then never reads; returns the socket."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise EOFError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("handshake refused: %r" % head[:200])
    return s


def close_code(sock, timeout=10):
    """Reads what the server sent until EOF; the close code of its close frame, or None."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    i = 0
    code = None
    while i + 2 <= len(data):  # server frames are unmasked
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n, j = int.from_bytes(data[j:j + 2], "big"), j + 2
        elif n == 127:
            n, j = int.from_bytes(data[j:j + 8], "big"), j + 8
        if op == 0x8 and n >= 2 and j + 2 <= len(data):
            code = int.from_bytes(data[j:j + 2], "big")
        i = j + n
    return code


async def hold(url, token, n):
    import websockets
    conns, failed = [], 0
    hdr = {"Authorization": f"Bearer {token}"}

    async def one():
        nonlocal failed
        try:
            ws = await websockets.connect(url, extra_headers=hdr, ping_interval=None,
                                          open_timeout=60, close_timeout=5, max_queue=None)
            conns.append(ws)
        except Exception:  # noqa: BLE001 - any failure to open counts
            failed += 1

    for i in range(0, n, 100):  # in waves: the accept backlog is 1024
        await asyncio.gather(*(one() for _ in range(min(100, n - i))))
    print(f"READY {len(conns)} {failed}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    alive = sum(1 for ws in conns if ws.open)
    print(f"END {alive} {len(conns) - alive}", flush=True)
    await asyncio.gather(*(ws.close() for ws in conns if ws.open), return_exceptions=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "hold":
        asyncio.run(hold(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        sys.exit(__doc__)
