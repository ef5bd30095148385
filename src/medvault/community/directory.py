"""The directory and "people near me" (issue 5 item 5): opt-in, off by default.

A member opts in with a US ZIP code (and, if they like, a name for the directory). The postcode
is mapped once to a fine cell (community/geo.py) and sealed; members are grouped into effective
cells of at least k members spanning a static floor of ZIP areas; "people near me" lists other
members with the *band* between the two effective cells, never a distance from a point.

Why the answers cannot be sharpened:
* every answer about a member is `geo.band(viewer's cell, member's cell)`, a function of the two
  effective cells only (`rank`), so two members of one cell get identical answers to everything;
* listings are ordered by band and then by the random public handle, never by a finer distance;
* answers are deterministic, so repeating a query gains nothing, and listing views and placements
  are rate-limited per account;
* a new or moved placement is listed, and counts towards k, only after `settle` (28 days by
  default; until then the member sees nobody and is shown to nobody): sybil
  accounts parked next to a target cannot split a cell within the time 1,000 listing views take
  under the listing limit (40 a day), and even then never below the static floor.

Suspended members are not listed; members who blocked the viewer will not be either, through
`excluded_for` (a hook the blocking feature fills in).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from medvault.community import auditing, geo, limits, messages
from medvault.community.errors import CommunityError, Forbidden
from medvault.community.members import Member
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import CommunityDirEntry, CommunityDirRegion, CommunityMember

__all__ = [
    "DEFAULT_POLICY",
    "DirectoryPolicy",
    "Listed",
    "Mine",
    "NearPage",
    "delete_member",
    "excluded_for",
    "export_member",
    "mine",
    "near",
    "opt_in",
    "opt_out",
    "rank",
]

# The directory's shared data key: it seals only the fine cells, which the partition needs for
# everyone at once (unwrapping each member's own key for that would not scale).
_DIRECTORY_OWNER = b"community-dir\x00\x00\x00"
NAME_MAX = 40


@dataclass(frozen=True)
class DirectoryPolicy:
    cells: geo.CellPolicy = field(default_factory=geo.CellPolicy)
    settle: timedelta = timedelta(days=28)
    listing: limits.Limit = field(default_factory=lambda: limits.Limit(bucket="dir-list", count=40, seconds=86_400))
    # Per client address (IPv6 per /64, web/pages.throttle_address) as well as per account, so
    # that many accounts behind one address cannot multiply the listing budget. Wider than one
    # account's: a household or an office shares an address.
    listing_address: limits.Limit = field(
        default_factory=lambda: limits.Limit(bucket="dir-list-addr", count=200, seconds=86_400)
    )
    placing: limits.Limit = field(default_factory=lambda: limits.Limit(bucket="dir-place", count=3, seconds=86_400))
    page_size: int = 20


DEFAULT_POLICY = DirectoryPolicy()


@dataclass(frozen=True)
class Listed:
    handle: str
    name: str | None
    band: int  # index into geo.BANDS

    @property
    def band_label(self) -> str:
        return geo.BANDS[self.band]


@dataclass(frozen=True)
class NearPage:
    """One page of "people near me". `listed` False: the viewer's own area does not have enough
    members yet (nobody is shown to them, and they are shown to nobody)."""

    listed: bool
    items: tuple[Listed, ...]
    page: int
    has_more: bool


@dataclass(frozen=True)
class Mine:
    """The member's own entry, as only they see it."""

    country: str
    postcode: str
    name: str | None
    listed: bool
    placed: datetime
    counts_from: datetime
    # The whole region (root cell) spans fewer ZIP areas than the floor: never listed there.
    sparse: bool = False


_MEMBER_SYSTEM = "urn:medvault:community-member"


def _aad(member_id: str, column: str) -> bytes:
    return f"community_dir_entry|{member_id}|{column}".encode()


def _clean_name(name: str | None) -> str | None:
    if name is None or not name.strip():
        return None
    value = " ".join(name.split())
    if len(value) > NAME_MAX or any(not ch.isprintable() for ch in value):
        raise CommunityError(f"the directory name must be at most {NAME_MAX} printable characters", location="name")
    return value


def excluded_for(*, session: Session, crypto: CryptoContext, viewer: Member) -> frozenset[str]:
    """Handles never listed to `viewer`: members they blocked and members who blocked them (a
    block hides both ways, community/messages.py)."""
    return messages.blocked_pairs(session=session, crypto=crypto, member_id=viewer.id)


def rank(*, viewer_cell: str, others: Iterable[tuple[str, str]]) -> list[tuple[str, int]]:
    """The answer to "people near me" for a viewer in `viewer_cell`: (handle, band) of each
    (handle, effective cell), ordered by band then handle. A function of the cells only."""
    return sorted(((h, geo.band(viewer_cell, cell)) for h, cell in others), key=lambda hb: (hb[1], hb[0]))


def _lock_region(session: Session, region: str) -> None:
    """Take the region's row lock (made on first use) for the rest of the transaction, so that
    concurrent placements in one region recompute one after the other, each seeing the other."""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    session.execute(
        module.insert(CommunityDirRegion)
        .values(region=region, version=1, due=None)
        .on_conflict_do_update(index_elements=["region"], set_={"version": CommunityDirRegion.version + 1})
    )


def _lock_regions(session: Session, regions: Iterable[str]) -> list[str]:
    """Lock regions in sorted order. Every writer takes its region locks in this order *before*
    it writes any entry row (recomputation rewrites other members' rows under the region lock),
    so two writers never hold what the other waits for (PostgreSQL deadlocks otherwise)."""
    ordered = sorted(set(regions))
    for region in ordered:
        _lock_region(session, region)
    return ordered


def _entry_locked(session: Session, member_id: str, locked: list[str]) -> CommunityDirEntry | None:
    """The member's entry, read again under the `locked` regions (taken first, then re-read: a
    concurrent move may have changed the region in between; then that one is locked too)."""
    while True:
        row = session.get(CommunityDirEntry, member_id, populate_existing=True)
        if row is None or row.region in locked:
            return row
        # Only the same member moving concurrently can get here twice; out of order then at worst.
        locked = sorted({*locked, *_lock_regions(session, [row.region])})


def _recompute(*, session: Session, crypto: CryptoContext, region: str, policy: DirectoryPolicy, now: datetime) -> None:
    """Re-partition one region from the settled placements in it and store each entry's cell.
    The caller holds the region's lock already (taken again here, which is a no-op for order)."""
    _lock_region(session, region)
    _dk, key = crypto.data_key(session, purpose="identity", owner=_DIRECTORY_OWNER)
    rows = session.execute(
        select(
            CommunityDirEntry.member_id,
            CommunityDirEntry.fine_sealed,
            CommunityDirEntry.counts_from,
            CommunityDirEntry.cell,
        ).where(CommunityDirEntry.region == region)
    ).all()
    fines = {
        r.member_id: crypto.sealer.open(key, r.fine_sealed, _aad(r.member_id, "fine_sealed")).decode() for r in rows
    }
    settled = Counter(fines[r.member_id] for r in rows if r.counts_from <= now)
    part = geo.partition(settled, policy.cells)
    for r in rows:
        # Only placements the partition counted are listed: a waiting one mapped into a cell
        # would be an extra member the cell's k never saw (alone, in a pool its settled members
        # all left). It gets its cell when it starts to count (`due`, `_refresh_due`).
        cell = part.effective(fines[r.member_id]) if r.counts_from <= now else None
        if cell != r.cell:
            session.execute(
                update(CommunityDirEntry).where(CommunityDirEntry.member_id == r.member_id).values(cell=cell)
            )
    waiting = [r.counts_from for r in rows if r.counts_from > now]
    session.execute(
        update(CommunityDirRegion).where(CommunityDirRegion.region == region).values(due=min(waiting, default=None))
    )


def _refresh_due(*, session: Session, crypto: CryptoContext, policy: DirectoryPolicy, now: datetime) -> None:
    """Regions where a waiting placement has started to count since their last recomputation."""
    due = session.execute(
        select(CommunityDirRegion.region).where(CommunityDirRegion.due.is_not(None), CommunityDirRegion.due <= now)
    ).scalars()
    for region in _lock_regions(session, due):  # all of them first, in the one order
        _recompute(session=session, crypto=crypto, region=region, policy=policy, now=now)


def _subject(crypto: CryptoContext, member: Member) -> bytes:
    return limits.subject_token(crypto, kind="account", value=member.account())


def opt_in(
    *,
    session: Session,
    crypto: CryptoContext,
    member: Member,
    country: str,
    postcode: str,
    name: str | None,
    now: datetime,
    policy: DirectoryPolicy = DEFAULT_POLICY,
) -> Mine:
    """Opt in, or change one's postcode or directory name. A new or moved placement counts
    towards k only after `policy.settle`; changing the name (or re-entering a postcode in the same
    fine cell) keeps the placement as it was."""
    if member.suspended(now):
        raise Forbidden("suspended members cannot change their directory entry")
    place = geo.locate(country=country, postcode=postcode)
    clean = _clean_name(name)
    limits.take(session=session, limit=policy.placing, subject=_subject(crypto, member), now=now)
    _dk, shared = crypto.data_key(session, purpose="identity", owner=_DIRECTORY_OWNER)
    _mk, own = crypto.data_key(session, purpose="identity", owner=member.key_owner)
    new_region = geo.root_of(place.fine)
    # Regions first (sorted), then the entry, re-read under them; see _lock_regions.
    current = session.get(CommunityDirEntry, member.id)
    locked = _lock_regions(session, [new_region, *([current.region] if current is not None else [])])
    row = _entry_locked(session, member.id, locked)
    old_region = row.region if row is not None else None
    same_place = (
        row is not None
        and crypto.sealer.open(shared, row.fine_sealed, _aad(member.id, "fine_sealed")).decode() == place.fine
    )
    values = {
        "fine_sealed": crypto.sealer.seal(shared, place.fine.encode(), _aad(member.id, "fine_sealed")),
        "locality_sealed": crypto.sealer.seal(
            own, f"{place.country}:{place.postcode}".encode(), _aad(member.id, "locality_sealed")
        ),
        "name_sealed": crypto.sealer.seal(own, clean.encode(), _aad(member.id, "name_sealed")) if clean else None,
    }
    if row is None:
        row = CommunityDirEntry(
            member_id=member.id,
            region=new_region,
            cell=None,
            placed=now,
            counts_from=now + policy.settle,
            **values,
        )
        session.add(row)
    else:
        for column, value in values.items():
            setattr(row, column, value)
        row.region = new_region
        if not same_place:
            row.placed, row.counts_from = now, now + policy.settle
    session.flush()
    for region in sorted({new_region} | ({old_region} if old_region else set())):
        _recompute(session=session, crypto=crypto, region=region, policy=policy, now=now)
    found = mine(session=session, crypto=crypto, member=member, policy=policy)
    assert found is not None
    auditing.record(
        session=session,
        crypto=crypto,
        account_id=member.account(),
        code="community-directory-opt-in",
        now=now,
        entity=(_MEMBER_SYSTEM, member.id),
    )
    return found


def _remove(*, session: Session, crypto: CryptoContext, member: Member, policy: DirectoryPolicy, now: datetime) -> bool:
    current = session.get(CommunityDirEntry, member.id)
    if current is None:
        return False
    locked = _lock_regions(session, [current.region])  # the region first, then the entry
    row = _entry_locked(session, member.id, locked)
    if row is None:
        return False
    region = row.region
    session.delete(row)
    session.flush()
    _recompute(session=session, crypto=crypto, region=region, policy=policy, now=now)
    return True


def opt_out(
    *, session: Session, crypto: CryptoContext, member: Member, now: datetime, policy: DirectoryPolicy = DEFAULT_POLICY
) -> bool:
    """Leave the directory: the entry (sealed postcode, name, cells) is deleted, not hidden.
    True when there was one."""
    removed = _remove(session=session, crypto=crypto, member=member, policy=policy, now=now)
    if removed:
        auditing.record(
            session=session,
            crypto=crypto,
            account_id=member.account(),
            code="community-directory-opt-out",
            now=now,
            deletes=True,
            entity=(_MEMBER_SYSTEM, member.id),
        )
    return removed


def mine(
    *, session: Session, crypto: CryptoContext, member: Member, policy: DirectoryPolicy = DEFAULT_POLICY
) -> Mine | None:
    """The member's own entry (postcode and name opened for them alone), or None."""
    row = session.get(CommunityDirEntry, member.id, populate_existing=True)
    if row is None:
        return None
    _mk, own = crypto.data_key(session, purpose="identity", owner=member.key_owner)
    country, _, postcode = (
        crypto.sealer.open(own, row.locality_sealed, _aad(member.id, "locality_sealed")).decode().partition(":")
    )
    name = (
        crypto.sealer.open(own, row.name_sealed, _aad(member.id, "name_sealed")).decode()
        if row.name_sealed is not None
        else None
    )
    return Mine(
        country=country,
        postcode=postcode,
        name=name,
        listed=row.cell is not None,
        placed=row.placed,
        counts_from=row.counts_from,
        sparse=geo.postcode_count(row.region) < policy.cells.min_postcodes,
    )


def near(
    *,
    session: Session,
    crypto: CryptoContext,
    member: Member,
    page: int,
    address: str | None,
    now: datetime,
    policy: DirectoryPolicy = DEFAULT_POLICY,
) -> NearPage:
    """One page of the members near the viewer, by band. Counts one listing view against the
    viewer's account and against the client `address` (as the face keys it; None where there is
    none), RateLimited past either limit. Only opted-in, listed viewers see anyone."""
    if member.suspended(now):
        raise Forbidden("suspended members cannot use the directory")
    if page < 1 or page > 10_000:
        raise CommunityError("no such page", location="page")
    if address:
        subject = limits.subject_token(crypto, kind="address", value=address)
        limits.take(session=session, limit=policy.listing_address, subject=subject, now=now)
    limits.take(session=session, limit=policy.listing, subject=_subject(crypto, member), now=now)
    _refresh_due(session=session, crypto=crypto, policy=policy, now=now)
    own = session.get(CommunityDirEntry, member.id, populate_existing=True)
    if own is None:
        raise CommunityError("opt in to the directory first", location="directory")
    if own.cell is None:
        return NearPage(listed=False, items=(), page=page, has_more=False)
    hidden = excluded_for(session=session, crypto=crypto, viewer=member)
    rows = session.execute(
        select(CommunityDirEntry.member_id, CommunityDirEntry.cell)
        .join(CommunityMember, CommunityMember.id == CommunityDirEntry.member_id)
        .where(
            CommunityDirEntry.cell.is_not(None),
            CommunityDirEntry.member_id != member.id,
            (CommunityMember.suspended_until.is_(None)) | (CommunityMember.suspended_until <= now),
        )
    ).all()
    ranked = rank(viewer_cell=own.cell, others=((r.member_id, r.cell) for r in rows if r.member_id not in hidden))
    start = (page - 1) * policy.page_size
    chosen = ranked[start : start + policy.page_size]
    names = _names(session=session, crypto=crypto, handles=[h for h, _b in chosen])
    items = tuple(Listed(handle=h, name=names.get(h), band=b) for h, b in chosen)
    return NearPage(listed=True, items=items, page=page, has_more=start + policy.page_size < len(ranked))


def _names(*, session: Session, crypto: CryptoContext, handles: list[str]) -> dict[str, str]:
    if not handles:
        return {}
    rows = session.execute(
        select(CommunityDirEntry.member_id, CommunityDirEntry.name_sealed, CommunityMember.key_owner)
        .join(CommunityMember, CommunityMember.id == CommunityDirEntry.member_id)
        .where(CommunityDirEntry.member_id.in_(handles), CommunityDirEntry.name_sealed.is_not(None))
    ).all()
    out: dict[str, str] = {}
    for r in rows:
        _mk, key = crypto.data_key(session, purpose="identity", owner=r.key_owner)
        out[r.member_id] = crypto.sealer.open(key, r.name_sealed, _aad(r.member_id, "name_sealed")).decode()
    return out


def export_member(*, session: Session, crypto: CryptoContext, member: Member) -> dict[str, Any]:
    """The member's directory data for "your data" (the caller writes the export's audit entry)."""
    found = mine(session=session, crypto=crypto, member=member)
    if found is None:
        return {"opted_in": False}
    # No effective cell: it is the partition's, not the member's data, and publishing it would
    # hand out the map of cells (bands already say all a member needs to know).
    return {
        "opted_in": True,
        "country": found.country,
        "postcode": found.postcode,
        "display_name": found.name,
        "listed": found.listed,
        "placed": found.placed.isoformat(),
        "counts_from": found.counts_from.isoformat(),
    }


def delete_member(
    *,
    session: Session,
    crypto: CryptoContext,
    member: Member,
    now: datetime | None = None,
    policy: DirectoryPolicy = DEFAULT_POLICY,
) -> bool:
    """Remove the member's entry for account deletion (the caller audits it and destroys the
    member's key); the region is re-partitioned without them. True when there was an entry."""
    return _remove(session=session, crypto=crypto, member=member, policy=policy, now=now or datetime.now(UTC))
