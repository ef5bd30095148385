"""Moderation on SQLite and PostgreSQL: reports through the kind registry (the message kind and a
fake kind), the queue shows the item as reported and a reported message alone, every moderator
action is audited in its transaction and listed in the history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medvault.auth.accounts import Actor
from medvault.community import account, members, messages, moderation
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.db import unit_of_work
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import CommunityMember, CommunityNotice, CommunityReport, DataKey
from tests.community.support import NOW, codes, community_audit, fresh, new_member


@dataclass
class FakeKind:
    """A kind of content held in memory: what a posts slice plugs in, minus the tables."""

    items: dict[str, dict[str, str]] = field(default_factory=dict)
    hidden: dict[str, bool] = field(default_factory=dict)

    def snapshot_for_report(self, *, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
        if content_id not in self.items:
            raise NotFound("no such item")
        return dict(self.items[content_id])

    def set_hidden(self, *, session: Session, content_id: str, hidden: bool) -> None:
        self.hidden[content_id] = hidden

    def author_of(self, *, session: Session, crypto: CryptoContext, content_id: str) -> str:
        if content_id not in self.items:
            raise NotFound("no such item")
        return self.items[content_id]["author"]


@pytest.fixture
def fake_kind() -> Iterator[FakeKind]:
    kind = FakeKind()
    moderation.register_kind("fake", kind)
    try:
        yield kind
    finally:
        moderation.unregister_kind("fake")


def _conversation(env: Any) -> tuple[Any, Any, str, list[str]]:
    _, ann = new_member(env)
    _, bob = new_member(env)
    with unit_of_work(env.factory) as session:
        conv = messages.start(session=session, crypto=env.crypto, member=ann, peer_id=bob.id, now=NOW)
        ids = [
            messages.send(session=session, crypto=env.crypto, member=sender, conversation_id=conv, text=text, now=NOW)
            for sender, text in (
                (ann, "neighbour before: lemon tart recipe"),
                (ann, "the reported one: you are worthless"),
                (bob, "neighbour after: please stop"),
            )
        ]
    return ann, bob, conv, ids


def _report(env: Any, reporter: Any, kind: str, content_id: str, **kw: Any) -> str:
    with unit_of_work(env.factory) as session:
        return moderation.report(
            session=session,
            crypto=env.crypto,
            reporter=reporter,
            kind=kind,
            content_id=content_id,
            reason=kw.pop("reason", "harassment"),
            note=kw.pop("note", ""),
            now=kw.pop("now", NOW),
        )


def _queue(env: Any, actor: Actor, **kw: Any) -> list[moderation.QueuedReport]:
    with unit_of_work(env.factory) as session:
        return moderation.queue(session=session, crypto=env.crypto, actor=actor, now=kw.pop("now", NOW), **kw)


def _act(env: Any, actor: Actor, report_id: str, action: str, **kw: Any) -> str:
    with unit_of_work(env.factory) as session:
        return moderation.act(
            session=session, crypto=env.crypto, actor=actor, report_id=report_id, action=action, now=NOW, **kw
        )


def test_a_reported_message_reaches_the_queue_alone(vault_env: Any) -> None:
    env = vault_env
    ann, bob, conv, (before, reported, _after) = _conversation(env)
    mod_actor, mod_member = new_member(env, role="moderator")
    report_id = _report(env, bob, "message", reported, note="this is the third time")
    assert _report(env, bob, "message", reported) == report_id  # reported twice: one open report
    (queued,) = _queue(env, mod_actor)
    assert queued.id == report_id
    assert queued.snapshot["text"] == "the reported one: you are worthless"
    assert (queued.reporter, queued.author, queued.reason, queued.note) == (
        bob.id,
        ann.id,
        "harassment",
        "this is the third time",
    )
    everything = repr(_queue(env, mod_actor, states=moderation.STATES))
    assert "lemon tart" not in everything
    assert "please stop" not in everything
    # The moderator, a member too, still cannot read the conversation.
    with unit_of_work(env.factory) as session, pytest.raises(NotFound):
        messages.thread(session=session, crypto=env.crypto, member=mod_member, conversation_id=conv, now=NOW)
    with unit_of_work(env.factory) as session:
        (row,) = session.execute(select(CommunityReport)).scalars().all()
        assert row.sealed is not None
        assert b"worthless" not in row.sealed
        assert b"third time" not in row.sealed
    # Only the receiving participant reports a message: not its author, not an outsider.
    _, eve = new_member(env)
    for who in (ann, eve):
        with pytest.raises(NotFound):
            _report(env, who, "message", before)
    with pytest.raises(CommunityError, match="reason"):
        _report(env, bob, "message", before, reason="i-do-not-like-it")
    with pytest.raises(CommunityError, match="cannot be reported"):
        _report(env, bob, "recipe", before)
    with pytest.raises(NotFound):
        _report(env, bob, "message", "f" * 24)


def test_each_moderator_action_is_audited_and_in_the_history(vault_env: Any) -> None:
    env = vault_env
    ann, bob, conv, (_before, reported, _after) = _conversation(env)
    mod_actor, _ = new_member(env, role="moderator")
    report_id = _report(env, bob, "message", reported)
    done = [
        _act(env, mod_actor, report_id, "hide"),
        _act(env, mod_actor, report_id, "restore"),
        _act(env, mod_actor, report_id, "hide"),
        _act(env, mod_actor, report_id, "warn", message="Please keep it civil."),
        _act(env, mod_actor, report_id, "suspend", days=7),
        _act(env, mod_actor, report_id, "dismiss"),
    ]
    events = community_audit(env)
    assert codes(events) == [
        "community-report",
        "community-moderation-hide",
        "community-moderation-restore",
        "community-moderation-hide",
        "community-moderation-warn",
        "community-moderation-suspend",
        "community-moderation-dismiss",
    ]
    for event in events[1:]:
        assert event["agent"][0]["who"]["identifier"]["value"] == mod_actor.account_id
        assert event["entity"][0]["what"]["identifier"]["value"] == report_id
        assert "worthless" not in repr(event)
    with unit_of_work(env.factory) as session:
        listed = moderation.history(session=session, actor=mod_actor)
    assert [h.id for h in listed] == done[::-1]  # newest first
    assert [h.action for h in listed] == ["dismiss", "suspend", "warn", "hide", "restore", "hide"]
    by_seq = {e["seq"]: codes([e])[0] for e in events}
    assert all(by_seq[h.audit_seq] == f"community-moderation-{h.action}" for h in listed)
    assert {h.days for h in listed if h.action == "suspend"} == {7}
    # The effects: hidden for both sides, a warning and a suspension the author sees.
    with unit_of_work(env.factory) as session:
        thread = messages.thread(session=session, crypto=env.crypto, member=bob, conversation_id=conv, now=NOW)
        assert [m.hidden for m in thread.messages] == [False, True, False]
        seen = moderation.notices(session=session, crypto=env.crypto, member=ann)
    assert sorted((n.action, n.message) for n in seen) == [("suspend", ""), ("warn", "Please keep it civil.")]
    assert fresh(env, ann).suspended_until == NOW + timedelta(days=7)
    with unit_of_work(env.factory) as session:
        moderation.dismiss_notice(session=session, crypto=env.crypto, member=ann, notice_id=seen[0].id)
        assert len(moderation.notices(session=session, crypto=env.crypto, member=ann)) == 1
        with pytest.raises(NotFound):
            moderation.dismiss_notice(session=session, crypto=env.crypto, member=bob, notice_id=seen[1].id)
    with pytest.raises(Forbidden, match="suspended"), unit_of_work(env.factory) as session:
        messages.send(
            session=session, crypto=env.crypto, member=fresh(env, ann), conversation_id=conv, text="hi", now=NOW
        )
    with pytest.raises(CommunityError, match="days"):
        _act(env, mod_actor, report_id, "suspend", days=0)
    with pytest.raises(CommunityError, match="action must be"):
        _act(env, mod_actor, report_id, "delete-everything")


def test_only_a_moderator_with_a_second_factor_works_the_queue(vault_env: Any) -> None:
    env = vault_env
    _ann, bob, _conv, (_b, reported, _a) = _conversation(env)
    report_id = _report(env, bob, "message", reported)
    patient, _ = new_member(env)
    no_mfa = Actor(account_id="m" * 32, role="moderator", mfa_enrolled=False)
    operator = Actor(account_id="o" * 32, role="admin", mfa_enrolled=True)
    for actor in (patient, no_mfa, operator):
        with pytest.raises(NotFound):
            _queue(env, actor)
        with pytest.raises(NotFound):
            _act(env, actor, report_id, "hide")
        with unit_of_work(env.factory) as session, pytest.raises(NotFound):
            moderation.history(session=session, actor=actor)
    assert codes(community_audit(env)) == ["community-report"]


def test_a_fake_kind_is_reported_as_it_was_and_hidden_through_its_handler(vault_env: Any, fake_kind: FakeKind) -> None:
    env = vault_env
    _, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["post1"] = {"title": "Miracle cure", "body": "buy my pills", "author": author.id}
    with pytest.raises(Forbidden, match="yourself"):
        _report(env, author, "fake", "post1", reason="spam")
    report_id = _report(env, reader, "fake", "post1", reason="spam")
    fake_kind.items["post1"]["body"] = "edited to look harmless"  # edited after the report
    (queued,) = _queue(env, mod_actor)
    assert queued.kind == "fake"
    assert queued.snapshot["body"] == "buy my pills"  # as reported
    assert queued.author == author.id
    _act(env, mod_actor, report_id, "hide")
    assert fake_kind.hidden == {"post1": True}
    _act(env, mod_actor, report_id, "restore")
    assert fake_kind.hidden == {"post1": False}
    assert _queue(env, mod_actor) == []  # acted on: out of the open queue
    assert [q.state for q in _queue(env, mod_actor, states=moderation.STATES)] == ["restored"]


def test_a_leaving_author_does_not_withdraw_open_reports_until_a_moderator_closes_them(
    vault_env: Any, fake_kind: FakeKind
) -> None:
    """M2: the snapshot of an open report outlives the author's leaving, until judged; then it is shredded."""
    env = vault_env
    _, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "mine to take", "author": author.id}
    report_id = _report(env, reader, "fake", "p", note="reader's note")
    with unit_of_work(env.factory) as session:
        exported = moderation.export_member(session=session, crypto=env.crypto, member=reader)
        owner = session.get(CommunityReport, report_id).key_owner  # type: ignore[union-attr]
    assert [(r["item"], r["note"]) for r in exported["reports"]] == [("p", "reader's note")]
    with unit_of_work(env.factory) as session:
        assert moderation.delete_member(session=session, crypto=env.crypto, member=author) == 0
        session.execute(delete(CommunityMember).where(CommunityMember.id == author.id))  # as account.py does
    (queued,) = _queue(env, mod_actor)
    assert (queued.state, queued.snapshot["body"], queued.note) == ("open", "mine to take", "reader's note")
    del fake_kind.items["p"]
    _act(env, mod_actor, report_id, "hide")
    with unit_of_work(env.factory) as session:
        assert session.execute(select(DataKey).where(DataKey.owner == owner)).first() is None
    (queued,) = _queue(env, mod_actor, states=moderation.STATES)
    assert queued.state == "hidden"
    assert queued.snapshot == {}
    assert queued.note == ""


def test_a_leaving_reporter_withdraws_their_reports(vault_env: Any, fake_kind: FakeKind) -> None:
    env = vault_env
    _, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "words", "author": author.id}
    report_id = _report(env, reader, "fake", "p", note="reader's note")
    with unit_of_work(env.factory) as session:
        owner = session.get(CommunityReport, report_id).key_owner  # type: ignore[union-attr]
        assert moderation.delete_member(session=session, crypto=env.crypto, member=reader) == 1
    with unit_of_work(env.factory) as session:
        assert session.execute(select(DataKey).where(DataKey.owner == owner)).first() is None
    (queued,) = _queue(env, mod_actor, states=moderation.STATES)
    assert (queued.state, queued.snapshot, queued.note) == ("withdrawn", {}, "")


# -- security review fixes -------------------------------------------------------------------


def test_a_suspension_survives_leaving_and_rejoining(vault_env: Any, fake_kind: FakeKind) -> None:
    """M2: delete the community account, join again at once: still suspended, still cannot post."""
    env = vault_env
    author_actor, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "abuse", "author": author.id}
    report_id = _report(env, reader, "fake", "p")
    _act(env, mod_actor, report_id, "suspend", days=7)
    with unit_of_work(env.factory) as session:
        account.delete_account(
            session=session,
            crypto=env.crypto,
            actor=author_actor,
            member=members.by_account(session=session, crypto=env.crypto, account_id=author_actor.account_id),  # type: ignore[arg-type]
            now=NOW,
        )
    with unit_of_work(env.factory) as session:
        again = members.join(session=session, crypto=env.crypto, actor=author_actor, now=NOW + timedelta(hours=1))
    assert again.id != author.id
    assert again.suspended(NOW + timedelta(days=6))
    assert not again.suspended(NOW + timedelta(days=8))
    # once over, a later join starts clean and the suspension row is gone
    with unit_of_work(env.factory) as session:
        account.delete_account(session=session, crypto=env.crypto, actor=author_actor, member=again, now=NOW)
    with unit_of_work(env.factory) as session:
        later = members.join(session=session, crypto=env.crypto, actor=author_actor, now=NOW + timedelta(days=9))
    assert later.suspended_until is None


def test_a_report_about_an_author_who_left_can_still_suspend_their_account(vault_env: Any, fake_kind: FakeKind) -> None:
    """M2: the author leaves before the moderator acts; the suspension reaches the account on rejoin."""
    env = vault_env
    author_actor, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "abuse", "author": author.id}
    report_id = _report(env, reader, "fake", "p")
    with unit_of_work(env.factory) as session:
        account.delete_account(session=session, crypto=env.crypto, actor=author_actor, member=author, now=NOW)
    (queued,) = _queue(env, mod_actor)
    assert (queued.id, queued.state, queued.snapshot["body"]) == (report_id, "open", "abuse")
    _act(env, mod_actor, report_id, "suspend", days=3)
    with unit_of_work(env.factory) as session:
        again = members.join(session=session, crypto=env.crypto, actor=author_actor, now=NOW)
    assert again.suspended(NOW + timedelta(days=2))
    (closed,) = _queue(env, mod_actor, states=moderation.STATES)
    assert (closed.state, closed.snapshot) == ("suspended", {})  # judged: the snapshot is shredded


def test_forget_content_shreds_snapshots_and_closes_open_reports(vault_env: Any, fake_kind: FakeKind) -> None:
    """M4: deleting an item leaves no copy in the queue or the recently handled list."""
    env = vault_env
    _, author = new_member(env)
    _, one = new_member(env)
    _, two = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "deleted later", "author": author.id}
    fake_kind.items["q"] = {"body": "kept", "author": author.id}
    handled = _report(env, one, "fake", "p")
    _act(env, mod_actor, handled, "dismiss")
    still_open = _report(env, two, "fake", "p")
    other = _report(env, two, "fake", "q")
    with unit_of_work(env.factory) as session:
        owners = [session.get(CommunityReport, r).key_owner for r in (handled, still_open)]  # type: ignore[union-attr]
        shredded = moderation.forget_content(session=session, crypto=env.crypto, kind="fake", content_id="p")
    assert shredded == 2
    with unit_of_work(env.factory) as session:
        assert session.execute(select(DataKey).where(DataKey.owner.in_(owners))).first() is None
    by_id = {r.id: r for r in _queue(env, mod_actor, states=moderation.STATES)}
    assert (by_id[still_open].state, by_id[still_open].snapshot) == ("content-deleted", {})
    assert (by_id[handled].state, by_id[handled].snapshot) == ("dismissed", {})
    assert by_id[other].snapshot["body"] == "kept"
    assert [r.id for r in _queue(env, mod_actor)] == [other]


def test_a_conversation_deleted_by_both_leaves_no_report_snapshot(vault_env: Any) -> None:
    """M4, messages' side: the shredded conversation's reported message leaves the queue with it."""
    env = vault_env
    ann, bob, conv, (_before, reported, _after) = _conversation(env)
    mod_actor, _ = new_member(env, role="moderator")
    report_id = _report(env, bob, "message", reported)
    with unit_of_work(env.factory) as session:
        owner = session.get(CommunityReport, report_id).key_owner  # type: ignore[union-attr]
        assert not messages.delete_for_me(session=session, crypto=env.crypto, member=ann, conversation_id=conv)
        assert messages.delete_for_me(session=session, crypto=env.crypto, member=bob, conversation_id=conv)
    with unit_of_work(env.factory) as session:
        assert session.execute(select(DataKey).where(DataKey.owner == owner)).first() is None
    (closed,) = _queue(env, mod_actor, states=moderation.STATES)
    assert (closed.state, closed.snapshot, closed.note) == ("content-deleted", {}, "")


def test_opening_the_queue_is_audited_with_report_ids_only(vault_env: Any, fake_kind: FakeKind) -> None:
    """L5: every read of report snapshots leaves an access-log entry naming the reports."""
    env = vault_env
    _, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "secret words", "author": author.id}
    report_id = _report(env, reader, "fake", "p", note="my note")
    before = len(community_audit(env))
    _queue(env, mod_actor)
    events = community_audit(env)[before:]
    assert codes(events) == ["community-moderation-read"]
    (event,) = events
    assert event["agent"][0]["who"]["identifier"]["value"] == mod_actor.account_id
    assert [e["what"]["identifier"]["value"] for e in event["entity"]] == [report_id]
    text = str(event)
    assert "secret words" not in text
    assert "my note" not in text
    assert author.id not in text


def test_a_moderator_cannot_act_on_reports_about_their_own_content_or_filed_by_them(
    vault_env: Any, fake_kind: FakeKind
) -> None:
    """L5."""
    env = vault_env
    mod_actor, mod_member = new_member(env, role="moderator")
    other_mod, _ = new_member(env, role="moderator")
    _, member = new_member(env)
    fake_kind.items["mine"] = {"body": "the moderator's post", "author": mod_member.id}
    fake_kind.items["theirs"] = {"body": "a member's post", "author": member.id}
    about_me = _report(env, member, "fake", "mine")
    filed_by_me = _report(env, mod_member, "fake", "theirs")
    for report_id in (about_me, filed_by_me):
        for action in ("dismiss", "hide", "suspend"):
            with pytest.raises(Forbidden, match="another moderator"):
                _act(env, mod_actor, report_id, action, days=1)
    assert fake_kind.hidden == {}
    _act(env, other_mod, about_me, "dismiss")
    _act(env, other_mod, filed_by_me, "hide")
    assert fake_kind.hidden == {"theirs": True}


def test_a_tampered_report_reads_as_unreadable_and_is_logged_by_class_name(
    vault_env: Any, fake_kind: FakeKind, caplog: pytest.LogCaptureFixture
) -> None:
    """L1: a swapped report ciphertext shows "(unreadable)", never an error, never content in the log."""
    env = vault_env
    _, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "first words", "author": author.id}
    fake_kind.items["q"] = {"body": "second words", "author": author.id}
    first, second = _report(env, reader, "fake", "p"), _report(env, reader, "fake", "q")
    with unit_of_work(env.factory) as session:
        a, b = session.get(CommunityReport, first), session.get(CommunityReport, second)
        assert a is not None
        assert b is not None
        a.sealed, b.sealed = b.sealed, a.sealed
    caplog.set_level("WARNING")
    with caplog.at_level("WARNING", logger="medvault"):
        queued = _queue(env, mod_actor)
    assert {(q.unreadable, q.note, q.snapshot.get("text")) for q in queued} == {(True, "(unreadable)", "(unreadable)")}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "DecryptionFailed" in logged or "InvalidTag" in logged
    assert "words" not in logged
    with pytest.raises(CommunityError, match="cannot be read"):
        _act(env, mod_actor, first, "suspend", days=1)
    _act(env, mod_actor, first, "dismiss")
    with unit_of_work(env.factory) as session:
        exported = moderation.export_member(session=session, crypto=env.crypto, member=reader)
    assert len(exported["reports"]) == 2


@pytest.mark.parametrize("notice_id", ["\x00", "a\x00b", "../x", "x" * 33, "", "\uff41" * 4])
def test_malformed_notice_ids_are_not_found(vault_env: Any, notice_id: str) -> None:
    """L1: a NUL byte in the id broke PostgreSQL (500); now any malformed id is simply not a notice."""
    env = vault_env
    _, member = new_member(env)
    with unit_of_work(env.factory) as session, pytest.raises(NotFound):
        moderation.dismiss_notice(session=session, crypto=env.crypto, member=member, notice_id=notice_id)


def test_a_tampered_notice_reads_as_unreadable(vault_env: Any, fake_kind: FakeKind) -> None:
    env = vault_env
    _, author = new_member(env)
    _, reader = new_member(env)
    mod_actor, _ = new_member(env, role="moderator")
    fake_kind.items["p"] = {"body": "x", "author": author.id}
    _act(env, mod_actor, _report(env, reader, "fake", "p"), "warn", message="please be kind")
    with unit_of_work(env.factory) as session:
        (row,) = session.execute(select(CommunityNotice)).scalars().all()
        row.sealed = row.sealed[:-1] + bytes([row.sealed[-1] ^ 1])
    with unit_of_work(env.factory) as session:
        (notice,) = moderation.notices(session=session, crypto=env.crypto, member=author)
    assert notice.message == "(unreadable)"
