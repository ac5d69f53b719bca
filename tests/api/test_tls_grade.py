"""The TLS profile, fast form (tools/check transport runs testssl.sh for the full grade).

Mozilla's "intermediate" profile, TLS 1.2 part: TLS 1.0/1.1 refused, no CBC (so no CBC-SHA1),
no RSA key transport (forward secrecy only), AEAD ECDHE suites negotiated, curves X25519/P-256/
P-384, no SHA-1 or SHA-224 signatures. Every refusal is paired with a control: the same client
settings complete a handshake with `openssl s_server` accepting everything, so a refusal
measures the server, not a client that never offered the thing (OpenSSL 3's default security
level would not offer TLS 1.0 or SHA-1 at all; the client here runs at @SECLEVEL=0).
"""
import socket
import ssl
import subprocess
import time
import warnings

import pytest

import testcerts
from conftest import Server, free_port

V = ssl.TLSVersion


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return testcerts.make(str(tmp_path_factory.mktemp("tls-grade")))


def _wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("openssl s_server exited: " + proc.stderr.read().decode())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("openssl s_server did not listen")


@pytest.fixture(scope="module", params=["rsa", "ecdsa"])
def pair(request, certs, tmp_path_factory):
    """(tessera port, control port, key type): both serve the same certificate."""
    crt, key = certs[request.param]
    srv = Server("--tls-cert", crt, "--tls-key", key, data=str(tmp_path_factory.mktemp("d")),
                 scheme="https")
    cport = free_port()
    ctl = subprocess.Popen(["openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{cport}",
                            "-cert", crt, "-key", key, "-cipher", "ALL:@SECLEVEL=0",
                            "-sigalgs", "RSA+SHA1:ECDSA+SHA1:RSA+SHA224:ECDSA+SHA224:RSA+SHA256:"
                            "ECDSA+SHA256:RSA+SHA384:ECDSA+SHA384",
                            "-groups", "X25519:P-256:P-384:P-521"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(cport, ctl)
        yield srv.port, cport, request.param
    finally:
        ctl.kill()
        ctl.wait()
        srv.stop()


def handshake(port, lo, hi, ciphers):
    """Python's ssl (OpenSSL 3) at @SECLEVEL=0: (version, suite) on success, None if refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    with warnings.catch_warnings():  # TLSv1 and TLSv1_1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = lo, hi
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                return s.version(), s.cipher()[0]
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None


def s_client(port, *args):
    """openssl s_client for what Python's ssl cannot set (groups, signature algorithms): the
    ECDHE group of a completed handshake ("prime256v1", "X25519", ...), None if refused."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2",
                        "-cipher", "ALL:@SECLEVEL=0", *args],
                       input=b"", capture_output=True, timeout=15)
    out = p.stdout.decode("latin-1")
    if "New, TLSv1.2, Cipher is" not in out:
        return None
    for line in out.splitlines():
        if line.startswith("Server Temp Key:"):  # "ECDH, prime256v1, 256 bits" or "X25519, 253 bits"
            parts = [x.strip() for x in line.split(":", 1)[1].split(",")]
            return parts[1] if parts[0] == "ECDH" else parts[0]
    return "?"


def suite(kind, rsa_name):
    return rsa_name if kind == "rsa" else rsa_name.replace("ECDHE-RSA", "ECDHE-ECDSA")


def test_old_protocols_refused(pair):
    port, control, kind = pair
    for v in (V.TLSv1, V.TLSv1_1):
        s = suite(kind, "ECDHE-RSA-AES128-SHA")
        assert handshake(control, v, v, s) is not None, f"control refused {v.name}: client cannot test it"
        assert handshake(port, v, v, s) is None, f"{v.name} negotiated"


@pytest.mark.parametrize("rsa_name", [
    "ECDHE-RSA-AES128-SHA",     # CBC with a SHA-1 MAC, forward secret
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA256",  # CBC with SHA-256: not in the intermediate profile either
    "AES128-SHA",               # RSA key transport, CBC-SHA1
    "AES128-GCM-SHA256",        # RSA key transport, AEAD: no forward secrecy
    "AES256-GCM-SHA384",
])
def test_weak_suites_refused(pair, rsa_name):
    port, control, kind = pair
    name = suite(kind, rsa_name)
    if kind == "ecdsa" and not name.startswith("ECDHE"):
        pytest.skip("RSA key transport needs an RSA certificate")
    assert handshake(control, V.TLSv1_2, V.TLSv1_2, name) is not None, "control refused " + name
    assert handshake(port, V.TLSv1_2, V.TLSv1_2, name) is None, name + " negotiated"


@pytest.mark.parametrize("rsa_name", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                      "ECDHE-RSA-CHACHA20-POLY1305"])
def test_aead_ecdhe_negotiated(pair, rsa_name):
    port, _, kind = pair
    name = suite(kind, rsa_name)
    assert handshake(port, V.TLSv1_2, V.TLSv1_2, name) == ("TLSv1.2", name)
    # a modern client offering everything gets TLS 1.2 with an AEAD ECDHE suite
    version, got = handshake(port, V.TLSv1_2, V.MAXIMUM_SUPPORTED, "ALL")
    assert version == "TLSv1.2" and got.startswith("ECDHE-") and ("GCM" in got or "CHACHA20" in got)


def test_curves(pair):
    port, control, kind = pair
    for g, name in (("X25519", "X25519"), ("P-256", "prime256v1"), ("P-384", "secp384r1")):
        if kind == "ecdsa" and g != "P-256":
            # TLS 1.2 applies the client's groups to an ECDSA certificate's curve too (RFC 8422)
            assert s_client(port, "-groups", g + ":P-256") in (name, "prime256v1")
        else:
            assert s_client(port, "-groups", g) == name, g + " refused"
    if kind == "rsa":
        assert s_client(control, "-groups", "P-521") == "secp521r1"
        assert s_client(port, "-groups", "P-521") is None, "P-521 negotiated (not in the profile)"
    else:
        assert s_client(port, "-groups", "P-521:P-256") == "prime256v1"


def test_signature_hashes(pair):
    port, control, kind = pair
    alg = "RSA" if kind == "rsa" else "ECDSA"
    assert s_client(port, "-sigalgs", alg + "+SHA256") is not None
    for h in ("SHA1", "SHA224"):
        assert s_client(control, "-sigalgs", f"{alg}+{h}") is not None, "control refused " + h
        assert s_client(port, "-sigalgs", f"{alg}+{h}") is None, h + " signature accepted"
