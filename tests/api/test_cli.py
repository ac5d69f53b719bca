"""The tessera command line: admin, backup, version, flags/env/INI, errors, shutdown."""
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import httpx
import pytest

import rawhttp
from conftest import BIN, Server


def run(*args, input=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([BIN, *args], input=input, capture_output=True, env=e, timeout=60)


def test_version_lists_libraries():
    p = run("version")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert out.startswith("tessera 0.1.0")
    for lib in ("libuv", "llhttp", "sqlite", "libsodium", "mbed TLS", "jansson"):
        assert lib in out


@pytest.mark.parametrize("cmd", [["serve"], ["admin", "create-tenant"], ["admin", "create-user"], ["backup"]])
def test_help_on_every_command(cmd):
    p = run(*cmd, "--help")
    assert p.returncode == 0
    assert "usage:" in p.stdout.decode()
    assert "--data" in p.stdout.decode()


def test_wrong_flag_is_one_line_exit_2():
    p = run("serve", "--no-such-flag")
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "--no-such-flag" in err


def test_unusable_data_dir_exit_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a dir")
    p = run("serve", "--data", str(f))
    assert p.returncode == 2
    assert "not a directory" in p.stderr.decode()
    assert p.stderr.decode().count("\n") == 1


def test_bad_value_from_env_exit_2(tmp_path):
    p = run("serve", "--data", str(tmp_path), env={"TESSERA_DURABILITY": "sometimes"})
    assert p.returncode == 2
    assert "normal|full" in p.stderr.decode()


def test_config_file_env_and_flags_layer(tmp_path):
    ini = tmp_path / "t.ini"
    ini.write_text("[serve]\nlog_format = text\nlisten = 127.0.0.1:1\n")
    s = Server("--config", str(ini), data=str(tmp_path / "d"))  # --listen flag beats the INI
    try:
        assert httpx.get(s.url + "/health").status_code == 200
        time.sleep(0.1)
        assert "GET /health 200" in s.stderr()  # text log format came from the INI file
    finally:
        s.stop()


def test_admin_create_tenant_and_user(tmp_path):
    d = str(tmp_path)
    p = run("admin", "create-tenant", "--data", d, "--name", "Acme", "--domain", "acme.example", "--plan", "pro")
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)
    assert t["domain"] == "acme.example" and len(t["id"]) == 36
    p = run("admin", "create-user", "--data", d, "--tenant", "acme.example", "--email", "Ann@Acme.example",
            "--name", "Ann", "--role", "admin,manager", "--password-stdin", input=b"correct horse battery\n")
    assert p.returncode == 0, p.stderr
    u = json.loads(p.stdout)
    assert u["tenant_id"] == t["id"]
    db = sqlite3.connect(os.path.join(d, "tessera.db"))
    row = db.execute("SELECT email, roles, password_hash FROM users WHERE id = ?", (u["id"],)).fetchone()
    assert row[0] == "Ann@Acme.example"
    assert json.loads(row[1]) == ["admin", "manager"]
    assert row[2].startswith("$argon2id$")
    # duplicate email (case-insensitive) and unknown role are clear errors, exit 2
    p = run("admin", "create-user", "--data", d, "--tenant", "acme.example", "--email", "ann@acme.example",
            "--name", "Ann2", "--role", "admin", "--password-stdin", input=b"another password\n")
    assert p.returncode == 2 and "already exists" in p.stderr.decode()
    p = run("admin", "create-user", "--data", d, "--tenant", "acme.example", "--email", "b@acme.example",
            "--name", "B", "--role", "wizard", "--password-stdin", input=b"another password\n")
    assert p.returncode == 2 and "unknown role 'wizard'" in p.stderr.decode()
    p = run("admin", "create-tenant", "--data", d, "--name", "Acme", "--domain", "acme.example")
    assert p.returncode == 2 and "already exists" in p.stderr.decode()


def test_admin_works_while_server_runs(server):
    p = run("admin", "create-tenant", "--data", server.data, "--name", "Live", "--domain", "live.example")
    assert p.returncode == 0, p.stderr
    assert httpx.get(server.url + "/ready").status_code == 200


def test_online_backup(server, tmp_path):
    run("admin", "create-tenant", "--data", server.data, "--name", "B", "--domain", "b.example")
    out = tmp_path / "copy.db"
    p = run("backup", "--data", server.data, str(out))
    assert p.returncode == 0, p.stderr
    db = sqlite3.connect(str(out))
    assert db.execute("SELECT name FROM tenants WHERE domain = 'b.example'").fetchone() == ("B",)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_demo_loads_once_and_prints_accounts(tmp_path):
    s = Server("--demo", "--demo-scale", "0.02", data=str(tmp_path))
    out = s.proc.stdout.read1(65536).decode() if hasattr(s.proc.stdout, "read1") else ""
    s.stop()
    assert "demo.tessera.local" in out and "tessera-demo" in out
    db = sqlite3.connect(str(tmp_path / "tessera.db"))
    roles = [json.loads(r[0])[0] for r in db.execute("SELECT roles FROM users")]
    assert sorted(roles) == sorted(["admin", "org_admin", "manager", "viewer", "learner", "trainer",
                                    "approver", "agent", "developer", "master_admin"])
    db.close()
    s = Server("--demo", "--demo-scale", "0.02", data=str(tmp_path))  # second start: nothing loaded twice
    s.stop()
    db = sqlite3.connect(str(tmp_path / "tessera.db"))
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (1,)


def test_sigterm_drains_in_flight_and_checkpoints(tmp_path):
    s = Server(data=str(tmp_path))
    sock = rawhttp.connect(s.port)
    sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n")  # a request in flight, head unfinished
    time.sleep(0.2)
    s.signal()
    time.sleep(0.3)
    # draining: new connections are refused; the in-flight request still completes, then closes
    with pytest.raises(httpx.HTTPError):
        httpx.get(s.url + "/health", timeout=1)
    sock.sendall(b"\r\n")
    status, headers, body, _ = rawhttp.read_response(sock)
    assert status == 503 and headers["connection"] == "close"  # finished, and /ready says no
    assert json.loads(body) == {"ready": False}
    sock.close()
    s.stop()
    assert not os.path.exists(tmp_path / "tessera.db-wal") or os.path.getsize(tmp_path / "tessera.db-wal") == 0
