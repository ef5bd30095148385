"""Community pages (issue 5): the feed of posts, a post with its replies, writing, editing and
deleting, replying, profiles with per-field visibility, "your data"; the Atom feed, the sitemap and
robots rules. A face: every decision is in medvault.community (the one visibility decision is
audience.may_see); these handlers parse, call the services and render.

Signed-out visitors may read what is public. A post they may not see and a post that does not
exist get one and the same page (no title, no snippet, no count). Only a public post read by anyone
carries OpenGraph tags and may be indexed; every other community response says `noindex` in a meta
tag and in `X-Robots-Tag`. Nothing here is cached (the app sends `Cache-Control: no-store`), so a
narrowed audience applies at the next request everywhere.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session

from medvault.auth import sessions
from medvault.auth.accounts import Actor
from medvault.bodies import BodyRefused, read_capped, read_form
from medvault.community import account, members, posts, profiles, review, views
from medvault.community.audience import VISIBILITIES, may_see
from medvault.community.errors import CommunityError, Forbidden, NotFound, RateLimited
from medvault.community.images import MAX_BYTES, OUTPUT_TYPE
from medvault.config import Settings
from medvault.db import unit_of_work
from medvault.records import guard, service
from medvault.records.errors import NotFound as RecordNotFound
from medvault.web import community_common, pages

T = TypeVar("T")
_MAX_FORM = 160 * 1024  # a 20,000-character post, percent-encoded
NOINDEX = "noindex, nofollow, noarchive, nosnippet"
_NOINDEX_HEADERS = {"X-Robots-Tag": NOINDEX}
VISIBILITY_LABELS = {"only-me": "Only me", "members": "Members", "everyone": "Everyone"}
FIELD_LABELS = {
    "display_name": "Display name (a pseudonym is normal)",
    "birth": "Birth year or age band",
    "sex": "Sex",
    "country": "Country",
    "postcode": "Postcode",
    "diagnosis": "Diagnosis",
    "subtype": "Subtype",
    "treatment": "Treatment history",
    "bio": "About me",
    "avatar": "Picture",
}
_NOT_AVAILABLE = (
    "This post is not available. It may have been removed, or it is for members only: sign in if you are one."
)


@dataclass(frozen=True)
class Reader:
    """Who is reading: signed out (`live` None), or a signed-in account and, if they joined, member."""

    live: sessions.Live | None
    token: str | None
    me: members.Member | None

    @property
    def actor(self) -> Actor | None:
        return self.live.actor if self.live else None

    @property
    def can_join(self) -> bool:
        return self.live is not None and self.me is None and self.live.actor.role in members.MEMBER_ROLES


def _budget(request: Request) -> views.Budget:
    state = getattr(request.app.state, "medvault", None)
    settings = getattr(state, "settings", None)
    return views.Budget.from_settings(settings if isinstance(settings, Settings) else Settings())


def _now() -> datetime:
    return datetime.now(UTC)


def _page(name: str, *, status: int = 200, indexable: bool = False, **context: Any) -> HTMLResponse:
    response = pages.page(name, status=status, indexable=indexable, **context)
    if not indexable:
        response.headers["X-Robots-Tag"] = NOINDEX
    return response


def refused_page(exc: CommunityError, reader: Reader | None) -> HTMLResponse:
    """The page for a refused community request: the same not-available page for hidden and missing."""
    live = reader.live if reader else None
    if isinstance(exc, NotFound):
        return _page("community_missing.html", status=404, live=live, message=_NOT_AVAILABLE)
    if isinstance(exc, RateLimited):
        response = _page(
            "base.html", status=429, live=live, message="You are reading very fast. Please try again later."
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    status = _status(exc)
    return _page("base.html", status=status, live=live, message=exc.message)


async def _form(request: Request) -> dict[str, str]:
    try:
        return dict(await read_form(request, _MAX_FORM))
    except BodyRefused as refused:
        raise pages.PageRefused(refused.status, refused.message) from None


_UPLOAD_PARTS = 4  # the picture form has csrf, picture and remove: anything longer is not our form
_UPLOAD_HEADERS = 4  # per part: Content-Disposition and Content-Type are all a browser sends
_UPLOAD_HEADER_BYTES = 1024  # one header line, name and value (a file name included)


class _Malformed(Exception):
    """A multipart body we will not parse further (too many parts or headers, or not a form)."""


def _multipart(raw: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name, in memory (the body is capped, and
    nothing of an upload touches the disk in plaintext).

    python-multipart parses in one linear pass and refuses folded, overlong or too many header
    lines (the stdlib email parser cost ~90 us per folded line: a 2 MB body froze the server for
    seconds). Run it in a worker thread, never on the event loop."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if ctype != b"multipart/form-data" or not (0 < len(boundary) <= 70):
        raise pages.PageRefused(400, "the upload is not a form")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    field, value = bytearray(), bytearray()

    def part_begin() -> None:
        if len(parts) >= _UPLOAD_PARTS:
            raise _Malformed
        parts.append(({}, bytearray()))

    def header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])
        if len(field) > _UPLOAD_HEADER_BYTES:
            raise _Malformed

    def header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])
        if len(field) + len(value) > _UPLOAD_HEADER_BYTES:
            raise _Malformed

    def header_end() -> None:
        headers = parts[-1][0]
        if len(headers) >= _UPLOAD_HEADERS:
            raise _Malformed
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part_begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": part_data,
        },
        max_header_count=_UPLOAD_HEADERS,
        max_header_size=_UPLOAD_HEADER_BYTES,
    )
    try:
        parser.write(raw)
        parser.finalize()
    except (_Malformed, FormParserError):
        raise pages.PageRefused(400, "the upload is not a form this page sends") from None
    out: dict[str, bytes] = {}
    for headers, payload in parts:
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition == b"form-data" and name:
            out[name.decode("utf-8", "replace")] = bytes(payload)
    return out


def build_router(deps: pages.PageDeps) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def reader_of(request: Request) -> Reader:
        found = pages.optional_session(deps, request)
        if found is None:
            return Reader(None, None, None)
        live, token = found
        return Reader(live, token, community_common.member_of(deps, live.actor))

    def member_of(request: Request) -> tuple[Reader, members.Member]:
        reader = reader_of(request)
        if reader.live is None:
            raise pages.SignInRequired
        if reader.me is None:
            raise pages.PageRefused(403, "Join the community first (on the community page).")
        return reader, reader.me

    def posted(request: Request, form: dict[str, str]) -> tuple[Reader, members.Member]:
        """The member sending a form of theirs, after the form's origin and CSRF token are checked."""
        reader, me = member_of(request)
        assert reader.token is not None
        pages.check_form(deps, request, form, reader.token)
        return reader, me

    def counted(request: Request, reader: Reader, kind: views.ViewKind, item: str | None) -> None:
        account_id = reader.actor.account_id if reader.actor else None
        community_common.count_view(
            deps, request, budget=_budget(request), kind=kind, account_id=account_id, item=item, now=_now()
        )

    def listed(request: Request, reader: Reader, found: posts.Listing) -> None:
        account_id = reader.actor.account_id if reader.actor else None
        items = [p.id for p in found.posts]
        community_common.count_listed(deps, budget=_budget(request), account_id=account_id, items=items, now=_now())

    def guarded(reader: Reader | None, work: Callable[[], Response]) -> Response:
        try:
            return work()
        except CommunityError as exc:
            return refused_page(exc, reader)

    def names(session: Session, reader: Reader, handles: set[str]) -> dict[str, str]:
        return profiles.display_names(
            session=session, crypto=deps.crypto, actor=reader.actor, me=reader.me, handles=handles
        )

    # -- reading -------------------------------------------------------------------------------

    @router.get("/community")
    def home(request: Request) -> Response:
        reader = reader_of(request)
        try:
            number = max(1, min(int(request.query_params.get("page", "1")), 10**6))
        except ValueError:
            number = 1

        def work() -> Response:
            counted(request, reader, "listing", None)
            with unit_of_work(deps.factory) as session:
                found = posts.listing(
                    session=session, crypto=deps.crypto, actor=reader.actor, me=reader.me, page=number
                )
                authors = names(session, reader, {p.author for p in found.posts})
            listed(request, reader, found)
            return _page(
                "community_list.html",
                live=reader.live,
                reader=reader,
                listing=found,
                authors=authors,
                indexable=reader.live is None,
                suspended=reader.me is not None and reader.me.suspended(_now()),
            )

        return guarded(reader, work)

    @router.get("/community/posts/{post_id}")
    def thread_page(request: Request, post_id: str) -> Response:
        reader = reader_of(request)

        def work() -> Response:
            counted(request, reader, "post", post_id)
            with unit_of_work(deps.factory) as session:
                found = posts.thread(
                    session=session, crypto=deps.crypto, actor=reader.actor, me=reader.me, post_id=post_id
                )
                handles = {r.author for r in found.replies} | ({found.post.author} if found.post else set())
                handles |= {r.quote.author for r in found.replies if r.quote and r.quote.author}
                authors = names(session, reader, handles)
            public = (
                found.post is not None
                and not found.post.hidden
                and may_see(visibility=found.audience, viewer="visitor")
            )
            return _page(
                "community_post.html",
                live=reader.live,
                reader=reader,
                thread=found,
                authors=authors,
                public=public,
                indexable=public,
                can_reply=reader.me is not None and not reader.me.suspended(_now()),
                url=str(request.url),
            )

        return guarded(reader, work)

    @router.get("/community/members/{handle}")
    def profile_page(request: Request, handle: str) -> Response:
        reader = reader_of(request)

        def work() -> Response:
            counted(request, reader, "profile", handle)
            with unit_of_work(deps.factory) as session:
                shown = profiles.view(
                    session=session, crypto=deps.crypto, actor=reader.actor, me=reader.me, handle=handle
                )
                theirs = posts.listing(
                    session=session, crypto=deps.crypto, actor=reader.actor, me=reader.me, author=handle, per_page=20
                )
            listed(request, reader, theirs)
            own = isinstance(shown, profiles.OwnProfile)
            values = shown.values if isinstance(shown, profiles.OwnProfile) else _shared_values(shown)
            return _page(
                "community_profile.html",
                live=reader.live,
                reader=reader,
                handle=handle,
                own=own,
                profile=shown,
                rows=[(FIELD_LABELS[f], values[f]) for f in profiles.TEXT_FIELDS if values.get(f)],
                visibility=shown.visibility if isinstance(shown, profiles.OwnProfile) else {},
                labels=VISIBILITY_LABELS,
                posts=theirs.posts,
            )

        return guarded(reader, work)

    @router.get("/community/members/{handle}/picture")
    def picture(request: Request, handle: str) -> Response:
        reader = reader_of(request)
        try:
            counted(request, reader, "picture", handle)
            with unit_of_work(deps.factory) as session:
                png = profiles.avatar(
                    session=session, crypto=deps.crypto, actor=reader.actor, me=reader.me, handle=handle
                )
        except CommunityError as exc:
            return refused_page(exc, reader)
        return Response(png, media_type=OUTPUT_TYPE, headers={**_NOINDEX_HEADERS, "Content-Security-Policy": pages.CSP})

    # -- joining and writing ---------------------------------------------------------------------

    @router.post("/community/join")
    async def join(request: Request) -> Response:
        form = await _form(request)

        def work() -> Response:
            live, token = pages.require_session(deps, request)
            pages.check_form(deps, request, form, token)
            try:
                with unit_of_work(deps.factory) as session:
                    members.join(session=session, crypto=deps.crypto, actor=live.actor, now=_now())
            except Forbidden as exc:
                return refused_page(exc, Reader(live, token, None))
            return RedirectResponse("/community", status_code=303)

        return await anyio.to_thread.run_sync(work)

    def write_form(
        reader: Reader, *, values: dict[str, str], mode: str, action: str, message: str | None = None, status: int = 200
    ) -> HTMLResponse:
        heading = {"new-post": "Write a post", "edit-post": "Edit your post", "new-reply": "Your reply"}.get(
            mode, "Edit your reply"
        )
        return _page(
            "community_write.html",
            status=status,
            live=reader.live,
            values=values,
            message=message,
            mode=mode,
            action=action,
            heading=heading,
            audiences=[("members", "Members only"), ("everyone", "Everyone, including people who are not signed in")],
            kinds=[("question", "Question"), ("blog", "Blog post")],
        )

    def preview(
        reader: Reader, stopped: review.NeedsConfirmation, *, action: str, values: dict[str, str]
    ) -> HTMLResponse:
        found = [
            {"field": f.field, "pieces": review.highlight(f.text, f.findings), "count": len(f.findings)}
            for f in stopped.found
        ]
        return _page(
            "community_preview.html",
            status=422,
            live=reader.live,
            found=found,
            action=action,
            values=values,
        )

    def form_values(form: dict[str, str]) -> dict[str, str]:
        return {k: form.get(k, "") for k in ("kind", "title", "body", "audience", "quote")}

    @router.get("/community/write")
    def write(request: Request) -> Response:
        reader, _me = member_of(request)
        return write_form(
            reader, values={"kind": "question", "audience": "members"}, mode="new-post", action="/community/write"
        )

    def submit(
        reader: Reader,
        form: dict[str, str],
        *,
        mode: str,
        action: str,
        save: Callable[[Session, dict[str, str], bool], str],
        done: Callable[[str], str],
    ) -> Response:
        """Send a written post, reply or edit: back to the form when asked to edit it again or when
        it is refused, the findings to confirm when the disclosure check stops it, else on to
        `done(saved id)`. `save` gets the form's values and whether the member confirmed."""
        values = form_values(form)
        if form.get("edit"):
            return write_form(reader, values=values, mode=mode, action=action)
        try:
            with unit_of_work(deps.factory) as session:
                saved = save(session, values, form.get("confirm") == "yes")
        except review.NeedsConfirmation as stopped:
            return preview(reader, stopped, action=action, values=values)
        except (NotFound, RateLimited) as exc:
            return refused_page(exc, reader)
        except CommunityError as exc:
            return write_form(
                reader, values=values, mode=mode, action=action, message=_error_text(exc), status=_status(exc)
            )
        return RedirectResponse(done(saved), status_code=303)

    @router.post("/community/write")
    async def publish(request: Request) -> Response:
        form = await _form(request)

        def work() -> Response:
            reader, me = posted(request, form)

            def save(session: Session, values: dict[str, str], confirm: bool) -> str:
                return posts.create(
                    session=session,
                    crypto=deps.crypto,
                    member=me,
                    kind=values["kind"],
                    title=values["title"],
                    body=values["body"],
                    audience=values["audience"] or "members",
                    confirm=confirm,
                    now=_now(),
                )

            return submit(
                reader, form, mode="new-post", action="/community/write", save=save, done="/community/posts/{}".format
            )

        return await anyio.to_thread.run_sync(work)

    @router.post("/community/posts/{post_id}/reply")
    async def reply(request: Request, post_id: str) -> Response:
        form = await _form(request)

        def work() -> Response:
            reader, me = posted(request, form)
            assert reader.live is not None
            actor = reader.live.actor

            def save(session: Session, values: dict[str, str], confirm: bool) -> str:
                return posts.reply(
                    session=session,
                    crypto=deps.crypto,
                    actor=actor,
                    member=me,
                    post_id=post_id,
                    body=values["body"],
                    quote_id=values["quote"] or None,
                    confirm=confirm,
                    now=_now(),
                )

            action = f"/community/posts/{post_id}/reply"
            done = f"/community/posts/{post_id}#r-{{}}".format
            return submit(reader, form, mode="new-reply", action=action, save=save, done=done)

        return await anyio.to_thread.run_sync(work)

    @router.get("/community/posts/{item_id}/edit")
    def edit_form(request: Request, item_id: str) -> Response:
        reader, me = member_of(request)

        def work() -> Response:
            with unit_of_work(deps.factory) as session:
                item = _own_item(session, deps, me, item_id)
            values = {"kind": item.kind, "title": item.title, "body": item.body, "audience": item.audience, "quote": ""}
            return write_form(reader, values=values, mode=_edit_mode(item), action=f"/community/posts/{item_id}/edit")

        return guarded(reader, work)

    @router.post("/community/posts/{item_id}/edit")
    async def save_edit(request: Request, item_id: str) -> Response:
        form = await _form(request)

        def work() -> Response:
            reader, me = posted(request, form)
            with unit_of_work(deps.factory) as session:
                item = _own_item(session, deps, me, item_id)

            def save(session: Session, values: dict[str, str], confirm: bool) -> str:
                posts.edit(
                    session=session,
                    crypto=deps.crypto,
                    member=me,
                    item_id=item_id,
                    title=values["title"],
                    body=values["body"],
                    audience=values["audience"] or None,
                    confirm=confirm,
                    now=_now(),
                )
                return item.thread_id

            action, done = f"/community/posts/{item_id}/edit", "/community/posts/{}".format
            return submit(reader, form, mode=_edit_mode(item), action=action, save=save, done=done)

        return await anyio.to_thread.run_sync(lambda: guarded(None, work))

    @router.get("/community/posts/{item_id}/history")
    def history(request: Request, item_id: str) -> Response:
        reader, me = member_of(request)

        def work() -> Response:
            with unit_of_work(deps.factory) as session:
                item = _own_item(session, deps, me, item_id)
                found = posts.history(session=session, crypto=deps.crypto, member=me, item_id=item_id)
            return _page("community_history.html", live=reader.live, item=item, revisions=found)

        return guarded(reader, work)

    @router.get("/community/posts/{item_id}/delete")
    def delete_form(request: Request, item_id: str) -> Response:
        reader, me = member_of(request)

        def work() -> Response:
            with unit_of_work(deps.factory) as session:
                item = _own_item(session, deps, me, item_id)
            return _page("community_delete.html", live=reader.live, item=item)

        return guarded(reader, work)

    @router.post("/community/posts/{item_id}/delete")
    async def delete(request: Request, item_id: str) -> Response:
        form = await _form(request)

        def work() -> Response:
            _reader, me = posted(request, form)
            with unit_of_work(deps.factory) as session:
                item = _own_item(session, deps, me, item_id)
                posts.delete_item(session=session, crypto=deps.crypto, member=me, item_id=item_id)
            return RedirectResponse(
                f"/community/posts/{item.thread_id}" if item.is_reply else "/community", status_code=303
            )

        return await anyio.to_thread.run_sync(lambda: guarded(None, work))

    # -- profile -------------------------------------------------------------------------------

    def profile_form(
        reader: Reader,
        me: members.Member,
        *,
        message: str | None = None,
        status: int = 200,
        override: dict[str, str] | None = None,
    ) -> HTMLResponse:
        with unit_of_work(deps.factory) as session:
            mine = profiles.own(session=session, crypto=deps.crypto, member=me)
        values = dict(mine.values)
        visibility: dict[str, str] = dict(mine.visibility)
        linked = mine.record_linked
        if override is not None:
            values = {f: override.get(f, "") for f in profiles.TEXT_FIELDS}
            visibility = {f: override.get(f"{f}.visibility", visibility.get(f, "only-me")) for f in profiles.FIELDS}
            linked = override.get("record_linked") == "yes"
        suggested: dict[str, str] = {}
        actor = reader.actor
        if mine.record_linked and actor is not None and actor.role == "patient" and actor.patient_id:
            # Linked by the member's explicit choice: read their own Patient (audited like any read
            # of the record) to suggest values on this page, to them alone.
            caller = guard.Caller(actor=actor, via="page", address=None)
            try:
                with guard.unit_of_work(deps.factory, deps.crypto, caller) as vault:
                    patient = service.read(vault=vault, rtype="Patient", rid=actor.patient_id)
                suggested = profiles.suggestions_from_record(patient)
            except (RecordNotFound, guard.Forbidden):
                suggested = {}
        return _page(
            "community_profile_edit.html",
            suggested=suggested,
            status=status,
            live=reader.live,
            handle=me.id,
            fields=[(f, FIELD_LABELS[f]) for f in profiles.TEXT_FIELDS],
            values=values,
            visibility=visibility,
            linked=linked,
            has_avatar=mine.has_avatar,
            hidden=mine.hidden,
            choices=[(v, VISIBILITY_LABELS[v]) for v in VISIBILITIES],
            sexes=profiles.SEX_CHOICES,
            message=message,
            long_fields=("treatment", "bio"),
        )

    @router.get("/community/me/profile")
    def edit_profile(request: Request) -> Response:
        reader, me = member_of(request)
        return profile_form(reader, me)

    @router.post("/community/me/profile")
    async def save_profile(request: Request) -> Response:
        form = await _form(request)

        def work() -> Response:
            reader, me = posted(request, form)
            if form.get("edit"):
                return profile_form(reader, me, override=form)
            try:
                with unit_of_work(deps.factory) as session:
                    profiles.update(
                        session=session,
                        crypto=deps.crypto,
                        member=me,
                        values={f: form.get(f, "") for f in profiles.TEXT_FIELDS if f in form},
                        visibility={f: form[f"{f}.visibility"] for f in profiles.FIELDS if f"{f}.visibility" in form},
                        record_linked=form.get("record_linked") == "yes",
                        confirm=form.get("confirm") == "yes",
                        now=_now(),
                    )
            except review.NeedsConfirmation as stopped:
                return preview(reader, stopped, action="/community/me/profile", values=form)
            except CommunityError as exc:
                status = _status(exc)
                return profile_form(reader, me, message=_error_text(exc), status=status, override=form)
            return RedirectResponse(f"/community/members/{me.id}", status_code=303)

        return await anyio.to_thread.run_sync(work)

    @router.post("/community/me/picture")
    async def upload_picture(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise pages.PageRefused(415, "send the picture from the profile form")
        # Who is asking, and from where, before a byte of the body is read: a stranger's upload is
        # refused unread (the CSRF token itself is inside the body, so it is checked after).
        reader, me = await anyio.to_thread.run_sync(member_of, request)
        assert reader.token is not None
        token = reader.token
        if not pages._same_origin(request):
            raise pages.PageRefused(403, "the form has expired; reload the page and try again")
        raw = await read_capped(request, MAX_BYTES + 64 * 1024)
        if raw is None:
            raise pages.PageRefused(413, "the picture is larger than 2 MB")

        def work() -> Response:
            parts = _multipart(raw, content_type)
            form = {"csrf": parts.get("csrf", b"").decode("utf-8", "replace")}
            pages.check_form(deps, request, form, token)
            try:
                if parts.get("remove") != b"yes":
                    # Its own transaction: an upload that fails to decode still counts.
                    with unit_of_work(deps.factory) as session:
                        profiles.count_upload(session=session, crypto=deps.crypto, member=me, now=_now())
                with unit_of_work(deps.factory) as session:
                    if parts.get("remove") == b"yes":
                        profiles.remove_avatar(session=session, crypto=deps.crypto, member=me, now=_now())
                    else:
                        profiles.set_avatar(
                            session=session, crypto=deps.crypto, member=me, data=parts.get("picture", b""), now=_now()
                        )
            except RateLimited as exc:
                return refused_page(exc, reader)
            except CommunityError as exc:
                return profile_form(reader, me, message=_error_text(exc), status=_status(exc))
            return RedirectResponse("/community/me/profile", status_code=303)

        return await anyio.to_thread.run_sync(work)

    # -- your data ------------------------------------------------------------------------------

    @router.get("/community/me/data")
    def data_page(request: Request) -> Response:
        reader, me = member_of(request)
        return _page("community_data.html", live=reader.live, handle=me.id, message=None)

    @router.get("/community/me/data.json")
    def download(request: Request) -> Response:
        reader, me = member_of(request)
        assert reader.live is not None
        with unit_of_work(deps.factory) as session:
            data = account.export_all(
                session=session, crypto=deps.crypto, actor=reader.live.actor, member=me, now=_now()
            )
        return Response(
            orjson.dumps(data, option=orjson.OPT_INDENT_2),
            media_type="application/json",
            headers={
                "Content-Disposition": 'attachment; filename="my-community-data.json"',
                **_NOINDEX_HEADERS,
            },
        )

    @router.post("/community/me/delete")
    async def delete_account(request: Request) -> Response:
        form = await _form(request)

        def work() -> Response:
            reader, me = posted(request, form)
            assert reader.live is not None
            if form.get("confirm", "").strip().lower() != "delete":
                return _page(
                    "community_data.html",
                    status=400,
                    live=reader.live,
                    handle=me.id,
                    message='Type the word "delete" to confirm.',
                )
            with unit_of_work(deps.factory) as session:
                account.delete_account(
                    session=session, crypto=deps.crypto, actor=reader.live.actor, member=me, now=_now()
                )
            return _page("community_deleted.html", live=reader.live)

        return await anyio.to_thread.run_sync(work)

    # -- feed, sitemap, robots -------------------------------------------------------------------

    @router.get("/community/feed.xml")
    def feed(request: Request) -> Response:
        reader = Reader(None, None, None)  # a feed is read by anyone: it is a visitor
        base = str(request.base_url).rstrip("/")

        def work() -> Response:
            counted(request, reader, "listing", None)
            with unit_of_work(deps.factory) as session:
                found = posts.listing(session=session, crypto=deps.crypto, actor=None, me=None, per_page=50)
                authors = names(session, reader, {p.author for p in found.posts})
            return Response(_atom(base, found.posts, authors), media_type="application/atom+xml")

        return guarded(reader, work)

    @router.get("/community/sitemap.xml")
    def sitemap(request: Request) -> Response:
        reader = Reader(None, None, None)
        base = str(request.base_url).rstrip("/")

        def work() -> Response:
            counted(request, reader, "listing", None)
            with unit_of_work(deps.factory) as session:
                found = posts.listing(session=session, crypto=deps.crypto, actor=None, me=None, per_page=1000)
            return Response(_sitemap(base, found.posts), media_type="application/xml")

        return guarded(reader, work)

    @router.get("/robots.txt")
    def robots(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        # Crawlers may read the public community pages only; members-only pages answer them with the
        # not-available page anyway, and every non-public page says noindex.
        text = (
            "User-agent: *\n"
            "Allow: /community$\n"
            "Allow: /community/posts/\n"
            "Disallow: /community/members/\n"
            "Disallow: /community/me/\n"
            "Disallow: /community/api/\n"
            "Disallow: /\n"
            f"Sitemap: {base}/community/sitemap.xml\n"
        )
        return Response(text, media_type="text/plain")

    return router


def _shared_values(shown: profiles.PublicProfile | profiles.MemberProfile) -> dict[str, str]:
    return {f: v for f in profiles.TEXT_FIELDS if isinstance(v := getattr(shown, f), str)}


def _own_item(session: Session, deps: pages.PageDeps, me: members.Member, item_id: str) -> posts.PostView:
    """The member's own post or reply as they see it (NotFound for anyone else's)."""
    return posts.own_item(session=session, crypto=deps.crypto, member=me, item_id=item_id)


def _edit_mode(item: posts.PostView) -> str:
    return "edit-reply" if item.is_reply else "edit-post"


def _status(exc: CommunityError) -> int:
    """The status of a form sent back with the error shown on it."""
    return 403 if isinstance(exc, Forbidden) else 400


def _error_text(exc: CommunityError) -> str:
    where = FIELD_LABELS.get(exc.location or "", exc.location or "")
    return f"{where}: {exc.message}" if where else exc.message


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _atom(base: str, found: list[posts.PostView], authors: dict[str, str]) -> bytes:
    """An Atom feed of public posts only (the caller lists them as a visitor)."""
    ns = "http://www.w3.org/2005/Atom"
    ET.register_namespace("", ns)
    root = ET.Element(f"{{{ns}}}feed")
    ET.SubElement(root, f"{{{ns}}}title").text = "medvault community: public posts"
    ET.SubElement(root, f"{{{ns}}}id").text = f"{base}/community"
    ET.SubElement(root, f"{{{ns}}}link", href=f"{base}/community/feed.xml", rel="self")
    ET.SubElement(root, f"{{{ns}}}updated").text = _iso(
        max((p.updated for p in found), default=datetime(2026, 1, 1, tzinfo=UTC))
    )
    for post in found:
        entry = ET.SubElement(root, f"{{{ns}}}entry")
        ET.SubElement(entry, f"{{{ns}}}title").text = post.title
        ET.SubElement(entry, f"{{{ns}}}id").text = f"{base}/community/posts/{post.id}"
        ET.SubElement(entry, f"{{{ns}}}link", href=f"{base}/community/posts/{post.id}")
        ET.SubElement(entry, f"{{{ns}}}updated").text = _iso(post.updated)
        author = ET.SubElement(entry, f"{{{ns}}}author")
        ET.SubElement(author, f"{{{ns}}}name").text = authors.get(post.author, "a member")
        ET.SubElement(entry, f"{{{ns}}}summary").text = post.snippet
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _sitemap(base: str, found: list[posts.PostView]) -> bytes:
    ns = "http://www.sitemaps.org/schemas/sitemap/0.9"
    ET.register_namespace("", ns)
    root = ET.Element(f"{{{ns}}}urlset")
    for post in found:
        url = ET.SubElement(root, f"{{{ns}}}url")
        ET.SubElement(url, f"{{{ns}}}loc").text = f"{base}/community/posts/{post.id}"
        ET.SubElement(url, f"{{{ns}}}lastmod").text = post.updated.date().isoformat()
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def install(app: FastAPI, deps: pages.PageDeps) -> None:
    app.include_router(build_router(deps))

    async def community_refused(request: Request, exc: Exception) -> Response:
        # A safety net: a community error that a handler did not turn into its answer is still a
        # clear 4xx (the app's generic domain-error handler would call it a 500).
        assert isinstance(exc, CommunityError)
        if request.url.path.startswith("/community/api"):
            status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 400
            return Response(
                orjson.dumps({"error": exc.code, "message": exc.message}), status, media_type="application/json"
            )
        return refused_page(exc, None)

    app.add_exception_handler(CommunityError, community_refused)
