"""desk's account flows with a real SMTP server: register, confirm, reset; and .eml files."""
import os
import re

import pytest

from accounts import PASSWORD, bearer, login, tenant, user
from conftest import Api, Server


def link_token(msg, path):
    body = msg.message.get_body(preferencelist=("plain",)).get_content()
    m = re.search(r"(http://[^\s]+)" + re.escape(path) + r"\?token=([A-Za-z0-9_-]+)", body)
    assert m, body
    return m.group(1), m.group(2)


@pytest.fixture
def desk(tmp_path, smtp):
    data = str(tmp_path)
    tenant(data, "Open", "open.example", "--allow-registration", "--default-role", "agent")
    tenant(data, "Closed", "closed.example")
    s = Server("--smtp-url", smtp.url, "--public-url", "http://desk.example:8080",
               "--rate-limit", "auth=1000/60", data=data)
    a = Api(s)
    yield a, smtp, data
    a.close()
    s.stop()


def test_register_confirm_then_login(desk):
    api, smtp, _ = desk
    r = api.post("/api/v1/auth/register", json={"email": "new@open.example", "password": "long-enough-pw",
                                                "full_name": "New Person", "customer_domain": "open.example"})
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == "new@open.example" and body["confirmation_sent"] is True
    msg = smtp.wait_for(lambda m: m.to == ["new@open.example"])
    assert msg.message["Subject"] == "Confirm your email address"
    base, token = link_token(msg, "/confirm-email")
    assert base == "http://desk.example:8080"
    # not confirmed yet: the right password still cannot log in
    r = api.post("/api/v1/auth/login", json={"email": "new@open.example", "password": "long-enough-pw"})
    assert r.status_code == 403 and r.json()["error"]["details"]["field"] == "email"
    r = api.post("/api/v1/auth/confirm-email", json={"token": token})
    assert r.status_code == 200 and r.json() == {"message": "Email confirmed successfully"}
    s = login(api, "new@open.example", "long-enough-pw")
    assert s["user"]["id"] == body["user_id"] and s["user"]["roles"] == ["agent"]  # tenant's default role
    # single use
    r = api.post("/api/v1/auth/confirm-email", json={"token": token})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "token"


def test_register_rules(desk):
    api, smtp, _ = desk
    ok = {"email": "x@open.example", "password": "long-enough-pw", "full_name": "X",
          "customer_domain": "open.example"}
    r = api.post("/api/v1/auth/register", json={**ok, "customer_domain": "closed.example"})
    assert r.status_code == 403 and r.json()["error"]["details"]["field"] == "customer_domain"
    r = api.post("/api/v1/auth/register", json={**ok, "customer_domain": "nowhere.example"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "customer_domain"
    # default tenant is the first created (open.example), so no domain works too
    assert api.post("/api/v1/auth/register", json={k: v for k, v in ok.items() if k != "customer_domain"}).status_code == 201
    r = api.post("/api/v1/auth/register", json=ok)
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "email"
    for body, field in [({**ok, "password": "short"}, "password"),      # default minimum 10
                        ({**ok, "password": "123456789"}, "password"),  # limit - 1
                        ({**ok, "email": "bad"}, "email"),
                        ({**ok, "full_name": ""}, "full_name"),
                        ({**ok, "full_name": "n" * 201}, "full_name")]:
        r = api.post("/api/v1/auth/register", json={**body, "email": body["email"].replace("x@", "y@")})
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, body
    r = api.post("/api/v1/auth/register", json={**ok, "email": "ten@open.example", "password": "1234567890"})
    assert r.status_code == 201  # exactly the minimum
    assert len([m for m in smtp.messages if m.to == ["y@open.example"]]) == 0  # failures sent nothing


def test_reset_password_flow(desk):
    api, smtp, data = desk
    user(data, "open.example", "reset@open.example", "viewer")
    old = login(api, "reset@open.example")
    r = api.post("/api/v1/auth/reset-password", json={"email": "reset@open.example"})
    assert r.status_code == 200 and r.json() == {"message": "Password reset email sent"}
    # unknown emails get the same answer and no mail
    r = api.post("/api/v1/auth/reset-password", json={"email": "ghost@open.example"})
    assert r.status_code == 200 and r.json() == {"message": "Password reset email sent"}
    msg = smtp.wait_for(lambda m: m.to == ["reset@open.example"])
    _, token = link_token(msg, "/reset-password")
    r = api.post("/api/v1/auth/reset-password/confirm", json={"token": token, "new_password": "short"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "new_password"
    r = api.post("/api/v1/auth/reset-password/confirm", json={"token": token, "new_password": "brand-new-password"})
    assert r.status_code == 200 and r.json() == {"message": "Password has been reset"}
    assert api.post("/api/v1/auth/login", json={"email": "reset@open.example", "password": PASSWORD}).status_code == 401
    login(api, "reset@open.example", "brand-new-password")
    # old sessions ended with the reset; the token is single-use
    assert api.get("/api/v1/users/me", headers=bearer(old["access_token"])).status_code == 401
    r = api.post("/api/v1/auth/reset-password/confirm", json={"token": token, "new_password": "another-new-password"})
    assert r.status_code == 422
    assert not any(m.to == ["ghost@open.example"] for m in smtp.messages)


def test_without_smtp_mail_is_written_as_eml(tmp_path):
    data = str(tmp_path)
    tenant(data, "Open", "open.example", "--allow-registration")
    s = Server(data=data)
    try:
        a = Api(s)
        r = a.post("/api/v1/auth/register", json={"email": "file@open.example", "password": "long-enough-pw",
                                                  "full_name": "F"})
        assert r.status_code == 201
        import time
        mail_dir = os.path.join(data, "mail")
        for _ in range(100):
            files = [f for f in os.listdir(mail_dir) if f.endswith(".eml")] if os.path.isdir(mail_dir) else []
            if files:
                break
            time.sleep(0.05)
        assert len(files) == 1
        import email
        from email import policy
        with open(os.path.join(mail_dir, files[0]), "rb") as f:
            msg = email.message_from_bytes(f.read(), policy=policy.default)
        assert msg["To"] == "file@open.example" and "confirm-email?token=ce_" in msg.get_content()
        a.close()
    finally:
        s.stop()
