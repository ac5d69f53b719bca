#!/usr/bin/python3
"""Open N idle HTTP/1.1 keep-alive connections and hold them.

usage: idle_conns.py HOST PORT N PATH

Each connection sends one full GET request, reads the whole response
(headers plus Content-Length body) and then sits idle.  When all N are
established the script prints "READY <n-ok> <n-failed>" on stdout, then
waits until it gets SIGTERM/SIGINT and closes everything.  Used by tools/bench/http to measure the server's RSS cost of
idle keep-alive connections.
"""
import asyncio
import resource
import signal
import sys


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        print(f"idle_conns: RLIMIT_NOFILE {soft} < {need} needed", file=sys.stderr)


async def one(host, port, path, sem, conns):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
            w.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Connection: keep-alive\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
            clen = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    clen = int(v.strip())
            if clen:
                await asyncio.wait_for(r.readexactly(clen), 20)
            if not head.startswith(b"HTTP/1.1 200"):
                w.close()
                return False
            conns.append(w)
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError):
            return False


async def main():
    host, port, n, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    raise_nofile(n + 64)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    sem = asyncio.Semaphore(200)  # stay under the servers' listen backlogs
    conns = []
    results = await asyncio.gather(*(one(host, port, path, sem, conns) for _ in range(n)))
    ok = sum(1 for x in results if x)
    print(f"READY {ok} {n - ok}", flush=True)
    await stop.wait()
    for w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
