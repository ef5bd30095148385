"""Web pages: sign-in (password and, once set up, a one-time or recovery code), sign-out, and the
patient's "who accessed my record". Server-rendered Jinja2 with no script at all, under a strict
Content-Security-Policy; the session is an HttpOnly, Secure, SameSite=Strict `__Host-` cookie whose
value is stored only as a hash (auth/sessions.py); state-changing forms carry a CSRF token and
must come from our own origin.

The pages are a face: they call the auth and audit services and never touch tables or keys.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import segno
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session, sessionmaker

from medvault.access.consent import Grant, consent_resource, grant_from_consent, revoked
from medvault.audit import alerts
from medvault.audit import log as audit_log
from medvault.auth import accounts, sessions
from medvault.auth.errors import PasswordRejected, TotpRejected
from medvault.auth.passwords import Hasher, shared_hasher
from medvault.bodies import BodyRefused, read_form
from medvault.db import unit_of_work
from medvault.fhir.types import is_fhir_id
from medvault.records import guard, service
from medvault.records.errors import NotFound
from medvault.smart import tokens
from medvault.store.crypto_context import CryptoContext

COOKIE = "__Host-medvault"
# No script, no frames, no third-party anything; forms post only to us.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with our own form
# POSTs, which the same-origin check must refuse. Other sites still get no Referer (our URLs hold
# record ids) and a null Origin.
_PAGE_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}
_MAX_FORM = 16 * 1024
_templates = Environment(
    loader=PackageLoader("medvault.web", "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
)


class SignInRequired(Exception):
    """No live, fully signed-in session: the face answers with a redirect to the sign-in page."""


class PageRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class PageDeps:
    factory: sessionmaker[Session]
    crypto: CryptoContext

    @property
    def hasher(self) -> Hasher:
        return shared_hasher()


def page(name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def _set_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(sessions.ABSOLUTE.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def throttle_address(host: str) -> str:
    """The key sign-in throttling counts per address: an IPv6 client usually holds a whole /64,
    so it is counted per /64 (per /128 it could spray guesses from 2**64 addresses)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _same_origin(request: Request, *, required: bool = False) -> bool:
    """A state-changing POST must come from our own pages (SameSite cookies are the first line).

    `required`: a missing Origin and Referer is refused too. Sign-in needs it: it has no session
    and so no CSRF token behind it (login CSRF signs a victim into the attacker's account), and
    every browser sends Origin on a form POST. Signed-in forms also carry the session's CSRF token,
    which a client that sends neither header must present."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return not required and not origin
    return same_host(request, origin)


def same_host(request: Request, url: str) -> bool:
    """`url` (an Origin or Referer) names the host this request was sent to. Host only, not
    scheme: behind a TLS-terminating proxy the app itself may see http."""
    return urlsplit(url).netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    """The form's fields (the last value of a repeated name; see `_form_pairs` for all)."""
    return dict(await _form_pairs(request))


async def _form_pairs(request: Request) -> list[tuple[str, str]]:
    try:
        return await read_form(request, _MAX_FORM)
    except BodyRefused as refused:
        raise PageRefused(refused.status, refused.message) from None


def require_session(deps: PageDeps, request: Request, *, enrolling: bool = False) -> tuple[sessions.Live, str]:
    """The live, fully signed-in session of this request (and its cookie value), or SignInRequired."""
    token = request.cookies.get(COOKIE)
    with unit_of_work(deps.factory) as session:
        live = sessions.resume(session=session, crypto=deps.crypto, token=token, now=datetime.now(UTC))
    allowed = ("full", "enrol") if enrolling else ("full",)
    if live is None or live.stage not in allowed or token is None:
        raise SignInRequired
    return live, token


def optional_session(deps: PageDeps, request: Request) -> tuple[sessions.Live, str] | None:
    """The live, fully signed-in session of this request, or None: for pages that signed-out
    visitors may read too (the community's public posts)."""
    try:
        return require_session(deps, request)
    except SignInRequired:
        return None


def check_form(deps: PageDeps, request: Request, form: dict[str, str], token: str) -> None:
    """Every state-changing form of a signed-in page: our own origin and the session's CSRF token."""
    csrf = form.get("csrf")
    if not _same_origin(request) or not sessions.check_csrf(crypto=deps.crypto, token=token, submitted=csrf):
        raise PageRefused(403, "the form has expired; reload the page and try again")


def local_path(target: str | None) -> str | None:
    """`target` when it is a path on this site (for ?next= after sign-in), else None: never another
    host ("//evil.example", "/\\evil.example", "https://..."), never a control character."""
    if not target or len(target) > 4096 or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 0x21 or c == "\\" for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def build_router(deps: PageDeps) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def now() -> datetime:
        return datetime.now(UTC)

    def live_session(request: Request, *, enrolling: bool = False) -> tuple[sessions.Live, str]:
        return require_session(deps, request, enrolling=enrolling)

    def checked_form(request: Request, form: dict[str, str], token: str) -> None:
        check_form(deps, request, form, token)

    @router.get("/login")
    def login_form(request: Request) -> HTMLResponse:
        return page("login.html", login="", message=None, next=local_path(request.query_params.get("next")))

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request, required=True):
            raise PageRefused(403, "cross-site form refused")
        form = await _form(request)
        login_name = form.get("login", "")[:254]
        address = throttle_address(request.client.host if request.client else "unknown")

        password = form.get("password", "")[:1024]
        second_factor = form.get("code", "").strip()[:64] or None

        def look() -> accounts.LoginLookup:
            with unit_of_work(deps.factory) as session:
                return accounts.prepare_login(
                    session=session, crypto=deps.crypto, login=login_name, client_address=address, now=now()
                )

        def finish(check: accounts.PasswordCheck) -> tuple[accounts.LoginResult, str | None]:
            with unit_of_work(deps.factory) as session:
                result = accounts.finish_login(
                    session=session,
                    crypto=deps.crypto,
                    login=login_name,
                    second_factor=second_factor,
                    client_address=address,
                    now=now(),
                    check=check,
                )
                token = None
                if result.status == "ok" and result.actor is not None:
                    # A role that must have a second factor and has none yet gets a session that
                    # can only set one up (NIST AAL2 before any record or admin page).
                    stage: sessions.Stage = "enrol" if result.actor.needs_mfa_enrolment else "full"
                    token = sessions.start(session=session, actor=result.actor, stage=stage, now=now())
                return result, token

        # Three steps, none on the event loop: the database reads and writes in worker threads,
        # Argon2 on the hasher's own bounded pool between them, outside any transaction (a hash
        # inside one would hold SQLite's write lock, which every other request's access-log entry
        # needs). A burst of sign-ins queues on that pool; other requests keep a core and the lock.
        lookup = await anyio.to_thread.run_sync(look)
        if lookup.throttled is not None:
            result, token = lookup.throttled, None
        else:
            hasher = await anyio.to_thread.run_sync(lambda: deps.hasher)  # the first one costs a hash
            check = await hasher.run_async(
                partial(accounts.check_password, hasher=hasher, lookup=lookup, password=password)
            )
            result, token = await anyio.to_thread.run_sync(finish, check)
        if result.status == "ok" and token is not None:
            target = (
                "/me/authenticator"
                if result.actor and result.actor.needs_mfa_enrolment
                else local_path(form.get("next")) or "/"
            )
            response = RedirectResponse(target, status_code=303)
            _set_cookie(response, token)
            return response
        if result.status == "second-factor-needed":
            message, status = "Enter the one-time code from your authenticator app (or a recovery code).", 200
        elif result.status == "throttled":
            wait = "later" if result.retry_after == float("inf") else f"in {int(result.retry_after) + 1} seconds"
            message, status = f"Too many attempts. Try again {wait}, or ask an administrator.", 429
        else:
            message, status = "Sign-in failed: check your login name, password and code.", 401
        return page("login.html", status=status, login=login_name, message=message, next=local_path(form.get("next")))

    @router.get("/me/password")
    def password_form(request: Request) -> HTMLResponse:
        live, _ = live_session(request)
        return page("password.html", live=live, message=None)

    @router.post("/me/password")
    async def change_password(request: Request) -> Response:
        form = await _form(request)
        live, token = await anyio.to_thread.run_sync(lambda: live_session(request))
        checked_form(request, form, token)
        current, new = form.get("current", "")[:1024], form.get("new", "")[:1024]
        if new != form.get("again", ""):
            return page("password.html", status=400, live=live, message="The two new passwords are not the same.")

        def change() -> str | None:
            # Unlike sign-in, the two hashes run inside the transaction (the throttle rows and the
            # account stay locked between the check and the change): a rare, signed-in action, whose
            # hold on SQLite's write lock is the price of never checking against a stale password.
            now = datetime.now(UTC)
            with unit_of_work(deps.factory) as session:
                try:
                    accounts.change_password(
                        session=session,
                        crypto=deps.crypto,
                        hasher=deps.hasher,
                        account_id=live.actor.account_id,
                        current=current,
                        new=new,
                        client_address=throttle_address(request.client.host if request.client else "unknown"),
                        now=now,
                    )
                except accounts.WrongPassword as exc:
                    return exc.message  # committed: the wrong guess counts towards the throttle
                # Every session ended with the change (the account's epoch moved); the apps this
                # account allowed end too: a password change is how a person answers a stolen one.
                tokens.revoke_account(session=session, crypto=deps.crypto, account_id=live.actor.account_id, now=now)
            return None

        try:
            problem = await anyio.to_thread.run_sync(change)
        except accounts.PasswordChangeThrottled:
            return page("password.html", status=429, live=live, message="Too many attempts. Try again later.")
        except PasswordRejected as exc:
            return page("password.html", status=400, live=live, message=exc.message)
        if problem is not None:
            return page("password.html", status=400, live=live, message="The current password is not right.")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = await _form(request)

        def end() -> None:
            _live, token = live_session(request)
            checked_form(request, form, token)
            with unit_of_work(deps.factory) as session:
                # Signing out ends every session of the account (a forgotten tab elsewhere too).
                sessions.end_all(session=session, account_id=_live.actor.account_id)

        await anyio.to_thread.run_sync(end)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def authenticator_page(live: sessions.Live, *, message: str | None = None, status: int = 200) -> HTMLResponse:
        if live.actor.mfa_enrolled:
            return page("authenticator.html", live=live, enrolled=True, codes=None, message=message)
        with unit_of_work(deps.factory) as session:
            secret, uri = accounts.begin_totp(
                session=session, crypto=deps.crypto, account_id=live.actor.account_id, keep_pending=True
            )
        qr = segno.make(uri, error="m").svg_data_uri(scale=4)
        return page(
            "authenticator.html",
            status=status,
            live=live,
            enrolled=False,
            codes=None,
            qr=qr,
            secret=secret,
            message=message,
        )

    @router.get("/me/authenticator")
    def authenticator(request: Request) -> HTMLResponse:
        live, _ = live_session(request, enrolling=True)
        return authenticator_page(live)

    @router.post("/me/authenticator")
    async def confirm_authenticator(request: Request) -> Response:
        form = await _form(request)

        def confirm() -> Response:
            live, token = live_session(request, enrolling=True)
            checked_form(request, form, token)
            if live.actor.mfa_enrolled:
                return authenticator_page(live)
            try:
                with unit_of_work(deps.factory) as session:
                    codes = accounts.confirm_totp(
                        session=session,
                        crypto=deps.crypto,
                        account_id=live.actor.account_id,
                        code=form.get("code", "")[:16],
                        now=now(),
                    )
            except TotpRejected:
                return authenticator_page(live, message="That code was not accepted; try the next one.", status=400)
            # Turning a second factor on ends every session of the account, this one included.
            response = page("authenticator.html", live=None, codes=codes, enrolled=True)
            response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
            return response

        return await anyio.to_thread.run_sync(confirm)

    def as_patient(request: Request) -> tuple[sessions.Live, str, str, guard.Caller]:
        live, token = live_session(request)
        if live.actor.role != "patient" or not live.actor.patient_id:
            raise PageRefused(404, "not found")
        caller = guard.Caller(actor=live.actor, via="page", address=request.client.host if request.client else None)
        return live, token, live.actor.patient_id, caller

    def sharing_page(request: Request, *, message: str | None = None, status: int = 200) -> HTMLResponse:
        live, _token, patient_id, caller = as_patient(request)
        with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
            consents = service.search(
                vault=vault, rtype="Consent", params=[("patient", patient_id), ("_count", "200")]
            ).resources
            practitioners = service.search(vault=vault, rtype="Practitioner", params=[("_count", "200")]).resources
        grants = []
        for consent in consents:
            grant = grant_from_consent(consent)
            if grant is None:
                continue
            grants.append(
                {
                    "id": grant.consent_id,
                    "who": _practitioner_name(practitioners, grant.grantee),
                    "what": "whole record"
                    + ("" if not grant.sensitive else " incl. " + ", ".join(sorted(grant.sensitive))),
                    "until": grant.end.date().isoformat() if grant.end else "revoked" if not grant.active else "-",
                    "active": grant.active,
                }
            )
        choices = sorted(
            ({"id": p["id"], "name": _practitioner_name([p], f"Practitioner/{p['id']}")} for p in practitioners),
            key=lambda p: p["name"],
        )
        return page(
            "sharing.html",
            status=status,
            live=live,
            grants=grants,
            practitioners=choices,
            sensitive=SENSITIVE_CHOICES,
            message=message,
        )

    @router.get("/me/sharing")
    def sharing(request: Request) -> HTMLResponse:
        return sharing_page(request)

    @router.post("/me/sharing")
    async def share(request: Request) -> Response:
        pairs = await _form_pairs(request)
        form = dict(pairs)
        tags = frozenset(v for k, v in pairs if k == "sensitive") & {t for t, _ in SENSITIVE_CHOICES}

        def grant() -> Response:
            _live, token, patient_id, caller = as_patient(request)
            checked_form(request, form, token)
            until = form.get("until", "").strip()
            try:
                end = (
                    datetime.fromisoformat(until).replace(hour=23, minute=59, second=59, tzinfo=UTC) if until else None
                )
            except ValueError:
                return sharing_page(request, message="The end date is not a date.", status=400)
            practitioner = form.get("practitioner", "")
            if not is_fhir_id(practitioner):
                return sharing_page(request, message="Choose a clinician.", status=400)
            consent = consent_resource(
                patient_id=patient_id,
                grantee=f"Practitioner/{practitioner}",
                resource_types=None,
                sensitive=frozenset(tags),
                start=None,
                end=end,
                now=now(),
            )
            with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
                service.read(vault=vault, rtype="Practitioner", rid=practitioner)  # must exist
                service.create(vault=vault, resource=consent)
            return RedirectResponse("/me/sharing", status_code=303)

        return await anyio.to_thread.run_sync(grant)

    @router.post("/me/sharing/revoke")
    async def revoke(request: Request) -> Response:
        form = await _form(request)

        def withdraw() -> Response:
            _live, token, _patient_id, caller = as_patient(request)
            checked_form(request, form, token)
            consent_id = form.get("consent", "")
            if not is_fhir_id(consent_id):
                raise PageRefused(404, "not found")
            # The guard decides: a patient may change only Consents in their own compartment.
            with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
                current = service.read(vault=vault, rtype="Consent", rid=consent_id)
                service.update(vault=vault, rtype="Consent", rid=consent_id, resource=revoked(current))
            return RedirectResponse("/me/sharing", status_code=303)

        return await anyio.to_thread.run_sync(withdraw)

    @router.get("/me/record")
    def my_record(request: Request) -> HTMLResponse:
        _live, _token, patient_id, caller = as_patient(request)
        with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
            docs = service.everything(vault=vault, patient_id=patient_id)
        return record_page(_live, docs, heading="My record", empty="Your record is empty.")

    def record_page(live: sessions.Live, docs: list[dict[str, Any]], *, heading: str, empty: str) -> HTMLResponse:
        items = sorted((i for i in map(_timeline_item, docs) if i is not None), key=lambda i: i.when, reverse=True)
        return page(
            "record.html",
            live=live,
            heading=heading,
            empty=empty,
            items=items[:TIMELINE_LIMIT],
            total=len(items),
            more=len(items) > TIMELINE_LIMIT,
        )

    def as_role(request: Request, role: str) -> tuple[sessions.Live, guard.Caller]:
        """A full session of `role`; any other role gets the page-not-found (it learns nothing)."""
        live, _token = live_session(request)
        if live.actor.role != role:
            raise PageRefused(404, "not found")
        caller = guard.Caller(actor=live.actor, via="page", address=request.client.host if request.client else None)
        return live, caller

    @router.get("/patients")
    def my_patients(request: Request) -> HTMLResponse:
        live, caller = as_role(request, "clinician")
        with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
            found = service.granted_patients(vault=vault, now=now())
        rows = sorted(
            (
                {
                    "id": g.patient["id"],
                    "name": _person_name(g.patient) or "(name not shared)",
                    "born": g.patient.get("birthDate", ""),
                    "what": _grant_scope(g.grant),
                    "until": g.grant.end.date().isoformat() if g.grant.end else "no end date",
                }
                for g in found
            ),
            key=lambda r: (r["name"].casefold(), r["id"]),
        )
        return page("patients.html", live=live, rows=rows)

    @router.get("/patients/{patient_id}")
    def patient_record(request: Request, patient_id: str) -> HTMLResponse:
        live, caller = as_role(request, "clinician")
        # Denied, out of the grant, unknown or malformed: one and the same page, so a clinician
        # without a grant cannot tell a refused record from a missing one. The guard logs it.
        not_available = PageRefused(404, "This record is not available to you.")
        if not is_fhir_id(patient_id):
            raise not_available
        try:
            with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
                docs = service.everything(vault=vault, patient_id=patient_id)
        except (NotFound, guard.Forbidden):
            # The same page for refused and missing, naming only the id the clinician asked for,
            # with the way in for an emergency (audited, time-boxed, reviewed: break_glass_pages).
            return page("record_refused.html", status=404, live=live, patient_id=patient_id)
        name = next((_person_name(d) for d in docs if d.get("resourceType") == "Patient"), "") or "Patient"
        return record_page(live, docs, heading=f"Record of {name}", empty="Nothing in this record is shared with you.")

    @router.get("/alerts")
    def alerts_page(request: Request) -> HTMLResponse:
        live, _caller = as_role(request, "privacy-officer")
        with unit_of_work(deps.factory) as session:
            found = alerts.list_alerts(session=session, unacknowledged_only=False, limit=200)
        rows = [
            {
                "id": a.id,
                "kind": _ALERT_KINDS.get(a.kind, a.kind),
                "when": a.raised.strftime("%Y-%m-%d %H:%M:%S"),
                "account": a.account_id or "the operator",
                "detail": a.detail,
                "seen": a.acknowledged,
            }
            for a in found
        ]
        return page("alerts.html", live=live, rows=rows)

    @router.post("/alerts/acknowledge")
    async def acknowledge_alert(request: Request) -> Response:
        form = await _form(request)

        def mark() -> Response:
            _live, token = live_session(request)
            if _live.actor.role != "privacy-officer":
                raise PageRefused(404, "not found")
            checked_form(request, form, token)
            alert_id = form.get("alert", "")[:64]
            with unit_of_work(deps.factory) as session:
                if not alerts.acknowledge(session=session, alert_id=alert_id):
                    raise PageRefused(404, "not found")
            return RedirectResponse("/alerts", status_code=303)

        return await anyio.to_thread.run_sync(mark)

    @router.get("/")
    def home(request: Request) -> HTMLResponse:
        live, _ = live_session(request)
        unseen = 0
        if live.actor.role == "patient" and live.actor.patient_id:
            from medvault.web import break_glass_pages  # noqa: PLC0415 - see install()

            unseen = break_glass_pages.unseen_count(deps, live.actor.patient_id)
        return page("home.html", live=live, unseen=unseen)

    @router.get("/me/access")
    def my_access_log(request: Request) -> HTMLResponse:
        live, _ = live_session(request)
        patient_id = live.actor.patient_id
        if live.actor.role != "patient" or not patient_id:
            raise PageRefused(404, "not found")
        with unit_of_work(deps.factory) as session:
            entries = audit_log.for_patient(session=session, crypto=deps.crypto, patient_id=patient_id, limit=200)
        rows = [_row(e, patient_id) for e in entries]
        # A clinician is named as the directory names them, not by an id the patient cannot read.
        ids = sorted({r.who.split("/", 1)[1] for r in rows if r.who.startswith("Practitioner/")})
        if ids:
            caller = guard.Caller(actor=live.actor, via="page", address=request.client.host if request.client else None)
            with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
                found = service.search(
                    vault=vault, rtype="Practitioner", params=[("_id", ",".join(ids)), ("_count", str(len(ids)))]
                ).resources
            rows = [replace(r, who=_practitioner_name(found, r.who)) for r in rows]
        return page("access.html", live=live, rows=rows)

    return router


SENSITIVE_CHOICES: tuple[tuple[str, str], ...] = (
    ("mental-health", "Mental health"),
    ("substance-use", "Alcohol and drug use"),
    ("hiv", "HIV"),
    ("sexual-reproductive", "Sexual and reproductive health"),
    ("genetics", "Genetics"),
    ("restricted", "Anything marked restricted"),
)


def _person_name(doc: dict[str, Any]) -> str:
    """A readable name from a Patient or Practitioner ("" when it has none)."""
    for name in doc.get("name") or []:
        if not isinstance(name, dict):
            continue
        parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
        text = name.get("text") or " ".join(x for x in parts if isinstance(x, str) and x)
        if text:
            return str(text)
    return ""


def _practitioner_name(practitioners: list[dict[str, Any]], reference: str) -> str:
    for p in practitioners:
        if f"Practitioner/{p.get('id')}" == reference:
            return _person_name(p) or reference
    return reference


def _grant_scope(grant: Grant) -> str:
    what = "whole record" if grant.resource_types is None else ", ".join(sorted(grant.resource_types))
    labels = dict(SENSITIVE_CHOICES)
    if grant.sensitive:
        return what + " incl. " + ", ".join(labels.get(t, t) for t in sorted(grant.sensitive))
    return what + " (not sensitive parts)"


_ALERT_KINDS = {
    "honeytoken": "Decoy record touched",
    "rate": "Unusually many patients",
    "community-reading": "Unusually many community profiles or posts read",
}


TIMELINE_LIMIT = 300
# What a person reads on a timeline, per type: a label and the elements that date it.
_TIMELINE: dict[str, tuple[str, tuple[str, ...]]] = {
    "Encounter": ("Visit", ("period.start",)),
    "Condition": ("Condition", ("onsetDateTime", "recordedDate")),
    "Observation": ("Result", ("effectiveDateTime", "issued")),
    "Procedure": ("Procedure", ("performedDateTime", "performedPeriod.start")),
    "MedicationRequest": ("Medication", ("authoredOn",)),
    "MedicationStatement": ("Medication", ("effectiveDateTime", "dateAsserted")),
    "Immunization": ("Vaccination", ("occurrenceDateTime",)),
    "AllergyIntolerance": ("Allergy", ("recordedDate", "onsetDateTime")),
    "DiagnosticReport": ("Report", ("effectiveDateTime", "issued")),
    "CarePlan": ("Care plan", ("period.start",)),
}


@dataclass(frozen=True)
class _Item:
    when: str
    kind: str
    text: str


def _dig(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("display"):
            return str(coding["display"])
    return ""


def _timeline_item(doc: dict[str, Any]) -> _Item | None:
    rtype = str(doc.get("resourceType"))
    if rtype not in _TIMELINE:
        return None
    kind, paths = _TIMELINE[rtype]
    when = next((str(v) for v in (_dig(doc, p) for p in paths) if isinstance(v, str)), "")
    concept = (
        doc.get("code")
        or doc.get("medicationCodeableConcept")
        or doc.get("vaccineCode")
        or (doc.get("type") or [None])[0]
        or (doc.get("category") or [None])[0]
    )
    text = _concept_text(concept) or rtype
    quantity = doc.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        text += f": {quantity['value']} {quantity.get('unit', '')}".rstrip()
    return _Item(when=when[:10] or "undated", kind=kind, text=text)


@dataclass(frozen=True)
class _Row:
    when: str
    who: str
    what: str
    allowed: bool
    emergency: bool = False  # under (or asking for) break-the-glass access


_INTERACTIONS = {
    "read": "read a record",
    "vread": "read a past version",
    "history": "read the history",
    "search-type": "searched",
    "everything": "read the whole record",
    "create": "added a record",
    "update": "changed a record",
    "delete": "deleted a record",
    "import": "imported records",
    "break-glass": "asked for emergency access (break-the-glass)",
    "break-glass-review": "a privacy officer reviewed an emergency access",
    "break-glass-review-read": "a privacy officer read an emergency access to review it",
}


def _row(entry: audit_log.Logged, patient_id: str) -> _Row:
    event = entry.event
    agent = (event.get("agent") or [{}])[0]
    who_ref = agent.get("who", {})
    who = str(who_ref.get("reference") or who_ref.get("display") or "an account")
    if who == f"Patient/{patient_id}":
        who = "you"
    elif who == "operator":
        who = "the operator (administration)"
    elif who.startswith("Patient/"):
        who = "another patient's account"  # never another patient's id
    subtype = ((event.get("subtype") or [{}])[0]).get("code", "")
    return _Row(
        when=entry.recorded.strftime("%Y-%m-%d %H:%M:%S"),
        who=who,
        what=_INTERACTIONS.get(str(subtype), str(subtype)),
        allowed=event.get("outcome") == "0",
        emergency=event.get("outcomeDesc") == "break-glass" or subtype == "break-glass",
    )


def install(app: Any, deps: PageDeps) -> None:
    """Routes, static files and the two page-level exception handlers."""
    app.include_router(build_router(deps))
    # The page modules import this one (sessions, CSRF, `page`): imported here, not at the top, so
    # that importing any of them first (the community JSON API imports community_common) is no cycle.
    from medvault.web import (  # noqa: PLC0415
        apps,
        break_glass_pages,
        community_directory_pages,
        community_message_pages,
        community_pages,
        emergency_pages,
    )

    apps.install(app, deps)
    emergency_pages.install(app, deps)
    break_glass_pages.install(app, deps)
    community_message_pages.install(app, deps)
    community_pages.install(app, deps)
    community_directory_pages.install(app, deps)
    app.mount("/static", StaticFiles(packages=[("medvault.web", "static")]), name="static")

    async def to_sign_in(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageRefused)
        return page("base.html", status=exc.status, live=None, message=exc.message)

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(PageRefused, refused)
