"""The privacy matrix (issue 5 acceptance): for every profile field at every visibility, and every
post audience (and a moderator-hidden post), for each viewer (visitor, member, author, moderator,
operator, research export), exactly what is returned, through the pages (HTML), the JSON API and the
feeds (Atom and sitemap). On both backends, every leg.

Each value written is a unique canary; a response is its status line, all its headers and its full
body, and presence or absence is a substring search in that. The expectations are written out here
as tables, not computed with audience.may_see: the test pins the rule down instead of repeating it.

Research export: the community's `research_export` returns nothing at all (design-community.md);
profiles have no research export whatsoever.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from PIL import Image

from medvault.community import posts, profiles
from medvault.db import unit_of_work
from tests.web.community_support import Person, Site, _person, site

VISIBILITIES = ("only-me", "members", "everyone")
VIEWERS = ("visitor", "member", "author", "moderator", "operator", "research")
# Who sees a profile field of each visibility, and a post of each audience.
PROFILE_SEEN_BY = {
    "only-me": {"author"},
    "members": {"author", "member", "moderator"},
    "everyone": {"author", "member", "moderator", "visitor", "operator"},
}
POST_SEEN_BY = {
    "members": {"author", "member", "moderator"},
    "everyone": {"author", "member", "moderator", "visitor", "operator"},
    "hidden": {"author"},  # public audience, hidden by a moderator: its author only
}
# What a post listing counts for each viewer (the author's hidden post counts for the author only).
LISTING_TOTAL = {"visitor": 1, "operator": 1, "member": 2, "moderator": 2, "author": 3}
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _profile_values(vis: str) -> dict[str, str]:
    """Unique values per field and visibility; the fields with fixed forms get distinct valid values."""
    code = {"only-me": "Onlyme", "members": "Members", "everyone": "Everyone"}[vis]
    values = {f: f"Canary{f.replace('_', '')}{code}" for f in profiles.TEXT_FIELDS}
    values["birth"] = {"only-me": "1911", "members": "1922", "everyone": "1933"}[vis]
    values["sex"] = {"only-me": "intersex", "members": "male", "everyone": "female"}[vis]
    values["postcode"] = f"QZ{code.upper()}"
    return values


def _needles(field: str, value: str) -> list[str]:
    """How a value shows in a response: free text as itself; short fixed values in their context
    (a bare "1911" could occur inside a random id)."""
    if field in ("birth", "sex"):
        return [f"<dd>{value}</dd>", f'"{field}":"{value}"']
    return [value]


@dataclass
class World:
    site: Site
    authors: dict[str, Person]  # one author per profile visibility
    writer: Person  # writes the posts (the "everyone" author)
    post_ids: dict[str, str]
    texts: dict[str, list[str]]  # post state -> its canaries (title, body, reply)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def _build(s: Site) -> World:
    env = s.env
    authors = {vis: _person(env, "patient", 10 + i, join=True) for i, vis in enumerate(VISIBILITIES)}
    from medvault.community import members

    with unit_of_work(env.factory) as session:
        for vis, person in authors.items():
            member = members.by_id(session=session, member_id=person.member_id or "")
            profiles.update(
                session=session,
                crypto=env.crypto,
                member=member,
                values=_profile_values(vis),
                visibility=dict.fromkeys(profiles.FIELDS, vis),
                record_linked=False,
                confirm=True,
                now=NOW,
            )
            profiles.set_avatar(session=session, crypto=env.crypto, member=member, data=_png(), now=NOW)
    writer = authors["everyone"]
    replier = s.people["member"]
    post_ids: dict[str, str] = {}
    texts: dict[str, list[str]] = {}
    with unit_of_work(env.factory) as session:
        author = members.by_id(session=session, member_id=writer.member_id or "")
        other = members.by_id(session=session, member_id=replier.member_id or "")
        from medvault.auth.accounts import Actor

        other_actor = Actor(account_id=replier.account_id, role="patient")
        for n, state in enumerate(("members", "everyone", "hidden")):
            title, body, reply = (f"Canary{part}{state.capitalize()}" for part in ("Title", "Body", "Reply"))
            post_id = posts.create(
                session=session,
                crypto=env.crypto,
                member=author,
                kind="question",
                title=title,
                body=body,
                audience="members" if state == "members" else "everyone",
                confirm=True,
                now=NOW + timedelta(minutes=n),
            )
            posts.reply(
                session=session,
                crypto=env.crypto,
                actor=other_actor,
                member=other,
                post_id=post_id,
                body=reply,
                confirm=True,
                now=NOW + timedelta(minutes=n, seconds=30),
            )
            if state == "hidden":
                posts.set_hidden(session=session, content_id=post_id, hidden=True)
            post_ids[state] = post_id
            texts[state] = [title, body, reply, post_id]
    return World(s, authors, writer, post_ids, texts)


@pytest.fixture
def world(vault_env: Any) -> Iterator[World]:
    for s in site(vault_env):
        yield _build(s)


def _dump(response: Any) -> str:
    head = f"{response.status_code}\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return head + "\n\n" + response.text


def _get(w: World, path: str, who: Person | str | None) -> str:
    s = w.site
    if isinstance(who, Person):
        response = s.client.get(path, headers=who.headers, follow_redirects=False)
    elif who == "operator-api":
        response = s.client.get(path, headers={"Authorization": f"Bearer {s.operator_token}"}, follow_redirects=False)
    else:
        response = s.client.get(path, follow_redirects=False)
    assert response.status_code < 500, (path, response.status_code)
    return _dump(response)


def _credentials(w: World, viewer: str, channel: str, subject: str) -> Person | str | None:
    """Who makes the request: `subject` is "posts" or a profile visibility (whose author is asked)."""
    if viewer == "visitor":
        return None
    if viewer == "author":
        return w.writer if subject == "posts" else w.authors[subject]
    if viewer == "operator":
        return "operator-api" if channel == "json" else w.site.people["admin"]  # pages: signed in as admin
    return w.site.people[viewer]


def _responses(w: World, viewer: str) -> dict[str, dict[str, str]]:
    """channel -> subject -> every response of that channel for the subject, concatenated."""
    if viewer == "research":
        with unit_of_work(w.site.env.factory) as session:
            export = posts.research_export(session=session, crypto=w.site.env.crypto)
        dump = orjson.dumps(export).decode()
        return {"export": {"posts": dump, **dict.fromkeys(VISIBILITIES, dump)}}
    out: dict[str, dict[str, str]] = {"html": {}, "json": {}, "feed": {}}
    ids = list(w.post_ids.values())
    who = _credentials(w, viewer, "html", "posts")
    out["html"]["posts"] = "".join(_get(w, p, who) for p in ["/community", *(f"/community/posts/{i}" for i in ids)])
    who = _credentials(w, viewer, "json", "posts")
    out["json"]["posts"] = "".join(
        _get(w, p, who) for p in ["/community/api/posts", *(f"/community/api/posts/{i}" for i in ids)]
    )
    for channel in ("html", "json"):
        for vis, person in w.authors.items():
            who = _credentials(w, viewer, channel, vis)
            path = (
                f"/community/members/{person.member_id}"
                if channel == "html"
                else f"/community/api/members/{person.member_id}"
            )
            out[channel][vis] = _get(w, path, who)
    who = _credentials(w, viewer, "feed", "posts")
    feeds = _get(w, "/community/feed.xml", who) + _get(w, "/community/sitemap.xml", who)
    out["feed"] = {"posts": feeds, **dict.fromkeys(VISIBILITIES, feeds)}
    return out


@pytest.mark.parametrize("viewer", VIEWERS)
def test_privacy_matrix(world: World, viewer: str) -> None:
    wrong: list[str] = []
    for channel, by_subject in _responses(world, viewer).items():
        # Profile fields: every field x every visibility.
        for vis in VISIBILITIES:
            text = by_subject[vis]
            for field, value in _profile_values(vis).items():
                expected = viewer in PROFILE_SEEN_BY[vis] and channel in ("html", "json")
                if channel == "feed" and field == "display_name" and vis == "everyone":
                    expected = True  # the public posts' author name, public by choice
                found = any(n in text for n in _needles(field, value))
                if found != expected:
                    wrong.append(f"{channel}: profile {field}={vis} {'shown' if found else 'missing'} for {viewer}")
        # Posts: every audience, and a hidden one; title, body, reply and the id itself.
        text = by_subject["posts"]
        for state, canaries in world.texts.items():
            for canary in canaries:
                expected = viewer in POST_SEEN_BY[state] and channel in ("html", "json")
                if channel == "feed":
                    # Feeds hold public posts (title, snippet, link) only: never replies, never more.
                    expected = state == "everyone" and canary != canaries[2]
                found = canary in text
                if found != expected:
                    wrong.append(
                        f"{channel}: post {state} {canary[:16]} {'shown' if found else 'missing'} for {viewer}"
                    )
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("viewer", ["visitor", "member", "author", "moderator", "operator"])
def test_counts_pictures_and_shapes_per_viewer(world: World, viewer: str) -> None:
    """Listing counts count only what the viewer may see; a picture follows its field's visibility;
    the JSON shape names the audience it was built for."""
    json_who = _credentials(world, viewer, "json", "posts")
    listing = orjson.loads(_get(world, "/community/api/posts", json_who).split("\n\n", 1)[1])
    assert listing["total"] == LISTING_TOTAL[viewer]
    html = _get(world, "/community", _credentials(world, viewer, "html", "posts"))
    assert f"{LISTING_TOTAL[viewer]} post" in html
    for vis, person in world.authors.items():
        who = _credentials(world, viewer, "html", vis)
        picture = _get(world, f"/community/members/{person.member_id}/picture", who)
        assert picture.startswith("200" if viewer in PROFILE_SEEN_BY[vis] else "404"), (vis, picture[:3])
        who = _credentials(world, viewer, "json", vis)
        profile = _get(world, f"/community/api/members/{person.member_id}", who)
        if viewer not in PROFILE_SEEN_BY[vis] and viewer in ("visitor", "operator"):
            assert profile.startswith("404")
            continue
        shape = orjson.loads(profile.split("\n\n", 1)[1])["shape"]
        expected_shape = {
            "author": "OwnProfile",
            "member": "MemberProfile",
            "moderator": "MemberProfile",
            "visitor": "PublicProfile",
            "operator": "PublicProfile",
        }[viewer]
        assert shape == expected_shape
        if shape != "OwnProfile":
            assert "visibility" not in profile
            assert "record_linked" not in profile


def test_members_only_post_page_is_the_missing_page_for_visitor_and_operator(world: World) -> None:
    """No title, no snippet, no count: the page of a members-only or hidden post is byte-for-byte
    the page of a post that never existed."""
    for who in (None, world.site.people["admin"]):
        missing = _get(world, "/community/posts/00000000000000000000", who)
        for state in ("members", "hidden"):
            page = _get(world, f"/community/posts/{world.post_ids[state]}", who)
            assert page.startswith("404")
            assert page == missing
