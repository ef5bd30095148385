"""SMART endpoints that apps call directly (JSON, no page session): discovery, token, revocation,
JWKS. The authorization page is a web page (web/apps.py). Thin: the OAuth2 logic is in
medvault.smart.server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from medvault.bodies import BodyRefused, read_form
from medvault.db import unit_of_work
from medvault.smart import tokens
from medvault.smart.idtoken import IdTokenSigner
from medvault.smart.server import HttpRequest, OAuthResponse, SmartServer
from medvault.store.crypto_context import CryptoContext

MAX_FORM = 16 * 1024
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "launch/patient",
    "offline_access",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
]
CAPABILITIES = [
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "context-standalone-patient",
    "permission-v2",
    "permission-v1",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "sso-openid-connect",
]


@dataclass
class SmartDeps:
    factory: sessionmaker[Session]
    crypto: CryptoContext
    signer: IdTokenSigner


def root_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def fhir_base(request: Request) -> str:
    return root_url(request) + "/fhir"


def smart_configuration(root: str) -> dict[str, Any]:
    return {
        "issuer": root + "/fhir",
        "jwks_uri": root + "/oauth/jwks",
        "authorization_endpoint": root + "/oauth/authorize",
        "token_endpoint": root + "/oauth/token",
        "revocation_endpoint": root + "/oauth/revoke",
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": SCOPES_SUPPORTED,
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def json_response(result: OAuthResponse) -> JSONResponse:
    headers = {k: v for k, v in result.headers if k.lower() != "content-type"}
    return JSONResponse(result.body, status_code=result.status, headers=headers)


async def form_pairs(request: Request) -> list[tuple[str, str]] | None:
    """The urlencoded body (RFC 6749 requires that format), or None when it is not one."""
    try:
        return await read_form(request, MAX_FORM)
    except BodyRefused:
        return None


def install(app: FastAPI, deps: SmartDeps) -> None:
    def run(request: Request, form: list[tuple[str, str]], call: Callable[[SmartServer, HttpRequest], Any]) -> Any:
        req = HttpRequest("POST", str(request.url), request.headers, (), form)
        with unit_of_work(deps.factory) as session:
            server = SmartServer(
                session=session, crypto=deps.crypto, signer=deps.signer, issuer=fhir_base(request), now=tokens.utcnow()
            )
            # Committed whatever the answer: a detected refresh-token reuse revokes the family and
            # logs it even though the request itself is refused.
            return call(server, req)

    def bad_form() -> JSONResponse:
        return JSONResponse(
            {"error": "invalid_request", "error_description": "send an application/x-www-form-urlencoded body"},
            status_code=400,
        )

    @app.get("/fhir/.well-known/smart-configuration", include_in_schema=False)
    def configuration(request: Request) -> JSONResponse:
        return JSONResponse(smart_configuration(root_url(request)))

    @app.get("/oauth/jwks", include_in_schema=False)
    def jwks() -> JSONResponse:
        return JSONResponse(deps.signer.jwks())

    @app.post("/oauth/token", include_in_schema=False)
    async def token(request: Request) -> JSONResponse:
        form = await form_pairs(request)
        if form is None:
            return bad_form()
        result = await anyio.to_thread.run_sync(
            lambda: run(request, form, lambda server, req: server.create_token_response(req))
        )
        return json_response(result)

    @app.post("/oauth/revoke", include_in_schema=False)
    async def revoke(request: Request) -> JSONResponse:
        form = await form_pairs(request)
        if form is None:
            return bad_form()
        result = await anyio.to_thread.run_sync(
            lambda: run(request, form, lambda server, req: server.create_endpoint_response("revocation", req))
        )
        return json_response(result)
