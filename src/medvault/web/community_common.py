"""What the community's faces share (the post and message pages, and the two JSON faces under
/community/api): who the signed-in account is as a member, counting reads toward the scraping
guard, the HTTP status of a refusal, and reading a JSON body. One copy, so the faces cannot drift
apart on who may act or how a read is counted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import Request

from medvault.auth.accounts import Actor
from medvault.bodies import read_capped
from medvault.community import members, messages, views
from medvault.community.errors import CommunityError, Forbidden, NotFound, RateLimited
from medvault.db import unit_of_work
from medvault.web import pages


def status_of(exc: CommunityError) -> int:
    """The HTTP status of a community refusal."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, messages.ContactDetailsWarning):
        return 409
    return 400


def member_of(deps: pages.PageDeps, actor: Actor) -> members.Member | None:
    """The signed-in account's membership, if it joined."""
    with unit_of_work(deps.factory) as session:
        return members.by_account(session=session, crypto=deps.crypto, account_id=actor.account_id)


def client_address(request: Request) -> str | None:
    """The address the scraping guard counts per (None without a client)."""
    return pages.throttle_address(request.client.host) if request.client else None


def count_view(
    deps: pages.PageDeps,
    request: Request,
    *,
    budget: views.Budget,
    kind: views.ViewKind,
    account_id: str | None,
    item: str | None,
    now: datetime,
) -> None:
    """Count one read. Its own transaction: a view of something missing is still a view (probing
    counts)."""
    with unit_of_work(deps.factory) as session:
        views.count_view(
            session=session,
            crypto=deps.crypto,
            budget=budget,
            kind=kind,
            account_id=account_id,
            address=client_address(request),
            item=item,
            now=now,
        )


def count_listed(
    deps: pages.PageDeps, *, budget: views.Budget, account_id: str | None, items: list[str], now: datetime
) -> None:
    """The posts a listing shows were read (titles and openings): they count toward the reading
    alert like opened posts (an account's reads only). Its own transaction, like `count_view`."""
    if account_id is None:
        return
    with unit_of_work(deps.factory) as session:
        views.count_listed(
            session=session, crypto=deps.crypto, budget=budget, account_id=account_id, items=items, now=now
        )


class JsonRefused(Exception):
    """A JSON body we do not read: the status, an error code and a message (never the content)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object body, at most `limit` bytes (read no further), or JsonRefused."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise JsonRefused(415, "not-supported", "send JSON (application/json)")
    raw = await read_capped(request, limit)
    if raw is None:
        raise JsonRefused(413, "too-costly", "the body is too large")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise JsonRefused(400, "invalid", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise JsonRefused(400, "invalid", "the body must be a JSON object")
    return doc
