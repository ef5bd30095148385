"""Posts and replies: audiences through the one decision, narrowing at once, revisions for the
author only, deletion that leaves no rows and shows quotes as removed, sealed at rest, moderation
hooks. Both backends."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from medvault.auth.accounts import Actor
from medvault.community import members, posts, review
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.db import unit_of_work
from medvault.store.models import CommunityMember, CommunityPost, CommunityRevision
from tests.community.support import NOW, new_member, raw_bytes

OPERATOR = Actor(account_id="f" * 32, role="admin")


def _post(
    env: Any,
    member: Any,
    *,
    title: str = "A title",
    body: str = "A body",
    audience: str = "members",
    confirm: bool = True,
) -> str:
    with unit_of_work(env.factory) as session:
        return posts.create(
            session=session,
            crypto=env.crypto,
            member=member,
            kind="question",
            title=title,
            body=body,
            audience=audience,
            confirm=confirm,
            now=NOW,
        )


def _reply(env: Any, actor: Actor, member: Any, post_id: str, body: str, quote: str | None = None, **kw: Any) -> str:
    with unit_of_work(env.factory) as session:
        return posts.reply(
            session=session,
            crypto=env.crypto,
            actor=actor,
            member=member,
            post_id=post_id,
            body=body,
            quote_id=quote,
            confirm=kw.get("confirm", True),
            now=kw.get("now", NOW + timedelta(seconds=1)),
        )


def _thread(env: Any, actor: Actor | None, me: Any, post_id: str) -> posts.Thread:
    with unit_of_work(env.factory) as session:
        return posts.thread(session=session, crypto=env.crypto, actor=actor, me=me, post_id=post_id)


def _listing(env: Any, actor: Actor | None, me: Any) -> posts.Listing:
    with unit_of_work(env.factory) as session:
        return posts.listing(session=session, crypto=env.crypto, actor=actor, me=me)


def test_posts_default_to_members_and_a_visitor_sees_neither_the_post_nor_a_count(vault_env: Any) -> None:
    author_actor, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    with unit_of_work(vault_env.factory) as session:
        post_id = posts.create(
            session=session,
            crypto=vault_env.crypto,
            member=author,
            kind="blog",
            title="T",
            body="B",
            confirm=True,
            now=NOW,
        )
        assert session.get(CommunityPost, post_id).audience == "members"
    public_id = _post(vault_env, author, title="Public one", audience="everyone")
    visitor = _listing(vault_env, None, None)
    assert [p.id for p in visitor.posts] == [public_id]
    assert visitor.total == 1
    assert _listing(vault_env, OPERATOR, None).total == 1
    assert _listing(vault_env, reader_actor, reader).total == 2
    for actor, me in ((None, None), (OPERATOR, None)):
        with pytest.raises(NotFound):
            _thread(vault_env, actor, me, post_id)
    assert _thread(vault_env, reader_actor, reader, post_id).post.title == "T"
    assert _thread(vault_env, author_actor, author, post_id).post.mine


def test_narrowing_applies_at_once_to_the_post_and_its_replies(vault_env: Any) -> None:
    _author_actor, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    post_id = _post(vault_env, author, audience="everyone")
    _reply(vault_env, reader_actor, reader, post_id, "Reply-canary-1")
    assert [r.body for r in _thread(vault_env, None, None, post_id).replies] == ["Reply-canary-1"]
    _set_audience(vault_env, author, post_id, "members")
    with pytest.raises(NotFound):
        _thread(vault_env, None, None, post_id)
    assert _listing(vault_env, None, None).total == 0
    with unit_of_work(vault_env.factory) as session:
        audiences = set(session.execute(select(CommunityPost.audience)).scalars())
    assert audiences == {"members"}
    assert _thread(vault_env, reader_actor, reader, post_id).replies[0].body == "Reply-canary-1"
    # Members-only replies never reach a visitor through a listing's reply count either.
    assert _listing(vault_env, reader_actor, reader).posts[0].replies == 1


def test_edits_keep_a_history_for_the_author_only(vault_env: Any) -> None:
    _a, author = new_member(vault_env)
    _b, other = new_member(vault_env)
    post_id = _post(vault_env, author, title="First title", body="First body")
    _edit(vault_env, author, post_id, title="Second title", body="Second body", now=NOW + timedelta(minutes=1))
    with unit_of_work(vault_env.factory) as session:
        (rev,) = posts.history(session=session, crypto=vault_env.crypto, member=author, item_id=post_id)
        assert (rev.number, rev.title, rev.body) == (1, "First title", "First body")
        with pytest.raises(NotFound):
            posts.history(session=session, crypto=vault_env.crypto, member=other, item_id=post_id)
        with pytest.raises(NotFound):
            posts.edit(
                session=session,
                crypto=vault_env.crypto,
                member=other,
                item_id=post_id,
                title="x",
                body="y",
                confirm=True,
                now=NOW,
            )
    thread = _thread(vault_env, _b, other, post_id)
    assert thread.post.edited
    assert thread.post.body == "Second body"


def test_deleting_removes_rows_and_revisions_and_quotes_show_removed(vault_env: Any) -> None:
    author_actor, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    post_id = _post(vault_env, author, body="Original-canary")
    first = _reply(vault_env, author_actor, author, post_id, "First-reply-canary")
    _edit(vault_env, author, first, body="First-reply-edited")
    quoting = _reply(vault_env, reader_actor, reader, post_id, "I agree", quote=first, now=NOW + timedelta(seconds=2))
    shown = _thread(vault_env, reader_actor, reader, post_id)
    assert shown.replies[-1].quote == posts.Quote(
        id=first, removed=False, author=author.id, excerpt="First-reply-edited"
    )
    with unit_of_work(vault_env.factory) as session:
        with pytest.raises(NotFound):  # only the author deletes
            posts.delete_item(session=session, crypto=vault_env.crypto, member=reader, item_id=first)
        posts.delete_item(session=session, crypto=vault_env.crypto, member=author, item_id=first)
        posts.delete_item(session=session, crypto=vault_env.crypto, member=author, item_id=post_id)
    with unit_of_work(vault_env.factory) as session:
        assert session.get(CommunityPost, first) is None
        assert session.execute(select(func.count()).select_from(CommunityRevision)).scalar_one() == 0
    shown = _thread(vault_env, reader_actor, reader, post_id)
    assert shown.post is None  # removed, and the remaining reply says so
    (left,) = shown.replies
    assert left.id == quoting
    assert left.quote == posts.Quote(id=first, removed=True)
    data = raw_bytes(vault_env)
    for canary in (b"Original-canary", b"First-reply-canary", b"First-reply-edited"):
        assert canary not in data


def test_hidden_items_show_to_their_author_only(vault_env: Any) -> None:
    author_actor, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    mod_actor, moderator = new_member(vault_env, role="moderator")
    post_id = _post(vault_env, author, title="Hide me", audience="everyone")
    with unit_of_work(vault_env.factory) as session:
        snap = posts.snapshot_for_report(session=session, crypto=vault_env.crypto, content_id=post_id)
        assert snap == {"kind": "post", "text": "Hide me\n\nA body", "author": author.id}
        assert posts.author_of(session=session, content_id=post_id) == author.id
        posts.set_hidden(session=session, content_id=post_id, hidden=True)
    for actor, me in ((None, None), (reader_actor, reader), (mod_actor, moderator), (OPERATOR, None)):
        with pytest.raises(NotFound):
            _thread(vault_env, actor, me, post_id)
        assert _listing(vault_env, actor, me).total == 0
    own = _thread(vault_env, author_actor, author, post_id)
    assert own.post.hidden
    assert _listing(vault_env, author_actor, author).total == 1


def test_disclosure_findings_stop_publishing_until_confirmed(vault_env: Any) -> None:
    actor, author = new_member(vault_env)
    with pytest.raises(review.NeedsConfirmation) as stopped:
        _post(vault_env, author, body="call me on 555-867-5309", confirm=False)
    assert [f.field for f in stopped.value.found] == ["body"]
    assert stopped.value.found[0].findings[0].kind == "phone"
    assert _listing(vault_env, actor, author).total == 0
    post_id = _post(vault_env, author, body="call me on 555-867-5309", confirm=True)
    with pytest.raises(review.NeedsConfirmation):
        _reply(vault_env, actor, author, post_id, "or me@example.org", confirm=False)
    pieces = review.highlight("call me on 555-867-5309 ok", stopped.value.found[0].findings)
    assert [p.text for p in pieces] == ["call me on ", "555-867-5309", " ok"]
    assert pieces[1].reason


def test_bad_input_and_suspended_members(vault_env: Any) -> None:
    actor, author = new_member(vault_env)
    for kwargs, location in (
        ({"title": ""}, "title"),
        ({"body": "x" * 20_001}, "body"),
        ({"audience": "friends"}, "audience"),
    ):
        with pytest.raises(CommunityError) as refused:
            _post(vault_env, author, **kwargs)
        assert refused.value.location == location
    with unit_of_work(vault_env.factory) as session:
        session.execute(
            update(CommunityMember)
            .where(CommunityMember.id == author.id)
            .values(suspended_until=NOW + timedelta(hours=1))
        )
        suspended = members.by_id(session=session, member_id=author.id)
    with pytest.raises(Forbidden):
        _post(vault_env, suspended)
    assert _listing(vault_env, actor, author).total == 0
    with pytest.raises(NotFound):
        _thread(vault_env, None, None, "../../etc")


def test_research_export_holds_nothing_of_the_community(vault_env: Any) -> None:
    _a, author = new_member(vault_env)
    _post(vault_env, author, audience="everyone")
    _post(vault_env, author, audience="members")
    with unit_of_work(vault_env.factory) as session:
        assert posts.research_export(session=session, crypto=vault_env.crypto) == []


def _edit(
    env: Any,
    member: Any,
    item_id: str,
    *,
    body: str,
    title: str | None = None,
    audience: str | None = None,
    now: datetime = NOW,
) -> None:
    """The author's edit, confirmed, in its own transaction."""
    with unit_of_work(env.factory) as session:
        posts.edit(
            session=session,
            crypto=env.crypto,
            member=member,
            item_id=item_id,
            title=title,
            body=body,
            audience=audience,
            confirm=True,
            now=now,
        )


def _set_audience(env: Any, member: Any, post_id: str, audience: str) -> None:
    _edit(env, member, post_id, title="A title", body="A body", audience=audience)


def test_widening_a_post_never_widens_the_replies_written_under_it(vault_env: Any) -> None:
    # Review finding M1: widening copied the post's audience onto every reply, publishing other
    # members' replies (written for members) to visitors, feeds and the operator.
    _a, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    post_id = _post(vault_env, author, audience="members")
    reply_id = _reply(vault_env, reader_actor, reader, post_id, "Members-reply-4242")
    _set_audience(vault_env, author, post_id, "everyone")
    for actor, me in ((None, None), (OPERATOR, None)):
        seen = _thread(vault_env, actor, me, post_id)
        assert seen.post is not None
        assert seen.replies == []
        assert _listing(vault_env, actor, me).posts[0].replies == 0
    assert [r.body for r in _thread(vault_env, reader_actor, reader, post_id).replies] == ["Members-reply-4242"]
    # A reply written after the widening is written for everyone, and shown to everyone.
    later = _reply(vault_env, reader_actor, reader, post_id, "Public-reply")
    assert [r.id for r in _thread(vault_env, None, None, post_id).replies] == [later]
    # Narrowing still applies at once to every reply; widening again does not undo it.
    _set_audience(vault_env, author, post_id, "only-me")
    _set_audience(vault_env, author, post_id, "everyone")
    with unit_of_work(vault_env.factory) as session:
        assert session.get(CommunityPost, reply_id).audience == "only-me"
        assert session.get(CommunityPost, later).audience == "only-me"
    assert _thread(vault_env, None, None, post_id).replies == []
    own = _thread(vault_env, reader_actor, reader, post_id).replies
    assert {r.id for r in own} == {reply_id, later}  # their author still sees them


def _report(env: Any, reporter: Any, kind: str, content_id: str) -> str:
    from medvault.community import moderation

    with unit_of_work(env.factory) as session:
        return moderation.report(
            session=session,
            crypto=env.crypto,
            reporter=reporter,
            kind=kind,
            content_id=content_id,
            reason="other",
            now=NOW,
        )


def test_only_what_the_reporter_may_read_can_be_reported(vault_env: Any) -> None:
    # Review finding M3: reporting pulled the current text of a post the reporter may not see
    # (narrowed to only-me) into the queue, and 400 vs 404 told existing ids from missing ones.
    _a, author = new_member(vault_env)
    _m, moderator = new_member(vault_env, "moderator")
    reader_actor, reader = new_member(vault_env)
    post_id = _post(vault_env, author, audience="everyone")
    reply_id = _reply(vault_env, reader_actor, reader, post_id, "a reply")
    _set_audience(vault_env, author, post_id, "only-me")
    for kind, item in (("post", post_id), ("reply", reply_id), ("post", "0123456789abcdef0123")):
        with pytest.raises(NotFound):
            _report(vault_env, moderator, kind, item)
    _set_audience(vault_env, author, post_id, "members")
    with pytest.raises(NotFound):  # narrowed once, the reply stays the author's own
        _report(vault_env, moderator, "reply", reply_id)
    assert _report(vault_env, moderator, "post", post_id)
    with pytest.raises(NotFound):  # a post id is not a reply id, nor the other way round
        _report(vault_env, moderator, "reply", post_id)
    with unit_of_work(vault_env.factory) as session:
        posts.set_hidden(session=session, content_id=post_id, hidden=True)
    with pytest.raises(NotFound):  # hidden by a moderator: the author's only
        _report(vault_env, reader, "post", post_id)
    with pytest.raises(Forbidden):  # the author still sees it, and may not report themselves
        _report(vault_env, author, "post", post_id)


def _block(env: Any, member: Any, peer: Any) -> None:
    from medvault.community import messages

    with unit_of_work(env.factory) as session:
        messages.block(session=session, crypto=env.crypto, member=member, peer_id=peer.id, now=NOW)


def test_a_block_hides_both_members_posts_and_replies_from_each_other(vault_env: Any) -> None:
    # Review finding L3: B still read and replied to the posts of A, who had blocked B.
    a_actor, a = new_member(vault_env)
    b_actor, b = new_member(vault_env)
    c_actor, c = new_member(vault_env)
    a_post = _post(vault_env, a, title="A's post")
    b_post = _post(vault_env, b, title="B's post")
    c_post = _post(vault_env, c, title="C's post")
    a_reply = _reply(vault_env, a_actor, a, c_post, "A in C's thread")
    b_reply = _reply(vault_env, b_actor, b, c_post, "B quotes A", quote=a_reply)
    _block(vault_env, a, b)
    for actor, me, theirs, their_reply in ((a_actor, a, b_post, b_reply), (b_actor, b, a_post, a_reply)):
        with pytest.raises(NotFound):
            _thread(vault_env, actor, me, theirs)
        listed = _listing(vault_env, actor, me)
        assert theirs not in {p.id for p in listed.posts}
        assert listed.total == 2
        shared = _thread(vault_env, actor, me, c_post)
        assert their_reply not in {r.id for r in shared.replies}
        with pytest.raises(NotFound):  # cannot reply to each other
            _reply(vault_env, actor, me, theirs, "hello again")
        with pytest.raises(NotFound):  # nor quote each other in a third thread
            _reply(vault_env, actor, me, c_post, "quoting", quote=their_reply)
        with pytest.raises(NotFound):  # nor report what they no longer see
            _report(vault_env, me, "post", theirs)
    # A third member sees everything, and B's quote of A shows A's words to them.
    seen = _thread(vault_env, c_actor, c, c_post)
    by_id = {r.id: r for r in seen.replies}
    assert set(by_id) == {a_reply, b_reply}
    quoted = by_id[b_reply].quote
    assert quoted is not None
    assert not quoted.removed


def test_a_quote_is_not_found_unless_it_is_a_visible_item_of_the_same_thread(vault_env: Any) -> None:
    # Review finding L4: quoting an id of another thread (even only-me) answered 400, a missing
    # id 404: an oracle of which ids exist.
    _a, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    private = _post(vault_env, author, audience="only-me")
    other = _post(vault_env, author, audience="members")
    target = _post(vault_env, author, audience="members")
    hidden_reply = _reply(vault_env, reader_actor, reader, target, "to be hidden")
    _other_actor, other_member = new_member(vault_env)
    with unit_of_work(vault_env.factory) as session:
        posts.set_hidden(session=session, content_id=hidden_reply, hidden=True)
    mod_actor, moderator = new_member(vault_env, "moderator")
    for quote in (private, other, "0123456789abcdef0123", "bad id!", hidden_reply):
        with pytest.raises(NotFound):
            _reply(vault_env, mod_actor, moderator, target, "hi", quote=quote)
    # The author of the hidden reply still quotes it (they see it); the post itself is quotable.
    assert _reply(vault_env, reader_actor, reader, target, "again", quote=hidden_reply)
    assert _reply(vault_env, mod_actor, moderator, target, "hi", quote=target)
    del other_member


def test_a_tampered_ciphertext_is_left_out_not_a_500_for_everyone(
    vault_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Review finding L1: one swapped post ciphertext made every listing and the thread fail.
    reader_actor, reader = new_member(vault_env)
    _a, author = new_member(vault_env)
    good = _post(vault_env, author, title="Good", body="Good-body", audience="everyone")
    bad = _post(vault_env, author, title="Bad", body="Bad-body-canary", audience="everyone")
    reply_ok = _reply(vault_env, reader_actor, reader, good, "fine reply")
    reply_bad = _reply(vault_env, reader_actor, reader, good, "swapped reply")
    with unit_of_work(vault_env.factory) as session:
        blob = session.get(CommunityPost, good).sealed
        session.execute(update(CommunityPost).where(CommunityPost.id.in_([bad, reply_bad])).values(sealed=blob))
    for actor, me in ((None, None), (reader_actor, reader)):
        assert [p.id for p in _listing(vault_env, actor, me).posts] == [good]
        with pytest.raises(NotFound):
            _thread(vault_env, actor, me, bad)
        assert [r.id for r in _thread(vault_env, actor, me, good).replies] == [reply_ok]
    assert any(bad in r.getMessage() for r in caplog.records)
    assert not any("Bad-body" in r.getMessage() or "Good-body" in r.getMessage() for r in caplog.records)
    with unit_of_work(vault_env.factory) as session:
        with pytest.raises(NotFound):
            posts.snapshot_for_report(session=session, crypto=vault_env.crypto, content_id=bad)
        mine = posts.export(session=session, crypto=vault_env.crypto, member=author)
        assert {"id": bad, "unreadable": True} in mine
        assert any(item.get("body") == "Good-body" for item in mine)


def test_deleting_an_item_shreds_the_snapshots_of_its_reports(vault_env: Any) -> None:
    # Review finding M4: report snapshots of a deleted post stayed in the queue indefinitely.
    from medvault.community import moderation
    from medvault.store.models import CommunityReport

    author_actor, author = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    mod_actor, _moderator = new_member(vault_env, "moderator")
    post_id = _post(vault_env, author, title="Regret-title", body="Regret-body-5150")
    reply_id = _reply(vault_env, author_actor, author, post_id, "Regret-reply-5150")
    kept = _post(vault_env, author, title="Kept", body="Kept-body")
    first = _report(vault_env, reader, "post", post_id)
    _set_audience(vault_env, author, post_id, "members")  # a revision (same audience, new text below)
    _edit(vault_env, author, post_id, title="Regret-title", body="Regret-body-edited")
    _report(vault_env, reader, "reply", reply_id)
    _report(vault_env, reader, "post", kept)
    with unit_of_work(vault_env.factory) as session:
        posts.delete_item(session=session, crypto=vault_env.crypto, member=author, item_id=reply_id)
        posts.delete_item(session=session, crypto=vault_env.crypto, member=author, item_id=post_id)
    with unit_of_work(vault_env.factory) as session:
        rows = {r.content_id: r for r in session.execute(select(CommunityReport)).scalars()}
        assert rows[post_id].sealed is None
        assert rows[reply_id].sealed is None
        assert rows[post_id].state == rows[reply_id].state == "content-deleted"
        assert rows[kept].sealed is not None  # other items' reports untouched
        assert rows[post_id].id == first
        queued = repr(
            moderation.queue(
                session=session, crypto=vault_env.crypto, actor=mod_actor, states=moderation.STATES, now=NOW
            )
        )
    assert "Regret" not in queued
    assert "Kept-body" in queued
    del reader_actor
