"""Creating tenants and users through `tessera admin`, and logging in over the API."""
import json
import os
import subprocess

from conftest import BIN

PASSWORD = "correct-horse-battery"


def admin(data, *args, input=None):
    p = subprocess.run([BIN, "admin", *args, "--data", data], input=input, capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def tenant(data, name, domain, *extra):
    return admin(data, "create-tenant", "--name", name, "--domain", domain, *extra)


def user(data, domain, email, roles, password=PASSWORD, name=None):
    return admin(data, "create-user", "--tenant", domain, "--email", email, "--name",
                 name or email.split("@")[0].title(), "--role", roles, "--password-stdin",
                 input=(password + "\n").encode())


def secret(data):
    with open(os.path.join(data, "jwt.secret")) as f:
        return bytes.fromhex(f.read().strip())


def login(api, email, password=PASSWORD, **extra):
    r = api.post("/api/v1/auth/login", json={"email": email, "password": password, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}
