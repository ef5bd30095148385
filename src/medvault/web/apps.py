"""SMART pages: the approval page an app sends a person to (`/oauth/authorize`), and "my apps"
(`/me/apps`: the apps this account authorised, with revoke). A face: OAuth2 in
medvault.smart.server, storage in medvault.smart.tokens, sessions and CSRF from web/pages.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from medvault.auth import sessions
from medvault.db import unit_of_work
from medvault.fhir.types import is_fhir_id
from medvault.records import guard, service
from medvault.records.errors import NotFound
from medvault.smart import scopes as sc
from medvault.smart import tokens
from medvault.smart.server import Approval, HttpRequest, OAuthResponse, SmartServer
from medvault.web import pages

if TYPE_CHECKING:
    from medvault.auth.accounts import Actor

_CONTROL = ("csrf", "decision", "patient")  # the approval form's own fields; the rest is the request


@dataclass(frozen=True)
class _Choice:
    id: str
    name: str


def _patient_name(doc: dict[str, Any]) -> str:
    for name in doc.get("name") or []:
        text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
        if text:
            return str(text)
    return f"Patient {doc.get('id')}"


def _granting_patients(deps: pages.PageDeps, actor: Actor, address: str | None) -> list[_Choice]:
    """The patients whose grant to this clinician is in force now, read as the clinician. Through
    the keyed grantee search (`service.granting`): a search of every Consent would judge, and log
    as a refused search by this clinician, every other patient's grants on each page load."""
    caller = guard.Caller(actor=actor, via="page", address=address)
    now = datetime.now(UTC)
    with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
        ids = sorted(service.granting(vault=vault, now=now))
        choices = []
        for pid in ids:
            try:
                name = _patient_name(service.read(vault=vault, rtype="Patient", rid=pid))
            except (NotFound, guard.Refused):
                name = f"Patient {pid}"
            choices.append(_Choice(pid, name))
    return choices


def _redirect(result: OAuthResponse) -> Response:
    location = result.location
    if result.status in (301, 302, 303) and location:
        return RedirectResponse(location, status_code=303)
    return pages.page("base.html", status=400, live=None, message="This sign-in request from an app is not valid.")


def _error(error: OAuth2Error) -> Response:
    """An error after the client and redirect URI were checked goes back to the app; before that
    (unknown app, redirect URI not registered) it stays here: never redirect to an unchecked URL."""
    if error.redirect_uri:
        status, _body, headers = error()
        return _redirect(OAuthResponse(int(status), "", [(str(k), str(v)) for k, v in headers]))
    # The error code only: Authlib's descriptions can quote the request (a redirect URI).
    message = f"This app's sign-in request is not valid ({error.error}); nothing was shared with it."
    return pages.page("base.html", status=400, live=None, message=message)


def build_router(deps: pages.PageDeps) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def server_for(session: Any, request: Request) -> SmartServer:
        base = str(request.base_url).rstrip("/") + "/fhir"
        return SmartServer(session=session, crypto=deps.crypto, signer=None, issuer=base, now=datetime.now(UTC))

    def address(request: Request) -> str | None:
        return request.client.host if request.client else None

    def consent(
        request: Request, live: sessions.Live, params: list[tuple[str, str]], form: dict[str, str] | None
    ) -> Response:
        """Validate the app's request; with no `form`, show the approval page, else act on it."""
        actor = live.actor
        req = HttpRequest(request.method, str(request.url), request.headers, params)
        with unit_of_work(deps.factory) as session:
            server = server_for(session, request)
            try:
                grant = server.get_consent_grant(req, end_user=actor)
                data = grant.request.payload.data
                aud = data.get("aud")
                if not aud or aud.rstrip("/") != server.issuer:
                    # SMART 2.0 requires aud: the app names the FHIR server it means to use the token
                    # with, so a token meant for a counterfeit server is never issued. Missing = wrong.
                    raise InvalidRequestError("'aud' is not this FHIR server", redirect_uri=grant.redirect_uri)
                if not data.get("state"):
                    # SMART App Launch 2.0 requires it: the app's defence against a forged callback.
                    raise InvalidRequestError("'state' is required", redirect_uri=grant.redirect_uri)
            except OAuth2Error as error:
                error.state = error.state or dict(params).get("state")
                return _error(error)
            scopes = sc.parse(grant.request.scope)
            client = grant.client
            needs_patient = scopes.launch_patient or "patient" in scopes.levels
            choices: list[_Choice] = []
            patient = actor.patient_id if actor.role == "patient" else None
        if needs_patient and actor.role == "clinician":
            choices = _granting_patients(deps, actor, address(request))
        if form is None:
            target = urlsplit(grant.redirect_uri)
            response = pages.page(
                "authorize.html",
                live=live,
                app=client.info.name,
                # Where the code goes (the registered redirect URI's host): a name alone can be anyone's.
                destination=target.hostname or target.netloc,
                items=_describe(scopes, own=actor.role == "patient"),
                params=params,
                choose=needs_patient and actor.role == "clinician",
                choices=choices,
                own=actor.role == "patient",
                no_patients=needs_patient and actor.role == "clinician" and not choices,
            )
            # The approval form redirects to the app: let the form's redirect reach its origin.
            response.headers["Content-Security-Policy"] = pages.CSP.replace(
                "form-action 'self'", f"form-action 'self' {target.scheme}://{target.netloc}"
            )
            return response
        approve = form.get("decision") == "approve"
        if approve and actor.role == "clinician" and needs_patient:
            chosen = form.get("patient", "")
            if not is_fhir_id(chosen) or chosen not in {c.id for c in choices}:
                raise pages.PageRefused(400, "Choose one of the patients who shared their record with you.")
            patient = chosen
        with unit_of_work(deps.factory) as session:
            server = server_for(session, request)
            try:
                grant = server.get_consent_grant(req, end_user=actor)
            except OAuth2Error as error:
                return _error(error)
            approval = Approval(actor=actor, patient=patient, granted=server.now) if approve else None
            tokens.audit(
                session=session,
                crypto=deps.crypto,
                actor=actor,
                client_id=client.client_id,
                what="approve" if approve else "deny",
                patient_id=patient,
                ok=approve,
            )
            result = server.create_authorization_response(grant.request, grant_user=approval, grant=grant)
        return _redirect(result)

    @router.get("/oauth/authorize")
    def authorize(request: Request) -> Response:
        try:
            live, _token = pages.require_session(deps, request)
        except pages.SignInRequired:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?next=" + quote(here, safe=""), status_code=303)
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in _CONTROL]
        return consent(request, live, params, None)

    @router.post("/oauth/authorize")
    async def decide(request: Request) -> Response:
        pairs = await pages._form_pairs(request)
        form = dict(pairs)

        def work() -> Response:
            live, token = pages.require_session(deps, request)
            pages.check_form(deps, request, form, token)
            params = [(k, v) for k, v in pairs if k not in _CONTROL]
            return consent(request, live, params, form)

        return await anyio.to_thread.run_sync(work)

    @router.get("/me/apps")
    def my_apps(request: Request) -> HTMLResponse:
        live, _ = pages.require_session(deps, request)
        with unit_of_work(deps.factory) as session:
            found = tokens.my_apps(
                session=session, crypto=deps.crypto, account_id=live.actor.account_id, now=datetime.now(UTC)
            )
        rows = [
            {
                "client_id": a.client_id,
                "name": a.name,
                "what": [text for _, text in _describe(sc.parse(a.scope), own=live.actor.role == "patient")],
                "granted": a.granted.strftime("%Y-%m-%d %H:%M"),
                "last_used": a.last_used.strftime("%Y-%m-%d %H:%M") if a.last_used else "not yet",
            }
            for a in found
        ]
        return pages.page("apps.html", live=live, apps=rows)

    @router.post("/me/apps/revoke")
    async def revoke(request: Request) -> Response:
        form = await pages._form(request)

        def work() -> Response:
            live, token = pages.require_session(deps, request)
            pages.check_form(deps, request, form, token)
            client_id = form.get("client", "")[:64]
            with unit_of_work(deps.factory) as session:
                tokens.revoke_app(
                    session=session, crypto=deps.crypto, actor=live.actor, client_id=client_id, now=datetime.now(UTC)
                )
            return RedirectResponse("/me/apps", status_code=303)

        return await anyio.to_thread.run_sync(work)

    return router


def _describe(scopes: sc.Scopes, *, own: bool) -> list[tuple[str, str]]:
    """(scope, plain words) for each scope the app asks for."""
    items = [(r.text, sc.describe(r, own=own)) for r in scopes.resources]
    seen: set[str] = set()
    for word in sorted(scopes.context):
        text = sc.CONTEXT_WORDS[word]
        if text not in seen:
            seen.add(text)
            items.append((word, text))
    return items


def install(app: Any, deps: pages.PageDeps) -> None:
    app.include_router(build_router(deps))
