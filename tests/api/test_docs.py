"""The OpenAPI documents, /openapi/<surface>.json, the /docs reference, and the contract checker."""
import json
import os
import re

import httpx
import jsonschema
import pytest

import contract
from conftest import SRC

SURFACES = contract.SURFACES
SWAGGER_DIR = os.path.join(SRC, "tools", "npm", "node_modules", "swagger-ui-dist")
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def read_document(surface):
    with open(os.path.join(SRC, "schema", "openapi", surface + ".json"), "rb") as f:
        return f.read()


# ---- the documents themselves ----

@pytest.mark.parametrize("surface", SURFACES)
def test_document_shape_and_schemas(surface):
    doc = json.loads(read_document(surface))
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == "0.1.0"
    assert doc["servers"][0]["url"] == "/"
    assert "contracts/" in doc["info"]["description"]
    schemas = doc["components"]["schemas"]
    assert "Error" in schemas
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
    for template, item in doc["paths"].items():
        for method, op in item.items():
            assert "default" in op["responses"], f"{surface} {method} {template}: no default"
            assert op["responses"]["default"] == {"$ref": "#/components/responses/Error"}


def test_error_schemas_match_errors_c():
    """Each surface's Error schema accepts what src/api/errors.c writes for it, and not another
    surface's format (the five formats differ, so a body in the wrong one fails)."""
    rid, ts = "01a2310e-3956-77cf-b6ce-cd3df300bf0a", "2026-01-02T03:04:05Z"
    details = {"field": "user_id", "reason": "Required field missing"}
    bodies = {
        "lms": {"error": {"code": "NOT_FOUND", "message": "m", "details": details},
                "request_id": rid},
        "commerce": {"success": False,
                     "error": {"code": "VALIDATION_ERROR", "message": "m", "details": {},
                               "field_errors": [{"field": "f", "message": "m",
                                                 "rejected_value": None}]},
                     "timestamp": ts, "request_id": rid},
        "learning": {"success": False,
                     "error": {"code": "RATE_LIMIT_EXCEEDED", "message": "m",
                               "details": "try later", "retryAfter": 30}},
        "desk": {"error": {"code": "NOT_FOUND", "message": "m", "details": {}}},
        "recs": {"error": {"code": "NOT_FOUND", "message": "m", "details": details,
                           "request_id": rid, "timestamp": ts}},
    }
    docs = contract.documents()
    for surface, d in docs.items():
        for other, body in bodies.items():
            ok = True
            try:
                d.validate(d.error_schema(), body)
            except jsonschema.ValidationError:
                ok = False
            assert ok == (surface == other), f"{surface} Error schema vs a {other} body"


# ---- /openapi/<surface>.json ----

@pytest.mark.parametrize("surface", SURFACES)
def test_openapi_document_served_byte_for_byte(api, surface):
    r = api.get(f"/openapi/{surface}.json")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "application/json"
    assert r.content == read_document(surface)
    assert r.json()["openapi"] == "3.1.0"


def test_unknown_openapi_document_is_404_in_recs_format(api):
    for path in ("/openapi/nope.json", "/openapi/recs", "/openapi/recs.yaml"):
        r = api.get(path)
        assert r.status_code == 404, path
        e = r.json()["error"]
        assert e["code"] == "NOT_FOUND"
        assert e["request_id"] == r.headers["x-request-id"]
        assert set(e) == {"code", "message", "details", "request_id", "timestamp"}
        d = contract.documents()["recs"]
        d.validate(d.error_schema(), r.json())


# ---- /docs ----

def docs_urls(html):
    return re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)


def test_docs_page_is_local_html(api):
    r = api.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    urls = docs_urls(html)
    assert len(urls) == 4
    for u in urls:
        assert u.startswith("/docs/assets/"), u
    for surface in SURFACES:  # the selector offers every document
        assert f'url: "/openapi/{surface}.json", name: "{surface}"' in html


def test_docs_assets_served_with_types(api):
    urls = docs_urls(api.get("/docs").text)
    for u in urls:
        r = api.get(u)
        assert r.status_code == 200, u
        ext = os.path.splitext(u)[1]
        assert r.headers["content-type"].split(";")[0] == ASSET_TYPES[ext], u
        assert r.headers["cache-control"] == "public, max-age=86400"
        assert len(r.content) > 0
        with open(os.path.join(SWAGGER_DIR, os.path.basename(u)), "rb") as f:
            assert r.content == f.read(), f"{u} differs from swagger-ui-dist's file"


def test_unknown_docs_asset_is_404(api):
    for name in ("nope.js", "index.html", "swagger-ui.css.map", "..%2Fpackage.json"):
        r = api.get("/docs/assets/" + name)
        assert r.status_code == 404, name
        assert r.json()["error"]["code"] == "NOT_FOUND"
        assert "cache-control" not in r.headers


# ---- the checker itself must reject drift ----

HEALTH = {"status": "healthy", "version": "0.1.0", "uptime_seconds": 3,
          "checks": {"database": "healthy", "cache": "healthy", "dependencies": "healthy"}}
RECS_ERROR = {"error": {"code": "NOT_FOUND", "message": "m", "details": {},
                        "request_id": "abc-1", "timestamp": "2026-01-02T03:04:05Z"}}


def fake(status, body=None, content_type="application/json", text=None):
    content = text.encode() if text is not None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers={"Content-Type": content_type})


def rejects(method, path, response, fragment):
    with pytest.raises(AssertionError) as e:
        contract.check(method, path, response)
    assert fragment in str(e.value), str(e.value)


def test_checker_accepts_correct_bodies():
    contract.check("GET", "/health", fake(200, HEALTH))
    contract.check("GET", "/health", fake(503, dict(HEALTH, status="unhealthy")))
    contract.check("GET", "/ready?x=1", fake(503, {"ready": False}))
    contract.check("GET", "/no/such/route", fake(404, RECS_ERROR))
    contract.check("GET", "/metrics", fake(200, content_type="text/plain; version=0.0.4",
                                           text="# HELP x y\n"))


def test_checker_rejects_drifted_bodies():
    rejects("GET", "/health", fake(200, dict(HEALTH, extra=1)), "extra")
    missing = {k: v for k, v in HEALTH.items() if k != "version"}
    rejects("GET", "/health", fake(200, missing), "version")
    rejects("GET", "/health", fake(200, dict(HEALTH, status="ok")), "status")
    rejects("GET", "/health", fake(200, dict(HEALTH, uptime_seconds="3")), "uptime_seconds")
    rejects("GET", "/health", fake(200, dict(HEALTH, checks={"database": "healthy"})), "checks")
    rejects("GET", "/ready", fake(200, {"ready": "yes"}), "ready")
    rejects("GET", "/ready", fake(503, {"ready": False, "why": "x"}), "why")
    # an error in the wrong surface's format, or missing its timestamp
    no_ts = {"error": {k: v for k, v in RECS_ERROR["error"].items() if k != "timestamp"}}
    rejects("GET", "/health", fake(500, no_ts), "timestamp")
    rejects("GET", "/health", fake(429, dict(RECS_ERROR, request_id="abc-1")), "request_id")
    rejects("GET", "/api/v1/health/x", fake(404, RECS_ERROR), "success")
    rejects("GET", "/no/such/route", fake(404, {"error": "not found"}), "Error")


def test_checker_rejects_wrong_types_and_undocumented_answers():
    rejects("GET", "/metrics", fake(200, {"a": 1}), "Content-Type application/json")
    rejects("GET", "/health", fake(200, text="ok", content_type="text/plain"), "Content-Type")
    rejects("GET", "/health", fake(200, text="{", content_type="application/json"), "not JSON")
    rejects("GET", "/no/such/route", fake(200, {"ok": True}), "no documented path")
    rejects("POST", "/health", fake(200, HEALTH), "no POST /health")
    rejects("GET", "/no/such/route", fake(404, text="<html>", content_type="text/html"),
            "must be JSON")
