"""The public SMART Health Links endpoints: manifest, file, direct (`U`) file, and the viewer page.

No bearer token and no session: the link itself is the credential (a 256-bit manifest id, or a
short-lived location token). The handlers are thin: `emergency.links` decides and audits. Every
unavailable link (unknown, paused, revoked, expired, spent) gets the very same 404. The server's
request log holds route templates (`/shl/m/{link_id}`), never the id or token (api/app.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker

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


def install(app: FastAPI, deps: ShlDeps) -> None:
    @app.get("/shl/view", response_class=HTMLResponse, include_in_schema=False)
    def viewer() -> HTMLResponse:
        return HTMLResponse(render_viewer(), headers=VIEWER_HEADERS)

    @app.post("/shl/m/{link_id}", include_in_schema=False)
    async def manifest(request: Request, link_id: str) -> Response:
        # Public and unauthenticated: read at most MAX_BODY bytes, never the whole of what is sent.
        raw = await read_capped(request, MAX_BODY)
        try:
            body = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _json(400, {"error": "invalid", "message": "the body must be a JSON object"})
        address = request.client.host if request.client else None
        root = base_url(request)

        def run() -> Response:
            try:
                out = links.open_manifest(
                    factory=deps.factory,
                    crypto=deps.crypto,
                    hasher=deps.hasher,
                    link_id=link_id,
                    recipient=body.get("recipient"),
                    passcode=body.get("passcode"),
                    embedded_length_max=body.get("embeddedLengthMax"),
                    base_url=root,
                    address=address,
                )
            except links.BadShlRequest as exc:
                return _json(400, {"error": "invalid", "message": str(exc)})
            except ShlPasscodeError as exc:
                return _json(401, {"remainingAttempts": exc.remaining_attempts})
            except ShlUnavailable:
                return _json(404, _GONE)
            return _json(200, out)

        return await anyio.to_thread.run_sync(run)

    @app.get("/shl/m/{link_id}", include_in_schema=False)
    def direct(request: Request, link_id: str, recipient: str | None = None) -> Response:
        try:
            served = links.open_direct(
                factory=deps.factory,
                crypto=deps.crypto,
                link_id=link_id,
                recipient=recipient,
                address=request.client.host if request.client else None,
            )
        except links.BadShlRequest as exc:
            return _json(400, {"error": "invalid", "message": str(exc)})
        except ShlUnavailable:
            return _json(404, _GONE)
        return Response(served.jwe, media_type=JOSE, headers=_NO_STORE)

    @app.get("/shl/f/{token}", include_in_schema=False)
    def file(request: Request, token: str) -> Response:
        try:
            served = links.open_file(
                factory=deps.factory,
                crypto=deps.crypto,
                location_token=token,
                address=request.client.host if request.client else None,
            )
        except ShlUnavailable:
            return _json(404, _GONE)
        return Response(served.jwe, media_type=JOSE, headers=_NO_STORE)
