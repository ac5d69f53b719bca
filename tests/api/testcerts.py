"""Test certificates made like CA-issued ones: a throwaway CA, and an RSA 2048 and an ECDSA P-256
server certificate it signs (a year's validity, SAN 127.0.0.1/localhost, serverAuth, a CRL URI),
so a TLS grader finds nothing to say about the certificate and grades the server's configuration.

    certs = make(dirpath)   # {"ca": path, "rsa": (crt, key), "ecdsa": (crt, key)}
"""
import os
import subprocess

LEAF_EXT = """subjectAltName=IP:127.0.0.1,DNS:localhost
basicConstraints=critical,CA:FALSE
keyUsage=critical,{usage}
extendedKeyUsage=serverAuth
crlDistributionPoints=URI:http://127.0.0.1/tessera-test-ca.crl
"""


def _run(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _leaf(d, name, newkey, usage, ca, ca_key):
    key, csr, crt, ext = (os.path.join(d, name + s) for s in (".key", ".csr", ".pem", ".ext"))
    with open(ext, "w") as f:
        f.write(LEAF_EXT.format(usage=usage))
    _run("req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    _run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-sha256",
         "-days", "365", "-extfile", ext, "-out", crt)
    return crt, key


def make(d):
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "365", "-subj", "/CN=Tessera Test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return {
        "ca": ca,
        "rsa": _leaf(d, "rsa", ["-newkey", "rsa:2048"], "digitalSignature,keyEncipherment", ca, ca_key),
        "ecdsa": _leaf(d, "ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                       "digitalSignature", ca, ca_key),
    }
