"""The directory page, "people near me" (issue 5 item 5): `/community/near`.

A face over `community.directory`: the opt-in form (with why and what is stored), the member's own
entry with change and opt-out, and the list of members near them by distance band, a page at a
time. Plain forms, no script (the pages' strict CSP); sessions, CSRF and the same-origin check
come from web/pages.py. Every listing view counts against the account's limit and the client address's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from medvault.community import directory, geo, members
from medvault.community.errors import CommunityError, RateLimited
from medvault.db import unit_of_work
from medvault.web import pages

_PATH = "/community/near"


def _sentence(exc: CommunityError) -> str:
    """The error as a sentence (str.capitalize would lower-case "US ZIP")."""
    return exc.message[:1].upper() + exc.message[1:] + "."


def _status(exc: CommunityError) -> int:
    if isinstance(exc, RateLimited):
        return 429
    return 403 if exc.code == "forbidden" else 400


def build_router(deps: pages.PageDeps, default: directory.DirectoryPolicy) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def policy_of(request: Request) -> directory.DirectoryPolicy:
        # An app may set its own (a deployment's k, or tests' shorter settle period).
        found = getattr(request.app.state, "community_directory_policy", None)
        return found if isinstance(found, directory.DirectoryPolicy) else default

    def signed_in(request: Request) -> tuple[Any, str]:
        live, token = pages.require_session(deps, request)
        if live.actor.role not in members.MEMBER_ROLES:
            raise pages.PageRefused(404, "not found")
        return live, token

    def render(
        request: Request,
        *,
        page: int = 1,
        form: dict[str, str] | None = None,
        message: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        live, _token = signed_in(request)
        policy = policy_of(request)
        now = datetime.now(UTC)
        mine: directory.Mine | None = None
        near: directory.NearPage | None = None
        with unit_of_work(deps.factory) as session:
            member = members.by_account(session=session, crypto=deps.crypto, account_id=live.actor.account_id)
            if member is not None:
                mine = directory.mine(session=session, crypto=deps.crypto, member=member, policy=policy)
        if member is not None and mine is not None and form is None:
            try:
                with unit_of_work(deps.factory) as session:
                    near = directory.near(
                        session=session,
                        crypto=deps.crypto,
                        member=member,
                        page=page,
                        address=pages.throttle_address(request.client.host) if request.client else None,
                        now=now,
                        policy=policy,
                    )
            except CommunityError as exc:
                message, status = _sentence(exc), _status(exc)
        values = form or {
            "country": mine.country if mine else "US",
            "postcode": mine.postcode if mine else "",
            "name": (mine.name or "") if mine else "",
        }
        return pages.page(
            "community_near.html",
            status=status,
            live=live,
            mine=mine,
            near=near,
            values=values,
            message=message,
            bands=geo.BANDS,
            k=policy.cells.min_members,
            areas=policy.cells.min_postcodes,
            settle_days=policy.settle.days,
            now=now,
            name_max=directory.NAME_MAX,
        )

    @router.get(_PATH)
    def near_page(request: Request) -> HTMLResponse:
        raw = request.query_params.get("page", "1")
        # isascii too: str.isdigit() is true for "²" or "٣", which int() then refuses (a 500).
        page = int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 5 else 0
        if page < 1:
            raise pages.PageRefused(404, "no such page")
        return render(request, page=page)

    @router.post(_PATH + "/opt-in")
    async def opt_in(request: Request) -> Response:
        form = await pages._form(request)

        def save() -> Response:
            live, token = signed_in(request)
            pages.check_form(deps, request, form, token)
            values = {
                "country": form.get("country", "")[:8],
                "postcode": form.get("postcode", "")[:16],
                "name": form.get("name", "")[: directory.NAME_MAX * 2],
            }
            now = datetime.now(UTC)
            try:
                with unit_of_work(deps.factory) as session:
                    member = members.join(session=session, crypto=deps.crypto, actor=live.actor, now=now)
                    directory.opt_in(
                        session=session,
                        crypto=deps.crypto,
                        member=member,
                        country=values["country"],
                        postcode=values["postcode"],
                        name=values["name"],
                        now=now,
                        policy=policy_of(request),
                    )
            except CommunityError as exc:
                return render(request, form=values, message=_sentence(exc), status=_status(exc))
            return RedirectResponse(_PATH, status_code=303)

        return await anyio.to_thread.run_sync(save)

    @router.post(_PATH + "/opt-out")
    async def opt_out(request: Request) -> Response:
        form = await pages._form(request)

        def leave() -> Response:
            live, token = signed_in(request)
            pages.check_form(deps, request, form, token)
            with unit_of_work(deps.factory) as session:
                member = members.by_account(session=session, crypto=deps.crypto, account_id=live.actor.account_id)
                if member is not None:
                    directory.opt_out(
                        session=session,
                        crypto=deps.crypto,
                        member=member,
                        now=datetime.now(UTC),
                        policy=policy_of(request),
                    )
            return RedirectResponse(_PATH, status_code=303)

        return await anyio.to_thread.run_sync(leave)

    return router


def install(app: Any, deps: pages.PageDeps, policy: directory.DirectoryPolicy | None = None) -> None:
    app.include_router(build_router(deps, policy or directory.DEFAULT_POLICY))
