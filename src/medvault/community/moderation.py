"""Moderation (issue 5 item 6): members report an item, moderators work a queue and act.

Kinds of content plug in through a small registry, so that moderation never reaches into another
slice's tables: a kind ("post", "reply", "message", "profile") registers a handler that can take a
snapshot of one item as it is now, hide or restore it, and name its author. A report keeps that
snapshot, sealed under the report's own data key: the moderator reads the item *as reported* (not
as edited since), and, for a private message, that single message alone: moderators never read a
conversation.

Every moderator action writes an access-log entry in the same transaction and a row of the
moderation history. Reporter and author are known to the queue by their public handles only.
Opening the queue is audited too (report ids only), and a moderator cannot act on a report about
their own content or one they filed.

Retention of a snapshot: it is the item *as reported*, kept to let a moderator judge it. When the
item is deleted (`forget_content`) the snapshot is shredded and an open report is closed as
"content-deleted". When the *author* deletes their community account, open reports about their
content stay open with the snapshot (leaving must not make reports vanish) until a moderator closes
them; the snapshot is shredded then. Reports the leaving member filed are withdrawn.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, get_args

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from medvault import logs
from medvault.auth.accounts import Actor
from medvault.community import auditing, members
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.community.members import Member
from medvault.crypto.errors import CryptoError
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import CommunityModAction, CommunityNotice, CommunityReport

__all__ = [
    "ACTIONS",
    "REASONS",
    "STATES",
    "Action",
    "HistoryEntry",
    "KindHandler",
    "Notice",
    "QueuedReport",
    "Reason",
    "act",
    "delete_member",
    "dismiss_notice",
    "export_member",
    "forget_content",
    "history",
    "member_token",
    "notices",
    "queue",
    "register_kind",
    "registered_kinds",
    "report",
    "unregister_kind",
]

Reason = Literal["harassment", "spam", "private-information", "self-harm", "misinformation", "other"]
REASONS: tuple[Reason, ...] = get_args(Reason)
REASON_LABELS: dict[str, str] = {
    "harassment": "Harassment or abuse",
    "spam": "Spam or advertising",
    "private-information": "Shares someone's private information",
    "self-harm": "Someone may be at risk of harm",
    "misinformation": "Dangerous health misinformation",
    "other": "Something else",
}
Action = Literal["hide", "restore", "warn", "suspend", "dismiss"]
ACTIONS: tuple[Action, ...] = get_args(Action)
# A report is open until a moderator acts; then it is in the state of the last action, or
# "withdrawn" when the reporter left (and the report's key went with them), "content-deleted" when
# the item was deleted (and its snapshot with it).
STATES = ("open", "hidden", "restored", "warned", "suspended", "dismissed", "withdrawn", "content-deleted")
UNREADABLE = "(unreadable)"
NOTE_MAX = 1000
MESSAGE_MAX = 1000
SUSPEND_DAYS_MAX = 365
_REPORT_AAD = b"medvault:community-report:v1|"
_NOTICE_AAD = b"medvault:community-notice:v1|"
_log = logs.get("community.moderation")


class KindHandler(Protocol):
    """What a kind of content provides to moderation. `content_id` is the kind's own id; an unknown
    or malformed one raises `NotFound`. `author_of` gets the crypto context because some authors
    are sealed (a message's sender); a kind whose authors are in the clear ignores it."""

    def snapshot_for_report(self, *, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
        """The item as it is now (JSON-able, with "author": the author's member id)."""
        ...

    def set_hidden(self, *, session: Session, content_id: str, hidden: bool) -> None: ...

    def author_of(self, *, session: Session, crypto: CryptoContext, content_id: str) -> str: ...


# reportable_by(session=, crypto=, content_id=, reporter_id=) -> bool: who may report an item of
# this kind at all (a message: only the other participant). None: any member.
ReportableBy = Callable[..., bool]


@dataclass(frozen=True)
class _Kind:
    handler: KindHandler
    reportable_by: ReportableBy | None


_KINDS: dict[str, _Kind] = {}


def register_kind(kind: str, handler: KindHandler, *, reportable_by: ReportableBy | None = None) -> None:
    """Plug a kind of content into moderation (once per kind; registering it again replaces it,
    which is what a reloaded module does)."""
    if not (0 < len(kind) <= 16) or not kind.replace("-", "").isalnum():
        raise ValueError("a kind is 1-16 letters, digits or dashes")
    _KINDS[kind] = _Kind(handler, reportable_by)


def unregister_kind(kind: str) -> None:
    _KINDS.pop(kind, None)


def registered_kinds() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def _kind(kind: str) -> _Kind:
    found = _KINDS.get(kind)
    if found is None:
        raise CommunityError("this kind of content cannot be reported", location="kind")
    return found


def member_token(crypto: CryptoContext, member_id: str) -> bytes:
    """A keyed token of a member handle: the community's private tables hold this, never the
    handle, so a stolen copy does not show who reported whom or who talks with whom."""
    return crypto.indexer.search_token(b"community-member", "CommunityMember", "member", member_id)


# -- sealing -----------------------------------------------------------------------------------


def _report_key(session: Session, crypto: CryptoContext, row: CommunityReport) -> Any:
    return crypto.data_key(session, purpose="identity", owner=row.key_owner)[1]


class _Unreadable(Exception):
    """A report's sealed part does not open (tampered, or copied from another row)."""


def _open_report(session: Session, crypto: CryptoContext, row: CommunityReport) -> dict[str, Any] | None:
    """The sealed part of a report, or None once it was shredded; `_Unreadable` when it does not
    open (logged with the error's class name only: never content)."""
    if row.sealed is None:
        return None
    try:
        key = _report_key(session, crypto, row)
        value: dict[str, Any] = orjson.loads(crypto.sealer.open(key, row.sealed, _REPORT_AAD + row.id.encode()))
    except (CryptoError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        _log.warning("community report %s does not open: %s", row.id, type(exc).__name__)
        raise _Unreadable from None
    return value


def _try_open_report(session: Session, crypto: CryptoContext, row: CommunityReport) -> dict[str, Any] | None:
    try:
        return _open_report(session, crypto, row)
    except _Unreadable:
        return None


def _shred_report(session: Session, crypto: CryptoContext, row: CommunityReport) -> None:
    crypto.destroy_data_key(session, purpose="identity", owner=row.key_owner)
    row.sealed = None


# -- reporting ---------------------------------------------------------------------------------


def report(
    *,
    session: Session,
    crypto: CryptoContext,
    reporter: Member,
    kind: str,
    content_id: str,
    reason: str,
    note: str = "",
    now: datetime,
) -> str:
    """File a report and return its id. The item is snapshotted now, sealed; the reporter may not
    report their own item; a second open report of the same item by the same member is the first."""
    entry = _kind(kind)
    if reason not in REASONS:
        raise CommunityError("choose a reason for the report", location="reason")
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise CommunityError(f"the note holds at most {NOTE_MAX} characters", location="note")
    if not content_id or len(content_id) > 64:
        raise NotFound("no such item")
    if entry.reportable_by is not None and not entry.reportable_by(
        session=session, crypto=crypto, content_id=content_id, reporter_id=reporter.id
    ):
        raise NotFound("no such item")
    author = entry.handler.author_of(session=session, crypto=crypto, content_id=content_id)
    author_member = _member_or_none(session, author)
    if author == reporter.id:
        raise Forbidden("you cannot report what you wrote yourself; you can delete it")
    reporter_token = member_token(crypto, reporter.id)
    existing = session.execute(
        select(CommunityReport.id).where(
            CommunityReport.kind == kind,
            CommunityReport.content_id == content_id,
            CommunityReport.reporter_token == reporter_token,
            CommunityReport.state == "open",
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    snapshot = entry.handler.snapshot_for_report(session=session, crypto=crypto, content_id=content_id)
    row = CommunityReport(
        id=secrets.token_hex(12),
        kind=kind,
        content_id=content_id,
        key_owner=secrets.token_bytes(16),
        reporter_token=reporter_token,
        author_token=member_token(crypto, author),
        created=now,
        state="open",
    )
    sealed = {
        "reason": reason,
        "note": note,
        "reporter": reporter.id,
        "author": author,
        # The author's account token: a suspension still reaches them if they leave and rejoin.
        "author_account": author_member.account_token.hex() if author_member is not None else "",
        "snapshot": snapshot,
    }
    row.sealed = crypto.sealer.seal(
        _report_key(session, crypto, row), orjson.dumps(sealed), _REPORT_AAD + row.id.encode()
    )
    session.add(row)
    session.flush()
    _audit(session, crypto, code="community-report", account_id=reporter.account(), report=row, action=None, now=now)
    return row.id


# -- the queue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedReport:
    id: str
    kind: str
    content_id: str
    created: datetime
    state: str
    reason: str
    note: str
    reporter: str
    author: str
    snapshot: dict[str, Any] = field(default_factory=dict)
    unreadable: bool = False


def _require_moderator(actor: Actor) -> None:
    # The page already refuses others; this is the domain's own line, for every face.
    if actor.role != "moderator" or not actor.mfa_enrolled:
        raise NotFound("not found")


def _queued(session: Session, crypto: CryptoContext, row: CommunityReport) -> QueuedReport:
    try:
        opened = _open_report(session, crypto, row) or {}
    except _Unreadable:
        return QueuedReport(
            id=row.id,
            kind=row.kind,
            content_id=row.content_id,
            created=row.created,
            state=row.state,
            reason="",
            note=UNREADABLE,
            reporter=UNREADABLE,
            author=UNREADABLE,
            snapshot={"text": UNREADABLE},
            unreadable=True,
        )
    return QueuedReport(
        id=row.id,
        kind=row.kind,
        content_id=row.content_id,
        created=row.created,
        state=row.state,
        reason=str(opened.get("reason", "")),
        note=str(opened.get("note", "")),
        reporter=str(opened.get("reporter", "")) or "a former member",
        author=str(opened.get("author", "")) or "a former member",
        snapshot=dict(opened.get("snapshot") or {}),
    )


def queue(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    now: datetime,
    states: tuple[str, ...] = ("open",),
    limit: int = 100,
) -> list[QueuedReport]:
    """Reports in `states` (oldest first for the open queue, newest first otherwise), each with
    the item as it was reported. Moderators only. Audited: one entry naming the reports whose
    snapshots were opened (ids only), in the caller's transaction."""
    _require_moderator(actor)
    order = CommunityReport.created.asc() if states == ("open",) else CommunityReport.created.desc()
    rows = list(
        session.execute(
            select(CommunityReport).where(CommunityReport.state.in_(states)).order_by(order).limit(limit)
        ).scalars()
    )
    out = [_queued(session, crypto, row) for row in rows]
    opened = [row for row in rows if row.sealed is not None]
    if opened:
        _audit_read(session, crypto, account_id=actor.account_id, reports=opened, now=now)
    return out


def act(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    report_id: str,
    action: str,
    now: datetime,
    days: int | None = None,
    message: str = "",
) -> str:
    """Apply a moderator action to the item of a report; returns the history entry's id.

    hide/restore: the item (through its kind's handler). warn: a notice to the author. suspend:
    the author may not post or message for `days` days (and gets a notice). dismiss: nothing
    changes. Each is audited in this transaction and listed in the history."""
    _require_moderator(actor)
    if action not in ACTIONS:
        raise CommunityError(f"action must be one of: {', '.join(ACTIONS)}", location="action")
    row = session.get(CommunityReport, report_id) if 0 < len(report_id) <= 32 else None
    if row is None:
        raise NotFound("no such report")
    message = message.strip()
    if len(message) > MESSAGE_MAX:
        raise CommunityError(f"the message to the member holds at most {MESSAGE_MAX} characters", location="message")
    if action == "suspend":
        if days is None or not (1 <= days <= SUSPEND_DAYS_MAX):
            raise CommunityError(f"suspend for 1 to {SUSPEND_DAYS_MAX} days", location="days")
    else:
        days = None
    _refuse_own(session, crypto, actor, row)
    try:
        opened = _open_report(session, crypto, row) or {}
    except _Unreadable:
        if action not in ("dismiss", "hide", "restore"):
            raise CommunityError("this report cannot be read; dismiss it or hide the item", location="action") from None
        opened = {}
    author_id = str(opened.get("author", ""))
    author = _member_or_none(session, author_id) if author_id else None
    author_token = author.account_token if author is not None else bytes.fromhex(str(opened.get("author_account", "")))
    if action in ("hide", "restore"):
        with contextlib.suppress(NotFound):  # deleted since: as hidden as it gets
            _kind(row.kind).handler.set_hidden(session=session, content_id=row.content_id, hidden=action == "hide")
    elif action in ("warn", "suspend"):
        until = None
        if action == "suspend":
            if not author_token:
                raise CommunityError("the author has left the community", location="action")
            assert days is not None
            until = now + timedelta(days=days)
            # On the account, not only the membership: leaving and rejoining does not lift it.
            members.suspend(session=session, token=author_token, until=until)
        if author is not None:
            _notify(session, crypto, author, action=action, kind=row.kind, message=message, until=until, now=now)
        elif action == "warn":
            raise CommunityError("the author has left the community", location="action")
    row.state = {"hide": "hidden", "restore": "restored", "warn": "warned", "suspend": "suspended"}.get(
        action, "dismissed"
    )
    seq = _audit(
        session,
        crypto,
        code=f"community-moderation-{action}",
        account_id=actor.account_id,
        report=row,
        action=action,
        now=now,
    )
    entry = CommunityModAction(
        id=secrets.token_hex(12),
        report_id=row.id,
        action=action,
        moderator_account=actor.account_id,
        days=days,
        created=now,
        audit_seq=seq,
    )
    session.add(entry)
    if author is None and row.sealed is not None:
        # The author left while the report was open: the snapshot was kept for this decision only.
        _shred_report(session, crypto, row)
    session.flush()
    return entry.id


def _refuse_own(session: Session, crypto: CryptoContext, actor: Actor, row: CommunityReport) -> None:
    """A moderator does not judge their own content, nor a report they filed themselves."""
    me = members.by_account(session=session, crypto=crypto, account_id=actor.account_id)
    if me is None:
        return
    token = member_token(crypto, me.id)
    if row.author_token == token:
        raise Forbidden("this report is about your own content: another moderator decides")
    if row.reporter_token == token:
        raise Forbidden("you filed this report yourself: another moderator decides")


def _member_or_none(session: Session, member_id: str) -> Member | None:
    if not member_id:
        return None
    try:
        return members.by_id(session=session, member_id=member_id)
    except NotFound:
        return None


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    created: datetime
    action: str
    report_id: str
    kind: str
    content_id: str
    moderator_account: str
    days: int | None
    audit_seq: int


def history(*, session: Session, actor: Actor, limit: int = 200) -> list[HistoryEntry]:
    """Moderator actions, newest first (codes and ids: no content)."""
    _require_moderator(actor)
    rows = session.execute(
        select(CommunityModAction, CommunityReport.kind, CommunityReport.content_id)
        .join(CommunityReport, CommunityReport.id == CommunityModAction.report_id, isouter=True)
        .order_by(CommunityModAction.created.desc(), CommunityModAction.audit_seq.desc())
        .limit(limit)
    ).all()
    return [
        HistoryEntry(
            id=a.id,
            created=a.created,
            action=a.action,
            report_id=a.report_id,
            kind=kind or "",
            content_id=content_id or "",
            moderator_account=a.moderator_account,
            days=a.days,
            audit_seq=a.audit_seq,
        )
        for a, kind, content_id in rows
    ]


def _audit(
    session: Session,
    crypto: CryptoContext,
    *,
    code: str,
    account_id: str,
    report: CommunityReport,
    action: str | None,
    now: datetime,
) -> int:
    """An access-log entry: who (account), what (code), which report and item. No content."""
    return auditing.record(
        session=session,
        crypto=crypto,
        account_id=account_id,
        code=code,
        now=now,
        action="U" if action else "C",
        entities=[
            ("urn:medvault:community-report", report.id),
            (f"urn:medvault:community-{report.kind}", report.content_id),
        ],
    )


def _audit_read(
    session: Session, crypto: CryptoContext, *, account_id: str, reports: list[CommunityReport], now: datetime
) -> None:
    """A moderator opened these reports' snapshots: who, when, which report ids. No content."""
    auditing.record(
        session=session,
        crypto=crypto,
        account_id=account_id,
        code="community-moderation-read",
        now=now,
        action="R",
        entities=[("urn:medvault:community-report", row.id) for row in reports],
    )


# -- notices to members ------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    id: str
    created: datetime
    action: str
    kind: str
    message: str
    until: datetime | None


def _member_key(session: Session, crypto: CryptoContext, member: Member) -> Any:
    return crypto.data_key(session, purpose="identity", owner=member.key_owner)[1]


def _notify(
    session: Session,
    crypto: CryptoContext,
    member: Member,
    *,
    action: str,
    kind: str,
    message: str,
    until: datetime | None,
    now: datetime,
) -> None:
    notice_id = secrets.token_hex(12)
    body = {"action": action, "kind": kind, "message": message, "until": until.isoformat() if until else None}
    sealed = crypto.sealer.seal(
        _member_key(session, crypto, member), orjson.dumps(body), _NOTICE_AAD + notice_id.encode()
    )
    session.add(
        CommunityNotice(
            id=notice_id, member_token=member_token(crypto, member.id), created=now, seen=False, sealed=sealed
        )
    )


def notices(*, session: Session, crypto: CryptoContext, member: Member, unseen_only: bool = True) -> list[Notice]:
    """The member's notices from moderators, newest first."""
    query = select(CommunityNotice).where(CommunityNotice.member_token == member_token(crypto, member.id))
    if unseen_only:
        query = query.where(CommunityNotice.seen.is_(False))
    out = []
    for row in session.execute(query.order_by(CommunityNotice.created.desc())).scalars():
        try:
            body = orjson.loads(
                crypto.sealer.open(_member_key(session, crypto, member), row.sealed, _NOTICE_AAD + row.id.encode())
            )
        except (CryptoError, ValueError) as exc:
            _log.warning("community notice %s does not open: %s", row.id, type(exc).__name__)
            body = {"action": "", "kind": "", "message": UNREADABLE, "until": None}
        until = datetime.fromisoformat(body["until"]) if body.get("until") else None
        out.append(Notice(row.id, row.created, str(body["action"]), str(body["kind"]), str(body["message"]), until))
    return out


def dismiss_notice(*, session: Session, crypto: CryptoContext, member: Member, notice_id: str) -> None:
    # Ids are 24 hex digits: anything else (a NUL byte breaks PostgreSQL) is simply not a notice.
    if not (0 < len(notice_id) <= 32 and notice_id.isascii() and notice_id.isalnum()):
        raise NotFound("no such notice")
    done = session.execute(
        update(CommunityNotice)
        .where(CommunityNotice.id == notice_id, CommunityNotice.member_token == member_token(crypto, member.id))
        .values(seen=True)
    )
    if not getattr(done, "rowcount", 0):
        raise NotFound("no such notice")


# -- your data ---------------------------------------------------------------------------------


def export_member(*, session: Session, crypto: CryptoContext, member: Member) -> dict[str, Any]:
    """What this member wrote to moderation (their reports: kind, item, reason, note) and the
    notices they received. Not the snapshots of others' content they reported."""
    token = member_token(crypto, member.id)
    reports = []
    for row in session.execute(
        select(CommunityReport).where(CommunityReport.reporter_token == token).order_by(CommunityReport.created)
    ).scalars():
        opened = _try_open_report(session, crypto, row) or {}
        reports.append(
            {
                "id": row.id,
                "kind": row.kind,
                "item": row.content_id,
                "created": row.created.isoformat(),
                "state": row.state,
                "reason": opened.get("reason"),
                "note": opened.get("note"),
            }
        )
    received = [
        {"created": n.created.isoformat(), "action": n.action, "kind": n.kind, "message": n.message}
        for n in notices(session=session, crypto=crypto, member=member, unseen_only=False)
    ]
    return {"reports": reports, "notices": received}


def delete_member(*, session: Session, crypto: CryptoContext, member: Member) -> int:
    """Forget a leaving member in moderation: reports they filed lose reason, note and snapshot
    (an open one is withdrawn; the row stays, so the history still adds up); closed reports about
    their content lose the snapshot; *open* reports about their content stay open with the snapshot
    until a moderator closes them (then it is shredded, see `act`): leaving does not make reports
    vanish. Their notices go. Returns how many reports were shredded."""
    token = member_token(crypto, member.id)
    rows = session.execute(
        select(CommunityReport).where(
            (CommunityReport.author_token == token) | (CommunityReport.reporter_token == token)
        )
    ).scalars()
    shredded = 0
    for row in rows:
        if row.reporter_token != token and row.state == "open":
            continue  # about their content, still to be judged
        if row.sealed is None:
            continue
        _shred_report(session, crypto, row)
        if row.state == "open":
            row.state = "withdrawn"
        shredded += 1
    for notice in session.execute(select(CommunityNotice).where(CommunityNotice.member_token == token)).scalars():
        session.delete(notice)
    return shredded


def forget_content(*, session: Session, crypto: CryptoContext, kind: str, content_id: str) -> int:
    """An item was deleted: destroy its reports' snapshots (their keys), so no copy of it is left
    in the queue or the "recently handled" list, and close its open reports as "content-deleted"
    (the rows stay, so the history still adds up). Returns how many reports were shredded.

    Not for a member deleting their whole account: open reports about their content stay open
    until judged (see `delete_member`)."""
    rows = session.execute(
        select(CommunityReport).where(CommunityReport.kind == kind, CommunityReport.content_id == content_id)
    ).scalars()
    shredded = 0
    for row in rows:
        if row.state == "open":
            row.state = "content-deleted"
        if row.sealed is not None:
            _shred_report(session, crypto, row)
            shredded += 1
    session.flush()
    return shredded
