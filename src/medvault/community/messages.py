"""Private messages (issue 5 item 4): conversations between two members, readable by those two only.

* Each conversation has its own data key (purpose "identity", owner: the conversation's random
  `key_owner`); every message is sealed under it with the conversation id and message id as
  associated data, so a message copied into another row or conversation fails to open. When both
  sides are gone the key is destroyed (crypto-shredding).
* There is no reader other than a participant: every read goes through `_participant`, which
  answers NotFound to anyone else (moderators and the operator included) exactly as for a
  conversation that does not exist. The one exception is a message a participant reports: its
  kind handler below hands moderation a snapshot of that single message, nothing around it.
* Members appear in these tables only as keyed tokens (`moderation.member_token`); the handle of
  the other participant is sealed in each side's row. A stolen copy shows that conversations
  exist, not between whom.
* Contact details to someone met recently (young conversation, or few messages) need a second,
  confirmed send: `ContactDetailsWarning` carries what `disclosure.check` found.
* Block: the blocked member cannot message the blocker and each is left out of the other's lists
  (`blocked_pairs`, `is_blocked`). To the blocked member the blocker is simply not there: starting a
  conversation, opening or writing in an existing one all answer NotFound, exactly as for a member
  or conversation that does not exist (no "does not take messages from you", no can-send tell).
  Mute: no unread count, nothing else changes.
* A message or handle whose ciphertext does not open (tampered, swapped between rows) reads as
  "(unreadable)" and is logged by the error's class name only; it never breaks the page.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault import logs
from medvault.community import auditing, disclosure, limits, members, moderation
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.community.members import Member
from medvault.community.moderation import member_token
from medvault.crypto.errors import CryptoError
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import (
    CommunityBlock,
    CommunityConversation,
    CommunityConversationSide,
    CommunityMessage,
)

__all__ = [
    "CONTACT_KINDS",
    "ContactDetailsWarning",
    "Message",
    "Summary",
    "Thread",
    "block",
    "blocked_by_me",
    "blocked_pairs",
    "conversations",
    "delete_for_me",
    "delete_member",
    "export_member",
    "is_blocked",
    "report",
    "send",
    "set_muted",
    "start",
    "thread",
    "unblock",
    "unread_total",
]

MAX_TEXT = 4000
# "Met recently": the conversation is younger than a week, or has fewer than this many messages.
RECENT_AGE = timedelta(days=7)
RECENT_MESSAGES = 20
CONTACT_KINDS = frozenset({"email", "phone", "street-address", "postcode"})
# Per account: a burst limit and a daily one (a spammer's pace, not a conversation's).
SEND_LIMITS = (
    limits.Limit(bucket="message-send", count=20, seconds=60),
    limits.Limit(bucket="message-send-day", count=500, seconds=86_400),
)
# The blocks' sealed handles are under one community key: a block is between two members, and
# either one's leaving deletes the row anyway.
_BLOCKS_OWNER = b"community-blocks"
_MESSAGE_AAD = b"medvault:community-message:v1|"
_SIDE_AAD = b"medvault:community-side:v1|"
_BLOCK_AAD = b"medvault:community-block:v1|"
_ID_LEN = 24
UNREADABLE = "(unreadable)"
_log = logs.get("community.messages")


class ContactDetailsWarning(CommunityError):
    """The message looks like it holds contact details and the two met recently: the sender must
    confirm. `findings` locate them in the text (the face highlights them); the message names only
    their kinds, never the text."""

    code = "confirm"

    def __init__(self, findings: list[disclosure.Finding]) -> None:
        kinds = sorted({f.kind.replace("-", " ") for f in findings})
        super().__init__(
            "You met this member recently and your message looks like it holds contact details ("
            + ", ".join(kinds)
            + "). Check before you send: confirm to send it anyway.",
            location="text",
        )
        self.findings = findings


@dataclass(frozen=True)
class Message:
    id: str
    seq: int
    mine: bool
    text: str | None  # None: hidden by a moderator
    sent: datetime
    unreadable: bool = False  # the ciphertext does not open: `text` is UNREADABLE

    @property
    def hidden(self) -> bool:
        return self.text is None


@dataclass(frozen=True)
class Thread:
    id: str
    peer: str  # the other member's handle ("" once they left)
    muted: bool
    blocked_by_me: bool
    can_send: bool
    recent: bool
    messages: list[Message]


@dataclass(frozen=True)
class Summary:
    id: str
    peer: str
    unread: int
    muted: bool
    blocked_by_me: bool
    last_sent: datetime | None


# -- keys, tokens, sealing ---------------------------------------------------------------------


def _pair_token(crypto: CryptoContext, a: str, b: str) -> bytes:
    low, high = sorted((a, b))
    return crypto.indexer.search_token(b"community-pair", "CommunityConversation", low, high)


def _key(session: Session, crypto: CryptoContext, conv: CommunityConversation) -> AESGCM:
    return crypto.data_key(session, purpose="identity", owner=conv.key_owner)[1]


def _message_aad(conversation_id: str, message_id: str) -> bytes:
    return _MESSAGE_AAD + conversation_id.encode() + b"|" + message_id.encode()


def _side_aad(conversation_id: str, token: bytes) -> bytes:
    return _SIDE_AAD + conversation_id.encode() + b"|" + token.hex().encode()


class _Unreadable(Exception):
    """A sealed value does not open (tampered or swapped); already logged."""


def _open_body(session: Session, crypto: CryptoContext, conv: CommunityConversation, row: CommunityMessage) -> Any:
    """The message's sealed body; `_Unreadable` when it does not open (logged by class name)."""
    try:
        return orjson.loads(crypto.sealer.open(_key(session, crypto, conv), row.body, _message_aad(conv.id, row.id)))
    except (CryptoError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        _log.warning("community message %s does not open: %s", row.id, type(exc).__name__)
        raise _Unreadable from None


def _text_of(session: Session, crypto: CryptoContext, conv: CommunityConversation, row: CommunityMessage) -> str:
    try:
        return str(_open_body(session, crypto, conv, row)["text"])
    except _Unreadable:
        return UNREADABLE


def _peer_of(
    session: Session, crypto: CryptoContext, conv: CommunityConversation, side: CommunityConversationSide
) -> str:
    """The other member's handle ("" once they left, or when the sealed handle does not open)."""
    try:
        sealed = crypto.sealer.open(
            _key(session, crypto, conv), side.peer_sealed, _side_aad(conv.id, side.member_token)
        )
        return str(orjson.loads(sealed))
    except (CryptoError, ValueError) as exc:
        _log.warning("community conversation side %s does not open: %s", conv.id, type(exc).__name__)
        return ""


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= 32 and value.isalnum()


def _participant(
    session: Session, crypto: CryptoContext, member: Member, conversation_id: str
) -> tuple[CommunityConversation, CommunityConversationSide]:
    """The conversation and this member's side of it, or NotFound: the same for anyone who is not
    a participant as for an id that does not exist."""
    if not _valid_id(conversation_id):
        raise NotFound("no such conversation")
    side = session.get(CommunityConversationSide, (conversation_id, member_token(crypto, member.id)))
    conv = session.get(CommunityConversation, conversation_id) if side is not None else None
    if side is None or conv is None:
        raise NotFound("no such conversation")
    return conv, side


def _other_side(session: Session, conv: CommunityConversation, mine: bytes) -> CommunityConversationSide | None:
    return session.execute(
        select(CommunityConversationSide).where(
            CommunityConversationSide.conversation_id == conv.id, CommunityConversationSide.member_token != mine
        )
    ).scalar_one_or_none()


# -- blocks ------------------------------------------------------------------------------------


def _blocks_key(session: Session, crypto: CryptoContext) -> AESGCM:
    return crypto.data_key(session, purpose="identity", owner=_BLOCKS_OWNER)[1]


def block(*, session: Session, crypto: CryptoContext, member: Member, peer_id: str, now: datetime) -> None:
    """`member` blocks `peer_id` (idempotent)."""
    peer = members.by_id(session=session, member_id=peer_id)
    if peer.id == member.id:
        raise CommunityError("you cannot block yourself", location="member")
    mine, theirs = member_token(crypto, member.id), member_token(crypto, peer.id)
    if session.get(CommunityBlock, (mine, theirs)) is not None:
        return
    sealed = crypto.sealer.seal(
        _blocks_key(session, crypto),
        orjson.dumps({"blocker": member.id, "blocked": peer.id}),
        _BLOCK_AAD + mine.hex().encode() + b"|" + theirs.hex().encode(),
    )
    try:
        with session.begin_nested():
            session.add(CommunityBlock(blocker_token=mine, blocked_token=theirs, pair_sealed=sealed, created=now))
            session.flush()
    except IntegrityError:
        pass  # blocked twice at once: one row is all a block needs


def unblock(*, session: Session, crypto: CryptoContext, member: Member, peer_id: str) -> None:
    session.execute(
        delete(CommunityBlock).where(
            CommunityBlock.blocker_token == member_token(crypto, member.id),
            CommunityBlock.blocked_token == member_token(crypto, peer_id),
        )
    )


def is_blocked(*, session: Session, crypto: CryptoContext, a: str, b: str) -> bool:
    """Whether either of the two members blocked the other (a block hides both ways)."""
    ta, tb = member_token(crypto, a), member_token(crypto, b)
    found = session.execute(
        select(CommunityBlock.blocker_token).where(
            ((CommunityBlock.blocker_token == ta) & (CommunityBlock.blocked_token == tb))
            | ((CommunityBlock.blocker_token == tb) & (CommunityBlock.blocked_token == ta))
        )
    ).first()
    return found is not None


def _block_rows(session: Session, crypto: CryptoContext, member_id: str) -> list[dict[str, str]]:
    token = member_token(crypto, member_id)
    rows = session.execute(
        select(CommunityBlock).where((CommunityBlock.blocker_token == token) | (CommunityBlock.blocked_token == token))
    ).scalars()
    key = _blocks_key(session, crypto)
    out = []
    for row in rows:
        aad = _BLOCK_AAD + row.blocker_token.hex().encode() + b"|" + row.blocked_token.hex().encode()
        out.append(orjson.loads(crypto.sealer.open(key, row.pair_sealed, aad)))
    return out


def _blocks_split(session: Session, crypto: CryptoContext, member_id: str) -> tuple[frozenset[str], frozenset[str]]:
    """(handles `member_id` blocked, handles who blocked `member_id`)."""
    pairs = _block_rows(session, crypto, member_id)
    mine = frozenset(p["blocked"] for p in pairs if p["blocker"] == member_id)
    theirs = frozenset(p["blocker"] for p in pairs if p["blocked"] == member_id)
    return mine, theirs


def blocked_pairs(*, session: Session, crypto: CryptoContext, member_id: str) -> frozenset[str]:
    """Handles to leave out of every list shown to `member_id`: members they blocked and members
    who blocked them (for the directory and posts, as well as messages)."""
    mine, theirs = _blocks_split(session, crypto, member_id)
    return mine | theirs


def blocked_by_me(*, session: Session, crypto: CryptoContext, member_id: str) -> frozenset[str]:
    """The handles `member_id` blocked (their own list, with unblock)."""
    return _blocks_split(session, crypto, member_id)[0]


def _blocked_by(session: Session, crypto: CryptoContext, blocker: str, blocked: str) -> bool:
    key = (member_token(crypto, blocker), member_token(crypto, blocked))
    return session.get(CommunityBlock, key) is not None


# -- conversations -----------------------------------------------------------------------------


def start(*, session: Session, crypto: CryptoContext, member: Member, peer_id: str, now: datetime) -> str:
    """The conversation of `member` with `peer_id` (made on first use); returns its id."""
    peer = members.by_id(session=session, member_id=peer_id)
    if peer.id == member.id:
        raise CommunityError("you cannot message yourself", location="member")
    if _blocked_by(session, crypto, peer.id, member.id):
        # What a blocked member sees of the blocker: nobody there.
        raise NotFound("no such member")
    if _blocked_by(session, crypto, member.id, peer.id):
        raise Forbidden("you blocked this member; unblock them to send a message")
    if member.suspended(now):
        raise Forbidden("your community account is suspended; you cannot start conversations for now")
    pair = _pair_token(crypto, member.id, peer.id)
    found = session.execute(
        select(CommunityConversation).where(CommunityConversation.pair_token == pair)
    ).scalar_one_or_none()
    if found is None:
        found = CommunityConversation(
            id=secrets.token_hex(_ID_LEN // 2),
            pair_token=pair,
            key_owner=secrets.token_bytes(16),
            created=now,
            last_seq=0,
        )
        try:
            with session.begin_nested():
                session.add(found)
                session.flush()
        except IntegrityError:  # both started it at once: theirs won
            found = session.execute(
                select(CommunityConversation).where(CommunityConversation.pair_token == pair)
            ).scalar_one()
    for me, other in ((member.id, peer.id), (peer.id, member.id)):
        token = member_token(crypto, me)
        if session.get(CommunityConversationSide, (found.id, token)) is None:
            sealed = crypto.sealer.seal(_key(session, crypto, found), orjson.dumps(other), _side_aad(found.id, token))
            session.add(
                CommunityConversationSide(
                    conversation_id=found.id,
                    member_token=token,
                    peer_sealed=sealed,
                    read_upto=found.last_seq,
                    cleared_upto=0,
                    muted=False,
                )
            )
    session.flush()
    return found.id


def _recent(conv: CommunityConversation, now: datetime) -> bool:
    return now - conv.created < RECENT_AGE or conv.last_seq < RECENT_MESSAGES


def send(
    *,
    session: Session,
    crypto: CryptoContext,
    member: Member,
    conversation_id: str,
    text: str,
    now: datetime,
    confirm_contact: bool = False,
) -> str:
    """Send `text` in a conversation of `member`; returns the message id.

    Refused (nothing stored): a suspended sender, a conversation with a member who left or with a
    block between the two, an empty or too long text, too many messages (RateLimited), and
    contact details to someone met recently unless `confirm_contact` (ContactDetailsWarning)."""
    conv, side = _participant(session, crypto, member, conversation_id)
    if member.suspended(now):
        raise Forbidden("your community account is suspended; you cannot send messages for now")
    text = text.strip()
    if not text:
        raise CommunityError("write a message first", location="text")
    if len(text) > MAX_TEXT:
        raise CommunityError(f"a message holds at most {MAX_TEXT} characters", location="text")
    peer = _peer_of(session, crypto, conv, side)
    if peer and _blocked_by(session, crypto, peer, member.id):
        raise NotFound("no such conversation")  # the blocker is not there for them, as in `start`
    if not peer or _other_side(session, conv, side.member_token) is None:
        raise Forbidden("this member has left the community")
    if _blocked_by(session, crypto, member.id, peer):
        raise Forbidden("you blocked this member; unblock them to send a message")
    if _recent(conv, now) and not confirm_contact:
        found = [f for f in disclosure.check(text) if f.kind in CONTACT_KINDS]
        if found:
            raise ContactDetailsWarning(found)
    subject = limits.subject_token(crypto, kind="account", value=member.account())
    for limit in SEND_LIMITS:
        limits.take(session=session, limit=limit, subject=subject, now=now)
    # One statement takes the next number and locks the conversation row until commit.
    seq = int(
        session.execute(
            update(CommunityConversation)
            .where(CommunityConversation.id == conv.id)
            .values(last_seq=CommunityConversation.last_seq + 1)
            .returning(CommunityConversation.last_seq)
        ).scalar_one()
    )
    message_id = secrets.token_hex(_ID_LEN // 2)
    body = crypto.sealer.seal(
        _key(session, crypto, conv),
        orjson.dumps({"from": member.id, "text": text}),
        _message_aad(conv.id, message_id),
    )
    session.add(
        CommunityMessage(
            id=message_id,
            conversation_id=conv.id,
            seq=seq,
            sender_token=side.member_token,
            sent=now,
            hidden=False,
            body=body,
        )
    )
    side.read_upto = seq  # what one wrote oneself is read
    session.flush()
    return message_id


def thread(
    *,
    session: Session,
    crypto: CryptoContext,
    member: Member,
    conversation_id: str,
    now: datetime,
    mark_read: bool = True,
) -> Thread:
    """The conversation as `member` sees it (oldest first, without what they deleted for
    themselves); marks it read."""
    conv, side = _participant(session, crypto, member, conversation_id)
    peer = _peer_of(session, crypto, conv, side)
    if peer and _blocked_by(session, crypto, peer, member.id):
        # Left out of their list too (`conversations`): the same answer as an unknown conversation.
        raise NotFound("no such conversation")
    session.refresh(conv)
    rows = session.execute(
        select(CommunityMessage)
        .where(CommunityMessage.conversation_id == conv.id, CommunityMessage.seq > side.cleared_upto)
        .order_by(CommunityMessage.seq)
    ).scalars()
    out = []
    for row in rows:
        text = None if row.hidden else _text_of(session, crypto, conv, row)
        mine = row.sender_token == side.member_token
        out.append(Message(row.id, row.seq, mine, text, row.sent, unreadable=text == UNREADABLE))
    gone = not peer or _other_side(session, conv, side.member_token) is None
    blocked_mine = bool(peer) and _blocked_by(session, crypto, member.id, peer)
    if mark_read:
        side.read_upto = conv.last_seq
    return Thread(
        id=conv.id,
        peer=peer,
        muted=side.muted,
        blocked_by_me=blocked_mine,
        can_send=not gone and not blocked_mine and not member.suspended(now),
        recent=_recent(conv, now),
        messages=out,
    )


def conversations(*, session: Session, crypto: CryptoContext, member: Member) -> list[Summary]:
    """The member's conversations, most recent first, with unread counts (zero when muted).
    Conversations with a member who blocked them are left out; ones they deleted for themselves
    come back only with a new message."""
    token = member_token(crypto, member.id)
    unread = (
        select(func.count())
        .where(
            CommunityMessage.conversation_id == CommunityConversationSide.conversation_id,
            CommunityMessage.seq > CommunityConversationSide.read_upto,
            CommunityMessage.seq > CommunityConversationSide.cleared_upto,
            CommunityMessage.sender_token != token,
        )
        .scalar_subquery()
    )
    last_sent = (
        select(func.max(CommunityMessage.sent))
        .where(CommunityMessage.conversation_id == CommunityConversationSide.conversation_id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(CommunityConversation, CommunityConversationSide, unread, last_sent)
        .join(CommunityConversation, CommunityConversation.id == CommunityConversationSide.conversation_id)
        .where(
            CommunityConversationSide.member_token == token,
            CommunityConversation.last_seq > CommunityConversationSide.cleared_upto,
        )
    ).all()
    mine, theirs = _blocks_split(session, crypto, member.id)
    out = []
    for conv, side, count, last in rows:
        peer = _peer_of(session, crypto, conv, side)
        if peer in theirs:
            continue  # they blocked this member: they are not in this member's lists
        out.append(
            Summary(
                id=conv.id,
                peer=peer,
                unread=0 if side.muted else int(count or 0),
                muted=side.muted,
                blocked_by_me=peer in mine,
                last_sent=last,
            )
        )
    out.sort(key=lambda s: (s.last_sent is None, -(s.last_sent.timestamp() if s.last_sent else 0), s.id))
    return out


def unread_total(*, session: Session, crypto: CryptoContext, member: Member) -> int:
    """Unread messages over all conversations that are not muted (the navigation's count)."""
    return sum(s.unread for s in conversations(session=session, crypto=crypto, member=member))


def set_muted(*, session: Session, crypto: CryptoContext, member: Member, conversation_id: str, muted: bool) -> None:
    _conv, side = _participant(session, crypto, member, conversation_id)
    side.muted = muted


def delete_for_me(*, session: Session, crypto: CryptoContext, member: Member, conversation_id: str) -> bool:
    """Remove the conversation from `member`'s view (the other side keeps theirs). When neither
    side keeps any message, the conversation is crypto-shredded. Returns True when it was."""
    conv, side = _participant(session, crypto, member, conversation_id)
    session.refresh(conv)
    side.cleared_upto = side.read_upto = conv.last_seq
    other = _other_side(session, conv, side.member_token)
    if other is None or other.cleared_upto >= conv.last_seq:
        _forget_reports(session, crypto, conv)
        _shred(session, crypto, conv)
        return True
    return False


def _forget_reports(session: Session, crypto: CryptoContext, conv: CommunityConversation) -> None:
    """Both sides deleted the conversation: no snapshot of its messages stays in moderation."""
    ids = session.execute(select(CommunityMessage.id).where(CommunityMessage.conversation_id == conv.id)).scalars()
    for message_id in list(ids):
        moderation.forget_content(session=session, crypto=crypto, kind="message", content_id=message_id)


def _shred(session: Session, crypto: CryptoContext, conv: CommunityConversation) -> None:
    """Delete the conversation's rows and destroy its key: any copy of them is unreadable now."""
    session.execute(delete(CommunityMessage).where(CommunityMessage.conversation_id == conv.id))
    session.execute(delete(CommunityConversationSide).where(CommunityConversationSide.conversation_id == conv.id))
    crypto.destroy_data_key(session, purpose="identity", owner=conv.key_owner)
    session.delete(conv)
    session.flush()


# -- your data ---------------------------------------------------------------------------------


def export_member(*, session: Session, crypto: CryptoContext, member: Member, now: datetime) -> dict[str, Any]:
    """Everything `member` wrote in messages (their own messages, per conversation, with the other
    member's handle), their mutes and blocks. Not what others wrote to them. Audited."""
    token = member_token(crypto, member.id)
    sides = session.execute(
        select(CommunityConversationSide).where(CommunityConversationSide.member_token == token)
    ).scalars()
    out = []
    for side in sides:
        conv = session.get(CommunityConversation, side.conversation_id)
        if conv is None:
            continue
        written = session.execute(
            select(CommunityMessage)
            .where(CommunityMessage.conversation_id == conv.id, CommunityMessage.sender_token == token)
            .order_by(CommunityMessage.seq)
        ).scalars()
        out.append(
            {
                "conversation": conv.id,
                "with": _peer_of(session, crypto, conv, side) or None,
                "muted": side.muted,
                "messages": [
                    {
                        "id": m.id,
                        "sent": m.sent.isoformat(),
                        "text": _text_of(session, crypto, conv, m),
                        "hiddenByModerator": m.hidden,
                    }
                    for m in written
                ],
            }
        )
    _audit(session, crypto, member, code="community-messages-export", now=now)
    return {
        "conversations": out,
        "blocked": sorted(blocked_by_me(session=session, crypto=crypto, member_id=member.id)),
    }


def delete_member(*, session: Session, crypto: CryptoContext, member: Member, now: datetime) -> int:
    """A member leaves: their messages are deleted, their sides and blocks go, and each
    conversation whose other side is gone too (or kept nothing) is crypto-shredded. The other
    member keeps their own messages, with "a former member". Returns conversations shredded."""
    token = member_token(crypto, member.id)
    sides = list(
        session.execute(
            select(CommunityConversationSide).where(CommunityConversationSide.member_token == token)
        ).scalars()
    )
    shredded = 0
    for side in sides:
        conv = session.get(CommunityConversation, side.conversation_id)
        if conv is None:
            continue
        session.execute(
            delete(CommunityMessage).where(
                CommunityMessage.conversation_id == conv.id, CommunityMessage.sender_token == token
            )
        )
        session.delete(side)
        other = _other_side(session, conv, token)
        if other is None or other.cleared_upto >= conv.last_seq:
            _shred(session, crypto, conv)
            shredded += 1
        else:
            # The other side's sealed handle of the leaver becomes "" (a former member).
            other.peer_sealed = crypto.sealer.seal(
                _key(session, crypto, conv), orjson.dumps(""), _side_aad(conv.id, other.member_token)
            )
    session.execute(
        delete(CommunityBlock).where((CommunityBlock.blocker_token == token) | (CommunityBlock.blocked_token == token))
    )
    _audit(session, crypto, member, code="community-messages-delete", now=now)
    session.flush()
    return shredded


def _audit(session: Session, crypto: CryptoContext, member: Member, *, code: str, now: datetime) -> None:
    action = "D" if code.endswith("delete") else "R"
    auditing.record(session=session, crypto=crypto, account_id=member.account(), code=code, now=now, action=action)


# -- the "message" kind of moderation ----------------------------------------------------------


def _message_and_conversation(session: Session, content_id: str) -> tuple[CommunityMessage, CommunityConversation]:
    row = session.get(CommunityMessage, content_id) if _valid_id(content_id) else None
    conv = session.get(CommunityConversation, row.conversation_id) if row is not None else None
    if row is None or conv is None:
        raise NotFound("no such message")
    return row, conv


class MessageKind:
    """Moderation's view of a message: that one message, never its conversation."""

    def snapshot_for_report(self, *, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
        row, conv = _message_and_conversation(session, content_id)
        try:
            body = _open_body(session, crypto, conv, row)
        except _Unreadable:
            raise NotFound("no such message") from None
        return {"text": body["text"], "author": body["from"], "sent": row.sent.isoformat()}

    def set_hidden(self, *, session: Session, content_id: str, hidden: bool) -> None:
        # A message deleted since (its author left, or both deleted the conversation) is already
        # as hidden as it gets: nothing to do.
        if _valid_id(content_id):
            session.execute(update(CommunityMessage).where(CommunityMessage.id == content_id).values(hidden=hidden))

    def author_of(self, *, session: Session, crypto: CryptoContext, content_id: str) -> str:
        row, conv = _message_and_conversation(session, content_id)
        try:
            return str(_open_body(session, crypto, conv, row)["from"])
        except _Unreadable:
            raise NotFound("no such message") from None


def _reportable_by(*, session: Session, crypto: CryptoContext, content_id: str, reporter_id: str) -> bool:
    """Only the other participant of the conversation may report a message (which they received)."""
    try:
        row, _conv = _message_and_conversation(session, content_id)
    except NotFound:
        return False
    token = member_token(crypto, reporter_id)
    if row.sender_token == token:
        return False
    side = session.get(CommunityConversationSide, (row.conversation_id, token))
    return side is not None and row.seq > side.cleared_upto


def report(
    *,
    session: Session,
    crypto: CryptoContext,
    member: Member,
    conversation_id: str,
    message_id: str,
    reason: str,
    note: str,
    now: datetime,
) -> str:
    """`member` reports one message they received in their conversation `conversation_id`: that
    message alone is forwarded to moderation. Returns the report id."""
    conv, _side = _participant(session, crypto, member, conversation_id)
    row = session.get(CommunityMessage, message_id) if _valid_id(message_id) else None
    if row is None or row.conversation_id != conv.id:
        raise NotFound("no such message")
    return moderation.report(
        session=session,
        crypto=crypto,
        reporter=member,
        kind="message",
        content_id=message_id,
        reason=reason,
        note=note,
        now=now,
    )


moderation.register_kind("message", MessageKind(), reportable_by=_reportable_by)
