"""The OpenAPI document, for in-process use only (the schemathesis run in the test suite).

No HTTP endpoint serves it (`openapi_url=None` in app.py): the FHIR CapabilityStatement describes the
API to clients, and an unauthenticated schema would be one more open door. FastAPI's generated schema
knows neither how we authenticate (the guard in app.py checks the bearer token before routing; pages
read their session cookie themselves) nor what the raw-body handlers read, so this module adds:

* security schemes and a requirement per operation: HTTP bearer for /fhir, the `__Host-medvault`
  session cookie for pages, `security: []` for the public operations;
* the operations FastAPI leaves out (`include_in_schema=False`: /healthz and the pages), so a
  property-based run covers every route;
* FHIR path parameters (resource type names, the id pattern, version numbers) and request bodies
  (FHIR JSON, search forms, page forms) tight enough that generated requests reach the handlers,
  while search values and version ids stay free text somewhere so the error paths run too.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts

from medvault.fhir.type_names import RESOURCE_TYPE_NAMES
from medvault.web.pages import COOKIE

BEARER = "bearer"
SESSION = "session"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    # Today the operator token; SMART access tokens travel in the same header.
    BEARER: {"type": "http", "scheme": "bearer"},
    SESSION: {"type": "apiKey", "in": "cookie", "name": COOKIE},
}
# Operations anyone may call. Paths under a `.well-known` segment are public too (SMART discovery).
PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("/healthz", "get"),
        ("/login", "get"),
        ("/login", "post"),
        ("/fhir/metadata", "get"),
        # OAuth endpoints authenticate the client (PKCE, client id or secret), not a session.
        ("/oauth/token", "post"),
        ("/oauth/revoke", "post"),
        ("/oauth/jwks", "get"),
        # SMART Health Links: the link (a 256-bit id or a short-lived location token) is the credential.
        ("/shl/view", "get"),
        ("/shl/m/{link_id}", "post"),
        ("/shl/m/{link_id}", "get"),
        ("/shl/f/{token}", "get"),
        # The community's public face: a visitor reads what members made public (everyone-audience
        # posts and profile fields), and nothing else; the privacy matrix test pins what that is.
        ("/community", "get"),
        ("/community/posts/{post_id}", "get"),
        ("/community/members/{handle}", "get"),
        ("/community/members/{handle}/picture", "get"),
        ("/community/feed.xml", "get"),
        ("/community/sitemap.xml", "get"),
        ("/robots.txt", "get"),
        ("/community/api/posts", "get"),
        ("/community/api/posts/{post_id}", "get"),
        ("/community/api/members/{handle}", "get"),
    }
)
FHIR_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
# The SMART Health Links manifest request (HL7 SHL v1.0.0).
_SHL_MANIFEST: dict[str, Any] = {
    "type": "object",
    "required": ["recipient"],
    "properties": {
        "recipient": {"type": "string", "minLength": 1, "maxLength": 256},
        "passcode": {"type": "string", "maxLength": 256},
        "embeddedLengthMax": {"type": "integer", "minimum": 0},
    },
}
FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_PATH_PARAM = re.compile(r"\{([^{}:]+)(?::[^{}]*)?\}")

_RESOURCE_TYPES = sorted(RESOURCE_TYPE_NAMES)
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "rtype": {"type": "string", "enum": _RESOURCE_TYPES},
    "rid": {"type": "string", "pattern": FHIR_ID_PATTERN},
    # Mostly version numbers, sometimes anything: the handler must refuse "²", "-1" and 5,000 digits.
    "vid": {"anyOf": [{"type": "string", "pattern": r"^[1-9][0-9]{0,9}$"}, {"type": "string", "minLength": 1}]},
}
# A few search parameters as free text: where arbitrary strings reach the FHIR search parser.
_SEARCH_PARAMS = ("_id", "patient", "subject", "code", "date", "_count", "_sort", "_include")
_RESOURCE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"type": "string", "enum": _RESOURCE_TYPES},
        "id": {"type": "string", "pattern": FHIR_ID_PATTERN},
    },
    "additionalProperties": True,
}
_BUNDLE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["transaction", "batch"]},
        "entry": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "resource": _RESOURCE_BODY,
                    "request": {
                        "type": "object",
                        "required": ["method", "url"],
                        "properties": {
                            "method": {"type": "string", "enum": ["GET", "POST", "PUT", "DELETE"]},
                            "url": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}
# Valid documents (random objects rarely are): the examples a run starts from reach the write paths.
_PATIENT_EXAMPLE: dict[str, Any] = {"resourceType": "Patient", "active": True, "gender": "unknown"}
_BUNDLE_EXAMPLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [{"resource": _PATIENT_EXAMPLE, "request": {"method": "POST", "url": "Patient"}}],
}
_FREE_FORM: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_TEXT = {"type": "string"}
# The fields of the page forms (templates/*.html); a page form not listed here gets a free form.
_PAGE_FORMS: dict[str, dict[str, Any]] = {
    "/login": {"login": _TEXT, "password": _TEXT, "code": _TEXT},
    "/logout": {"csrf": _TEXT},
    "/me/authenticator": {"csrf": _TEXT, "code": _TEXT},
    "/me/sharing": {
        "csrf": _TEXT,
        "practitioner": {"type": "string", "pattern": FHIR_ID_PATTERN},
        "sensitive": _TEXT,
        "until": _TEXT,
    },
    "/me/sharing/revoke": {"csrf": _TEXT, "consent": {"type": "string", "pattern": FHIR_ID_PATTERN}},
    "/alerts/acknowledge": {"csrf": _TEXT, "alert": _TEXT},
    # Free text on purpose (confirm and purpose too): a generated request that met every condition
    # would open the seeded records, which is what break-the-glass is for, not a leak to look for.
    "/break-glass": {
        "csrf": _TEXT,
        "patient": {"type": "string", "pattern": FHIR_ID_PATTERN},
        "purpose": _TEXT,
        "reason": _TEXT,
        "confirm": _TEXT,
    },
    "/me/notifications/seen": {"csrf": _TEXT, "notification": _TEXT},
    "/reviews/verdict": {"csrf": _TEXT, "access": _TEXT, "verdict": _TEXT},
}
# Page path parameters that name a FHIR resource.
_PAGE_ID_PARAMS = frozenset({"patient_id"})


def build(app: FastAPI) -> dict[str, Any]:
    """The schema, made once per app (FastAPI's own cache, `app.openapi_schema`)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version, routes=app.routes)
    paths: dict[str, dict[str, Any]] = schema.setdefault("paths", {})
    _add_hidden_routes(app, paths)
    schema.setdefault("components", {})["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    for path, item in paths.items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            operation["security"] = security_for(path, method)
            _describe(path, method, operation)
    app.openapi_schema = schema
    return schema


def is_fhir(path: str) -> bool:
    """As the guard in app.py judges it: /fhir in any letter case."""
    lowered = path.lower()
    return lowered == "/fhir" or lowered.startswith("/fhir/")


def security_for(path: str, method: str) -> list[dict[str, list[str]]]:
    if (path, method) in PUBLIC or "/.well-known/" in f"{path}/":
        return []
    return [{BEARER: []}] if is_fhir(path) else [{SESSION: []}]


# Served by the bare responder app (api/shl_routes.py `Responders`), outside FastAPI's router.
_RESPONDER_OPERATIONS: tuple[tuple[str, frozenset[str], str], ...] = (
    ("/shl/m/{link_id}", frozenset({"POST", "GET"}), "shl_manifest"),
    ("/shl/f/{token}", frozenset({"GET"}), "shl_file"),
)


def _add_hidden_routes(app: FastAPI, paths: dict[str, dict[str, Any]]) -> None:
    """Operations FastAPI left out of its schema (`include_in_schema=False`) or never saw (the
    responder endpoints): bare, described below."""
    routed = [(r.path_format, r.methods, r.name) for r in iter_route_contexts(app.routes)]
    for path, methods, route_name in [*routed, *_RESPONDER_OPERATIONS]:
        if not isinstance(path, str) or not methods:
            continue  # a mount (static files) or a non-HTTP route
        for method in sorted(m.lower() for m in methods):
            if method == "head" or method in paths.get(path, {}):
                continue
            name = route_name or "operation"
            operation: dict[str, Any] = {
                "operationId": f"{name}_{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}",
                "responses": {"default": {"description": "page, redirect or error"}},
            }
            params = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in _PATH_PARAM.findall(path)
            ]
            if params:
                operation["parameters"] = params
            paths.setdefault(path, {})[method] = operation


def _describe(path: str, method: str, operation: dict[str, Any]) -> None:
    for param in operation.get("parameters", []):
        if param.get("in") == "path" and is_fhir(path) and param.get("name") in _PATH_SCHEMAS:
            param["schema"] = copy.deepcopy(_PATH_SCHEMAS[param["name"]])
    if not is_fhir(path):
        for param in operation.get("parameters", []):
            if param.get("in") == "path" and param.get("name") in _PAGE_ID_PARAMS:
                param["schema"] = {"type": "string", "pattern": FHIR_ID_PATTERN}
        if method == "post" and path == "/shl/m/{link_id}":
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _SHL_MANIFEST}}}
            return
        if method == "post":
            fields = _PAGE_FORMS.get(path)
            body = {"type": "object", "properties": fields} if fields is not None else _FREE_FORM
            operation["requestBody"] = {"required": True, "content": {FORM: {"schema": copy.deepcopy(body)}}}
        return
    if path == "/fhir" and method == "post":
        operation["requestBody"] = _json_body(_BUNDLE_BODY, _BUNDLE_EXAMPLE)
    elif path == "/fhir/{rtype}/_search" and method == "post":
        operation["requestBody"] = {"required": False, "content": {FORM: {"schema": copy.deepcopy(_FREE_FORM)}}}
    elif path in ("/fhir/{rtype}", "/fhir/{rtype}/{rid}") and method in ("post", "put"):
        operation["requestBody"] = _json_body(_RESOURCE_BODY, _PATIENT_EXAMPLE)
    if path == "/fhir/{rtype}" and method in ("get", "delete"):
        known = {p.get("name") for p in operation.get("parameters", [])}
        operation.setdefault("parameters", []).extend(
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in _SEARCH_PARAMS
            if name not in known
        )


def _json_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {FHIR_JSON: {"schema": copy.deepcopy(schema), "example": example}}}
