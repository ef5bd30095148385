"""Who sees what: the one visibility decision of the community, used by every face.

A profile field or a post has a *visibility*; a request has a *viewer*. `may_see` is the only place
that compares them. Research exports and feeds/sitemaps/link previews are viewers of their own, so a
change of rule is made once, here, and the privacy matrix test (tests/community) pins it down.
"""

from __future__ import annotations

from typing import Literal, get_args

from medvault.community.errors import CommunityError

Visibility = Literal["only-me", "members", "everyone"]
VISIBILITIES: tuple[Visibility, ...] = get_args(Visibility)

# visitor: signed out (and feeds, sitemaps, link previews, search engines: they are visitors too)
# member: a signed-in community member who is not the author
# author: the owner of the profile or post
# moderator: a signed-in moderator (sees what members see, plus reported content as reported)
# operator: the admin role, the operator API included: never more than a visitor sees of content
# research: the research export: never community content (members opt in to research elsewhere)
Viewer = Literal["visitor", "member", "author", "moderator", "operator", "research"]
VIEWERS: tuple[Viewer, ...] = get_args(Viewer)

PROFILE_DEFAULT: Visibility = "only-me"  # issue 5: new fields default to only me
POST_DEFAULT: Visibility = "members"  # issue 5: posts default to members only


def may_see(*, visibility: Visibility, viewer: Viewer) -> bool:
    """Whether `viewer` may see an item of `visibility`. Unknown values see nothing."""
    if viewer == "author":
        return visibility in VISIBILITIES
    if viewer == "research":
        return False
    if visibility == "everyone":
        return viewer in ("visitor", "member", "moderator", "operator")
    if visibility == "members":
        return viewer in ("member", "moderator")
    return False


def parse_visibility(value: str, *, location: str) -> Visibility:
    """A visibility from a form or JSON value, or a clear error naming the field."""
    if value not in VISIBILITIES:
        raise CommunityError(f"visibility must be one of: {', '.join(VISIBILITIES)}", location=location)
    return value
