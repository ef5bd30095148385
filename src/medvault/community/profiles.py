"""Community profiles (issue 5 item 1): per-field visibility, one output shape per audience.

Every field has its own visibility (only me / members / everyone); a field never set, and any new
field added later, is only-me (`audience.PROFILE_DEFAULT`). What a caller gets is one of three
shapes, built only from the fields `audience.may_see` allows for that caller:

* `PublicProfile` for visitors (feeds, link previews, search engines) and the operator;
* `MemberProfile` for members and moderators;
* `OwnProfile` for the member themselves: every value, every visibility, the record-link choice and
  the moderation state. Only this shape carries visibilities: the others do not even say which
  fields exist but are hidden.

The record link (`record_linked`) is a revocable choice, off by default. It publishes nothing: with
it on, the member's own edit page may offer their birth year and sex *from their record* as
suggestions to copy into the form; they still choose each field's visibility (only me by default).
With it off the community never reads the record. Profiles of research exports: none, ever.

At rest: one sealed blob per member (values, visibilities, the link choice) and a sealed picture,
both under the member's own data key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medvault.auth.accounts import Actor
from medvault.community import limits, members, messages, moderation, review, sealing
from medvault.community.audience import PROFILE_DEFAULT, Visibility, may_see, parse_visibility
from medvault.community.errors import CommunityError, Forbidden, NotFound
from medvault.community.images import clean_image
from medvault.crypto.errors import CryptoError
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import CommunityProfile

__all__ = [
    "FIELDS",
    "SEX_CHOICES",
    "MemberProfile",
    "OwnProfile",
    "ProfileField",
    "PublicProfile",
    "author_of",
    "avatar",
    "delete_profile",
    "export",
    "own",
    "remove_avatar",
    "set_avatar",
    "set_hidden",
    "snapshot_for_report",
    "suggestions_from_record",
    "update",
    "view",
]

ProfileField = Literal[
    "display_name", "birth", "sex", "country", "postcode", "diagnosis", "subtype", "treatment", "bio", "avatar"
]
FIELDS: tuple[ProfileField, ...] = get_args(ProfileField)
TEXT_FIELDS: tuple[ProfileField, ...] = tuple(f for f in FIELDS if f != "avatar")
# Free text that the disclosure check reads before it is shown to anyone but the author. The postcode,
# birth year and sex are identifying by nature: the form says so next to their visibility instead.
CHECKED: tuple[ProfileField, ...] = ("display_name", "country", "diagnosis", "subtype", "treatment", "bio")
_MAX = {"display_name": 60, "birth": 9, "sex": 32, "country": 60, "postcode": 12}
_LONG = 4000
SEX_CHOICES: tuple[tuple[str, str], ...] = (
    ("female", "Female"),
    ("male", "Male"),
    ("intersex", "Intersex"),
    ("other", "Another answer"),
)
AGE_BANDS = ("under 18", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+")
_POSTCODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,11}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TABLE = "community_profile"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Shared:
    """The fields another person may see; None: not set, or not for this caller (indistinguishable)."""

    handle: str
    display_name: str | None = None
    birth: str | None = None
    sex: str | None = None
    country: str | None = None
    postcode: str | None = None
    diagnosis: str | None = None
    subtype: str | None = None
    treatment: str | None = None
    bio: str | None = None
    has_avatar: bool = False


@dataclass(frozen=True)
class PublicProfile(_Shared):
    """What a visitor, a feed, a search engine or the operator may see."""


@dataclass(frozen=True)
class MemberProfile(_Shared):
    """What a signed-in member or a moderator may see."""


@dataclass(frozen=True)
class OwnProfile:
    """The member's own view: everything, with each field's visibility."""

    handle: str
    values: dict[str, str]
    visibility: dict[str, Visibility]
    has_avatar: bool
    record_linked: bool
    hidden: bool
    viewer: Literal["author"] = field(default="author")


Profile = PublicProfile | MemberProfile | OwnProfile


@dataclass
class _Stored:
    values: dict[str, str]
    visibility: dict[str, Visibility]
    record_linked: bool
    has_avatar: bool
    hidden: bool

    def shown(self, viewer: str) -> dict[str, Any]:
        """Only the fields this viewer may see (the one decision: audience.may_see)."""
        out: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            vis = self.visibility.get(name, PROFILE_DEFAULT)
            if name in self.values and may_see(visibility=vis, viewer=viewer):  # type: ignore[arg-type]
                out[name] = self.values[name]
        vis = self.visibility.get("avatar", PROFILE_DEFAULT)
        out["has_avatar"] = self.has_avatar and may_see(visibility=vis, viewer=viewer)  # type: ignore[arg-type]
        return out


def _blank() -> _Stored:
    return _Stored(values={}, visibility={}, record_linked=False, has_avatar=False, hidden=False)


def _load(session: Session, crypto: CryptoContext, member: members.Member) -> tuple[CommunityProfile | None, _Stored]:
    row = session.get(CommunityProfile, member.id)
    if row is None:
        return None, _blank()
    try:
        doc = sealing.open_json(
            session=session,
            crypto=crypto,
            owner=member.key_owner,
            blob=row.sealed,
            bound=sealing.aad(_TABLE, member.id, "sealed"),
        )
    except CryptoError:
        # A tampered or swapped blob: show nothing of it (every field is then only-me by default)
        # rather than a 500; the owner's next save writes a fresh one.
        _log.warning("community profile %s does not open; shown empty", member.id)
        return row, _Stored({}, {}, False, row.picture is not None, bool(row.hidden))
    visibility: dict[str, Visibility] = {}
    for name, vis in dict(doc.get("vis", {})).items():
        if name in FIELDS and vis in ("only-me", "members", "everyone"):
            visibility[name] = vis
    values = {k: str(v) for k, v in dict(doc.get("v", {})).items() if k in TEXT_FIELDS}
    return row, _Stored(values, visibility, bool(doc.get("linked")), row.picture is not None, bool(row.hidden))


def _save(
    session: Session,
    crypto: CryptoContext,
    member: members.Member,
    row: CommunityProfile | None,
    stored: _Stored,
    now: datetime,
) -> CommunityProfile:
    doc = {"v": stored.values, "vis": stored.visibility, "linked": stored.record_linked}
    blob = sealing.seal_json(
        session=session,
        crypto=crypto,
        owner=member.key_owner,
        value=doc,
        bound=sealing.aad(_TABLE, member.id, "sealed"),
    )
    if row is None:
        row = CommunityProfile(member_id=member.id, sealed=blob, picture=None, hidden=False, updated=now)
        session.add(row)
    else:
        row.sealed = blob
        row.updated = now
    session.flush()
    return row


def _clean(name: str, raw: str) -> str:
    """One field's value, checked; "" clears it. Errors name the field and never quote the value."""
    value = raw.strip()
    if _CONTROL.search(value):
        raise CommunityError("contains control characters", location=name)
    if not value:
        return ""
    limit = _MAX.get(name, _LONG)
    if len(value) > limit:
        raise CommunityError(f"at most {limit} characters", location=name)
    if name == "birth":
        if value in AGE_BANDS:
            return value
        # ASCII digits only: "¹⁹⁹⁰" is isdigit() but not int()-able.
        if not (value.isascii() and value.isdigit() and len(value) == 4 and 1900 <= int(value) <= 2100):
            raise CommunityError("a birth year (four digits) or an age band", location=name)
    elif name == "sex":
        if value not in dict(SEX_CHOICES):
            raise CommunityError("choose one of the offered answers", location=name)
    elif name == "postcode" and not _POSTCODE.fullmatch(value):
        raise CommunityError("letters, digits, spaces and hyphens only", location=name)
    elif name not in {"treatment", "bio"} and "\n" in value:
        raise CommunityError("one line only", location=name)
    return value


def _writer(member: members.Member, now: datetime) -> None:
    if member.suspended(now):
        raise Forbidden("your community account is suspended: you cannot change your profile for now")


def own(*, session: Session, crypto: CryptoContext, member: members.Member) -> OwnProfile:
    _row, stored = _load(session, crypto, member)
    return OwnProfile(
        handle=member.id,
        values=dict(stored.values),
        visibility={name: stored.visibility.get(name, PROFILE_DEFAULT) for name in FIELDS},
        has_avatar=stored.has_avatar,
        record_linked=stored.record_linked,
        hidden=stored.hidden,
    )


def view(
    *, session: Session, crypto: CryptoContext, actor: Actor | None, me: members.Member | None, handle: str
) -> Profile:
    """The profile with public handle `handle`, in the shape for this caller. NotFound for an unknown
    handle, a hidden profile (except to its owner), a member `me` blocked or who blocked `me`
    (either way round: they do not see each other), and for a visitor or the operator when nothing
    of it is public (a visitor learns nothing, not even that the member exists)."""
    member = members.by_id(session=session, member_id=handle)
    viewer = members.viewer_of(actor=actor, member=me, author_id=member.id)
    if viewer == "author":
        return own(session=session, crypto=crypto, member=member)
    if me is not None and member.id in messages.blocked_pairs(session=session, crypto=crypto, member_id=me.id):
        raise NotFound("no such member")
    _row, stored = _load(session, crypto, member)
    if stored.hidden or viewer == "research":
        raise NotFound("no such member")
    shown = stored.shown(viewer)
    if viewer in ("member", "moderator"):
        return MemberProfile(handle=member.id, **shown)
    if len(shown) == 1 and not shown["has_avatar"]:
        raise NotFound("no such member")
    return PublicProfile(handle=member.id, **shown)


def display_names(
    *, session: Session, crypto: CryptoContext, actor: Actor | None, me: members.Member | None, handles: set[str]
) -> dict[str, str]:
    """Display names of authors as this caller may see them (the handle stands in otherwise)."""
    out: dict[str, str] = {}
    for handle in handles:
        try:
            shown = view(session=session, crypto=crypto, actor=actor, me=me, handle=handle)
        except NotFound:
            continue
        name = shown.values.get("display_name") if isinstance(shown, OwnProfile) else shown.display_name
        if name:
            out[handle] = name
    return out


def update(
    *,
    session: Session,
    crypto: CryptoContext,
    member: members.Member,
    values: Mapping[str, str],
    visibility: Mapping[str, str],
    record_linked: bool,
    confirm: bool,
    now: datetime,
) -> OwnProfile:
    """Replace the profile's values and visibilities (fields left out keep theirs). Text newly shown to
    anyone but the author goes through the disclosure check first (review.NeedsConfirmation)."""
    _writer(member, now)
    row, stored = _load(session, crypto, member)
    new_values = dict(stored.values)
    new_vis = dict(stored.visibility)
    for name, raw in values.items():
        if name not in TEXT_FIELDS:
            raise CommunityError("no such profile field", location="field")
        cleaned = _clean(name, raw)
        if cleaned:
            new_values[name] = cleaned
        else:
            new_values.pop(name, None)
    for name, raw in visibility.items():
        if name not in FIELDS:
            raise CommunityError("no such profile field", location="field")
        new_vis[name] = parse_visibility(raw, location=f"{name}.visibility")
    to_check: dict[str, str] = {
        name: new_values[name]
        for name in CHECKED
        if name in new_values
        and new_vis.get(name, PROFILE_DEFAULT) != "only-me"
        and (new_values[name] != stored.values.get(name) or new_vis.get(name) != stored.visibility.get(name))
    }
    review.review(to_check, confirm=confirm)
    _save(
        session, crypto, member, row, _Stored(new_values, new_vis, record_linked, stored.has_avatar, stored.hidden), now
    )
    return own(session=session, crypto=crypto, member=member)


UPLOADS = limits.Limit("avatar-upload", 20, 3600)  # decoding is the costly part: per account, per hour


def count_upload(*, session: Session, crypto: CryptoContext, member: members.Member, now: datetime) -> None:
    """Count one picture upload of `member` (RateLimited past `UPLOADS`). The faces call it in a
    transaction of its own before `set_avatar`, so that an upload that fails to decode counts too."""
    limits.take(
        session=session,
        limit=UPLOADS,
        subject=limits.subject_token(crypto, kind="account", value=member.account()),
        now=now,
    )


def set_avatar(*, session: Session, crypto: CryptoContext, member: members.Member, data: bytes, now: datetime) -> None:
    """Store a cleaned copy of the image (see images.clean_image), sealed like the profile."""
    _writer(member, now)
    png = clean_image(data)
    row, stored = _load(session, crypto, member)
    row = _save(session, crypto, member, row, stored, now)
    row.picture = sealing.seal_raw(
        session=session,
        crypto=crypto,
        owner=member.key_owner,
        data=png,
        bound=sealing.aad(_TABLE, member.id, "picture"),
    )
    session.flush()


def remove_avatar(*, session: Session, crypto: CryptoContext, member: members.Member, now: datetime) -> None:
    row = session.get(CommunityProfile, member.id)
    if row is not None:
        row.picture = None
        row.updated = now
        session.flush()


def avatar(
    *, session: Session, crypto: CryptoContext, actor: Actor | None, me: members.Member | None, handle: str
) -> bytes:
    """The avatar PNG, if this caller may see it; NotFound otherwise (same as no avatar)."""
    shown = view(session=session, crypto=crypto, actor=actor, me=me, handle=handle)
    if not shown.has_avatar:
        raise NotFound("no such picture")
    row = session.get(CommunityProfile, handle)
    member = members.by_id(session=session, member_id=handle)
    if row is None or row.picture is None:
        raise NotFound("no such picture")
    try:
        return sealing.open_raw(
            session=session,
            crypto=crypto,
            owner=member.key_owner,
            blob=row.picture,
            bound=sealing.aad(_TABLE, handle, "picture"),
        )
    except CryptoError:
        _log.warning("community picture %s does not open", handle)
        raise NotFound("no such picture") from None


def suggestions_from_record(patient: dict[str, Any]) -> dict[str, str]:
    """With the record link on: what the member's own Patient resource suggests for their profile
    (birth year, sex), shown to them alone as values to copy; nothing is saved or shown to others."""
    out: dict[str, str] = {}
    born = patient.get("birthDate")
    if isinstance(born, str) and len(born) >= 4 and born[:4].isdigit():
        out["birth"] = born[:4]
    gender = patient.get("gender")
    if gender in ("female", "male"):
        out["sex"] = str(gender)
    elif gender == "other":
        out["sex"] = "other"
    return out


# -- moderation hooks (community/moderation.py calls these; content_id is the member's handle) ----


def snapshot_for_report(*, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
    """The profile as others can see it now (fields shown beyond the owner), and its author."""
    member = members.by_id(session=session, member_id=content_id)
    _row, stored = _load(session, crypto, member)
    shown = {k: v for k, v in stored.values.items() if stored.visibility.get(k, PROFILE_DEFAULT) != "only-me"}
    text = "\n".join(f"{k}: {v}" for k, v in shown.items())
    return {"kind": "profile", "text": text, "author": member.id}


def set_hidden(*, session: Session, content_id: str, hidden: bool) -> None:
    row = session.get(CommunityProfile, content_id)
    if row is None:
        raise NotFound("no such profile")
    row.hidden = hidden
    session.flush()


def author_of(*, session: Session, crypto: CryptoContext | None = None, content_id: str) -> str:
    del crypto  # a profile's author is its handle
    if session.get(CommunityProfile, content_id) is None:
        raise NotFound("no such profile")
    return content_id


class _ProfileKind:
    def snapshot_for_report(self, *, session: Session, crypto: CryptoContext, content_id: str) -> dict[str, Any]:
        return snapshot_for_report(session=session, crypto=crypto, content_id=content_id)

    def set_hidden(self, *, session: Session, content_id: str, hidden: bool) -> None:
        set_hidden(session=session, content_id=content_id, hidden=hidden)

    def author_of(self, *, session: Session, crypto: CryptoContext, content_id: str) -> str:
        return author_of(session=session, crypto=crypto, content_id=content_id)


def _reportable_by(*, session: Session, crypto: CryptoContext, content_id: str, reporter_id: str) -> bool:
    """A member may report a profile they may view now (`view`, the same decision as reading): a
    hidden or blocked one is NotFound to them, like a missing handle."""
    try:
        reporter = members.by_id(session=session, member_id=reporter_id)
        # Moderators see what members see (audience.may_see): a reporter reads as a member.
        # Only the visibility decision reads this actor; the account id plays no part in it.
        as_member = Actor(account_id=reporter.account_token.hex()[:32], role="patient")
        view(session=session, crypto=crypto, actor=as_member, me=reporter, handle=content_id)
    except NotFound:
        return False
    return True


moderation.register_kind("profile", _ProfileKind(), reportable_by=_reportable_by)


# -- your data ----------------------------------------------------------------------------------


def export(*, session: Session, crypto: CryptoContext, member: members.Member) -> dict[str, Any]:
    mine = own(session=session, crypto=crypto, member=member)
    return {
        "handle": mine.handle,
        "values": mine.values,
        "visibility": mine.visibility,
        "has_avatar": mine.has_avatar,
        "record_linked": mine.record_linked,
        "hidden_by_moderator": mine.hidden,
    }


def delete_profile(*, session: Session, crypto: CryptoContext, member: members.Member) -> None:
    session.execute(delete(CommunityProfile).where(CommunityProfile.member_id == member.id))


def profile_exists(*, session: Session, member_id: str) -> bool:
    return (
        session.execute(select(CommunityProfile.member_id).where(CommunityProfile.member_id == member_id)).first()
        is not None
    )
