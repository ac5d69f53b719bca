"""Fixtures for API tests: start the real tessera binary on a free port with a temp data dir.

Every response a test receives through `Api` is checked against the route's OpenAPI schema
(tests/api/contract.py), so a field that drifts from the contract fails the test.
"""
import os
import signal as signals
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

import contract

BIN = os.environ.get("TESSERA_BIN", os.path.join(os.path.dirname(__file__), "../../build/tessera"))
SRC = os.environ.get("TESSERA_SRC", os.path.join(os.path.dirname(__file__), "../.."))


SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running tessera process. stop() checks a clean exit: code 0, no sanitizer report."""

    def __init__(self, *extra, data=None, env=None, scheme="http", bin=None):
        self.port = free_port()
        self.tmp = None
        if data is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="tessera-api-")
            data = self.tmp.name
        self.data = data
        self.scheme = scheme
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = os.path.join(data, "server.log") if self.tmp else tempfile.mktemp()
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.update(env or {})
        self.args = [bin or BIN, "serve", "--data", data, "--listen", f"127.0.0.1:{self.port}", *extra]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log, env=e)
        try:
            self.wait_ready()
        except BaseException:
            self.proc.kill()  # a server that never became ready must not outlive the test
            self.proc.wait()
            raise

    def wait_ready(self, timeout=None):
        # TESSERA_TEST_READY_TIMEOUT: at least this long, for slower builds (ThreadSanitizer
        # loads --demo in minutes)
        timeout = max(timeout or 20, float(os.environ.get("TESSERA_TEST_READY_TIMEOUT", "0")))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tessera exited {self.proc.returncode}: {self.stderr()}")
            try:
                r = httpx.get(self.url + "/ready", timeout=1, verify=False)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("tessera did not become ready: " + self.stderr())

    def stderr(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        import json
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def signal(self, sig=signals.SIGTERM):
        self.signalled = True
        self.proc.send_signal(sig)

    def finish(self, sig=signals.SIGTERM, timeout=30):
        """Signals the process (unless signal() did) and waits: (exit code, None or the log from
        the first sanitizer report on). A process still running after timeout is killed: code
        None."""
        if self.proc.poll() is None and not getattr(self, "signalled", False):
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        err = self.stderr()
        at = min((err.index(m) for m in SANITIZER_MARKS if m in err), default=None)
        return code, (None if at is None else err[max(0, at - 200):][:4000])

    def stop(self, sig=signals.SIGTERM, timeout=30):
        code, report = self.finish(sig, timeout)
        assert code is not None, "tessera did not exit after SIGTERM"
        assert report is None, report
        err = self.stderr()
        assert code == 0, f"exit code {code}: {err[-2000:]}"
        return err


class Api:
    """httpx client whose every response is validated against the OpenAPI documents."""

    def __init__(self, server):
        self.server = server
        self.client = httpx.Client(base_url=server.url, timeout=10, verify=False)

    def request(self, method, path, validate=True, **kw):
        r = self.client.request(method, path, **kw)
        if validate:
            contract.check(method, path, r)
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def close(self):
        self.client.close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def api(server):
    a = Api(server)
    yield a
    a.close()


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) collecting what tessera sends: start the server with
    Server("--smtp-url", smtp.url, ...); then smtp.wait_for(pred) / smtp.messages."""
    from smtp_sink import SmtpSink
    s = SmtpSink().start()
    yield s
    s.stop()
