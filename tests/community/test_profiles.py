"""Profiles: per-field visibility, one shape per audience, sealed at rest, the disclosure check,
avatars cleaned of metadata, moderation hooks. Both backends."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import update

from medvault.auth.accounts import Actor
from medvault.community import audience, profiles, review
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.db import unit_of_work
from medvault.store.models import CommunityMember, CommunityProfile
from tests.community.support import NOW, new_member, raw_bytes

OPERATOR = Actor(account_id="f" * 32, role="admin")


def _set(env: Any, member: Any, values: dict[str, str], vis: dict[str, str], *, confirm: bool = True) -> Any:
    with unit_of_work(env.factory) as session:
        return profiles.update(
            session=session,
            crypto=env.crypto,
            member=member,
            values=values,
            visibility=vis,
            record_linked=False,
            confirm=confirm,
            now=NOW,
        )


def _view(env: Any, actor: Actor | None, me: Any, handle: str) -> Any:
    with unit_of_work(env.factory) as session:
        return profiles.view(session=session, crypto=env.crypto, actor=actor, me=me, handle=handle)


def test_new_fields_are_only_me_and_each_audience_gets_its_own_shape(vault_env: Any) -> None:
    owner_actor, owner = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    mine = _set(vault_env, owner, {"display_name": "Wren", "bio": "Canary-bio-4471"}, {"display_name": "everyone"})
    assert mine.visibility["bio"] == audience.PROFILE_DEFAULT == "only-me"
    assert mine.visibility["postcode"] == "only-me"
    public = _view(vault_env, None, None, owner.id)
    assert type(public) is profiles.PublicProfile
    assert public.display_name == "Wren"
    assert public.bio is None
    member_view = _view(vault_env, reader_actor, reader, owner.id)
    assert type(member_view) is profiles.MemberProfile
    assert member_view.bio is None
    own = _view(vault_env, owner_actor, owner, owner.id)
    assert type(own) is profiles.OwnProfile
    assert own.values["bio"] == "Canary-bio-4471"
    # Shapes for others have no place for visibilities or the record link at all.
    assert not hasattr(public, "visibility")
    assert not hasattr(member_view, "record_linked")


def test_a_visitor_of_a_profile_with_nothing_public_gets_not_found(vault_env: Any) -> None:
    _actor, owner = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    _set(vault_env, owner, {"bio": "members only bio"}, {"bio": "members"})
    with pytest.raises(NotFound):
        _view(vault_env, None, None, owner.id)
    with pytest.raises(NotFound):
        _view(vault_env, OPERATOR, None, owner.id)
    assert _view(vault_env, reader_actor, reader, owner.id).bio == "members only bio"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    vis=st.fixed_dictionaries({f: st.sampled_from(audience.VISIBILITIES) for f in profiles.TEXT_FIELDS}),
)
def test_every_field_shows_exactly_where_may_see_allows(vault_env: Any, vis: dict[str, str]) -> None:
    """Property: for any choice of visibilities, each shape holds exactly the fields may_see allows."""
    _actor, owner = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    values = {
        "display_name": "Nym",
        "birth": "1984",
        "sex": "female",
        "country": "Norway",
        "postcode": "N0 1AB",
        "diagnosis": "Diag-x",
        "subtype": "Sub-y",
        "treatment": "Treat-z",
        "bio": "Bio-w",
    }
    _set(vault_env, owner, values, vis)
    for actor, me, viewer in ((None, None, "visitor"), (reader_actor, reader, "member"), (OPERATOR, None, "operator")):
        expected = {f for f in profiles.TEXT_FIELDS if audience.may_see(visibility=vis[f], viewer=viewer)}  # type: ignore[arg-type]
        try:
            shown = _view(vault_env, actor, me, owner.id)
        except NotFound:
            assert not expected
            assert viewer in ("visitor", "operator")
            continue
        got = {f for f in profiles.TEXT_FIELDS if getattr(shown, f) is not None}
        assert got == expected, viewer


def test_profile_text_is_sealed_and_bound_to_its_row(vault_env: Any) -> None:
    _a, first = new_member(vault_env)
    _b, second = new_member(vault_env)
    _set(vault_env, first, {"bio": "Canary-sealed-9931"}, {"bio": "everyone"})
    _set(vault_env, second, {"bio": "other"}, {"bio": "everyone"})
    assert b"Canary-sealed-9931" not in raw_bytes(vault_env)
    with unit_of_work(vault_env.factory) as session:
        blob = session.get(CommunityProfile, first.id).sealed
        # The same member's blob into another member's row (and key owner) must fail, not show.
        session.execute(
            update(CommunityMember).where(CommunityMember.id == second.id).values(key_owner=first.key_owner)
        )
        session.execute(update(CommunityProfile).where(CommunityProfile.member_id == second.id).values(sealed=blob))
    # It does not open: nothing of it is shown (a visitor: not found), and no 500 either.
    with pytest.raises(NotFound):
        _view(vault_env, None, None, second.id)
    _r, reader = new_member(vault_env)
    assert _view(vault_env, _r, reader, second.id).bio is None


def test_bad_values_are_clear_errors_naming_the_field_not_the_value(vault_env: Any) -> None:
    _a, owner = new_member(vault_env)
    for values, location in (
        ({"birth": "last spring"}, "birth"),
        ({"sex": "secret-sex-value"}, "sex"),
        ({"postcode": "<script>"}, "postcode"),
        ({"display_name": "x" * 61}, "display_name"),
        ({"unknown": "x"}, "field"),
    ):
        with pytest.raises(CommunityError) as refused:
            _set(vault_env, owner, values, {})
        assert refused.value.location == location
        assert next(iter(values.values())) not in refused.value.message
    with pytest.raises(CommunityError):
        _set(vault_env, owner, {}, {"bio": "friends"})


def test_the_disclosure_check_stops_a_newly_shared_field_until_confirmed(vault_env: Any) -> None:
    _a, owner = new_member(vault_env)
    bio = "Write to me at wren@example.org"
    _set(vault_env, owner, {"bio": bio}, {}, confirm=False)  # only me: nothing is published, no check
    with pytest.raises(review.NeedsConfirmation) as stopped:
        _set(vault_env, owner, {}, {"bio": "members"}, confirm=False)
    (found,) = stopped.value.found
    assert found.field == "bio"
    assert found.findings[0].kind == "email"
    assert _view(vault_env, *new_member(vault_env), owner.id).bio is None  # nothing changed
    _set(vault_env, owner, {}, {"bio": "members"}, confirm=True)
    assert _view(vault_env, *new_member(vault_env), owner.id).bio == bio


def _png_with_exif() -> bytes:
    img = Image.new("RGB", (640, 480), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "Canary-Camera-Maker"  # Make
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_avatar_is_reencoded_without_metadata_and_follows_its_visibility(vault_env: Any) -> None:
    owner_actor, owner = new_member(vault_env)
    upload = _png_with_exif()
    assert b"Canary-Camera-Maker" in upload
    with unit_of_work(vault_env.factory) as session:
        profiles.set_avatar(session=session, crypto=vault_env.crypto, member=owner, data=upload, now=NOW)
    with unit_of_work(vault_env.factory) as session:
        own = profiles.avatar(session=session, crypto=vault_env.crypto, actor=owner_actor, me=owner, handle=owner.id)
    assert own.startswith(b"\x89PNG")
    assert b"Canary-Camera-Maker" not in own
    with Image.open(io.BytesIO(own)) as img:
        assert max(img.size) <= 256
        assert "exif" not in img.info
    with pytest.raises(NotFound), unit_of_work(vault_env.factory) as session:  # only-me by default
        profiles.avatar(session=session, crypto=vault_env.crypto, actor=None, me=None, handle=owner.id)
    _set(vault_env, owner, {}, {"avatar": "everyone"})
    with unit_of_work(vault_env.factory) as session:
        assert profiles.avatar(session=session, crypto=vault_env.crypto, actor=None, me=None, handle=owner.id) == own
    assert b"Canary-Camera-Maker" not in raw_bytes(vault_env)
    for bad in (b"", b"GIF89a" + bytes(100), b"not an image", b"\x89PNG\r\n\x1a\n" + bytes(40)):
        with pytest.raises(CommunityError), unit_of_work(vault_env.factory) as session:
            profiles.set_avatar(session=session, crypto=vault_env.crypto, member=owner, data=bad, now=NOW)


def test_hidden_profiles_show_to_their_owner_only_and_suspended_members_cannot_edit(vault_env: Any) -> None:
    owner_actor, owner = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    _set(vault_env, owner, {"bio": "Report-me"}, {"bio": "members"})
    with unit_of_work(vault_env.factory) as session:
        snap = profiles.snapshot_for_report(session=session, crypto=vault_env.crypto, content_id=owner.id)
        assert snap["author"] == owner.id == profiles.author_of(session=session, content_id=owner.id)
        assert "Report-me" in snap["text"]
        profiles.set_hidden(session=session, content_id=owner.id, hidden=True)
    with pytest.raises(NotFound):
        _view(vault_env, reader_actor, reader, owner.id)
    assert _view(vault_env, owner_actor, owner, owner.id).hidden is True
    with unit_of_work(vault_env.factory) as session:
        session.execute(
            update(CommunityMember)
            .where(CommunityMember.id == owner.id)
            .values(suspended_until=NOW + timedelta(days=1))
        )
    from medvault.community import members

    with unit_of_work(vault_env.factory) as session:
        suspended = members.by_id(session=session, member_id=owner.id)
    with pytest.raises(Forbidden):
        _set(vault_env, suspended, {"bio": "new"}, {})


def _report_profile(env: Any, reporter: Any, handle: str) -> str:
    from medvault.community import moderation

    with unit_of_work(env.factory) as session:
        return moderation.report(
            session=session,
            crypto=env.crypto,
            reporter=reporter,
            kind="profile",
            content_id=handle,
            reason="other",
            now=NOW,
        )


def test_a_profile_is_reportable_only_by_a_member_who_may_view_it(vault_env: Any) -> None:
    # Review finding M3: a hidden profile could be pulled into the queue as it is now, and the
    # answer told a missing handle from an existing one.
    _o, owner = new_member(vault_env)
    _m, moderator = new_member(vault_env, "moderator")
    _r, reader = new_member(vault_env)
    _set(vault_env, owner, {"bio": "Report-me"}, {"bio": "members"})
    assert _report_profile(vault_env, reader, owner.id)
    with unit_of_work(vault_env.factory) as session:
        profiles.set_hidden(session=session, content_id=owner.id, hidden=True)
    for handle in (owner.id, "0123456789abcdef0123"):
        with pytest.raises(NotFound):
            _report_profile(vault_env, moderator, handle)


def test_a_block_hides_both_profiles_from_each_other(vault_env: Any) -> None:
    # Review finding L3: blocks did not reach profiles.
    from medvault.community import messages

    a_actor, a = new_member(vault_env)
    b_actor, b = new_member(vault_env)
    c_actor, c = new_member(vault_env)
    for who in (a, b):
        _set(
            vault_env, who, {"display_name": "Someone", "bio": "hello"}, {"display_name": "everyone", "bio": "members"}
        )
    with unit_of_work(vault_env.factory) as session:
        messages.block(session=session, crypto=vault_env.crypto, member=b, peer_id=a.id, now=NOW)
    for actor, me, other in ((a_actor, a, b), (b_actor, b, a)):
        with pytest.raises(NotFound):
            _view(vault_env, actor, me, other.id)
        with unit_of_work(vault_env.factory) as session:
            names = profiles.display_names(
                session=session, crypto=vault_env.crypto, actor=actor, me=me, handles={other.id}
            )
            assert names == {}
            with pytest.raises(NotFound):
                profiles.avatar(session=session, crypto=vault_env.crypto, actor=actor, me=me, handle=other.id)
        with pytest.raises(NotFound):
            _report_profile(vault_env, me, other.id)
        assert _view(vault_env, actor, me, me.id).values["bio"] == "hello"  # their own, of course
    assert _view(vault_env, c_actor, c, a.id).bio == "hello"
    assert _view(vault_env, None, None, b.id).display_name == "Someone"  # visitors have no blocks


def test_non_ascii_digits_and_corrupt_images_and_blobs_are_clear_not_500(vault_env: Any) -> None:
    # Review finding L1: "¹⁹⁹⁰" passed isdigit() and int() raised; a corrupt EXIF block made
    # exif_transpose raise SyntaxError; a swapped profile blob failed every view of it.
    owner_actor, owner = new_member(vault_env)
    reader_actor, reader = new_member(vault_env)
    for birth in ("\u00b9\u2079\u2079\u2070", "\u0661\u0669\u0669\u0660", "\uff11\uff19\uff19\uff10"):
        with pytest.raises(CommunityError) as refused:
            _set(vault_env, owner, {"birth": birth}, {})
        assert refused.value.location == "birth"
    assert _set(vault_env, owner, {"birth": "1990"}, {}).values["birth"] == "1990"
    corrupt = io.BytesIO()
    not_tiff = b"\x99M\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(corrupt, format="WEBP", exif=not_tiff)
    with unit_of_work(vault_env.factory) as session, pytest.raises(CommunityError) as refused:
        profiles.set_avatar(session=session, crypto=vault_env.crypto, member=owner, data=corrupt.getvalue(), now=NOW)
    assert refused.value.location == "avatar"
    _set(vault_env, reader, {"bio": "Reader-bio"}, {"bio": "members"})
    _set(vault_env, owner, {"bio": "Owner-bio"}, {"bio": "members"})
    with unit_of_work(vault_env.factory) as session:
        swapped = session.get(CommunityProfile, reader.id).sealed
        session.execute(update(CommunityProfile).where(CommunityProfile.member_id == owner.id).values(sealed=swapped))
    shown = _view(vault_env, reader_actor, reader, owner.id)
    assert shown.bio is None
    assert _view(vault_env, owner_actor, owner, owner.id).values == {}
    assert _set(vault_env, owner, {"bio": "Again"}, {"bio": "members"}).values == {"bio": "Again"}


def test_big_canvases_are_refused_unread_and_jpegs_decode_at_a_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    # Review finding L2: a 1 KiB lossless 4096 x 4096 WebP cost ~290 ms and 130 MB.
    from PIL import JpegImagePlugin

    from medvault.community import images

    assert images.MAX_SIDE == 2048
    big = io.BytesIO()
    Image.new("RGBA", (2049, 16), (1, 2, 3, 4)).save(big, format="WEBP", lossless=True)
    with pytest.raises(CommunityError, match="too large"):
        images.clean_image(big.getvalue())
    drafts: list[tuple[int, int]] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Any, mode: Any, size: Any) -> Any:
        drafts.append(size)
        return real(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    photo = io.BytesIO()
    Image.new("RGB", (2048, 1536), (90, 120, 200)).save(photo, format="JPEG", quality=90)
    out = Image.open(io.BytesIO(images.clean_image(photo.getvalue())))
    assert out.size == (256, 192)
    assert drafts == [(images.SIZE, images.SIZE)]
