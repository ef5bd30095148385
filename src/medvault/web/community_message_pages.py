"""Community pages for private messages and moderation (issue 5 items 4 and 6). A face over
`community.messages` and `community.moderation`:

* `/community/messages`: the member's conversations with unread counts, mute and block controls,
  the members they blocked, notices from moderators, and a form to write to a member.
* `/community/messages/{conversation}`: the thread (participants only; anyone else gets the same
  404 as for a missing one), the send form with the contact-details step, a report link per
  message received.
* `/community/report`: report a post, reply, message or profile (a reason and an optional note).
* `/community/moderation`: the moderators' queue (the item as reported, reporter and author
  handles), the actions, recently handled reports and the moderation history.

Plain forms, no script: sessions, CSRF and the same-origin check come from web/pages.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from medvault.auth import sessions
from medvault.community import members, messages, moderation
from medvault.community.disclosure import Finding
from medvault.community.errors import CommunityError, NotFound
from medvault.community.members import Member
from medvault.db import unit_of_work
from medvault.web import pages
from medvault.web.community_common import status_of

T = TypeVar("T")
_KIND_LABELS = {"post": "post", "reply": "reply", "message": "private message", "profile": "profile"}
_ACTION_LABELS = {
    "hide": "Hidden",
    "restore": "Restored",
    "warn": "Warned the author",
    "suspend": "Suspended the author",
    "dismiss": "Dismissed",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") + " UTC" if value else ""


@dataclass(frozen=True)
class Segment:
    """A piece of the text being sent; `finding` set where the disclosure check flagged it."""

    text: str
    finding: str | None


def segments(text: str, findings: list[Finding]) -> list[Segment]:
    """`text` cut at the findings, so the page can mark each one."""
    out, at = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < at:
            continue
        if f.start > at:
            out.append(Segment(text[at : f.start], None))
        out.append(Segment(text[f.start : f.end], f.message))
        at = f.end
    if at < len(text):
        out.append(Segment(text[at:], None))
    return out


def build_router(deps: pages.PageDeps) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def now() -> datetime:
        return datetime.now(UTC)

    def as_member(request: Request) -> tuple[sessions.Live, str, Member]:
        """A signed-in patient or moderator, made a member on first visit; others: not found."""
        live, token = pages.require_session(deps, request)
        if live.actor.role not in members.MEMBER_ROLES:
            raise pages.PageRefused(404, "not found")
        with unit_of_work(deps.factory) as session:
            # Joining is idempotent: the existing membership, or a new one on the first visit.
            member = members.join(session=session, crypto=deps.crypto, actor=live.actor, now=now())
        return live, token, member

    def as_moderator(request: Request) -> tuple[sessions.Live, str]:
        live, token = pages.require_session(deps, request)
        if live.actor.role != "moderator" or not live.actor.mfa_enrolled:
            raise pages.PageRefused(404, "not found")
        return live, token

    def run(work: Callable[[Session], T]) -> T:
        """One transaction; a community refusal becomes a plain page with its status."""
        try:
            with unit_of_work(deps.factory) as session:
                return work(session)
        except CommunityError as exc:
            raise pages.PageRefused(status_of(exc), exc.message[:1].upper() + exc.message[1:] + ".") from None

    # -- the conversation list -----------------------------------------------------------------

    def list_page(request: Request, *, message: str | None = None, status: int = 200, peer: str = "") -> HTMLResponse:
        live, _token, member = as_member(request)

        def load(session: Session) -> dict[str, Any]:
            return {
                "rows": messages.conversations(session=session, crypto=deps.crypto, member=member),
                "blocked": sorted(messages.blocked_by_me(session=session, crypto=deps.crypto, member_id=member.id)),
                "notices": moderation.notices(session=session, crypto=deps.crypto, member=member),
            }

        found = run(load)
        return pages.page(
            "community_messages.html",
            status=status,
            live=live,
            me=member.id,
            rows=[{**vars(s), "when": _when(s.last_sent)} for s in found["rows"]],
            blocked=found["blocked"],
            notices=[
                {
                    "id": n.id,
                    "action": n.action,
                    "kind": _KIND_LABELS.get(n.kind, n.kind),
                    "message": n.message,
                    "until": _when(n.until),
                    "when": _when(n.created),
                }
                for n in found["notices"]
            ],
            suspended=_when(member.suspended_until) if member.suspended(now()) else "",
            message=message,
            peer=peer,
            reported=request.query_params.get("reported") == "1",
        )

    @router.get("/community/messages")
    def conversation_list(request: Request) -> HTMLResponse:
        return list_page(request)

    async def form_action(
        request: Request, work: Callable[[dict[str, str], sessions.Live, Member], Response]
    ) -> Response:
        form = await pages._form(request)

        def go() -> Response:
            live, token, member = as_member(request)
            pages.check_form(deps, request, form, token)
            return work(form, live, member)

        return await anyio.to_thread.run_sync(go)

    @router.post("/community/messages")
    async def start(request: Request) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            peer = form.get("member", "").strip()[:64]
            try:
                with unit_of_work(deps.factory) as session:
                    conv = messages.start(session=session, crypto=deps.crypto, member=member, peer_id=peer, now=now())
            except CommunityError as exc:
                return list_page(request, message=exc.message.capitalize() + ".", status=status_of(exc), peer=peer)
            return RedirectResponse(f"/community/messages/{conv}", status_code=303)

        return await form_action(request, work)

    @router.post("/community/messages/block")
    async def block(request: Request) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            peer = form.get("member", "")[:64]

            def change(session: Session) -> None:
                if form.get("block") == "yes":
                    messages.block(session=session, crypto=deps.crypto, member=member, peer_id=peer, now=now())
                else:
                    messages.unblock(session=session, crypto=deps.crypto, member=member, peer_id=peer)

            run(change)
            return RedirectResponse(_back(form), status_code=303)

        return await form_action(request, work)

    @router.post("/community/messages/notices/dismiss")
    async def dismiss(request: Request) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            run(
                lambda s: moderation.dismiss_notice(
                    session=s, crypto=deps.crypto, member=member, notice_id=form.get("notice", "")
                )
            )
            return RedirectResponse("/community/messages", status_code=303)

        return await form_action(request, work)

    # -- one conversation ----------------------------------------------------------------------

    def thread_page(
        request: Request,
        conversation: str,
        *,
        draft: str = "",
        findings: list[Finding] | None = None,
        message: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        live, _token, member = as_member(request)
        thread = run(
            lambda s: messages.thread(
                session=s, crypto=deps.crypto, member=member, conversation_id=conversation, now=now()
            )
        )
        return pages.page(
            "community_thread.html",
            status=status,
            live=live,
            thread=thread,
            items=[{**vars(m), "hidden": m.hidden, "when": _when(m.sent)} for m in thread.messages],
            draft=draft,
            warning=segments(draft, findings) if findings else None,
            message=message,
            max_text=messages.MAX_TEXT,
            suspended=member.suspended(now()),
        )

    @router.get("/community/messages/{conversation}")
    def conversation_page(request: Request, conversation: str) -> HTMLResponse:
        return thread_page(request, conversation)

    @router.post("/community/messages/{conversation}")
    async def send(request: Request, conversation: str) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            text = form.get("text", "")[: messages.MAX_TEXT * 2]
            try:
                with unit_of_work(deps.factory) as session:
                    messages.send(
                        session=session,
                        crypto=deps.crypto,
                        member=member,
                        conversation_id=conversation,
                        text=text,
                        now=now(),
                        confirm_contact=form.get("confirm") == "yes",
                    )
            except messages.ContactDetailsWarning as warning:
                return thread_page(request, conversation, draft=text.strip(), findings=warning.findings, message=None)
            except NotFound:
                raise pages.PageRefused(404, "No such conversation.") from None
            except CommunityError as exc:
                return thread_page(
                    request, conversation, draft=text, message=exc.message.capitalize() + ".", status=status_of(exc)
                )
            return RedirectResponse(f"/community/messages/{conversation}#latest", status_code=303)

        return await form_action(request, work)

    @router.post("/community/messages/{conversation}/mute")
    async def mute(request: Request, conversation: str) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            run(
                lambda s: messages.set_muted(
                    session=s,
                    crypto=deps.crypto,
                    member=member,
                    conversation_id=conversation,
                    muted=form.get("muted") == "yes",
                )
            )
            return RedirectResponse(_back(form), status_code=303)

        return await form_action(request, work)

    @router.post("/community/messages/{conversation}/delete")
    async def delete(request: Request, conversation: str) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            if form.get("confirm") != "yes":
                return thread_page(
                    request, conversation, message="Tick the box to confirm that you want to delete it.", status=400
                )
            run(
                lambda s: messages.delete_for_me(
                    session=s, crypto=deps.crypto, member=member, conversation_id=conversation
                )
            )
            return RedirectResponse("/community/messages", status_code=303)

        return await form_action(request, work)

    # -- reporting -----------------------------------------------------------------------------

    def report_page(
        request: Request,
        *,
        kind: str,
        item: str,
        reason: str = "",
        note: str = "",
        message: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        live, _token, _member = as_member(request)
        if kind not in moderation.registered_kinds() or not item or len(item) > 64:
            raise pages.PageRefused(404, "There is nothing to report here.")
        return pages.page(
            "community_report.html",
            status=status,
            live=live,
            kind=kind,
            kind_label=_KIND_LABELS.get(kind, kind),
            item=item,
            reasons=moderation.REASON_LABELS,
            reason=reason,
            note=note,
            note_max=moderation.NOTE_MAX,
            message=message,
        )

    @router.get("/community/report")
    def report_form(request: Request) -> HTMLResponse:
        q = request.query_params
        return report_page(request, kind=q.get("kind", "")[:16], item=q.get("id", "")[:64])

    @router.post("/community/report")
    async def report(request: Request) -> Response:
        def work(form: dict[str, str], _live: sessions.Live, member: Member) -> Response:
            kind, item = form.get("kind", "")[:16], form.get("id", "")[:64]
            reason, note = form.get("reason", ""), form.get("note", "")[: moderation.NOTE_MAX * 2]
            try:
                with unit_of_work(deps.factory) as session:
                    moderation.report(
                        session=session,
                        crypto=deps.crypto,
                        reporter=member,
                        kind=kind,
                        content_id=item,
                        reason=reason,
                        note=note,
                        now=now(),
                    )
            except NotFound:
                raise pages.PageRefused(404, "There is nothing to report here.") from None
            except CommunityError as exc:
                return report_page(
                    request,
                    kind=kind,
                    item=item,
                    reason=reason,
                    note=note,
                    message=exc.message.capitalize() + ".",
                    status=status_of(exc),
                )
            return RedirectResponse("/community/messages?reported=1", status_code=303)

        return await form_action(request, work)

    # -- moderation ----------------------------------------------------------------------------

    def moderation_page(request: Request, *, message: str | None = None, status: int = 200) -> HTMLResponse:
        live, _token = as_moderator(request)

        def load(session: Session) -> dict[str, Any]:
            actor = live.actor
            handled = [s for s in moderation.STATES if s != "open"]
            return {
                "open": moderation.queue(session=session, crypto=deps.crypto, actor=actor, now=now()),
                "handled": moderation.queue(
                    session=session, crypto=deps.crypto, actor=actor, now=now(), states=tuple(handled), limit=50
                ),
                "history": moderation.history(session=session, actor=actor, limit=100),
            }

        found = run(load)

        def shown(r: moderation.QueuedReport) -> dict[str, Any]:
            snapshot = {k: v for k, v in r.snapshot.items() if k not in ("author",)}
            return {
                **vars(r),
                "kind_label": _KIND_LABELS.get(r.kind, r.kind),
                "reason_label": moderation.REASON_LABELS.get(r.reason, r.reason or "unknown"),
                "when": _when(r.created),
                "fields": [(k, str(v)) for k, v in snapshot.items() if k != "sent"],
            }

        return pages.page(
            "community_moderation.html",
            status=status,
            live=live,
            open=[shown(r) for r in found["open"]],
            handled=[shown(r) for r in found["handled"]],
            history=[
                {**vars(h), "when": _when(h.created), "label": _ACTION_LABELS.get(h.action, h.action)}
                for h in found["history"]
            ],
            max_days=moderation.SUSPEND_DAYS_MAX,
            message_max=moderation.MESSAGE_MAX,
            message=message,
        )

    @router.get("/community/moderation")
    def moderation_queue(request: Request) -> HTMLResponse:
        return moderation_page(request)

    @router.post("/community/moderation")
    async def moderate(request: Request) -> Response:
        form = await pages._form(request)

        def go() -> Response:
            live, token = as_moderator(request)
            pages.check_form(deps, request, form, token)
            days_text = form.get("days", "").strip()
            try:
                days = int(days_text) if days_text else None
            except ValueError:
                return moderation_page(request, message="The number of days is not a number.", status=400)
            try:
                with unit_of_work(deps.factory) as session:
                    moderation.act(
                        session=session,
                        crypto=deps.crypto,
                        actor=live.actor,
                        report_id=form.get("report", "")[:32],
                        action=form.get("action", ""),
                        days=days,
                        message=form.get("message", "")[: moderation.MESSAGE_MAX * 2],
                        now=now(),
                    )
            except CommunityError as exc:
                return moderation_page(request, message=exc.message.capitalize() + ".", status=status_of(exc))
            return RedirectResponse("/community/moderation", status_code=303)

        return await anyio.to_thread.run_sync(go)

    return router


def _back(form: dict[str, str]) -> str:
    """Where a control on the list or a thread returns to: one of our own community pages."""
    target = pages.local_path(form.get("back"))
    if target and target.startswith("/community/messages"):
        return target
    return "/community/messages"


def install(app: Any, deps: pages.PageDeps) -> None:
    # Imported for its registration of the "message" kind (it is imported above anyway).
    assert "message" in moderation.registered_kinds()
    app.include_router(build_router(deps))
