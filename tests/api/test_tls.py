"""TLS with mbedtls on the same server: TLS 1.2 with forward-secret AEAD suites, real clients."""
import subprocess

import httpx
import pytest

from conftest import Server


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return str(crt), str(key)


def test_https_with_real_clients(cert, tmp_path):
    crt, key = cert
    s = Server("--tls-cert", crt, "--tls-key", key, data=str(tmp_path), scheme="https")
    try:
        r = httpx.get(s.url + "/health", verify=crt)
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        with httpx.Client(base_url=s.url, verify=crt) as c:  # keep-alive over one TLS session
            for _ in range(5):
                assert c.get("/ready").json() == {"ready": True}
        p = subprocess.run(["curl", "-s", "--cacert", crt, "--tlsv1.2", "--tls-max", "1.2",
                            "-w", "%{http_code}", "-o", "/dev/null", s.url + "/health"],
                           capture_output=True)
        assert p.stdout == b"200"
        # TLS 1.1 and a CBC suite without forward secrecy are refused
        p = subprocess.run(["curl", "-s", "--cacert", crt, "--tlsv1.1", "--tls-max", "1.1", s.url + "/health"],
                           capture_output=True)
        assert p.returncode != 0
        p = subprocess.run(["curl", "-s", "--cacert", crt, "--tls-max", "1.2", "--ciphers", "AES128-SHA256",
                            s.url + "/health"], capture_output=True)
        assert p.returncode != 0
        # plain HTTP to the TLS port does not crash it
        with pytest.raises(httpx.HTTPError):
            httpx.get(s.url.replace("https", "http") + "/health", timeout=2)
        assert httpx.get(s.url + "/health", verify=crt).status_code == 200
    finally:
        s.stop()


def test_bad_cert_path_is_one_line_exit_2(tmp_path):
    import os
    from conftest import BIN
    p = subprocess.run([BIN, "serve", "--data", str(tmp_path), "--tls-cert", "/nonexistent.pem",
                        "--tls-key", "/nonexistent.key"], capture_output=True, timeout=20)
    assert p.returncode == 2
    assert "cannot read TLS certificate" in p.stderr.decode()
