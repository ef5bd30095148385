"""JSON for private messages: `/community/api/messages...`, a face over `community.messages`.

Authenticated by the member's browser session (the same cookie as the pages), never by an access
token: a request that presents a bearer token, the operator's system token included, is refused
before anything is read (acceptance: "an operator-role API call cannot read a conversation"). A
session of anyone but the conversation's two members gets the same 404 as a missing conversation.
State-changing calls need the session's CSRF token in `X-CSRF-Token` and our own origin.

Errors are `{"error": code, "message": ..., "location": ...}`; messages never quote content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request, Response
from sqlalchemy.orm import Session, sessionmaker

from medvault.auth import sessions
from medvault.community import members, messages
from medvault.community.errors import CommunityError, RateLimited
from medvault.community.members import Member
from medvault.db import unit_of_work
from medvault.store.crypto_context import CryptoContext
from medvault.web import community_common, pages

MAX_BODY = 32 * 1024
CSRF_HEADER = "x-csrf-token"
_HEADERS = {"Cache-Control": "no-store"}


@dataclass
class MessagesDeps:
    factory: sessionmaker[Session]
    crypto: CryptoContext


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.location = status, code, message, location


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=_HEADERS | (headers or {})
    )


def _error(exc: _Refused, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"error": exc.code, "message": exc.message, **({"location": exc.location} if exc.location else {}), **extra}
    return _json(exc.status, body, headers)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def install(app: FastAPI, deps: MessagesDeps) -> None:
    page_deps = pages.PageDeps(factory=deps.factory, crypto=deps.crypto)

    def now() -> datetime:
        return datetime.now(UTC)

    def member_of(request: Request, *, writing: bool) -> Member:
        if "authorization" in request.headers:
            raise _Refused(
                403,
                "forbidden",
                "private messages are read with a member's own session; access tokens cannot read them",
            )
        try:
            live, token = pages.require_session(page_deps, request)
        except pages.SignInRequired:
            raise _Refused(401, "login", "sign in first") from None
        if writing:
            try:
                pages.check_form(page_deps, request, {"csrf": request.headers.get(CSRF_HEADER, "")}, token)
            except pages.PageRefused:
                raise _Refused(403, "forbidden", "missing or wrong CSRF token, or another origin") from None
        return _member(live)

    def _member(live: sessions.Live) -> Member:
        if live.actor.role not in members.MEMBER_ROLES:
            # The operator (admin) and other roles are not members: to them no conversation exists.
            raise _Refused(404, "not-found", "no such conversation")
        with unit_of_work(deps.factory) as session:
            # Joining is idempotent: the existing membership, or a new one on the first use.
            return members.join(session=session, crypto=deps.crypto, actor=live.actor, now=now())

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            return await community_common.json_object(request, MAX_BODY)
        except community_common.JsonRefused as refused:
            raise _Refused(refused.status, refused.code, refused.message) from None

    async def answer(
        request: Request, work: Callable[[Member, dict[str, Any]], Response], *, writing: bool
    ) -> Response:
        try:
            body = await body_of(request) if writing else {}
            member = await anyio.to_thread.run_sync(lambda: member_of(request, writing=writing))
            return await anyio.to_thread.run_sync(lambda: work(member, body))
        except _Refused as exc:
            return _error(exc)
        except messages.ContactDetailsWarning as warning:
            findings = [
                {"kind": f.kind, "start": f.start, "end": f.end, "message": f.message} for f in warning.findings
            ]
            refused = _Refused(409, warning.code, warning.message, warning.location)
            return _error(refused, findings=findings)
        except RateLimited as exc:
            refused = _Refused(429, exc.code, exc.message)
            return _error(refused, headers={"Retry-After": str(exc.retry_after)})
        except CommunityError as exc:
            status = community_common.status_of(exc)
            return _error(_Refused(status, exc.code, exc.message, exc.location))

    def text_field(body: dict[str, Any], name: str) -> str:
        value = body.get(name, "")
        if not isinstance(value, str):
            raise _Refused(400, "invalid", f"{name} must be a string", name)
        return value

    @app.get("/community/api/messages", include_in_schema=False)
    async def list_conversations(request: Request) -> Response:
        def work(member: Member, _body: dict[str, Any]) -> Response:
            with unit_of_work(deps.factory) as session:
                found = messages.conversations(session=session, crypto=deps.crypto, member=member)
            rows = [
                {
                    "id": s.id,
                    "with": s.peer or None,
                    "unread": s.unread,
                    "muted": s.muted,
                    "blocked": s.blocked_by_me,
                    "lastSent": _iso(s.last_sent),
                }
                for s in found
            ]
            return _json(200, {"conversations": rows, "unread": sum(s.unread for s in found)})

        return await answer(request, work, writing=False)

    @app.post("/community/api/messages", include_in_schema=False)
    async def start(request: Request) -> Response:
        def work(member: Member, body: dict[str, Any]) -> Response:
            peer = text_field(body, "with")
            with unit_of_work(deps.factory) as session:
                conv = messages.start(session=session, crypto=deps.crypto, member=member, peer_id=peer, now=now())
            return _json(200, {"id": conv})

        return await answer(request, work, writing=True)

    @app.get("/community/api/messages/{conversation}", include_in_schema=False)
    async def read(request: Request, conversation: str) -> Response:
        def work(member: Member, _body: dict[str, Any]) -> Response:
            with unit_of_work(deps.factory) as session:
                t = messages.thread(
                    session=session, crypto=deps.crypto, member=member, conversation_id=conversation, now=now()
                )
            return _json(
                200,
                {
                    "id": t.id,
                    "with": t.peer or None,
                    "muted": t.muted,
                    "blocked": t.blocked_by_me,
                    "canSend": t.can_send,
                    "messages": [
                        {"id": m.id, "mine": m.mine, "sent": _iso(m.sent), "text": m.text, "hidden": m.hidden}
                        for m in t.messages
                    ],
                },
            )

        return await answer(request, work, writing=False)

    @app.post("/community/api/messages/{conversation}", include_in_schema=False)
    async def send(request: Request, conversation: str) -> Response:
        def work(member: Member, body: dict[str, Any]) -> Response:
            text = text_field(body, "text")
            confirm = body.get("confirmContact", False)
            if not isinstance(confirm, bool):
                raise _Refused(400, "invalid", "confirmContact must be true or false", "confirmContact")
            with unit_of_work(deps.factory) as session:
                message_id = messages.send(
                    session=session,
                    crypto=deps.crypto,
                    member=member,
                    conversation_id=conversation,
                    text=text,
                    now=now(),
                    confirm_contact=confirm,
                )
            return _json(201, {"id": message_id})

        return await answer(request, work, writing=True)

    @app.post("/community/api/messages/{conversation}/report", include_in_schema=False)
    async def report(request: Request, conversation: str) -> Response:
        def work(member: Member, body: dict[str, Any]) -> Response:
            message_id = text_field(body, "message")
            with unit_of_work(deps.factory) as session:
                report_id = messages.report(
                    session=session,
                    crypto=deps.crypto,
                    member=member,
                    conversation_id=conversation,
                    message_id=message_id,
                    reason=text_field(body, "reason"),
                    note=text_field(body, "note"),
                    now=now(),
                )
            return _json(201, {"report": report_id})

        return await answer(request, work, writing=True)
