"""Posts, replies and their revisions (issue 5 item 2).

A post is a question or a blog with an audience: members only (`audience.POST_DEFAULT`) or everyone.
A reply is written under its post's audience at that moment and keeps it: what is shown of a reply
is the narrower of the post's and the reply's audience. Narrowing a post caps its replies' rows in
the same transaction (so every face and every SQL filter sees the narrower one at once; nothing is
cached anywhere); widening a post never widens a reply: its author agreed to the audience they
wrote for, not to a wider one chosen later by someone else.

Who sees an item is decided by `audience.may_see` for the caller's viewer (`members.viewer_of`),
by moderation (a hidden item is shown to its author only) and by blocks: a member and someone
they blocked, either way round, do not see each other's posts and replies (`messages.blocked_pairs`;
docs/design-community.md). Every function that returns content takes the caller (`actor`, `me`)
and filters through that one decision; listing counts are counts of what the caller may see. An
item the caller may not see and an item that does not exist raise the same NotFound, so a refusal
confirms nothing; reporting (moderation's `reportable_by`) and quoting answer by the same rule.

Edits keep the previous text as a revision (author only). Deleting removes the item's row and all
its revisions (SQLite overwrites freed pages: secure_delete; PostgreSQL's dead rows go at vacuum,
and the text in them is ciphertext); replies that quoted it then show "removed". Replies to a
deleted post stay with their authors' choice and show the post as removed. Deleting the author's
community account destroys their data key: every copy of what they wrote becomes unreadable.

Research exports: `research_export` returns nothing of the community (decided by `may_see` for the
"research" viewer, which sees nothing): members never agreed to research use of what they post.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from medvault.auth.accounts import Actor
from medvault.community import members, messages, moderation, review, sealing
from medvault.community.audience import POST_DEFAULT, VISIBILITIES, Viewer, Visibility, may_see, parse_visibility
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.crypto.errors import CryptoError
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import CommunityMember, CommunityPost, CommunityRevision

__all__ = [
    "Listing",
    "PostKind",
    "PostView",
    "Quote",
    "Revision",
    "Thread",
    "author_of",
    "create",
    "delete_all_of",
    "delete_item",
    "edit",
    "export",
    "history",
    "listing",
    "own_item",
    "reply",
    "research_export",
    "set_hidden",
    "snapshot_for_report",
    "thread",
]

PostKind = Literal["question", "blog"]
KINDS: tuple[PostKind, ...] = get_args(PostKind)
TITLE_MAX = 200
BODY_MAX = 20_000
SNIPPET = 200
PAGE_SIZE = 20
_TABLE = "community_post"
_log = logging.getLogger(__name__)
_REVISIONS = "community_revision"


@dataclass(frozen=True)
class Quote:
    """What a reply quotes: the original's author and opening, or `removed` when it is gone (deleted,
    hidden, or not for this caller)."""

    id: str
    removed: bool
    author: str | None = None
    excerpt: str | None = None


@dataclass(frozen=True)
class PostView:
    """A post or reply as one caller may see it. `hidden` is only ever True for its author."""

    id: str
    thread_id: str
    is_reply: bool
    kind: str
    audience: Visibility
    title: str
    body: str
    author: str
    created: datetime
    updated: datetime
    edited: bool
    mine: bool
    hidden: bool
    quote: Quote | None = None
    replies: int = 0

    @property
    def snippet(self) -> str:
        return self.body if len(self.body) <= SNIPPET else self.body[:SNIPPET].rstrip() + "…"


@dataclass(frozen=True)
class Thread:
    """A post (None: it was removed, but replies remain) and the replies the caller may see."""

    id: str
    post: PostView | None
    replies: list[PostView]
    audience: Visibility


@dataclass(frozen=True)
class Listing:
    posts: list[PostView]
    total: int  # how many the caller may see, never more
    page: int
    pages: int


@dataclass(frozen=True)
class Revision:
    number: int
    created: datetime
    title: str
    body: str


# -- helpers -----------------------------------------------------------------------------------


def _new_id() -> str:
    return secrets.token_hex(10)


def _check_text(value: str, *, limit: int, location: str, one_line: bool = False, required: bool = True) -> str:
    text = value.replace("\r\n", "\n").strip()
    if required and not text:
        raise CommunityError("this cannot be empty", location=location)
    if len(text) > limit:
        raise CommunityError(f"at most {limit} characters", location=location)
    if any(ord(c) < 32 and c not in "\n\t" for c in text) or "\x7f" in text:
        raise CommunityError("contains control characters", location=location)
    if one_line and "\n" in text:
        raise CommunityError("one line only", location=location)
    return text


def _kind(value: str) -> PostKind:
    if value not in KINDS:
        raise CommunityError("a post is a question or a blog", location="kind")
    return value


def _writer(member: members.Member, now: datetime) -> None:
    if member.suspended(now):
        raise Forbidden("your community account is suspended: you cannot post or reply for now")


def _owner_of(session: Session, author_id: str) -> bytes | None:
    return session.execute(
        select(CommunityMember.key_owner).where(CommunityMember.id == author_id)
    ).scalar_one_or_none()


def _open(session: Session, crypto: CryptoContext, row: CommunityPost) -> dict[str, str]:
    """The item's text; NotFound (logged by id, never content) when its ciphertext does not open: a
    tampered, swapped or orphaned row is "not available", not a 500 for every reader."""
    owner = _owner_of(session, row.author_id)
    if owner is None:
        raise NotFound("no such post")
    try:
        doc = sealing.open_json(
            session=session,
            crypto=crypto,
            owner=owner,
            blob=row.sealed,
            bound=sealing.aad(_TABLE, row.id, "sealed", row.revision),
        )
    except CryptoError:
        _log.warning("community item %s does not open (tampered or moved ciphertext); left out", row.id)
        raise NotFound("no such post") from None
    return {"title": str(doc.get("title", "")), "body": str(doc.get("body", ""))}


def _try_view(
    session: Session,
    crypto: CryptoContext,
    row: CommunityPost,
    viewer: Viewer,
    *,
    quote: Quote | None = None,
    replies: int = 0,
) -> PostView | None:
    """`_view`, or None for an item that does not open (logged in `_open`): a listing or thread
    leaves it out and shows the rest."""
    try:
        return _view(session, crypto, row, viewer, quote=quote, replies=replies)
    except NotFound:
        return None


def _seal(
    session: Session, crypto: CryptoContext, member: members.Member, row_id: str, revision: int, doc: dict[str, str]
) -> bytes:
    return sealing.seal_json(
        session=session,
        crypto=crypto,
        owner=member.key_owner,
        value=doc,
        bound=sealing.aad(_TABLE, row_id, "sealed", revision),
    )


def _viewer(actor: Actor | None, me: members.Member | None, author_id: str) -> Viewer:
    return members.viewer_of(actor=actor, member=me, author_id=author_id)


def _blocked(session: Session, crypto: CryptoContext, me: members.Member | None) -> frozenset[str]:
    """The members `me` blocked or was blocked by: their items are NotFound to `me`, and `me`'s to
    them (only members block; a visitor or the operator has no blocks)."""
    if me is None:
        return frozenset()
    return messages.blocked_pairs(session=session, crypto=crypto, member_id=me.id)


def _visible(row: CommunityPost, viewer: Viewer, blocked: frozenset[str] = frozenset()) -> bool:
    """The one rule for a single item: blocks, the audience (may_see) and moderation (hidden: author
    only)."""
    if row.author_id in blocked:
        return False
    if row.hidden and viewer != "author":
        return False
    return may_see(visibility=row.audience, viewer=viewer)  # type: ignore[arg-type]


def _filter(actor: Actor | None, me: members.Member | None, blocked: frozenset[str]) -> ColumnElement[bool]:
    """The same rule as SQL, for listings and counts: audiences that `may_see` allows this caller as
    a non-author, not hidden, not by a blocked member; or the caller's own items."""
    base = _viewer(actor, me, author_id="")
    allowed = [v for v in VISIBILITIES if may_see(visibility=v, viewer=base)]
    others = and_(CommunityPost.audience.in_(allowed), CommunityPost.hidden.is_(False))
    if blocked:
        others = and_(others, CommunityPost.author_id.not_in(sorted(blocked)))
    if me is not None and base != "operator":
        return or_(others, CommunityPost.author_id == me.id)
    return others


def _view(
    session: Session,
    crypto: CryptoContext,
    row: CommunityPost,
    viewer: Viewer,
    *,
    quote: Quote | None = None,
    replies: int = 0,
) -> PostView:
    doc = _open(session, crypto, row)
    return PostView(
        id=row.id,
        thread_id=row.thread_id or row.id,
        is_reply=row.thread_id is not None,
        kind=row.kind,
        audience=row.audience,  # type: ignore[arg-type]
        title=doc["title"],
        body=doc["body"],
        author=row.author_id,
        created=row.created,
        updated=row.updated,
        edited=row.revision > 1,
        mine=viewer == "author",
        hidden=row.hidden and viewer == "author",
        quote=quote,
        replies=replies,
    )


def _row(session: Session, item_id: str) -> CommunityPost:
    if not (0 < len(item_id) <= 32) or not item_id.isalnum():
        raise NotFound("no such post")
    row = session.get(CommunityPost, item_id)
    if row is None:
        raise NotFound("no such post")
    return row


def _own_row(session: Session, member: members.Member, item_id: str) -> CommunityPost:
    """An item of `member`'s; someone else's is NotFound or Forbidden as they may see it."""
    row = _row(session, item_id)
    if row.author_id != member.id:
        raise NotFound("no such post")
    return row


# -- writing -----------------------------------------------------------------------------------


def create(
    *,
    session: Session,
    crypto: CryptoContext,
    member: members.Member,
    kind: str,
    title: str,
    body: str,
    audience: str = POST_DEFAULT,
    confirm: bool,
    now: datetime,
) -> str:
    """Publish a post; its id. Findings of the disclosure check stop it unless `confirm`."""
    _writer(member, now)
    checked_kind = _kind(kind)
    vis = parse_visibility(audience, location="audience")
    doc = {
        "title": _check_text(title, limit=TITLE_MAX, location="title", one_line=True),
        "body": _check_text(body, limit=BODY_MAX, location="body"),
    }
    review.review(doc, confirm=confirm)
    return _insert(
        session, crypto, member, thread_id=None, quote_id=None, kind=checked_kind, audience=vis, doc=doc, now=now
    )


def reply(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    member: members.Member,
    post_id: str,
    body: str,
    quote_id: str | None = None,
    confirm: bool,
    now: datetime,
) -> str:
    """Reply to a post the member may see; the reply is written under the post's audience of now
    and keeps it (a later widening of the post does not widen it). `quote_id`: the post or an
    earlier reply of the same thread."""
    _writer(member, now)
    blocked = _blocked(session, crypto, member)
    top = _row(session, post_id)
    if top.thread_id is not None or not _visible(top, _viewer(actor, member, top.author_id), blocked):
        raise NotFound("no such post")
    if _viewer(actor, member, author_id="") not in ("member", "moderator"):
        raise Forbidden("only community members reply")
    if quote_id:
        # The same answer for a missing id, an item of another thread and one this member may not
        # see (blocked, hidden, narrowed): otherwise the error tells which ids exist elsewhere.
        quoted = _row(session, quote_id)
        if top.id not in (quoted.id, quoted.thread_id) or not _visible(
            quoted, _viewer(actor, member, quoted.author_id), blocked
        ):
            raise NotFound("no such post")
    doc = {"title": "", "body": _check_text(body, limit=BODY_MAX, location="body")}
    review.review({"body": doc["body"]}, confirm=confirm)
    return _insert(
        session,
        crypto,
        member,
        thread_id=top.id,
        quote_id=quote_id or None,
        kind="reply",
        audience=top.audience,
        doc=doc,
        now=now,
    )


def _insert(
    session: Session,
    crypto: CryptoContext,
    member: members.Member,
    *,
    thread_id: str | None,
    quote_id: str | None,
    kind: str,
    audience: str,
    doc: dict[str, str],
    now: datetime,
) -> str:
    """A new post (`thread_id` None) or reply at its first revision, sealed; its id."""
    item_id = _new_id()
    session.add(
        CommunityPost(
            id=item_id,
            author_id=member.id,
            thread_id=thread_id,
            quote_id=quote_id,
            kind=kind,
            audience=audience,
            created=now,
            updated=now,
            revision=1,
            hidden=False,
            sealed=_seal(session, crypto, member, item_id, 1, doc),
        )
    )
    session.flush()
    return item_id


def edit(
    *,
    session: Session,
    crypto: CryptoContext,
    member: members.Member,
    item_id: str,
    body: str,
    title: str | None = None,
    audience: str | None = None,
    confirm: bool,
    now: datetime,
) -> None:
    """Change the author's own post or reply; the previous text becomes a revision. A narrower
    audience (posts only) caps the replies in the same transaction; a wider one leaves them."""
    _writer(member, now)
    row = _own_row(session, member, item_id)
    current = _open(session, crypto, row)
    is_reply = row.thread_id is not None
    new = {
        "title": "" if is_reply else _check_text(title or "", limit=TITLE_MAX, location="title", one_line=True),
        "body": _check_text(body, limit=BODY_MAX, location="body"),
    }
    vis: Visibility = row.audience  # type: ignore[assignment]
    if audience is not None and not is_reply:
        vis = parse_visibility(audience, location="audience")
    widened = VISIBILITIES.index(vis) > VISIBILITIES.index(row.audience)
    changed = {k: v for k, v in new.items() if v and (widened or v != current[k])}
    review.review(changed, confirm=confirm)
    if new == current and vis == row.audience:
        return
    if new != current:
        session.add(
            CommunityRevision(
                post_id=row.id,
                number=row.revision,
                created=row.updated,
                sealed=sealing.seal_json(
                    session=session,
                    crypto=crypto,
                    owner=member.key_owner,
                    value=current,
                    bound=sealing.aad(_REVISIONS, row.id, "sealed", row.revision),
                ),
            )
        )
        row.revision += 1
        row.sealed = _seal(session, crypto, member, row.id, row.revision, new)
        row.updated = now
    if vis != row.audience:
        row.audience = vis
        # Narrowing caps the replies; widening leaves them as their authors wrote them.
        wider = VISIBILITIES[VISIBILITIES.index(vis) + 1 :]
        session.execute(
            update(CommunityPost)
            .where(CommunityPost.thread_id == row.id, CommunityPost.audience.in_(wider))
            .values(audience=vis)
        )
    session.flush()


def delete_item(*, session: Session, crypto: CryptoContext, member: members.Member, item_id: str) -> None:
    """Delete the author's own post or reply and all its revisions. Replies to a post stay (their
    authors' words) with the post shown as removed; quotes of it show "removed". Reports of it
    lose their snapshots (keys destroyed) and open ones close as "content deleted": a report must
    not be the copy that outlives a deletion."""
    row = _own_row(session, member, item_id)
    kind = "reply" if row.thread_id is not None else "post"
    # Revisions share the item's id: its reports are the revisions' reports too.
    moderation.forget_content(session=session, crypto=crypto, kind=kind, content_id=row.id)
    session.execute(delete(CommunityRevision).where(CommunityRevision.post_id == row.id))
    session.execute(delete(CommunityPost).where(CommunityPost.id == row.id))


def delete_all_of(*, session: Session, crypto: CryptoContext, member: members.Member) -> None:
    """Everything the member wrote, with its revisions (account deletion). Reports of it are not
    forgotten here: open reports about a leaving member stay open until judged, so deleting the
    account is no way out of a report (review finding M2; `moderation.delete_member` handles them)
    and the member's key, destroyed with the account, already makes every row of theirs unreadable."""
    mine = select(CommunityPost.id).where(CommunityPost.author_id == member.id)
    session.execute(delete(CommunityRevision).where(CommunityRevision.post_id.in_(mine)))
    session.execute(delete(CommunityPost).where(CommunityPost.author_id == member.id))


# -- reading -----------------------------------------------------------------------------------


def listing(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor | None,
    me: members.Member | None,
    page: int = 1,
    per_page: int = PAGE_SIZE,
    author: str | None = None,
) -> Listing:
    """Posts (not replies) this caller may see, newest first; `author`: one member's only."""
    blocked = _blocked(session, crypto, me)
    visible = _filter(actor, me, blocked)
    where = [CommunityPost.thread_id.is_(None), visible]
    if author is not None:
        where.append(CommunityPost.author_id == author)
    total = int(session.execute(select(func.count()).select_from(CommunityPost).where(*where)).scalar_one())
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = (
        session.execute(
            select(CommunityPost)
            .where(*where)
            .order_by(CommunityPost.created.desc(), CommunityPost.id)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        .scalars()
        .all()
    )
    out = []
    for row in rows:
        viewer = _viewer(actor, me, row.author_id)
        if not _visible(row, viewer, blocked):  # the SQL filter and the one decision must agree
            continue
        count = int(
            session.execute(
                select(func.count()).select_from(CommunityPost).where(CommunityPost.thread_id == row.id, visible)
            ).scalar_one()
        )
        shown = _try_view(session, crypto, row, viewer, replies=count)
        if shown is not None:
            out.append(shown)
    return Listing(out, total, page, pages)


def _quote(
    session: Session,
    crypto: CryptoContext,
    row: CommunityPost,
    actor: Actor | None,
    me: members.Member | None,
    blocked: frozenset[str],
) -> Quote | None:
    if row.quote_id is None:
        return None
    quoted = session.get(CommunityPost, row.quote_id)
    if quoted is None or not _visible(quoted, _viewer(actor, me, quoted.author_id), blocked):
        return Quote(id=row.quote_id, removed=True)
    try:
        text = _open(session, crypto, quoted)["body"]
    except NotFound:
        return Quote(id=row.quote_id, removed=True)
    return Quote(id=quoted.id, removed=False, author=quoted.author_id, excerpt=text[:SNIPPET])


def thread(
    *, session: Session, crypto: CryptoContext, actor: Actor | None, me: members.Member | None, post_id: str
) -> Thread:
    """A post and its replies as this caller may see them; NotFound when they may see none of it."""
    if not (0 < len(post_id) <= 32) or not post_id.isalnum():
        raise NotFound("no such post")
    top = session.get(CommunityPost, post_id)
    if top is not None and top.thread_id is not None:
        raise NotFound("no such post")
    blocked = _blocked(session, crypto, me)
    post = None
    if top is not None:
        viewer = _viewer(actor, me, top.author_id)
        if not _visible(top, viewer, blocked):
            raise NotFound("no such post")
        post = _view(session, crypto, top, viewer)
    rows = (
        session.execute(
            select(CommunityPost)
            .where(CommunityPost.thread_id == post_id, _filter(actor, me, blocked))
            .order_by(CommunityPost.created, CommunityPost.id)
        )
        .scalars()
        .all()
    )
    replies = [
        shown
        for r in rows
        if _visible(r, v := _viewer(actor, me, r.author_id), blocked)
        and (shown := _try_view(session, crypto, r, v, quote=_quote(session, crypto, r, actor, me, blocked)))
        is not None
    ]
    if post is None and not replies:
        raise NotFound("no such post")
    audience = top.audience if top is not None else (rows[0].audience if rows else POST_DEFAULT)
    return Thread(id=post_id, post=post, replies=replies, audience=audience)  # type: ignore[arg-type]


def own_item(*, session: Session, crypto: CryptoContext, member: members.Member, item_id: str) -> PostView:
    """The member's own post or reply, as its author sees it (NotFound for anyone else's)."""
    return _view(session, crypto, _own_row(session, member, item_id), "author")


def history(*, session: Session, crypto: CryptoContext, member: members.Member, item_id: str) -> list[Revision]:
    """Earlier versions of the member's own post or reply, newest first (author only)."""
    row = _own_row(session, member, item_id)
    found = session.execute(
        select(CommunityRevision).where(CommunityRevision.post_id == row.id).order_by(CommunityRevision.number.desc())
    ).scalars()
    out = []
    for rev in found:
        try:
            doc = sealing.open_json(
                session=session,
                crypto=crypto,
                owner=member.key_owner,
                blob=rev.sealed,
                bound=sealing.aad(_REVISIONS, row.id, "sealed", rev.number),
            )
        except CryptoError:
            _log.warning("community revision %s/%s does not open; left out", row.id, rev.number)
            continue
        out.append(Revision(rev.number, rev.created, str(doc.get("title", "")), str(doc.get("body", ""))))
    return out


def research_export(*, session: Session, crypto: CryptoContext) -> list[dict[str, Any]]:
    """What of the community a research export holds: nothing. The "research" viewer may see no
    audience (audience.may_see), so this returns [] whatever is posted; were that rule ever relaxed,
    only what it allows would come out, and without authorship."""
    allowed = [v for v in VISIBILITIES if may_see(visibility=v, viewer="research")]
    if not allowed:
        return []
    rows = session.execute(
        select(CommunityPost).where(
            CommunityPost.thread_id.is_(None), CommunityPost.audience.in_(allowed), CommunityPost.hidden.is_(False)
        )
    ).scalars()
    out = []
    for row in rows:
        try:
            doc = _open(session, crypto, row)
        except NotFound:
            continue
        out.append({"kind": row.kind, "title": doc["title"], "body": doc["body"]})
    return out


# -- moderation hooks (community/moderation.py calls these; content_id is a post or reply id) ------


def snapshot_for_report(*, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
    """The item's text as it is now and its author's handle."""
    row = _row(session, content_id)
    doc = _open(session, crypto, row)
    text = f"{doc['title']}\n\n{doc['body']}" if doc["title"] else doc["body"]
    return {"kind": "reply" if row.thread_id else "post", "text": text, "author": row.author_id}


def set_hidden(*, session: Session, content_id: str, hidden: bool) -> None:
    row = _row(session, content_id)
    row.hidden = hidden
    session.flush()


def author_of(*, session: Session, crypto: CryptoContext | None = None, content_id: str) -> str:
    del crypto  # authors of posts are handles in the clear
    return _row(session, content_id).author_id


class _PostKind:
    """Posts and replies as moderation sees them (one table: a reply is a post with a thread)."""

    def snapshot_for_report(self, *, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
        return snapshot_for_report(session=session, crypto=crypto, content_id=content_id)

    def set_hidden(self, *, session: Session, content_id: str, hidden: bool) -> None:
        set_hidden(session=session, content_id=content_id, hidden=hidden)

    def author_of(self, *, session: Session, crypto: CryptoContext, content_id: str) -> str:
        return author_of(session=session, crypto=crypto, content_id=content_id)


def _reportable(kind: Literal["post", "reply"]) -> moderation.ReportableBy:
    """Who may report an item: only a member who may read it now, by the very decision reading
    uses (`thread`), so that a report neither pulls in text the reporter may not see (narrowed,
    hidden, blocked) nor tells an existing id from a missing one."""

    def reportable_by(*, session: Session, crypto: CryptoContext, content_id: str, reporter_id: str) -> bool:
        try:
            reporter = members.by_id(session=session, member_id=reporter_id)
            row = _row(session, content_id)
            if (row.thread_id is None) != (kind == "post"):
                return False
            # Moderators see what members see (audience.may_see): a reporter reads as a member.
            # Only the visibility decision reads this actor; the account id plays no part in it.
            as_member = Actor(account_id=reporter.account_token.hex()[:32], role="patient")
            found = thread(
                session=session, crypto=crypto, actor=as_member, me=reporter, post_id=row.thread_id or row.id
            )
        except NotFound:
            return False
        shown = {r.id for r in found.replies} | ({found.post.id} if found.post else set())
        return content_id in shown

    return reportable_by


moderation.register_kind("post", _PostKind(), reportable_by=_reportable("post"))
moderation.register_kind("reply", _PostKind(), reportable_by=_reportable("reply"))


# -- your data ----------------------------------------------------------------------------------


def export(*, session: Session, crypto: CryptoContext, member: members.Member) -> list[dict[str, Any]]:
    """Everything the member wrote, with revisions, as JSON-ready dicts."""
    rows = session.execute(
        select(CommunityPost)
        .where(CommunityPost.author_id == member.id)
        .order_by(CommunityPost.created, CommunityPost.id)
    ).scalars()
    out: list[dict[str, Any]] = []
    for row in rows:
        try:
            doc = _open(session, crypto, row)
        except NotFound:  # does not open (logged): the export says so instead of failing whole
            out.append({"id": row.id, "unreadable": True})
            continue
        out.append(
            {
                "id": row.id,
                "type": "reply" if row.thread_id else row.kind,
                "in_reply_to": row.thread_id,
                "quotes": row.quote_id,
                "audience": row.audience,
                "created": row.created.isoformat(),
                "updated": row.updated.isoformat(),
                "hidden_by_moderator": row.hidden,
                "title": doc["title"] or None,
                "body": doc["body"],
                "revisions": [
                    {"number": r.number, "created": r.created.isoformat(), "title": r.title or None, "body": r.body}
                    for r in history(session=session, crypto=crypto, member=member, item_id=row.id)
                ],
            }
        )
    return out
