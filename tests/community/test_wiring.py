"""The slices wired together: posts, replies and profiles are reportable kinds of moderation, and
"your data" exports and deletes messages and reports along with posts and the profile."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from medvault.community import account, messages, moderation, posts
from medvault.community.errors import Forbidden, NotFound
from medvault.db import unit_of_work
from tests.community.support import NOW, fresh, new_member, raw_bytes


def test_every_kind_of_content_is_reportable() -> None:
    assert set(moderation.registered_kinds()) >= {"post", "reply", "profile", "message"}
    assert [p.name for p in account.parts()] == ["profile", "posts", "messages", "reports", "directory"]


def test_a_reported_post_is_hidden_by_a_moderator_and_its_author_suspended(vault_env: Any) -> None:
    env = vault_env
    ann_actor, ann = new_member(env)
    bob_actor, bob = new_member(env)
    mod_actor, _mod = new_member(env, role="moderator")
    with unit_of_work(env.factory) as session:
        post_id = posts.create(
            session=session,
            crypto=env.crypto,
            member=ann,
            kind="question",
            title="Offending title",
            body="Offending words",
            audience="members",
            confirm=True,
            now=NOW,
        )
        report_id = moderation.report(
            session=session, crypto=env.crypto, reporter=bob, kind="post", content_id=post_id, reason="spam", now=NOW
        )
    with unit_of_work(env.factory) as session:
        queued = moderation.queue(session=session, crypto=env.crypto, actor=mod_actor, now=NOW)
        assert [q.id for q in queued] == [report_id]
        assert "Offending words" in queued[0].snapshot["text"]
        moderation.act(session=session, crypto=env.crypto, actor=mod_actor, report_id=report_id, action="hide", now=NOW)
        moderation.act(
            session=session,
            crypto=env.crypto,
            actor=mod_actor,
            report_id=report_id,
            action="suspend",
            days=3,
            now=NOW,
        )
    with unit_of_work(env.factory) as session:
        listing = posts.listing(session=session, crypto=env.crypto, actor=bob_actor, me=bob)
        assert post_id not in [p.id for p in listing.posts]
        with pytest.raises(NotFound):
            posts.thread(session=session, crypto=env.crypto, actor=bob_actor, me=bob, post_id=post_id)
        own = posts.thread(session=session, crypto=env.crypto, actor=ann_actor, me=ann, post_id=post_id)
        assert own.post is not None
        assert own.post.hidden
    with pytest.raises(Forbidden, match="suspended"), unit_of_work(env.factory) as session:
        posts.create(
            session=session,
            crypto=env.crypto,
            member=fresh(env, ann),
            kind="question",
            title="t",
            body="b",
            audience="members",
            confirm=True,
            now=NOW + timedelta(days=1),
        )


def test_deleting_an_account_takes_its_messages_and_reports_along(vault_env: Any) -> None:
    env = vault_env
    ann_actor, ann = new_member(env)
    _bob_actor, bob = new_member(env)
    canary = "ZEBRAFINCH-canary-7731"
    with unit_of_work(env.factory) as session:
        conv = messages.start(session=session, crypto=env.crypto, member=ann, peer_id=bob.id, now=NOW)
        messages.send(
            session=session, crypto=env.crypto, member=ann, conversation_id=conv, text=f"hello {canary}", now=NOW
        )
    with unit_of_work(env.factory) as session:
        exported = account.export_all(session=session, crypto=env.crypto, actor=ann_actor, member=ann, now=NOW)
    assert canary in repr(exported["messages"])
    with unit_of_work(env.factory) as session:
        account.delete_account(session=session, crypto=env.crypto, actor=ann_actor, member=ann, now=NOW)
    with unit_of_work(env.factory) as session:
        seen = messages.thread(session=session, crypto=env.crypto, member=bob, conversation_id=conv, now=NOW)
    assert all(canary not in m.text for m in seen.messages)
    assert canary.encode() not in raw_bytes(env)
