"""Community pages and JSON through the real app: join, write with the disclosure preview, read,
reply, edit, history, delete, profiles and pictures, feeds, rate limits, your data. Both backends."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.web.community_support import FORM, Site, site


@pytest.fixture
def csite(vault_env: Any) -> Iterator[Site]:
    yield from site(vault_env)


def _publish(s: Site, who: str, **fields: str) -> str:
    data = {"kind": "question", "title": "A title", "body": "A body", "audience": "members", "confirm": "yes", **fields}
    response = s.post_form("/community/write", who, data)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def test_a_members_only_post_is_one_not_available_page_for_a_visitor(csite: Site) -> None:
    post_id = _publish(csite, "author", title="Secret-title-7731", body="Secret-body-7731")
    missing = csite.get("/community/posts/0123456789abcdef0123")
    hidden = csite.get(f"/community/posts/{post_id}")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text
    assert "Secret-title" not in hidden.text
    assert hidden.headers["x-robots-tag"].startswith("noindex")
    member = csite.get(f"/community/posts/{post_id}", "member")
    assert member.status_code == 200
    assert "Secret-title-7731" in member.text
    assert 'name="robots" content="noindex' in member.text
    assert "og:title" not in member.text


def test_the_disclosure_preview_highlights_and_publishes_only_when_confirmed(csite: Site) -> None:
    data = {"kind": "question", "title": "Hello", "body": "call me on 555-867-5309 <b>now</b>", "audience": "members"}
    preview = csite.post_form("/community/write", "author", data)
    assert preview.status_code == 422
    assert "<mark" in preview.text
    assert "555-867-5309</mark>" in preview.text
    assert "&lt;b&gt;now&lt;/b&gt;" in preview.text  # the author's text is escaped, never HTML
    assert "Publish anyway" in preview.text
    listing = csite.get("/community", "author")
    assert "Hello" not in listing.text
    edit = csite.post_form("/community/write", "author", {**data, "edit": "yes"})
    assert edit.status_code == 200
    assert "555-867-5309" in edit.text  # back in the form, nothing lost
    done = csite.post_form("/community/write", "author", {**data, "confirm": "yes"})
    assert done.status_code == 303


def test_reply_edit_history_delete_through_the_pages(csite: Site) -> None:
    post_id = _publish(csite, "author", title="Thread", body="First words", audience="everyone")
    reply = csite.post_form(f"/community/posts/{post_id}/reply", "member", {"body": "A reply", "confirm": "yes"})
    assert reply.status_code == 303
    edit = csite.post_form(
        f"/community/posts/{post_id}/edit",
        "author",
        {"title": "Thread", "body": "Second words", "audience": "everyone"},
    )
    assert edit.status_code == 303
    history = csite.get(f"/community/posts/{post_id}/history", "author")
    assert "First words" in history.text
    assert csite.get(f"/community/posts/{post_id}/history", "member").status_code == 404
    visitor = csite.get(f"/community/posts/{post_id}")
    assert visitor.status_code == 200
    assert "Second words" in visitor.text
    assert "A reply" in visitor.text
    assert "og:title" in visitor.text
    assert "x-robots-tag" not in visitor.headers
    # Someone else's post cannot be edited or deleted (the same not-available answer).
    assert csite.post_form(f"/community/posts/{post_id}/delete", "member", {}).status_code == 404
    assert csite.post_form(f"/community/posts/{post_id}/delete", "author", {}).status_code == 303
    after = csite.get(f"/community/posts/{post_id}", "member")
    assert "Post removed" in after.text
    assert "Second words" not in after.text
    assert "First words" not in after.text


def test_forms_need_csrf_and_our_origin_and_bad_input_is_a_clear_400(csite: Site) -> None:
    author = csite.people["author"]
    forged = csite.client.post(
        "/community/write",
        content="title=x&body=y&csrf=forged",
        headers={**FORM, **author.headers},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    bad = csite.post_form("/community/write", "author", {"kind": "essay", "title": "t", "body": "b", "confirm": "yes"})
    assert bad.status_code == 400
    assert "question or a blog" in bad.text
    assert csite.post_form("/community/write", "admin", {"title": "t", "body": "b"}).status_code == 403
    assert csite.get("/community/write").status_code == 303  # signed out: sign in


def test_profile_fields_follow_their_visibility_and_the_picture_loses_its_metadata(csite: Site) -> None:
    handle = csite.people["author"].member_id
    saved = csite.post_form(
        "/community/me/profile",
        "author",
        {
            "display_name": "Wren",
            "display_name.visibility": "everyone",
            "bio": "Bio-canary",
            "bio.visibility": "members",
        },
    )
    assert saved.status_code == 303
    assert "Wren" in csite.get(f"/community/members/{handle}").text
    assert "Bio-canary" not in csite.get(f"/community/members/{handle}").text
    assert "Bio-canary" in csite.get(f"/community/members/{handle}", "member").text
    img = Image.new("RGB", (300, 300), (10, 20, 30))
    exif = Image.Exif()
    exif[0x010F] = "Canary-Camera"
    raw = io.BytesIO()
    img.save(raw, format="JPEG", exif=exif.tobytes())
    author = csite.people["author"]
    up = csite.client.post(
        "/community/me/picture",
        files={"picture": ("me.jpg", raw.getvalue(), "image/jpeg")},
        data={"csrf": author.csrf},
        headers={"Origin": "https://testserver", **author.headers},
        follow_redirects=False,
    )
    assert up.status_code == 303, up.text
    assert csite.get(f"/community/members/{handle}/picture").status_code == 404  # only me
    mine = csite.get(f"/community/members/{handle}/picture", "author")
    assert mine.status_code == 200
    assert mine.headers["content-type"] == "image/png"
    assert b"Canary-Camera" not in mine.content
    bad = csite.client.post(
        "/community/me/picture",
        files={"picture": ("x.gif", b"GIF89a" + bytes(64), "image/gif")},
        data={"csrf": author.csrf},
        headers={"Origin": "https://testserver", **author.headers},
        follow_redirects=False,
    )
    assert bad.status_code == 400


def test_feed_sitemap_and_robots_hold_public_posts_only(csite: Site) -> None:
    _publish(csite, "author", title="Public-feed-title", audience="everyone")
    _publish(csite, "author", title="Members-feed-title", audience="members")
    for path in ("/community/feed.xml", "/community/sitemap.xml"):
        for who in (None, "member"):  # a feed is the same for everyone: it is read as a visitor
            body = csite.get(path, who).text
            assert "Members-feed-title" not in body
    assert "Public-feed-title" in csite.get("/community/feed.xml").text
    robots = csite.get("/robots.txt").text
    assert "Disallow: /community/me/" in robots


def test_operator_api_sees_what_a_visitor_sees_and_a_smart_token_is_refused(csite: Site) -> None:
    _publish(csite, "author", title="Members-api-title", audience="members")
    public = _publish(csite, "author", title="Public-api-title", audience="everyone")
    listing = csite.api("GET", "/community/api/posts", "operator-api")
    assert listing.status_code == 200
    assert listing.json()["total"] == 1
    assert "Members-api-title" not in listing.text
    assert csite.api("GET", f"/community/api/posts/{public}", "operator-api").status_code == 200
    # The operator is no member: it cannot write.
    assert (
        csite.api("POST", "/community/api/posts", "operator-api", json={"title": "x", "body": "y"}).status_code == 403
    )
    # A patient's SMART app token is for the record, not the community: refused, even for public reads.
    for method, path in (("GET", "/community/api/posts"), ("GET", f"/community/api/posts/{public}")):
        refused = csite.api(method, path, "smart-app")
        assert refused.status_code == 403
        assert "Public-api-title" not in refused.text
    bad = csite.client.get("/community/api/posts", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401


def test_json_publish_needs_confirmation_for_findings(csite: Site) -> None:
    doc = {"type": "question", "title": "Hi", "body": "mail me: wren@example.org"}
    stopped = csite.api("POST", "/community/api/posts", "author", json=doc)
    assert stopped.status_code == 422
    (field,) = stopped.json()["findings"]
    assert field["field"] == "body"
    assert field["findings"][0]["kind"] == "email"
    assert csite.api("GET", "/community/api/posts", "author").json()["total"] == 0
    done = csite.api("POST", "/community/api/posts", "author", json={**doc, "confirm": True})
    assert done.status_code == 201
    assert csite.api("POST", "/community/api/posts", "author", json=[1]).status_code == 400
    assert csite.api("POST", "/community/api/posts", "author", json={"title": 3, "body": "x"}).status_code == 400


def test_too_many_views_are_a_429_with_retry_after_on_pages_and_json(vault_env: Any) -> None:
    for s in site(vault_env, community_listing_pages_per_hour_address=3, community_profile_views_per_hour=2):
        for _ in range(3):
            assert s.get("/community").status_code == 200
        page = s.get("/community")
        assert page.status_code == 429
        assert 0 < int(page.headers["retry-after"]) <= 3600
        assert "try again later" in page.text
        api = s.api("GET", "/community/api/posts")
        assert api.status_code == 429
        assert "retry-after" in api.headers
        handle = s.people["member"].member_id
        # Per account: the author may view two profiles an hour here, from any address.
        for _ in range(2):
            assert s.get(f"/community/members/{handle}", "author").status_code == 200
        assert s.get(f"/community/members/{handle}", "author").status_code == 429
        assert s.api("GET", f"/community/api/members/{handle}", "author").status_code == 429


def test_your_data_download_and_account_deletion(csite: Site) -> None:
    from sqlalchemy import select

    from medvault.audit import log as audit_log
    from medvault.db import unit_of_work
    from medvault.store.models import CommunityMember, CommunityPost, DataKey
    from tests.community.support import raw_bytes

    post_id = _publish(csite, "author", title="Mine-title-5150", body="Mine-body-5150", audience="everyone")
    csite.post_form(f"/community/posts/{post_id}/reply", "member", {"body": "Their-reply-5150", "confirm": "yes"})
    csite.post_form("/community/me/profile", "author", {"bio": "Mine-bio-5150", "bio.visibility": "members"})
    data = csite.get("/community/me/data.json", "author")
    assert data.status_code == 200
    assert data.headers["content-disposition"].startswith("attachment")
    doc = data.json()
    assert doc["posts"][0]["title"] == "Mine-title-5150"
    assert doc["profile"]["values"]["bio"] == "Mine-bio-5150"
    assert "Their-reply-5150" not in data.text  # someone else's words are theirs
    assert csite.api("GET", "/community/api/me/data", "author").json()["posts"][0]["body"] == "Mine-body-5150"
    handle = csite.people["author"].member_id
    env = csite.env
    with unit_of_work(env.factory) as session:
        key_owner = session.get(CommunityMember, handle).key_owner
        size_before = audit_log.size(session=session)
    refused = csite.post_form("/community/me/delete", "author", {"confirm": "maybe"})
    assert refused.status_code == 400
    done = csite.post_form("/community/me/delete", "author", {"confirm": "delete"})
    assert done.status_code == 200
    assert "deleted" in done.text
    with unit_of_work(env.factory) as session:
        assert session.get(CommunityMember, handle) is None
        assert session.execute(select(CommunityPost).where(CommunityPost.author_id == handle)).first() is None
        assert session.execute(select(DataKey).where(DataKey.owner == key_owner)).first() is None
        # One entry for the account, one for its conversations (messages audits its own deletion).
        assert audit_log.size(session=session) == size_before + 2
    stored = raw_bytes(env)
    for canary in (b"Mine-title-5150", b"Mine-body-5150", b"Mine-bio-5150"):
        assert canary not in stored
    # The other member's reply stays, under a post shown as removed.
    thread = csite.get(f"/community/posts/{post_id}", "member")
    assert "Post removed" in thread.text
    assert "Their-reply-5150" in thread.text
    assert csite.get("/community/me/data", "author").status_code == 403  # no longer a member


def test_the_record_link_is_off_by_default_and_only_suggests_to_the_member(csite: Site) -> None:
    from medvault.db import unit_of_work
    from medvault.records import service
    from tests.helpers import open_vault

    with unit_of_work(csite.env.factory) as session:
        from medvault.auth import accounts

        pid = accounts.actor_for(
            session=session, crypto=csite.env.crypto, account_id=csite.people["author"].account_id
        ).patient_id
    with open_vault(csite.env) as v:
        current = service.read(vault=v, rtype="Patient", rid=pid)
        service.update(vault=v, rtype="Patient", rid=pid, resource={**current, "birthDate": "1984-02-29"})
    form = csite.get("/community/me/profile", "author")
    assert "From your record" not in form.text
    linked = csite.post_form("/community/me/profile", "author", {"record_linked": "yes"})
    assert linked.status_code == 303
    form = csite.get("/community/me/profile", "author")
    assert "From your record: 1984" in form.text
    handle = csite.people["author"].member_id
    for who in ("member", "moderator", None):
        assert "<dd>1984" not in csite.get(f"/community/members/{handle}", who).text
    assert '"birth":"1984"' not in csite.api("GET", f"/community/api/members/{handle}", "member").text
    csite.post_form("/community/me/profile", "author", {})  # unticked: apart again
    assert "From your record" not in csite.get("/community/me/profile", "author").text


def test_a_swapped_ciphertext_or_bad_input_is_never_a_500(csite: Site) -> None:
    # Review finding L1, through the faces: one tampered post made /community, the feed, the JSON
    # listing and the thread 500 for everyone; a superscript birth year made the profile form 500.
    from sqlalchemy import update

    from medvault.db import unit_of_work
    from medvault.store.models import CommunityPost

    good = _publish(csite, "author", title="Good-title", body="one", audience="everyone")
    bad = _publish(csite, "author", title="Bad-title", body="two", audience="everyone")
    with unit_of_work(csite.env.factory) as session:
        blob = session.get(CommunityPost, good).sealed
        session.execute(update(CommunityPost).where(CommunityPost.id == bad).values(sealed=blob))
    for who in (None, "member"):
        listing = csite.get("/community", who)
        assert listing.status_code == 200
        assert "Good-title" in listing.text
        assert csite.get(f"/community/posts/{bad}", who).status_code == 404
        assert [p["id"] for p in csite.api("GET", "/community/api/posts", who).json()["posts"]] == [good]
        assert csite.api("GET", f"/community/api/posts/{bad}", who).status_code == 404
    assert csite.get("/community/feed.xml").status_code == 200
    birth = csite.post_form("/community/me/profile", "author", {"birth": "\u00b9\u2079\u2079\u2070"})
    assert birth.status_code == 400
    api = csite.api(
        "PUT", "/community/api/me/profile", "author", json={"values": {"birth": "\u00b9\u2079\u2079\u2070"}}
    )
    assert api.status_code == 400
    assert api.json()["field"] == "birth"
