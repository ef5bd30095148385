"""Break-the-glass pages (issue 4 item 5). A face over `emergency.break_glass`:

* `/break-glass` (clinicians): the emergency access form (patient id, written reason, purpose fixed
  to ETREAT, an explicit confirmation), and the clinician's accesses still in force. The responder
  viewer and a refused `/patients/{id}` page link here.
* `/me/notifications` (patients): every emergency access to their record, who, when, until when,
  the reason given and the privacy officer's verdict once there is one.
* `/reviews` (privacy officers): the review queue with a verdict form per access.

Sessions, CSRF and the same-origin check come from web/pages.py; no script, same CSP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from medvault.db import unit_of_work
from medvault.emergency import break_glass as bg
from medvault.fhir.types import is_fhir_id
from medvault.records import guard, service
from medvault.web import pages

_VERDICT_LABELS = {"justified": "Justified", "not-justified": "Not justified", "unclear": "Unclear"}
_STATUS = {
    "break-glass-role-not-eligible": 403,
    "break-glass-needs-mfa": 403,
    "break-glass-unknown-patient": 404,
}


@dataclass(frozen=True)
class BreakGlassConfig:
    hours: int = bg.DEFAULT_HOURS
    roles: frozenset[str] = bg.DEFAULT_ROLES


def _config(app: Any) -> BreakGlassConfig:
    state = getattr(getattr(app, "state", None), "medvault", None)
    settings = getattr(state, "settings", None)
    if settings is None:
        return BreakGlassConfig()
    return BreakGlassConfig(hours=settings.break_glass_hours, roles=frozenset(settings.break_glass_roles))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") + " UTC" if value else ""


def build_router(deps: pages.PageDeps, config: BreakGlassConfig, notifier: bg.Notifier) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def address(request: Request) -> str | None:
        return request.client.host if request.client else None

    def signed_in(request: Request, role: str) -> tuple[Any, str]:
        live, token = pages.require_session(deps, request)
        if live.actor.role != role:
            raise pages.PageRefused(404, "not found")
        return live, token

    def form_page(
        request: Request, *, patient: str = "", reason: str = "", message: str | None = None, status: int = 200
    ) -> HTMLResponse:
        live, _token = signed_in(request, "clinician")
        with unit_of_work(deps.factory) as session:
            active = bg.active_accesses(session=session, crypto=deps.crypto, actor=live.actor, now=datetime.now(UTC))
        return pages.page(
            "break_glass.html",
            status=status,
            live=live,
            patient=patient if is_fhir_id(patient) else "",
            reason=reason,
            message=message,
            hours=config.hours,
            reason_min=bg.REASON_MIN,
            reason_max=bg.REASON_MAX,
            active=[{"patient": a.patient_id, "until": _when(a.end)} for a in active],
            eligible=live.actor.role in config.roles and live.actor.mfa_enrolled,
        )

    @router.get("/break-glass")
    def break_glass_form(request: Request) -> Response:
        patient = request.query_params.get("patient", "")[:64]
        try:
            return form_page(request, patient=patient)
        except pages.SignInRequired:
            # A responder arriving from the viewer or a link: sign in, then back to this form.
            target = "/break-glass" + (f"?patient={patient}" if is_fhir_id(patient) else "")
            return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @router.post("/break-glass")
    async def break_glass(request: Request) -> Response:
        form = await pages._form(request)

        def ask() -> Response:
            live, token = signed_in(request, "clinician")
            pages.check_form(deps, request, form, token)
            patient = form.get("patient", "").strip()[:64]
            reason = form.get("reason", "")[: bg.REASON_MAX * 2]
            if form.get("confirm") != "yes":
                return form_page(
                    request,
                    patient=patient,
                    reason=reason,
                    message="Confirm that this is an emergency and that you accept the review.",
                    status=400,
                )
            refused: bg.BreakGlassRefused | None = None
            with unit_of_work(deps.factory) as session:
                try:
                    granted = bg.request_emergency_access(
                        session=session,
                        crypto=deps.crypto,
                        actor=live.actor,
                        patient_id=patient,
                        reason=reason,
                        purpose=form.get("purpose", ""),
                        now=datetime.now(UTC),
                        hours=config.hours,
                        eligible_roles=config.roles,
                        address=address(request),
                        notifier=notifier,
                    )
                except bg.BreakGlassRefused as exc:
                    refused = exc  # committed below: the refusal's audit entry is the point
            if refused is not None:
                return form_page(
                    request,
                    patient=patient,
                    reason=reason,
                    message=str(refused).capitalize() + ".",
                    status=_STATUS.get(refused.reason, 400),
                )
            return RedirectResponse(f"/patients/{granted.patient_id}", status_code=303)

        return await anyio.to_thread.run_sync(ask)

    def notices_page(request: Request) -> HTMLResponse:
        live, _token = signed_in(request, "patient")
        patient_id = live.actor.patient_id
        if not patient_id:
            raise pages.PageRefused(404, "not found")
        with unit_of_work(deps.factory) as session:
            found = bg.notifications(session=session, crypto=deps.crypto, patient_id=patient_id)
        names = _practitioner_names(deps, live.actor, address(request), [n.access.practitioner_id for n in found])
        rows = [
            {
                "id": n.id,
                "seen": n.seen,
                "who": names.get(n.access.practitioner_id or "", "a clinician"),
                "start": _when(n.access.start),
                "end": _when(n.access.end),
                "reason": n.access.reason,
                "verdict": _VERDICT_LABELS.get(n.access.verdict or "", "waiting for review"),
            }
            for n in found
        ]
        return pages.page("notifications.html", live=live, rows=rows)

    @router.get("/me/notifications")
    def notifications(request: Request) -> HTMLResponse:
        return notices_page(request)

    @router.post("/me/notifications/seen")
    async def seen(request: Request) -> Response:
        form = await pages._form(request)

        def mark() -> Response:
            live, token = signed_in(request, "patient")
            pages.check_form(deps, request, form, token)
            if not live.actor.patient_id:
                raise pages.PageRefused(404, "not found")
            with unit_of_work(deps.factory) as session:
                if not bg.mark_seen(
                    session=session,
                    crypto=deps.crypto,
                    patient_id=live.actor.patient_id,
                    notification_id=form.get("notification", ""),
                ):
                    raise pages.PageRefused(404, "not found")
            return RedirectResponse("/me/notifications", status_code=303)

        return await anyio.to_thread.run_sync(mark)

    def reviews_page(request: Request, *, message: str | None = None, status: int = 200) -> HTMLResponse:
        live, _token = signed_in(request, "privacy-officer")
        with unit_of_work(deps.factory) as session:
            queue = bg.review_queue(session=session, crypto=deps.crypto, actor=live.actor, address=address(request))
        rows = [
            {
                "id": a.id,
                "account": a.account_id,
                "practitioner": a.practitioner_id or "",
                "patient": a.patient_id,
                "start": _when(a.start),
                "end": _when(a.end),
                "reason": a.reason,
                "verdict": _VERDICT_LABELS.get(a.verdict or "", ""),
                "reviewer": a.reviewer or "",
                "reviewed": _when(a.reviewed),
            }
            for a in queue
        ]
        return pages.page(
            "reviews.html", status=status, live=live, rows=rows, verdicts=_VERDICT_LABELS, message=message
        )

    @router.get("/reviews")
    def reviews(request: Request) -> HTMLResponse:
        return reviews_page(request)

    @router.post("/reviews/verdict")
    async def verdict(request: Request) -> Response:
        form = await pages._form(request)

        def record() -> Response:
            live, token = signed_in(request, "privacy-officer")
            pages.check_form(deps, request, form, token)
            try:
                with unit_of_work(deps.factory) as session:
                    bg.record_verdict(
                        session=session,
                        crypto=deps.crypto,
                        actor=live.actor,
                        access_id=form.get("access", ""),
                        verdict=form.get("verdict", ""),
                        now=datetime.now(UTC),
                        address=address(request),
                    )
            except bg.BreakGlassRefused as exc:
                status = 404 if exc.reason == "break-glass-unknown-access" else 400
                return reviews_page(request, message=str(exc).capitalize() + ".", status=status)
            return RedirectResponse("/reviews", status_code=303)

        return await anyio.to_thread.run_sync(record)

    return router


def _practitioner_names(deps: pages.PageDeps, actor: Any, address: str | None, ids: list[str | None]) -> dict[str, str]:
    """Clinicians named as the directory names them (a patient cannot read a Practitioner id)."""
    wanted = sorted({i for i in ids if i and is_fhir_id(i)})
    if not wanted:
        return {}
    caller = guard.Caller(actor=actor, via="page", address=address)
    with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
        found = service.search(
            vault=vault, rtype="Practitioner", params=[("_id", ",".join(wanted)), ("_count", str(len(wanted)))]
        ).resources
    return {str(p["id"]): pages._person_name(p) or "a clinician" for p in found}


def unseen_count(deps: pages.PageDeps, patient_id: str) -> int:
    """How many notifications the patient has not marked as read (the home page's banner)."""
    with unit_of_work(deps.factory) as session:
        return bg.unseen_count(session=session, crypto=deps.crypto, patient_id=patient_id)


def install(app: Any, deps: pages.PageDeps, notifier: bg.Notifier | None = None) -> None:
    app.include_router(build_router(deps, _config(app), notifier or bg.LoggingNotifier()))
