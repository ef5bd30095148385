"""FastAPI application: FHIR R4 REST at /fhir, /healthz."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette._utils import get_route_path
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from medvault import logs
from medvault.api import community as community_api
from medvault.api import community_messages, openapi, shl_routes
from medvault.api import smart as smart_api
from medvault.api.capability import capability_statement
from medvault.auth.passwords import shared_hasher
from medvault.bodies import read_capped
from medvault.config import Settings, load_settings
from medvault.db import make_engine, make_sessionmaker
from medvault.errors import MedvaultError
from medvault.fhir import bundles as fb
from medvault.fhir import parse as fhir_parse
from medvault.fhir.errors import InvalidResource, Issue, UnsupportedSearch
from medvault.fhir.types import is_resource_type
from medvault.records import bundles as record_bundles
from medvault.records import guard
from medvault.records import service as records
from medvault.records.errors import BadRequest, Gone, NotFound, PreconditionFailed, VersionConflict
from medvault.records.guard import Caller
from medvault.records.vault import Vault, iso
from medvault.smart import tokens as smart_tokens
from medvault.smart.idtoken import IdTokenSigner
from medvault.store import migrate
from medvault.store.crypto_context import CryptoContext, build_crypto
from medvault.web import pages

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database
MAX_OFFSET = 10**9
MAX_SEQ = 2**62  # audit sequence numbers are 64-bit integers in the database
log = logs.get("api")


class UnsupportedMediaType(MedvaultError):
    """A body in a format we do not read (415, not 400: the request may be fine in JSON)."""

    code = "not-supported"


class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def outcome(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> FhirResponse:
    return FhirResponse(fb.operation_outcome(issues), status_code=status, headers=headers)


def status_for(exc: MedvaultError) -> int:
    if isinstance(exc, guard.Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Gone):
        return 410
    if isinstance(exc, VersionConflict | PreconditionFailed):
        return 412
    if isinstance(exc, InvalidResource):
        return 422 if any(i.code not in ("structure", "too-costly") for i in exc.issues) else 400
    if isinstance(exc, UnsupportedSearch | BadRequest):
        return 400
    if isinstance(exc, UnsupportedMediaType):
        return 415
    return 500


@dataclass
class AppState:
    settings: Settings
    factory: sessionmaker[Session]
    crypto: CryptoContext
    signer: IdTokenSigner


BEARER_KEY = "medvault.bearer"  # where the guard leaves the resolved token for the handler


def create_app(settings: Settings, *, per_process_log: bool = False) -> FastAPI:
    logs.setup(settings.log_path, per_process=per_process_log)
    engine = make_engine(settings)
    migrate.upgrade(engine, keys_path=settings.keys_path)
    factory = make_sessionmaker(engine)
    with factory() as session:
        crypto = build_crypto(settings, session)
    state = AppState(settings, factory, crypto, IdTokenSigner(settings.keys_path))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The shared Argon2 hasher costs one hash to make: made here, off the event loop, rather
        # than by the first request that asks for it (an SHL manifest asks on the loop).
        await anyio.to_thread.run_sync(shared_hasher)
        yield
        engine.dispose()

    # No OpenAPI document or docs pages: the FHIR CapabilityStatement describes the API, and an
    # unauthenticated schema endpoint would be one more open door.
    app = MedvaultApp(
        title="medvault",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.medvault = state
    _install_error_handlers(app)
    # Before the FHIR routes: /fhir/{rtype}/{rid} would otherwise match /fhir/.well-known/...
    smart_api.install(app, smart_api.SmartDeps(factory=factory, crypto=crypto, signer=state.signer))
    _install_routes(app, state)
    app.responders = shl_routes.install(app, shl_routes.ShlDeps(factory=factory, crypto=crypto))
    community_api.install(app, community_api.CommunityApiDeps(factory=factory, crypto=crypto, settings=settings))
    pages.install(app, pages.PageDeps(factory=factory, crypto=crypto))
    community_messages.install(app, community_messages.MessagesDeps(factory=factory, crypto=crypto))
    app.openapi = functools.partial(openapi.build, app)  # type: ignore[method-assign]  # in-process only, see openapi.py
    return app


def create_app_from_environment() -> FastAPI:
    """The app of one server process among several (`medvault serve --workers N`): settings from
    the MEDVAULT_* environment the parent set."""
    return create_app(load_settings(), per_process_log=True)


# /fhir (in any letter case) needs a live access token (a SMART app's, or an operator token from
# the CLI), judged on the router's own path (so a root_path a proxy adds cannot hide it); only the
# discovery documents a client reads before it has a token are public. Pages outside /fhir
# authenticate with their session cookie (web/pages.py); /oauth/* authenticates the client itself.
PUBLIC_FHIR = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration"})
READ_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = (
    # Health data must not linger in browser or proxy caches.
    ("cache-control", "no-store"),
    ("pragma", "no-cache"),
    ("x-content-type-options", "nosniff"),
)


class MedvaultApp(FastAPI):
    """FastAPI with a guard outside Starlette's whole middleware stack. Starlette re-raises an
    unhandled exception after its 500 response, so the ASGI server would log a traceback (which
    can quote request data); the guard swallows it after logging only the exception class. It also
    authenticates, adds the security headers, and writes the access log line."""

    responders: shl_routes.Responders | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # no websocket (or other) endpoints: refuse by not answering at all
        start = time.perf_counter()
        sent: dict[str, int] = {}

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = int(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
            await send(message)

        try:
            route = _route_path(scope)
            if route in PUBLIC_FHIR and scope["method"] not in READ_METHODS:
                # The discovery documents are read-only. Without this, POST or DELETE /fhir/metadata
                # reached the /fhir/{rtype} handlers with no token resolved (a 500).
                await outcome(
                    405, [Issue("not-supported", "method not allowed")], headers={"Allow": ", ".join(READ_METHODS)}
                )(scope, receive, guarded_send)
                return
            responders = self.responders
            if responders is not None and (shl_route := responders.route_of(route)) is not None:
                scope["route"] = shl_route  # for the access log line: the template, never the id
                await responders(scope, receive, guarded_send)
                return
            if _is_fhir(route) and route not in PUBLIC_FHIR:
                # Only the header's shape here; the token itself is resolved in the request's own
                # unit of work (`_unit`): one thread hop and one session per request, not two.
                presented = _bearer_value(Headers(scope=scope))
                if presented is None:
                    await unauthorised()(scope, receive, guarded_send)
                    return
                scope[BEARER_KEY] = presented
            await super().__call__(scope, receive, guarded_send)
        except Exception as exc:  # noqa: BLE001 - last line of defence, see the class docstring
            log.error("unhandled error: %s", exc.__class__.__name__)
            if "status" not in sent:
                await outcome(500, [Issue("exception", "internal error; see the server log")])(
                    scope, receive, guarded_send
                )
        finally:
            log.info(
                "%s %s %s %.1fms",
                scope.get("method", "?"),
                _loggable_path(scope),
                sent.get("status", 0),
                (time.perf_counter() - start) * 1000,
            )


def _is_fhir(route: str) -> bool:
    lowered = route.lower()
    return lowered == "/fhir" or lowered.startswith("/fhir/")


def _route_path(scope: Scope) -> str:
    """The path the router matches: Starlette's own computation (a look-alike differed for a
    root_path that is a prefix of "/fhir", such as "/fh", and let /fhir through untokened)."""
    return get_route_path(scope)


def _loggable_path(scope: Scope) -> str:
    """The route template with only the resource type filled in: never a query string (it can carry
    names or birth dates) and never an id (a client may choose an MRN as an id)."""
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str):
        return "(no route)"
    rtype = scope.get("path_params", {}).get("rtype")
    if isinstance(rtype, str) and is_resource_type(rtype):
        template = template.replace("{rtype}", rtype)
    return template


class Unauthorised(MedvaultError):
    """No live token behind the request's bearer value (unknown, expired, revoked, or its account
    disabled): 401 with a `WWW-Authenticate` challenge."""

    code = "login"


def unauthorised() -> FhirResponse:
    return outcome(
        401,
        [Issue("login", "missing, expired or revoked bearer token")],
        headers={"WWW-Authenticate": 'Bearer realm="medvault", error="invalid_token"'},
    )


def _bearer_value(headers: Headers) -> str | None:
    """The value of an `Authorization: Bearer` header, or None. It is looked up by its hash (the
    token table keeps only hashes), so no comparison of secrets happens anywhere."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > 256:
        return None
    return value


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MedvaultError)
    async def _domain(_request: Request, exc: MedvaultError) -> Response:
        if isinstance(exc, Unauthorised):
            return unauthorised()
        issues = exc.issues if isinstance(exc, InvalidResource) else [Issue(exc.code, exc.message, exc.location)]
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc.__class__.__name__)
        return outcome(status, issues)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        # The router's own headers stay: a 405 must say which methods the resource does take (Allow,
        # RFC 9110 15.5.6).
        return outcome(exc.status_code, [Issue(code, str(exc.detail)[:200])], headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue(
                "invalid",
                str(e.get("msg", "invalid request"))[:200],
                ".".join(str(x) for x in e.get("loc", ())),
            )
            for e in exc.errors()
        ]
        return outcome(400, issues)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Never a traceback or an exception message to the client (it may quote data).
        log.error("unexpected error: %s", exc.__class__.__name__)
        return outcome(500, [Issue("exception", "internal error; see the server log")])


def _unit(request: Request) -> contextlib.AbstractContextManager[Vault]:
    """Unit of work per request: resolve the bearer token in it, commit when the handler returns,
    roll back on any error."""
    state: AppState = request.app.state.medvault
    presented = request.scope.get(BEARER_KEY)
    if not isinstance(presented, str):
        raise guard.NoCaller("internal error: a /fhir request without a bearer token was refused")
    address = request.client.host if request.client else None
    audited = not state.settings.unsafe_disable_audit
    rate = state.settings.alert_patients_per_hour

    def caller_for(session: Session) -> Caller:
        now = smart_tokens.utcnow()
        bearer = smart_tokens.resolve_bearer(session=session, crypto=state.crypto, token=presented, now=now)
        if bearer is None:
            raise Unauthorised("missing, expired or revoked bearer token")
        if bearer.stale:
            smart_tokens.touch(session=session, token_id=bearer.token_id, now=now)  # "last used", once a minute
        if bearer.actor is None:
            # An operator token (system/*.cruds, issued by the CLI): the operator caller.
            return Caller(actor=None, via="api", address=address, audited=audited, alert_patients_per_hour=rate)
        return Caller(
            actor=bearer.actor,
            via="smart",
            address=address,
            client_id=bearer.client_id,
            audited=audited,
            alert_patients_per_hour=rate,
            scopes=bearer.scopes,
            launch_patient=bearer.patient,
        )

    # Every request writes its access-log entry, reads included, so every unit of work is a
    # writer (SQLite: BEGIN IMMEDIATE; a deferred reader could not upgrade to write later).
    return guard.unit_of_work(state.factory, state.crypto, caller_for)


H = TypeVar("H", bound=Callable[..., Any])


def with_vault(fn: H) -> H:
    """Run a handler inside its unit of work, passed as `v`. A decorator rather than a `yield`
    dependency: FastAPI runs a sync generator dependency's enter and exit in two extra thread
    hops; here opening, the work and the commit share the handler's one hop."""
    sig = inspect.signature(fn)
    params = [p for name, p in sig.parameters.items() if name != "v"]
    if "request" not in sig.parameters:
        params.insert(0, inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request))
    wants_request = "request" in sig.parameters

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(request: Request, **kwargs: Any) -> Any:
            if wants_request:
                kwargs["request"] = request
            with _unit(request) as v:
                return await fn(v=v, **kwargs)

        run_async.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(request: Request, **kwargs: Any) -> Any:
        if wants_request:
            kwargs["request"] = request
        with _unit(request) as v:
            return fn(v=v, **kwargs)

    run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


async def capped_body(request: Request) -> bytes:
    """The body, read only up to the FHIR size limit: `request.body()` would buffer whatever a
    token holder sends before the limit could be looked at."""
    raw = await read_capped(request, fhir_parse.MAX_BODY_BYTES)
    if raw is None:
        raise InvalidResource([Issue("too-costly", f"body larger than {fhir_parse.MAX_BODY_BYTES} bytes")])
    return raw


def _install_routes(app: FastAPI, state: AppState) -> None:

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/fhir"

    async def body(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            raise UnsupportedMediaType("Content-Type must be application/fhir+json")
        return fhir_parse.parse_json(await capped_body(request))

    def strict(request: Request) -> bool:
        return "handling=lenient" not in request.headers.get("prefer", "")

    def headers_for(doc: dict[str, Any]) -> dict[str, str]:
        meta = doc.get("meta", {})
        headers = {"ETag": f'W/"{meta.get("versionId", "")}"'}
        try:
            # HTTP wants an IMF-fixdate (RFC 9110 5.6.7), not the FHIR instant.
            modified = datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00"))
            headers["Last-Modified"] = format_datetime(modified.astimezone(UTC), usegmt=True)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        return headers

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/fhir/metadata")
    def metadata(request: Request) -> FhirResponse:
        return FhirResponse(capability_statement(base(request), root=smart_api.root_url(request)))

    @app.post("/fhir")
    @with_vault
    async def system(request: Request, v: Vault) -> FhirResponse:
        doc = await body(request)
        if doc.get("resourceType") != "Bundle":
            raise InvalidResource([Issue("invalid", "POST /fhir takes a transaction or batch Bundle", "resourceType")])
        fhir_parse.check_resource_type(doc)
        return FhirResponse(record_bundles.process(vault=v, bundle=doc, base=base(request)))

    @app.get("/fhir/Patient/{rid}/$everything")
    @with_vault
    def everything(request: Request, rid: str, v: Vault) -> FhirResponse:
        docs = records.everything(vault=v, patient_id=rid)
        b = base(request)
        return FhirResponse(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(docs),
                "entry": [{"fullUrl": f"{b}/{d['resourceType']}/{d['id']}", "resource": d} for d in docs],
            }
        )

    @app.get("/fhir/AuditEvent")
    @with_vault
    def access_log(
        request: Request, v: Vault, patient: str = "", _count: int = 50, _before: int | None = None
    ) -> FhirResponse:
        # "Who accessed my record": the access log is not stored as AuditEvent resources but in the
        # Merkle log; this search reads it, for the patient themself only.
        unknown = {k for k in request.query_params if k not in ("patient", "_count", "_before", "_format")}
        if unknown or not patient:
            raise UnsupportedSearch("AuditEvent search takes patient (required) and _count only")
        if _before is not None and not 0 < _before <= MAX_SEQ:
            raise BadRequest("_before is a cursor from a next link")
        patient_id = patient.removeprefix("Patient/")
        events, cursor = records.access_log(vault=v, patient_id=patient_id, count=_count, before=_before)
        b = base(request)
        links = [{"relation": "self", "url": f"{b}/AuditEvent?patient={patient_id}&_count={_count}"}]
        if cursor is not None:
            links.append(
                {"relation": "next", "url": f"{b}/AuditEvent?patient={patient_id}&_count={_count}&_before={cursor}"}
            )
        return FhirResponse(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "link": links,
                "entry": [
                    {"fullUrl": f"{b}/AuditEvent/{e['id']}", "resource": e, "search": {"mode": "match"}} for e in events
                ],
            }
        )

    @app.get("/fhir/{rtype}/_history")
    @with_vault
    def type_history(request: Request, rtype: str, v: Vault, _count: int = 50, _offset: int = 0) -> FhirResponse:
        return _history_bundle(request, v, rtype, None, _count, _offset)

    @app.get("/fhir/{rtype}/{rid}/_history")
    @with_vault
    def instance_history(
        request: Request, rtype: str, rid: str, v: Vault, _count: int = 50, _offset: int = 0
    ) -> FhirResponse:
        return _history_bundle(request, v, rtype, rid, _count, _offset)

    def _history_bundle(
        request: Request, v: Vault, rtype: str, rid: str | None, count: int, offset: int
    ) -> FhirResponse:
        # Bounded offset: a huge one overflows the database's integer (a 500 on both backends).
        if not 0 <= count <= 1000 or not 0 <= offset <= MAX_OFFSET:
            raise BadRequest("_count must be 0..1000 and _offset 0..1000000000")
        # _since, _at, _list... are not implemented: refuse them rather than answer as if applied.
        unknown = {k for k in request.query_params if k not in ("_count", "_offset", "_format", "_pretty")}
        if unknown and strict(request):
            raise UnsupportedSearch("history supports _count and _offset only")
        total, entries = records.history(vault=v, rtype=rtype, rid=rid, count=count, offset=offset)
        b = base(request)
        out = []
        for e in entries:
            item: dict[str, Any] = {
                "fullUrl": f"{b}/{e.rtype}/{e.rid}",
                "request": {
                    "method": e.method,
                    "url": e.rtype if e.method == "POST" else f"{e.rtype}/{e.rid}",
                },
                "response": {
                    "status": "410 Gone" if e.resource is None else "200 OK",
                    "etag": f'W/"{e.version}"',
                    "lastModified": iso(e.last_updated),
                },
            }
            if e.resource is not None:
                item["resource"] = e.resource
            out.append(item)
        links = []
        if count and offset + count < total:  # with _count=0 a next link would never advance
            path = f"{b}/{rtype}" + (f"/{rid}" if rid else "") + "/_history"
            links.append({"relation": "next", "url": f"{path}?_count={count}&_offset={offset + count}"})
        return FhirResponse({"resourceType": "Bundle", "type": "history", "total": total, "link": links, "entry": out})

    @app.get("/fhir/{rtype}/{rid}/_history/{vid}")
    @with_vault
    def vread(rtype: str, rid: str, vid: str, v: Vault) -> FhirResponse:
        # ASCII digits only ("²".isdigit() is True but int() rejects it) and within the column's range.
        # Length first: int() of a 5,000-digit string raises (CPython's digit limit), a 500.
        if not (vid.isascii() and vid.isdigit() and len(vid) <= 10) or int(vid) > MAX_VERSION:
            raise NotFound("version ids are whole numbers")
        doc = records.vread(vault=v, rtype=rtype, rid=rid, version=int(vid))
        return FhirResponse(doc, headers=headers_for(doc))

    @app.get("/fhir/{rtype}/{rid}")
    @with_vault
    def read(rtype: str, rid: str, v: Vault) -> FhirResponse:
        doc = records.read(vault=v, rtype=rtype, rid=rid)
        return FhirResponse(doc, headers=headers_for(doc))

    def _search(request: Request, rtype: str, v: Vault, params: list[tuple[str, str]]) -> FhirResponse:
        result = records.search(vault=v, rtype=rtype, params=params, strict=strict(request))
        return FhirResponse(
            fb.searchset(
                base=base(request),
                rtype=rtype,
                resources=result.resources,
                total=result.total,
                used=result.used,
                offset=result.offset,
                count=result.count,
            )
        )

    @app.get("/fhir/{rtype}")
    @with_vault
    def search_get(request: Request, rtype: str, v: Vault) -> FhirResponse:
        return _search(request, rtype, v, list(request.query_params.multi_items()))

    @app.post("/fhir/{rtype}/_search")
    @with_vault
    async def search_post(request: Request, rtype: str, v: Vault) -> FhirResponse:
        # Parsed here: Starlette's request.form() needs python-multipart (not a dependency) and
        # failed with a 500 without it. R4 only defines application/x-www-form-urlencoded here.
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await capped_body(request)
        if raw and ctype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
        try:
            form = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest("form body is not UTF-8") from None
        return _search(request, rtype, v, form + list(request.query_params.multi_items()))

    @app.post("/fhir/{rtype}")
    @with_vault
    async def create(request: Request, rtype: str, v: Vault) -> FhirResponse:
        doc = await body(request)
        if not is_resource_type(rtype):
            raise NotFound("unknown resource type")  # never echo the input
        if_none_exist = request.headers.get("if-none-exist")
        if if_none_exist:
            fhir_parse.validate(doc)
            if doc["resourceType"] != rtype:  # else a match of the URL's type would answer 200
                raise InvalidResource([Issue("invalid", "resourceType does not match the URL", "resourceType")])
            existing = record_bundles._resolve_conditional(v, rtype, if_none_exist)
            if existing is not None:
                found = records.read(vault=v, rtype=rtype, rid=existing)
                return FhirResponse(found, status_code=200, headers=headers_for(found))
        written = records.create(vault=v, resource=doc, rtype=rtype)
        assert written.resource is not None
        headers = headers_for(written.resource)
        headers["Location"] = f"{base(request)}/{rtype}/{written.rid}/_history/{written.version}"
        return FhirResponse(written.resource, status_code=201, headers=headers)

    def not_an_instance(rid: str) -> None:
        """/fhir/{rtype}/_history and /_search are operations, not resource ids (an id has no "_"):
        another method on them is a 405 naming the methods they take, before any body is read."""
        allow = {"_history": "GET, HEAD", "_search": "POST"}.get(rid)
        if allow is not None:
            raise StarletteHTTPException(405, "method not allowed", headers={"Allow": allow})

    @app.put("/fhir/{rtype}/{rid}")
    @with_vault
    async def update(request: Request, rtype: str, rid: str, v: Vault) -> FhirResponse:
        not_an_instance(rid)
        doc = await body(request)
        if_match = records.parse_if_match(request.headers.get("if-match"))
        written = records.update(vault=v, rtype=rtype, rid=rid, resource=doc, if_match=if_match)
        assert written.resource is not None
        headers = headers_for(written.resource)
        if written.created:
            headers["Location"] = f"{base(request)}/{rtype}/{rid}/_history/{written.version}"
        return FhirResponse(written.resource, status_code=201 if written.created else 200, headers=headers)

    @app.delete("/fhir/{rtype}")
    @with_vault
    def conditional_delete(request: Request, rtype: str, v: Vault) -> Response:
        # Conditional delete (single match), as the CapabilityStatement announces.
        params = list(request.query_params.multi_items())
        if not is_resource_type(rtype):
            raise NotFound("unknown resource type")
        if not params:
            raise BadRequest("conditional delete needs search parameters")
        found = records.search(vault=v, rtype=rtype, params=params)
        if found.total > 1:
            raise PreconditionFailed("conditional delete matched more than one resource")
        if not found.resources:
            return Response(status_code=204)
        version = records.delete(vault=v, rtype=rtype, rid=found.resources[0]["id"])
        return Response(status_code=204, headers={"ETag": f'W/"{version}"'} if version else {})

    @app.delete("/fhir/{rtype}/{rid}")
    @with_vault
    def delete(rtype: str, rid: str, v: Vault) -> Response:
        not_an_instance(rid)
        version = records.delete(vault=v, rtype=rtype, rid=rid)
        headers = {"ETag": f'W/"{version}"'} if version else {}
        return Response(status_code=204, headers=headers)
