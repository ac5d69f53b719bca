"""A raw-socket HTTP/1.1 client for tests that need malformed or pipelined bytes on the wire."""
import json
import socket
import time


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock, buf=b""):
    """Reads one response; returns (status, headers dict lowercased, body bytes, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed before a full response head: %r" % buf[:200])
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:n], rest[n:]


def exchange(port, raw, timeout=5):
    """Sends raw bytes and reads one response."""
    s = connect(port, timeout)
    try:
        s.sendall(raw)
        status, headers, body, _ = read_response(s)
        return status, headers, body
    finally:
        s.close()


def closed_by_peer(sock, wait=2.0):
    """True once the server has closed the connection (EOF) within `wait` seconds."""
    sock.settimeout(wait)
    end = time.time() + wait
    try:
        while time.time() < end:
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def body_json(body):
    return json.loads(body.decode("utf-8"))
