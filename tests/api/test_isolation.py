"""The isolation and access probe's fast form (tools/check.d/isolation_probe.py): every route of
`tessera routes` once per caller of the reduced set, with tenant B's ids; plus the route table
command and the probe's own judging, so a check that could not fail would fail here."""
import json
import os
import subprocess
import sys

from conftest import BIN, SRC

sys.path.insert(0, os.path.join(SRC, "tools", "check.d"))
import isolation_probe as probe  # noqa: E402

FIELDS = {"method", "path", "surface", "permission", "auth", "roles", "self_roles", "scopes",
          "self_param", "rate_class", "where", "cache_ttl_s", "flags"}


def test_routes_command_lists_every_route_with_a_probe_rule():
    p = subprocess.run([BIN, "routes"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    routes = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert len(routes) > 100
    for r in routes:
        assert set(r) == FIELDS, r
        assert r["surface"] in ("lms", "commerce", "learning", "desk", "recs", "shared"), r
        assert (r["auth"] == "public") == ("public" in r["flags"]) == (r["permission"] == "public")
        assert r["auth"] == "public" or r["roles"] or r["scopes"], r
    keys = [f"{r['method']} {r['path']}" for r in routes]
    assert len(keys) == len(set(keys))
    missing = sorted(set(keys) - set(probe.RULES))
    assert not missing, f"routes the isolation probe has no rule for (add them to RULES): {missing}"
    assert subprocess.run([BIN, "routes", "extra"], capture_output=True).returncode == 2


class _World:
    mark = "zqtest"
    markers = ["zqtest"]
    b_ids = {"11111111-2222-4333-8444-555555555555"}
    created = set()
    sent = set()
    a_batches = []


def _judge(status, body, who="role:viewer", surface="desk", b_object=False, auth="user",
           roles=("viewer",), strip=(), rid="rid-1"):
    t = probe.Tally()
    route = {"method": "GET", "path": "/x/{id}", "surface": surface, "auth": auth,
             "roles": list(roles), "scopes": [], "permission": "p", "flags": []}
    req = probe.P({"id": "x"} if b_object else None)
    headers = {"content-type": "application/json"}
    probe.judge(_World(), t, route, who, req, status, headers, body.encode(), rid, list(strip))
    return t


def test_judge_finds_what_it_must():
    bid = next(iter(_World.b_ids))
    assert _judge(200, '{"title": "ZQTEST ticket"}').leaks          # B's marker, any case
    assert _judge(200, f'{{"id": "{bid.upper()}"}}').leaks          # B's id
    assert not _judge(200, f'{{"id": "{bid}"}}', strip=[bid]).leaks  # the request's own echo
    assert _judge(200, "{}", b_object=True).leaks                    # 2xx naming B's object
    assert _judge(404, '{"error": {"code": "NOT_FOUND", "message": "m", "details": {"n": '
                  '"zqtest"}}}').leaks                               # a denial carrying B's data
    assert _judge(500, '{"error": {"code": "INTERNAL_ERROR", "message": "m", '
                  '"details": {}}}').fivexx
    assert _judge(200, "{}", who="expired").badcred
    assert _judge(403, '{"error": {"code": "FORBIDDEN", "message": "m", "details": {}}}',
                  who="anon").badcred                                # not a 401
    assert _judge(200, "{}", who="role:viewer", roles=("admin",)).perm
    assert _judge(200, "{}", who="key:read", roles=("admin",)).perm   # no scope granted
    good = {"desk": '{"error": {"code": "NOT_FOUND", "message": "m", "details": {}}}',
            "lms": '{"error": {"code": "NOT_FOUND", "message": "m", "details": {}}, '
                   '"request_id": "rid-1"}',
            "commerce": '{"success": false, "error": {"code": "NOT_FOUND", "message": "m", '
                        '"details": {}, "field_errors": []}, "timestamp": "t", '
                        '"request_id": "rid-1"}',
            "learning": '{"success": false, "error": {"code": "NOT_FOUND", "message": "m", '
                        '"details": "d"}}',
            "recs": '{"error": {"code": "NOT_FOUND", "message": "m", "details": {}, '
                    '"request_id": "rid-1", "timestamp": "t"}}',
            "shared": '{"success": false, "error": {"code": "NOT_FOUND", "message": "m", '
                      '"details": {}, "request_id": "rid-1", "timestamp": "t"}, '
                      '"request_id": "rid-1"}'}
    for surface, body in good.items():
        assert not _judge(404, body, surface=surface).malformed, surface
        others = [s for s in good if s != surface and good[s] != body]
        assert all(_judge(404, good[s], surface=surface).malformed for s in others), surface
    assert _judge(404, good["recs"].replace("rid-1", "rid-2"), surface="recs").malformed
    assert _judge(403, good["desk"], surface="desk").malformed       # NOT_FOUND on a 403


def test_probe_fast():
    res = probe.run(BIN, probe.FAST_PRINCIPALS, log=lambda *a: None)
    rows, lines = [], []
    probe.report(res, lambda *r: rows.append(r), log=lines.append)
    failed = [r for r in rows if not r[3]]
    assert not failed, "\n".join([str(r) for r in failed] + lines[:80])
    assert res.tally.sent >= res.routes * len(probe.FAST_PRINCIPALS)
