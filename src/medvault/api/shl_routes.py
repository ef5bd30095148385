"""The public SMART Health Links endpoints: manifest, file, direct (`U`) file, and the viewer page.

No bearer token and no session: the link itself is the credential (a 256-bit manifest id, or a
short-lived location token). The handlers are thin: `emergency.links` decides and audits. Every
unavailable link (unknown, paused, revoked, expired, spent) gets the very same 404. The server's
request log holds route templates (`/shl/m/{link_id}`), never the id or token (api/app.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from medvault.auth.passwords import Hasher, shared_hasher
from medvault.bodies import read_capped
from medvault.emergency import links
from medvault.emergency.errors import ShlPasscodeError, ShlUnavailable
from medvault.store.crypto_context import CryptoContext
from medvault.web.shl_viewer import VIEWER_HEADERS, render_viewer

MAX_BODY = 16 * 1024
JOSE = "application/jose"
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@dataclass
class ShlDeps:
    factory: sessionmaker[Session]
    crypto: CryptoContext

    @property
    def hasher(self) -> Hasher:
        return shared_hasher()  # the sign-in's: one bound on Argon2 for the whole process


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=_NO_STORE)


_GONE = {"error": "not-found", "message": "This link is not available: it may have expired or been revoked."}


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@dataclass(frozen=True)
class _Route:
    """What the access log line shows for a request (api/app.py reads `scope["route"].path`)."""

    path: str


_MANIFEST_ROUTE = _Route("/shl/m/{link_id}")
_FILE_ROUTE = _Route("/shl/f/{token}")
_SEGMENT = re.compile(r"[^/]{1,256}")


class Responders:
    """The three responder endpoints (manifest, file, direct `U` file) as one bare ASGI app.

    A paramedic's phone hits these on every scan, 20 responders at once in the benchmark, with a
    50 ms p95 budget. Through FastAPI's routing, dependency and middleware layers each request
    cost about as much again as its database work, so MedvaultApp hands these paths straight
    here (after its own guard: security headers, the error net and the access log still apply).
    Each handler reads at most MAX_BODY bytes, answers JSON or JOSE, and leaves every decision
    and every audit entry to `emergency.links`."""

    def __init__(self, deps: ShlDeps) -> None:
        self.deps = deps

    def route_of(self, path: str) -> _Route | None:
        if path.startswith("/shl/m/") and _SEGMENT.fullmatch(path[7:]):
            return _MANIFEST_ROUTE
        if path.startswith("/shl/f/") and _SEGMENT.fullmatch(path[7:]):
            return _FILE_ROUTE
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["route"]
        method = scope["method"]
        request = Request(scope, receive)
        param = request.url.path.rsplit("/", 1)[1]
        address = request.client.host if request.client else None
        response: Response
        if route is _MANIFEST_ROUTE and method == "POST":
            response = await self._manifest(request, param, address)
        elif route is _MANIFEST_ROUTE and method == "GET":
            recipient = request.query_params.get("recipient")
            response = await self._direct(param, recipient, address)
        elif route is _FILE_ROUTE and method == "GET":
            response = await self._file(param, address)
        else:
            allow = "GET, POST" if route is _MANIFEST_ROUTE else "GET"
            response = _json(405, {"error": "not-supported", "message": "method not allowed"})
            response.headers["Allow"] = allow
        await response(scope, receive, send)

    async def _manifest(self, request: Request, link_id: str, address: str | None) -> Response:
        # Public and unauthenticated: read at most MAX_BODY bytes, never the whole of what is sent.
        raw = await read_capped(request, MAX_BODY)
        try:
            body = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _json(400, {"error": "invalid", "message": "the body must be a JSON object"})
        root = base_url(request)
        deps = self.deps
        # On the event loop: the database work waits for its group (SQLite) or runs on a worker
        # thread (PostgreSQL), and a passcode's Argon2 on a worker thread (emergency/links.py).
        try:
            flow = links.manifest_flow(
                crypto=deps.crypto,
                link_id=link_id,
                recipient=body.get("recipient"),
                passcode=body.get("passcode"),
                embedded_length_max=body.get("embeddedLengthMax"),
                base_url=root,
                address=address,
            )
            out = await links.run_async(deps.factory, deps.hasher, flow)
        except links.BadShlRequest as exc:
            return _json(400, {"error": "invalid", "message": str(exc)})
        except ShlPasscodeError as exc:
            return _json(401, {"remainingAttempts": exc.remaining_attempts})
        except ShlUnavailable:
            return _json(404, _GONE)
        return _json(200, out)

    async def _direct(self, link_id: str, recipient: str | None, address: str | None) -> Response:
        try:
            flow = links.direct_flow(crypto=self.deps.crypto, link_id=link_id, recipient=recipient, address=address)
            served = await links.run_async(self.deps.factory, None, flow)
        except links.BadShlRequest as exc:
            return _json(400, {"error": "invalid", "message": str(exc)})
        except ShlUnavailable:
            return _json(404, _GONE)
        return Response(served.jwe, media_type=JOSE, headers=_NO_STORE)

    async def _file(self, token: str, address: str | None) -> Response:
        try:
            flow = links.file_flow(crypto=self.deps.crypto, location_token=token, address=address)
            served = await links.run_async(self.deps.factory, None, flow)
        except ShlUnavailable:
            return _json(404, _GONE)
        return Response(served.jwe, media_type=JOSE, headers=_NO_STORE)


def install(app: FastAPI, deps: ShlDeps) -> Responders:
    """The viewer page as a FastAPI route; the responder endpoints as the returned bare ASGI app,
    which MedvaultApp dispatches to for paths its `route_of` recognises."""

    @app.get("/shl/view", response_class=HTMLResponse, include_in_schema=False)
    def viewer() -> HTMLResponse:
        return HTMLResponse(render_viewer(), headers=VIEWER_HEADERS)

    return Responders(deps)
