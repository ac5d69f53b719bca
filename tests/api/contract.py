"""Checks every response an API test receives against schema/openapi/<surface>.json.

check(method, path, response) finds the operation whose path template and method match the
request, picks the response object for the status ("404", then "4XX", then "default"), checks
the Content-Type against the media types documented there and, for JSON, validates the body
with JSON Schema 2020-12 (OpenAPI 3.1's dialect; #/components/... refs resolve against the
document). A request no operation matches must still be answered in a surface's error format:
the Error schema of the surface whose paths share the longest prefix with it, as the router
decides (src/api/router.c), else recs. Any mismatch raises AssertionError.

Runs under /usr/bin/python3 (Debian's python3-jsonschema).
"""
import json
import os
import re
from urllib.parse import urlsplit

import jsonschema

SRC = os.environ.get("TESSERA_SRC",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OPENAPI_DIR = os.path.join(SRC, "schema", "openapi")
SURFACES = ("lms", "commerce", "learning", "desk", "recs")
FALLBACK_SURFACE = "recs"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_documents = None


class Document:
    """One surface's OpenAPI document, with its path templates compiled for matching."""

    def __init__(self, surface, path):
        self.surface = surface
        self.path = path
        with open(path, "rb") as f:
            self.doc = json.loads(f.read())
        self.resolver = jsonschema.RefResolver.from_schema(self.doc)
        self.templates = []  # (template, [segment regex], {METHOD: operation})
        for template, item in self.doc.get("paths", {}).items():
            item = self.deref(item)
            ops = {m.upper(): item[m] for m in METHODS if m in item}
            self.templates.append((template, _segment_regexes(template), ops))

    def deref(self, obj):
        """Follows an OpenAPI $ref ("#/components/responses/Error") inside this document."""
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), f"{self.surface}.json: only local refs are used: {ref}"
            obj = self.doc
            for part in ref[2:].split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
            seen += 1
            assert seen < 32, f"{self.surface}.json: $ref loop at {ref}"
        return obj

    def error_schema(self, shared=False):
        name = "SharedError" if shared else "Error"
        schemas = self.doc.get("components", {}).get("schemas", {})
        assert name in schemas, f"{self.surface}.json has no components.schemas.{name}"
        return {"$ref": f"#/components/schemas/{name}"}

    def validate(self, schema, instance):
        """Raises jsonschema.ValidationError (the most relevant one) on a mismatch."""
        cls = jsonschema.Draft202012Validator
        v = cls(schema, resolver=self.resolver, format_checker=jsonschema.FormatChecker())
        err = jsonschema.exceptions.best_match(v.iter_errors(instance))
        if err is not None:
            raise err


def _segment_regexes(template):
    """One regex per path segment; "{name}" parts match any non-empty text without "/"."""
    out = []
    segs = template.strip("/").split("/") if template.strip("/") else []
    for seg in segs:
        parts = re.split(r"(\{[^}/]+\})", seg)
        rx = "".join("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p)
                     for p in parts)
        out.append(re.compile(rx + r"\Z"))
    return out


def _segments(path):
    """Request path segments as the router sees them: a trailing slash is ignored."""
    path = urlsplit(path).path or "/"
    return path.split("/")[1:] if path.rstrip("/") else []


def _normalise(segs):
    while segs and segs[-1] == "":
        segs = segs[:-1]
    return segs


def documents():
    """{surface: Document} for the five documents, loaded once."""
    global _documents
    if _documents is None:
        _documents = {s: Document(s, os.path.join(OPENAPI_DIR, s + ".json")) for s in SURFACES}
    return _documents


def _prefix_len(regexes, segs):
    n = 0
    for rx, seg in zip(regexes, segs):
        if not rx.match(seg):
            break
        n += 1
    return n


def find_path(path):
    """(document, template, operations) of the best path match, or None.

    Like the router: every segment must match; more literal segments win ("/users/me" beats
    "/users/{id}")."""
    segs = _normalise(_segments(path))
    best, best_literals = None, -1
    for d in documents().values():
        for template, regexes, ops in d.templates:
            if len(regexes) != len(segs) or _prefix_len(regexes, segs) != len(segs):
                continue
            literals = sum("{" not in s for s in template.strip("/").split("/"))
            if literals > best_literals:
                best, best_literals = (d, template, ops), literals
    return best


def is_shared(template):
    """Paths documented by several surfaces (login, refresh) are the router's shared surface,
    answered in the SharedError format every one of those documents defines."""
    return sum(any(t == template for t, _, _ in d.templates) for d in documents().values()) > 1


def owner_surface(path):
    """(document, shared) of the surface whose paths share the longest leading-segment prefix
    with path, as src/api/router.c decides: a tie between surfaces, or no prefix, is recs."""
    segs = _normalise(_segments(path))
    docs = documents()
    owners, best_len = set(), 0
    for d in docs.values():
        for template, regexes, _ in d.templates:
            n = _prefix_len(regexes, segs)
            owner = "shared" if is_shared(template) else d.surface
            if n > best_len:
                owners, best_len = {owner}, n
            elif n == best_len and n > 0:
                owners.add(owner)
    if len(owners) != 1:
        return docs[FALLBACK_SURFACE], False
    owner = owners.pop()
    if owner == "shared":
        return docs[FALLBACK_SURFACE], True
    return docs[owner], False


def _media_type(value):
    return (value or "").split(";")[0].strip().lower()


def _is_json(media):
    return media == "application/json" or media.endswith("+json")


def _response_object(d, op, status):
    responses = op.get("responses", {})
    for key in (str(status), f"{status // 100}XX", f"{status // 100}xx", "default"):
        if key in responses:
            return key, d.deref(responses[key])
    return None, None


def _fail(method, path, response, why):
    body = response.content[:600].decode("utf-8", "replace")
    raise AssertionError(f"contract: {method} {path} -> {response.status_code}: {why}\n"
                         f"  Content-Type: {response.headers.get('content-type')}\n"
                         f"  body: {body}")


def _validate_json(d, where, schema, method, path, response):
    try:
        body = json.loads(response.content)
    except ValueError as e:
        _fail(method, path, response, f"body is not JSON ({e}), {where} documents JSON")
    try:
        d.validate(schema, body)
    except jsonschema.ValidationError as e:
        at = "/".join(str(p) for p in e.absolute_path) or "(root)"
        _fail(method, path, response,
              f"body does not match {d.surface}.json {where}: at {at}: {e.message}")


def _check_error(d, method, path, response, why, shared=False):
    """A response no operation documents: must be an error in surface d's format (or the
    shared routes' format)."""
    status = response.status_code
    if method == "OPTIONS" and status == 204 and not response.content:
        return  # CORS preflight: the dispatcher answers it for every routed path
    if status < 400:
        _fail(method, path, response, why)
    media = _media_type(response.headers.get("content-type"))
    if method == "HEAD" and not response.content:
        return
    if not _is_json(media):
        _fail(method, path, response, f"{why}; an error must be JSON in {d.surface}'s format")
    _validate_json(d, f"{'SharedError' if shared else 'Error'} ({why})", d.error_schema(shared),
                   method, path, response)


def check(method, path, response):
    """Raises AssertionError when response does not match the documented contract."""
    method = method.upper()
    found = find_path(path)
    if found is None:
        d, shared = owner_surface(path)
        return _check_error(d, method, path, response, "no documented path matches", shared)
    d, template, ops = found
    op = ops.get(method)
    if op is None:
        return _check_error(d, method, path, response,
                            f"{d.surface}.json documents no {method} {template}",
                            is_shared(template))
    status = response.status_code
    key, resp = _response_object(d, op, status)
    where = f"{method} {template} response {key}"
    if resp is None:
        _fail(method, path, response, f"{d.surface}.json {method} {template} documents no "
              f"{status} response and no default")
    content = resp.get("content")
    if not content:
        if response.content:
            _fail(method, path, response, f"{where} documents no body")
        return
    if method == "HEAD" and not response.content:
        return
    media = _media_type(response.headers.get("content-type"))
    documented = {_media_type(k): v for k, v in content.items()}
    if media not in documented:
        _fail(method, path, response,
              f"Content-Type {media or '(none)'} is not one of {sorted(documented)} ({where})")
    schema = documented[media].get("schema")
    if _is_json(media) and schema is not None:
        _validate_json(d, where, schema, method, path, response)
