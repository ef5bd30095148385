"""Private messages on SQLite and PostgreSQL: only the two members read a conversation; sealed per
conversation; contact-details warning; block and mute; unread counts; delete for me; your data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from medvault.community import messages, moderation
from medvault.community.errors import CommunityError, Forbidden, NotFound, RateLimited
from medvault.db import unit_of_work
from medvault.store.models import (
    CommunityBlock,
    CommunityConversation,
    CommunityConversationSide,
    CommunityMessage,
    DataKey,
)
from tests.community.support import NOW, codes, community_audit, fresh, new_member


def _start(env: Any, a: Any, b: Any, now: Any = NOW) -> str:
    with unit_of_work(env.factory) as session:
        return messages.start(session=session, crypto=env.crypto, member=a, peer_id=b.id, now=now)


def _send(env: Any, sender: Any, conv: str, text: str, now: Any = NOW, **kw: Any) -> str:
    with unit_of_work(env.factory) as session:
        return messages.send(
            session=session, crypto=env.crypto, member=sender, conversation_id=conv, text=text, now=now, **kw
        )


def _thread(env: Any, member: Any, conv: str, now: Any = NOW, **kw: Any) -> messages.Thread:
    with unit_of_work(env.factory) as session:
        return messages.thread(session=session, crypto=env.crypto, member=member, conversation_id=conv, now=now, **kw)


def _list(env: Any, member: Any) -> list[messages.Summary]:
    with unit_of_work(env.factory) as session:
        return messages.conversations(session=session, crypto=env.crypto, member=member)


def test_two_members_talk_with_unread_counts_and_sealed_rows(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    assert _start(env, bob, ann) == conv  # one conversation per pair, whoever starts it
    _send(env, ann, conv, "Hello from the fatigue group")
    _send(env, ann, conv, "How did the new infusion go?", now=NOW + timedelta(minutes=1))
    assert [(s.peer, s.unread) for s in _list(env, bob)] == [(ann.id, 2)]
    assert [(s.peer, s.unread) for s in _list(env, ann)] == [(bob.id, 0)]  # one's own are read
    seen = _thread(env, bob, conv)
    assert [(m.text, m.mine) for m in seen.messages] == [
        ("Hello from the fatigue group", False),
        ("How did the new infusion go?", False),
    ]
    assert seen.peer == ann.id
    assert seen.can_send
    assert _list(env, bob)[0].unread == 0  # reading marks read
    with unit_of_work(env.factory) as session:
        stored = session.execute(select(CommunityMessage)).scalars().all()
        sides = session.execute(select(CommunityConversationSide)).scalars().all()
        assert all(b"infusion" not in m.body and b"fatigue" not in m.body for m in stored)
        # No handle in the clear: sides and senders are keyed tokens, the peer's handle is sealed.
        for row in [*sides, *stored]:
            for value in vars(row).values():
                if isinstance(value, bytes | str):
                    raw = value if isinstance(value, bytes) else value.encode()
                    assert ann.id.encode() not in raw
                    assert bob.id.encode() not in raw


def test_a_message_body_moved_to_another_row_fails_to_open(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    first = _send(env, ann, conv, "first message")
    second = _send(env, ann, conv, "second message")
    with unit_of_work(env.factory) as session:
        a, b = session.get(CommunityMessage, first), session.get(CommunityMessage, second)
        assert a is not None
        assert b is not None
        a.body, b.body = b.body, a.body
    # L1: neither opens (the AAD binds each to its row); the thread shows them as unreadable, no 500
    shown = _thread(env, bob, conv).messages
    assert [(m.text, m.unreadable) for m in shown] == [("(unreadable)", True), ("(unreadable)", True)]


def test_nobody_but_the_two_reads_or_writes_a_conversation(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    _, eve = new_member(env)
    _, mod = new_member(env, role="moderator")
    conv = _start(env, ann, bob)
    _send(env, ann, conv, "only for bob")
    for outsider in (eve, mod):
        with pytest.raises(NotFound) as refused:
            _thread(env, outsider, conv)
        assert str(refused.value) == "no such conversation"  # the same as for a missing one
        with pytest.raises(NotFound):
            _send(env, outsider, conv, "let me in")
        with unit_of_work(env.factory) as session, pytest.raises(NotFound):
            messages.set_muted(session=session, crypto=env.crypto, member=outsider, conversation_id=conv, muted=True)
        assert _list(env, outsider) == []
    with pytest.raises(NotFound) as missing:
        _thread(env, eve, "0" * 24)
    assert str(missing.value) == "no such conversation"
    with pytest.raises(NotFound):
        _thread(env, eve, "../../etc")


def test_contact_details_to_a_recent_contact_need_confirmation(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    with pytest.raises(messages.ContactDetailsWarning) as warned:
        _send(env, ann, conv, "call me on 0612 345 678 or mail ann.x@example.org")
    assert {f.kind for f in warned.value.findings} == {"phone", "email"}
    assert "0612" not in str(warned.value)
    assert "example.org" not in str(warned.value)
    assert _thread(env, bob, conv).messages == []  # nothing was sent
    _send(env, ann, conv, "call me on 0612 345 678 or mail ann.x@example.org", confirm_contact=True)
    _send(env, ann, conv, "no contact details in this one")
    assert len(_thread(env, bob, conv).messages) == 2
    # Met long ago and talked a lot: no warning any more.
    later = NOW + messages.RECENT_AGE + timedelta(days=1)
    for i in range(messages.RECENT_MESSAGES):
        _send(env, bob, conv, f"message {i}", now=later + timedelta(minutes=i * 5))
    _send(env, ann, conv, "my number is 0612 345 678", now=later + timedelta(hours=3))
    # Old, but few messages: still recent (either condition is enough).
    _, cid = new_member(env, now=NOW - timedelta(days=60))
    other = _start(env, cid, bob, now=NOW - timedelta(days=30))
    with pytest.raises(messages.ContactDetailsWarning):
        _send(env, cid, other, "write to cid@example.net")


def test_block_hides_both_ways_and_stops_the_blocked_member_writing(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    _, cid = new_member(env)
    conv = _start(env, ann, bob)
    _send(env, ann, conv, "hi bob")
    with unit_of_work(env.factory) as session:
        messages.block(session=session, crypto=env.crypto, member=bob, peer_id=ann.id, now=NOW)
        messages.block(session=session, crypto=env.crypto, member=bob, peer_id=ann.id, now=NOW)  # idempotent
    # L3: to the blocked member the blocker's conversation is as absent as an unknown one
    with pytest.raises(NotFound, match="no such conversation"):
        _send(env, ann, conv, "why did you block me")
    with pytest.raises(NotFound, match="no such conversation"):
        _thread(env, ann, conv)
    with pytest.raises(NotFound):
        _start(env, ann, bob)  # the blocker is nobody to the blocked member
    assert _list(env, ann) == []  # bob is not in ann's list
    assert [(s.peer, s.blocked_by_me) for s in _list(env, bob)] == [(ann.id, True)]
    with pytest.raises(Forbidden, match="you blocked"):
        _send(env, bob, conv, "one last word")
    assert not _thread(env, bob, conv).can_send
    with unit_of_work(env.factory) as session:
        assert messages.is_blocked(session=session, crypto=env.crypto, a=ann.id, b=bob.id)
        assert messages.is_blocked(session=session, crypto=env.crypto, a=bob.id, b=ann.id)
        assert not messages.is_blocked(session=session, crypto=env.crypto, a=ann.id, b=cid.id)
        assert messages.blocked_pairs(session=session, crypto=env.crypto, member_id=ann.id) == {bob.id}
        assert messages.blocked_pairs(session=session, crypto=env.crypto, member_id=bob.id) == {ann.id}
        assert messages.blocked_pairs(session=session, crypto=env.crypto, member_id=cid.id) == frozenset()
        assert messages.blocked_by_me(session=session, crypto=env.crypto, member_id=bob.id) == {ann.id}
        assert messages.blocked_by_me(session=session, crypto=env.crypto, member_id=ann.id) == frozenset()
        (row,) = session.execute(select(CommunityBlock)).scalars().all()
        assert ann.id.encode() not in row.pair_sealed
        assert bob.id.encode() not in row.blocker_token
    with unit_of_work(env.factory) as session:
        messages.unblock(session=session, crypto=env.crypto, member=bob, peer_id=ann.id)
    _send(env, ann, conv, "thanks for unblocking")
    assert [s.peer for s in _list(env, ann)] == [bob.id]


def test_mute_silences_the_count_but_messages_still_arrive(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    _, cid = new_member(env)
    loud, quiet = _start(env, ann, bob), _start(env, cid, bob)
    with unit_of_work(env.factory) as session:
        messages.set_muted(session=session, crypto=env.crypto, member=bob, conversation_id=quiet, muted=True)
    _send(env, ann, loud, "one")
    _send(env, cid, quiet, "two")
    _send(env, cid, quiet, "three")
    summaries = {s.peer: s for s in _list(env, bob)}
    assert (summaries[ann.id].unread, summaries[cid.id].unread, summaries[cid.id].muted) == (1, 0, True)
    with unit_of_work(env.factory) as session:
        assert messages.unread_total(session=session, crypto=env.crypto, member=bob) == 1
        messages.set_muted(session=session, crypto=env.crypto, member=bob, conversation_id=quiet, muted=False)
    assert {s.peer: s.unread for s in _list(env, bob)}[cid.id] == 2  # muted, not blocked: nothing lost
    assert [m.text for m in _thread(env, bob, quiet).messages] == ["two", "three"]


def test_delete_for_me_and_both_sides_deleting_shreds_the_conversation(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    _send(env, ann, conv, "before")
    with unit_of_work(env.factory) as session:
        assert not messages.delete_for_me(session=session, crypto=env.crypto, member=ann, conversation_id=conv)
    assert _list(env, ann) == []
    assert [m.text for m in _thread(env, bob, conv).messages] == ["before"]
    _send(env, bob, conv, "after")
    assert [m.text for m in _thread(env, ann, conv).messages] == ["after"]  # back, with new ones only
    with unit_of_work(env.factory) as session:
        owner = session.get(CommunityConversation, conv).key_owner  # type: ignore[union-attr]
        assert messages.delete_for_me(session=session, crypto=env.crypto, member=ann, conversation_id=conv) is False
        assert messages.delete_for_me(session=session, crypto=env.crypto, member=bob, conversation_id=conv) is True
    with unit_of_work(env.factory) as session:
        assert session.get(CommunityConversation, conv) is None
        assert session.execute(select(CommunityMessage)).first() is None
        assert session.execute(select(DataKey).where(DataKey.owner == owner)).first() is None
    with pytest.raises(NotFound):
        _thread(env, ann, conv)


def test_sending_is_rate_limited_per_account_and_suspension_stops_it(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    burst = messages.SEND_LIMITS[0]
    for i in range(burst.count):
        _send(env, ann, conv, f"note {i}", now=NOW + timedelta(seconds=i % 5))
    with pytest.raises(RateLimited):
        _send(env, ann, conv, "one too many", now=NOW + timedelta(seconds=10))
    assert len(_thread(env, bob, conv).messages) == burst.count
    _send(env, ann, conv, "next minute", now=NOW + timedelta(seconds=burst.seconds))
    with pytest.raises(CommunityError, match="write a message"):
        _send(env, ann, conv, "   ", now=NOW + timedelta(minutes=2))
    with pytest.raises(CommunityError, match="at most"):
        _send(env, ann, conv, "x" * (messages.MAX_TEXT + 1), now=NOW + timedelta(minutes=2))
    from dataclasses import replace

    suspended = replace(ann, suspended_until=NOW + timedelta(days=3))
    with pytest.raises(Forbidden, match="suspended"):
        _send(env, suspended, conv, "still here", now=NOW + timedelta(days=1))
    _send(env, suspended, conv, "back", now=NOW + timedelta(days=4))


def test_export_and_delete_member(vault_env: Any) -> None:
    env = vault_env
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    _send(env, ann, conv, "ann writes")
    _send(env, bob, conv, "bob answers")
    with unit_of_work(env.factory) as session:
        messages.block(session=session, crypto=env.crypto, member=ann, peer_id=fresh(env, bob).id, now=NOW)
        exported = messages.export_member(session=session, crypto=env.crypto, member=ann, now=NOW)
    assert exported["blocked"] == [bob.id]
    (only,) = exported["conversations"]
    assert only["with"] == bob.id
    assert [m["text"] for m in only["messages"]] == ["ann writes"]  # not what bob wrote
    with unit_of_work(env.factory) as session:
        owner = session.get(CommunityConversation, conv).key_owner  # type: ignore[union-attr]
        assert messages.delete_member(session=session, crypto=env.crypto, member=ann, now=NOW) == 0
    left = _thread(env, bob, conv)
    assert [m.text for m in left.messages] == ["bob answers"]
    assert left.peer == ""
    assert not left.can_send
    with pytest.raises(Forbidden, match="left"):
        _send(env, bob, conv, "are you there?")
    with unit_of_work(env.factory) as session:
        assert session.execute(select(CommunityBlock)).first() is None
        assert messages.delete_member(session=session, crypto=env.crypto, member=bob, now=NOW) == 1
    with unit_of_work(env.factory) as session:
        assert session.execute(select(CommunityConversation)).first() is None
        assert session.execute(select(DataKey).where(DataKey.owner == owner)).first() is None
    assert codes(community_audit(env)) == [
        "community-messages-export",
        "community-messages-delete",
        "community-messages-delete",
    ]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=8, max_size=300))
def test_any_text_round_trips_and_is_never_stored_as_written(vault_env: Any, text: str) -> None:
    env = vault_env
    if not text.strip() or messages.CONTACT_KINDS & {f.kind for f in messages.disclosure.check(text)}:
        return
    _, ann = new_member(env)
    _, bob = new_member(env)
    conv = _start(env, ann, bob)
    message_id = _send(env, ann, conv, text)
    assert [m.text for m in _thread(env, bob, conv).messages] == [text.strip()]
    with unit_of_work(env.factory) as session:
        body = session.get(CommunityMessage, message_id).body  # type: ignore[union-attr]
    assert text.strip().encode() not in body
    assert moderation.member_token(env.crypto, ann.id) != moderation.member_token(env.crypto, bob.id)
