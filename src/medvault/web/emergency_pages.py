"""The patient's emergency card and sharing links pages (`/me/emergency`): preview the summary, hide
items, add alerts, create/pause/resume/revoke/re-issue links, download the wallet card, QR and
flash-drive files. A face over `emergency.links`: sessions, CSRF and page errors from web/pages.py.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from medvault.access.labels import SENSITIVE_TAGS
from medvault.emergency import card, links
from medvault.emergency.summary import SummaryOptions
from medvault.errors import MedvaultError
from medvault.records import guard
from medvault.web import pages

MAX_ALERTS = 8
MAX_HIDDEN = 500
MAX_SHARE_DAYS = 365


def _options(pairs: list[tuple[str, str]]) -> tuple[SummaryOptions, tuple[str, ...], str, bool]:
    hidden = frozenset(v for k, v in pairs if k == "hide" and v and len(v) <= 200)
    if len(hidden) > MAX_HIDDEN:
        raise pages.PageRefused(400, "too many hidden items")
    form = dict(pairs)
    alerts = tuple(line.strip() for line in form.get("alerts", "").splitlines() if line.strip())
    if len(alerts) > MAX_ALERTS or any(len(a) > 120 for a in alerts):
        raise pages.PageRefused(400, f"at most {MAX_ALERTS} alerts of up to 120 characters")
    sensitive = frozenset(v for k, v in pairs if k == "sensitive" and v in SENSITIVE_TAGS)
    options = SummaryOptions(hidden=hidden, include_sensitive=sensitive, extra_alerts=alerts)
    return options, alerts, form.get("label", "").strip()[:80], form.get("print") == "on"


def install(app: Any, deps: pages.PageDeps) -> None:
    app.include_router(build_router(deps))


def build_router(deps: pages.PageDeps) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def as_patient(request: Request) -> tuple[Any, str, str, guard.Caller]:
        live, token = pages.require_session(deps, request)
        if live.actor.role != "patient" or not live.actor.patient_id:
            raise pages.PageRefused(404, "not found")
        caller = guard.Caller(actor=live.actor, via="page", address=request.client.host if request.client else None)
        return live, token, live.actor.patient_id, caller

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def common(caller: guard.Caller, patient_id: str) -> dict[str, Any]:
        return {"factory": deps.factory, "crypto": deps.crypto, "caller": caller, "patient_id": patient_id}

    def render(
        request: Request,
        *,
        options: SummaryOptions | None = None,
        message: str | None = None,
        status: int = 200,
        new_link: str | None = None,
    ) -> HTMLResponse:
        live, _token, patient_id, caller = as_patient(request)
        all_links = links.list_links(**common(caller, patient_id))
        emergency = next((i for i in all_links if i.purpose == "emergency" and i.status != "revoked"), None)
        shown = options or (emergency.options if emergency else SummaryOptions())
        sections = links.preview_sections(**common(caller, patient_id), options=shown)
        return pages.page(
            "emergency.html",
            status=status,
            live=live,
            message=message,
            emergency=emergency,
            options=shown,
            alerts_text="\n".join(shown.extra_alerts),
            sections=sections,
            sharing=[i for i in all_links if i.purpose == "sharing"],
            revoked=[i for i in all_links if i.purpose == "emergency" and i.status == "revoked"],
            sensitive=sorted(SENSITIVE_TAGS),
            new_link=new_link,
            new_qr=card.qr_svg(new_link) if new_link else None,
        )

    async def run(fn: Any) -> Response:
        try:
            result: Response = await anyio.to_thread.run_sync(fn)
        except (pages.PageRefused, pages.SignInRequired):
            raise
        except links.LinkNotFound as exc:
            raise pages.PageRefused(404, exc.message) from None
        except MedvaultError as exc:
            raise pages.PageRefused(400, exc.message) from None
        return result

    @router.get("/me/emergency")
    async def emergency_page(request: Request) -> Response:
        return await run(lambda: render(request))

    @router.post("/me/emergency")
    async def emergency_choices(request: Request) -> Response:
        pairs = await pages._form_pairs(request)
        form = dict(pairs)

        def act() -> Response:
            _live, token, patient_id, caller = as_patient(request)
            pages.check_form(deps, request, form, token)
            options, alerts, label, printed = _options(pairs)
            action = form.get("action", "preview")
            current = [
                i
                for i in links.list_links(**common(caller, patient_id))
                if i.purpose == "emergency" and i.status != "revoked"
            ]
            if action == "preview":
                return render(request, options=options, message="Preview updated; nothing was saved yet.")
            if action == "create" and not current:
                links.create_link(
                    **common(caller, patient_id),
                    purpose="emergency",
                    base_url=base(request),
                    label=label or links.DEFAULT_CARD_LABEL,
                    options=options,
                    print_alerts=alerts if printed else (),
                )
            elif action == "save" and current:
                links.update_choices(
                    **common(caller, patient_id),
                    link_id=current[0].link_id,
                    options=options,
                    label=label or None,
                    print_alerts=alerts if printed else (),
                )
            else:
                raise pages.PageRefused(400, "nothing to do: reload the page and try again")
            return RedirectResponse("/me/emergency", status_code=303)

        return await run(act)

    @router.post("/me/emergency/links/{link_id}")
    async def link_action(request: Request, link_id: str) -> Response:
        form = await pages._form(request)

        def act() -> Response:
            _live, token, patient_id, caller = as_patient(request)
            pages.check_form(deps, request, form, token)
            if not link_id.isdigit() or len(link_id) > 20:
                raise pages.PageRefused(404, "no such link")
            lid = int(link_id)
            action = form.get("action")
            new = None
            if action in ("paused", "active", "revoked"):
                links.set_status(**common(caller, patient_id), link_id=lid, status=action)  # type: ignore[arg-type]
            elif action == "reissue":
                new = links.reissue(**common(caller, patient_id), link_id=lid, base_url=base(request))
            else:
                raise pages.PageRefused(400, "unknown action")
            if new is not None:
                # Shown once here too (the page can also print it again): the old link is dead.
                return render(
                    request,
                    message="Re-issued: the old link and any card printed from it no longer work.",
                    new_link=new.viewer_link(base_url=base(request)),
                )
            return RedirectResponse("/me/emergency", status_code=303)

        return await run(act)

    @router.post("/me/emergency/share")
    async def share(request: Request) -> Response:
        form = await pages._form(request)

        def act() -> Response:
            _live, token, patient_id, caller = as_patient(request)
            pages.check_form(deps, request, form, token)
            passcode = form.get("passcode", "") or None
            what = form.get("share", "summary")
            if what not in ("summary", "record"):
                raise pages.PageRefused(400, "choose the summary or the whole record")
            days = form.get("days", "30")
            if not days.isdigit() or not 1 <= int(days) <= MAX_SHARE_DAYS:
                raise pages.PageRefused(400, f"a sharing link lasts 1 to {MAX_SHARE_DAYS} days")
            issued = links.create_link(
                **common(caller, patient_id),
                purpose="sharing",
                base_url=base(request),
                label=form.get("label", "")[:80] or None,
                share=what,  # type: ignore[arg-type]
                passcode=passcode,
                hasher=deps.hasher,
                expires=datetime.now(UTC) + timedelta(days=int(days)),
            )
            return render(
                request,
                message="Sharing link created. Copy it or show the QR now; give the passcode separately.",
                new_link=issued.viewer_link(base_url=base(request)),
            )

        return await run(act)

    def card_files(request: Request) -> links.CardFiles:
        _live, _token, patient_id, caller = as_patient(request)
        try:
            return links.emergency_card(**common(caller, patient_id), base_url=base(request), create_missing=False)
        except links.LinkNotFound:
            raise pages.PageRefused(404, "Create your emergency link first.") from None

    def download(content: bytes, media_type: str, name: str) -> Response:
        return Response(
            content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @router.get("/me/emergency/card.pdf")
    async def card_pdf(request: Request) -> Response:
        return await run(lambda: download(card_files(request).wallet_pdf, "application/pdf", "emergency-card.pdf"))

    @router.get("/me/emergency/qr.png")
    async def card_qr(request: Request) -> Response:
        return await run(lambda: download(card_files(request).qr_png, "image/png", card.QR_FILE))

    @router.get("/me/emergency/drive.zip")
    async def card_drive(request: Request) -> Response:
        def make() -> Response:
            files = card_files(request)
            buffer = io.BytesIO()  # in memory: no temp file holds a bearer copy
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for f in files.drive:
                    archive.writestr(f.name, f.content)
            return download(buffer.getvalue(), "application/zip", "emergency-drive.zip")

        return await run(make)

    return router
