"""The community's JSON face, under /community/api (issue 5): the same services and the same one
visibility decision as the pages.

Credentials: the page session cookie (a member or any signed-in account), or a bearer token. The
operator's system token reads as the viewer "operator", which sees no more than a visitor. A SMART
app token acts for a patient's *record*: it is not a community credential and is refused (403),
so an app a patient authorised for their record cannot read or post in the community as them.
No credential: a visitor. Writes with the cookie must be JSON (a cross-site form cannot send it
without a CORS preflight, which this server never grants) and from our own origin.

Errors are `{"error": code, "message": ..., "field": ...}` with a 4xx status, never content. A
disclosure finding is a 422 with the findings; publishing then needs `"confirm": true`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request, Response
from sqlalchemy.orm import Session, sessionmaker

from medvault.auth.accounts import Actor
from medvault.community import account, members, posts, profiles, review, views
from medvault.community.errors import CommunityError, Forbidden, NotFound, RateLimited
from medvault.config import Settings
from medvault.db import unit_of_work
from medvault.smart import tokens as smart_tokens
from medvault.store.crypto_context import CryptoContext
from medvault.web import community_common, pages

PREFIX = "/community/api"
MAX_BODY = 128 * 1024
_HEADERS = {"X-Robots-Tag": "noindex, nofollow", "Referrer-Policy": "no-referrer"}
OPERATOR = Actor(account_id="operator", role="admin")  # the system token: viewer "operator"


@dataclass
class CommunityApiDeps:
    factory: sessionmaker[Session]
    crypto: CryptoContext
    settings: Settings


class ApiRefused(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass(frozen=True)
class Caller:
    actor: Actor | None
    me: members.Member | None
    via: str  # "cookie" | "operator" | "visitor"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, default=_default),
        status_code=status,
        media_type="application/json",
        headers={**_HEADERS, **(headers or {})},
    )


def _default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError


def _error(exc: CommunityError) -> Response:
    if isinstance(exc, review.NeedsConfirmation):
        found = [
            {
                "field": f.field,
                "findings": [
                    {"kind": x.kind, "start": x.start, "end": x.end, "message": x.message} for x in f.findings
                ],
            }
            for f in exc.found
        ]
        return _json({"error": exc.code, "message": exc.message, "findings": found}, 422)
    if isinstance(exc, RateLimited):
        return _json({"error": exc.code, "message": exc.message}, 429, {"Retry-After": str(exc.retry_after)})
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 400
    message = "not found" if isinstance(exc, NotFound) else exc.message  # one answer for hidden and missing
    return _json({"error": exc.code, "message": message, "field": exc.location}, status)


def _post_json(post: posts.PostView, *, full: bool = True) -> dict[str, Any]:
    """A post or reply; `full` False (listings): the title and snippet the HTML listing shows, not
    the body, which only the single-post endpoint returns (and counts as a read)."""
    out: dict[str, Any] = {
        "id": post.id,
        "thread": post.thread_id,
        "type": "reply" if post.is_reply else post.kind,
        "audience": post.audience,
        "title": post.title or None,
        **({"body": post.body} if full else {"snippet": post.snippet}),
        "author": post.author,
        "created": post.created,
        "updated": post.updated,
        "edited": post.edited,
        "replies": post.replies,
    }
    if post.quote is not None:
        out["quote"] = {
            "id": post.quote.id,
            "removed": post.quote.removed,
            "author": post.quote.author,
            "excerpt": post.quote.excerpt,
        }
    if post.mine:
        out["mine"] = True
        out["hidden_by_moderator"] = post.hidden
    return out


def install(app: FastAPI, deps: CommunityApiDeps) -> None:
    budget = views.Budget.from_settings(deps.settings)
    page_deps = pages.PageDeps(deps.factory, deps.crypto)

    def now() -> datetime:
        return datetime.now(UTC)

    def caller(request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            value = value.strip()
            if scheme.lower() != "bearer" or not value or len(value) > 256:
                raise ApiRefused(
                    401, "login", "missing, expired or revoked bearer token", {"WWW-Authenticate": "Bearer"}
                )
            with unit_of_work(deps.factory) as session:
                bearer = smart_tokens.resolve_bearer(session=session, crypto=deps.crypto, token=value, now=now())
            if bearer is None:
                raise ApiRefused(
                    401, "login", "missing, expired or revoked bearer token", {"WWW-Authenticate": "Bearer"}
                )
            if bearer.actor is not None:
                raise ApiRefused(403, "forbidden", "an app token for a health record is not a community credential")
            return Caller(OPERATOR, None, "operator")
        found = pages.optional_session(page_deps, request)
        if found is None:
            return Caller(None, None, "visitor")
        live, _token = found
        return Caller(live.actor, community_common.member_of(page_deps, live.actor), "cookie")

    def member(request: Request) -> tuple[Caller, members.Member]:
        who = caller(request)
        if who.actor is None:
            raise ApiRefused(401, "login", "sign in first")
        if who.me is None:
            raise ApiRefused(403, "forbidden", "join the community first")
        return who, who.me

    async def body(request: Request) -> dict[str, Any]:
        origin = request.headers.get("origin")
        if origin is not None and not pages.same_host(request, origin):
            raise ApiRefused(403, "forbidden", "cross-site request refused")
        try:
            return await community_common.json_object(request, MAX_BODY)
        except community_common.JsonRefused as refused:
            raise ApiRefused(refused.status, refused.code, refused.message) from None

    def text(doc: dict[str, Any], name: str, default: str = "") -> str:
        value = doc.get(name, default)
        if not isinstance(value, str):
            raise ApiRefused(400, "invalid", f"{name} must be a string")
        return value

    def confirm(doc: dict[str, Any]) -> bool:
        return doc.get("confirm") is True

    def listed(who: Caller, items: list[str]) -> None:
        account_id = who.actor.account_id if who.actor and who.via == "cookie" else None
        community_common.count_listed(page_deps, budget=budget, account_id=account_id, items=items, now=now())

    def counted(request: Request, who: Caller, kind: views.ViewKind, item: str | None) -> None:
        account_id = who.actor.account_id if who.actor and who.via == "cookie" else None
        community_common.count_view(
            page_deps, request, budget=budget, kind=kind, account_id=account_id, item=item, now=now()
        )

    def run(work: Callable[[], Response]) -> Response:
        try:
            return work()
        except CommunityError as exc:
            return _error(exc)
        except ApiRefused as exc:
            return _json({"error": exc.code, "message": exc.message}, exc.status, exc.headers)

    async def threaded(work: Callable[[], Response]) -> Response:
        return await anyio.to_thread.run_sync(lambda: run(work))

    async def with_body(request: Request, work: Callable[[dict[str, Any]], Response]) -> Response:
        try:
            doc = await body(request)
        except ApiRefused as exc:
            return _json({"error": exc.code, "message": exc.message}, exc.status, exc.headers)
        return await threaded(lambda: work(doc))

    # -- reading -------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/posts", include_in_schema=False)
    async def list_posts(request: Request) -> Response:
        def work() -> Response:
            who = caller(request)
            try:
                number = max(1, min(int(request.query_params.get("page", "1")), 10**6))
            except ValueError:
                raise ApiRefused(400, "invalid", "page must be a number") from None
            counted(request, who, "listing", None)
            with unit_of_work(deps.factory) as session:
                found = posts.listing(session=session, crypto=deps.crypto, actor=who.actor, me=who.me, page=number)
            listed(who, [p.id for p in found.posts])
            return _json(
                {
                    "total": found.total,
                    "page": found.page,
                    "pages": found.pages,
                    "posts": [_post_json(p, full=False) for p in found.posts],
                }
            )

        return await threaded(work)

    @app.get(f"{PREFIX}/posts/{{post_id}}", include_in_schema=False)
    async def get_thread(request: Request, post_id: str) -> Response:
        def work() -> Response:
            who = caller(request)
            counted(request, who, "post", post_id)
            with unit_of_work(deps.factory) as session:
                found = posts.thread(session=session, crypto=deps.crypto, actor=who.actor, me=who.me, post_id=post_id)
            return _json(
                {
                    "id": found.id,
                    "audience": found.audience,
                    "post": _post_json(found.post) if found.post else {"removed": True},
                    "replies": [_post_json(r) for r in found.replies],
                }
            )

        return await threaded(work)

    @app.get(f"{PREFIX}/members/{{handle}}", include_in_schema=False)
    async def get_profile(request: Request, handle: str) -> Response:
        def work() -> Response:
            who = caller(request)
            counted(request, who, "profile", handle)
            with unit_of_work(deps.factory) as session:
                shown = profiles.view(session=session, crypto=deps.crypto, actor=who.actor, me=who.me, handle=handle)
            return _json({"shape": type(shown).__name__, **asdict(shown)})

        return await threaded(work)

    # -- writing -------------------------------------------------------------------------------

    @app.post(f"{PREFIX}/posts", include_in_schema=False)
    async def create_post(request: Request) -> Response:
        def work(doc: dict[str, Any]) -> Response:
            _who, me = member(request)
            with unit_of_work(deps.factory) as session:
                post_id = posts.create(
                    session=session,
                    crypto=deps.crypto,
                    member=me,
                    kind=text(doc, "type", "question"),
                    title=text(doc, "title"),
                    body=text(doc, "body"),
                    audience=text(doc, "audience", "members"),
                    confirm=confirm(doc),
                    now=now(),
                )
            return _json({"id": post_id}, 201, {"Location": f"{PREFIX}/posts/{post_id}"})

        return await with_body(request, work)

    @app.post(f"{PREFIX}/posts/{{post_id}}/replies", include_in_schema=False)
    async def create_reply(request: Request, post_id: str) -> Response:
        def work(doc: dict[str, Any]) -> Response:
            who, me = member(request)
            assert who.actor is not None
            with unit_of_work(deps.factory) as session:
                reply_id = posts.reply(
                    session=session,
                    crypto=deps.crypto,
                    actor=who.actor,
                    member=me,
                    post_id=post_id,
                    body=text(doc, "body"),
                    quote_id=text(doc, "quote") or None,
                    confirm=confirm(doc),
                    now=now(),
                )
            return _json({"id": reply_id}, 201)

        return await with_body(request, work)

    @app.put(f"{PREFIX}/posts/{{item_id}}", include_in_schema=False)
    async def edit_post(request: Request, item_id: str) -> Response:
        def work(doc: dict[str, Any]) -> Response:
            _who, me = member(request)
            with unit_of_work(deps.factory) as session:
                posts.edit(
                    session=session,
                    crypto=deps.crypto,
                    member=me,
                    item_id=item_id,
                    title=text(doc, "title") or None,
                    body=text(doc, "body"),
                    audience=text(doc, "audience") or None,
                    confirm=confirm(doc),
                    now=now(),
                )
            return _json({"id": item_id})

        return await with_body(request, work)

    @app.delete(f"{PREFIX}/posts/{{item_id}}", include_in_schema=False)
    async def delete_post(request: Request, item_id: str) -> Response:
        def work() -> Response:
            who, me = member(request)
            if who.via == "cookie":
                check_origin(request)
            with unit_of_work(deps.factory) as session:
                posts.delete_item(session=session, crypto=deps.crypto, member=me, item_id=item_id)
            return Response(status_code=204, headers=_HEADERS)

        return await threaded(work)

    @app.get(f"{PREFIX}/posts/{{item_id}}/revisions", include_in_schema=False)
    async def revisions(request: Request, item_id: str) -> Response:
        def work() -> Response:
            _who, me = member(request)
            with unit_of_work(deps.factory) as session:
                found = posts.history(session=session, crypto=deps.crypto, member=me, item_id=item_id)
            return _json({"revisions": found})

        return await threaded(work)

    @app.get(f"{PREFIX}/me/profile", include_in_schema=False)
    async def my_profile(request: Request) -> Response:
        def work() -> Response:
            _who, me = member(request)
            with unit_of_work(deps.factory) as session:
                mine = profiles.own(session=session, crypto=deps.crypto, member=me)
            return _json({"shape": "OwnProfile", **asdict(mine)})

        return await threaded(work)

    @app.put(f"{PREFIX}/me/profile", include_in_schema=False)
    async def save_profile(request: Request) -> Response:
        def work(doc: dict[str, Any]) -> Response:
            _who, me = member(request)
            values, visibility = doc.get("values", {}), doc.get("visibility", {})
            if not isinstance(values, dict) or not isinstance(visibility, dict):
                raise ApiRefused(400, "invalid", "values and visibility are JSON objects")
            if not all(isinstance(v, str) for v in [*values.values(), *visibility.values()]):
                raise ApiRefused(400, "invalid", "values and visibilities are strings")
            linked = doc.get("record_linked", False)
            if not isinstance(linked, bool):
                raise ApiRefused(400, "invalid", "record_linked is true or false")
            with unit_of_work(deps.factory) as session:
                mine = profiles.update(
                    session=session,
                    crypto=deps.crypto,
                    member=me,
                    values=values,
                    visibility=visibility,
                    record_linked=linked,
                    confirm=confirm(doc),
                    now=now(),
                )
            return _json({"shape": "OwnProfile", **asdict(mine)})

        return await with_body(request, work)

    @app.post(f"{PREFIX}/join", include_in_schema=False)
    async def join(request: Request) -> Response:
        def work() -> Response:
            who = caller(request)
            if who.actor is None or who.via != "cookie":
                raise ApiRefused(401, "login", "sign in first")
            check_origin(request)
            with unit_of_work(deps.factory) as session:
                me = members.join(session=session, crypto=deps.crypto, actor=who.actor, now=now())
            return _json({"member": me.id})

        return await threaded(work)

    # -- your data ------------------------------------------------------------------------------

    @app.get(f"{PREFIX}/me/data", include_in_schema=False)
    async def my_data(request: Request) -> Response:
        def work() -> Response:
            who, me = member(request)
            assert who.actor is not None
            with unit_of_work(deps.factory) as session:
                data = account.export_all(session=session, crypto=deps.crypto, actor=who.actor, member=me, now=now())
            return _json(data)

        return await threaded(work)

    @app.delete(f"{PREFIX}/me", include_in_schema=False)
    async def delete_me(request: Request) -> Response:
        def work() -> Response:
            who, me = member(request)
            assert who.actor is not None
            check_origin(request)
            if request.query_params.get("confirm") != "delete":
                raise ApiRefused(400, "invalid", "add ?confirm=delete to delete your community account")
            with unit_of_work(deps.factory) as session:
                account.delete_account(session=session, crypto=deps.crypto, actor=who.actor, member=me, now=now())
            return Response(status_code=204, headers=_HEADERS)

        return await threaded(work)

    def check_origin(request: Request) -> None:
        """A cookie-authenticated change without a body must still come from our own pages."""
        origin = request.headers.get("origin")
        if origin is None or not pages.same_host(request, origin):
            raise ApiRefused(403, "forbidden", "cross-site request refused")
