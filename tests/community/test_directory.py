"""The directory service ("people near me") on SQLite and PostgreSQL: opt-in off by default, input
errors, bands and paging, the listing equal to the attack model's answers, k and the settle
period, rate limits, suspended members, opt-out and "your data", sealed columns bound to their
row, indistinguishability of two members of one cell (hypothesis), and a stolen-copy scan."""

from __future__ import annotations

import itertools
import struct
import subprocess
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from medvault.auth.accounts import Actor
from medvault.community import directory, geo, limits, members, messages
from medvault.community.errors import CommunityError, Forbidden, RateLimited
from medvault.crypto.errors import DecryptionFailed
from medvault.db import unit_of_work
from medvault.store.models import CommunityDirEntry, CommunityMember
from tests.community import attacker as A

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SMALL = geo.CellPolicy(min_members=3, min_postcodes=2)
OPEN = directory.DirectoryPolicy(
    cells=SMALL,
    settle=timedelta(0),
    listing=limits.Limit(bucket="dir-list", count=10_000, seconds=60),
    placing=limits.Limit(bucket="dir-place", count=10_000, seconds=60),
    page_size=5,
)
NY = A.state_zips("NY")
CITY = sorted(A.urban_targets(NY, (40.75, -73.98), 12))
FAR = sorted(A.urban_targets(NY, (42.89, -78.87), 15))  # Buffalo, ~470 km away


def _pair_in_one_fine_cell() -> tuple[str, str]:
    by: dict[str, list[str]] = {}
    for z in CITY:
        by.setdefault(geo.locate(country="US", postcode=z).fine, []).append(z)
    return next((v[0], v[1]) for _f, v in sorted(by.items()) if len(v) >= 2)


A_ZIP, B_ZIP = _pair_in_one_fine_cell()


def _join(env: Any, i: int) -> members.Member:
    with unit_of_work(env.factory) as session:
        return members.join(
            session=session,
            crypto=env.crypto,
            actor=Actor(account_id=f"{i:032x}", role="patient", patient_id=f"p{i}"),
            now=NOW,
        )


def _place(env: Any, member: members.Member, zip_code: str, *, name: str | None = None, **kw: Any) -> directory.Mine:
    policy = kw.pop("policy", OPEN)
    with unit_of_work(env.factory) as session:
        return directory.opt_in(
            session=session,
            crypto=env.crypto,
            member=member,
            country="US",
            postcode=zip_code,
            name=name,
            now=kw.pop("now", NOW),
            policy=policy,
        )


def _all_pages(env: Any, member: members.Member, *, policy: directory.DirectoryPolicy = OPEN) -> list[Any]:
    out: list[Any] = []
    page = 1
    while True:
        with unit_of_work(env.factory) as session:
            got = directory.near(
                address=None, session=session, crypto=env.crypto, member=member, page=page, now=NOW, policy=policy
            )
        out.extend(got.items)
        if not got.has_more:
            return out
        page += 1


def _town(env: Any, policy: directory.DirectoryPolicy) -> tuple[Any, list[members.Member], list[str]]:
    zips = [A_ZIP, B_ZIP, *[z for z in CITY if z not in (A_ZIP, B_ZIP)][::9][:8], *FAR[::3][:4]]
    people = [_join(env, i) for i in range(len(zips))]
    for i, (m, z) in enumerate(zip(people, zips, strict=True)):
        _place(env, m, z, name=f"Canary Name {i:02d}" if i % 2 == 0 else None, policy=policy)
    return env, people, zips


@pytest.fixture
def town(vault_env: Any) -> tuple[Any, list[members.Member], list[str]]:
    """14 members: 10 in and around Manhattan (two of them in one fine cell, different ZIPs), 4
    in Buffalo; all settled (OPEN policy: no wait)."""
    return _town(vault_env, OPEN)


def test_opt_in_is_off_by_default_and_bad_input_is_refused_without_echo(vault_env: Any) -> None:
    m = _join(vault_env, 1)
    with unit_of_work(vault_env.factory) as session:
        assert directory.mine(session=session, crypto=vault_env.crypto, member=m) is None
        assert directory.export_member(session=session, crypto=vault_env.crypto, member=m) == {"opted_in": False}
        with pytest.raises(CommunityError, match="opt in"):
            directory.near(
                address=None, session=session, crypto=vault_env.crypto, member=m, page=1, now=NOW, policy=OPEN
            )
    cases = [
        ({"country": "GB", "postcode": "SW1A 1AA"}, geo.Unsupported, "country"),
        ({"country": "US", "postcode": "1234x"}, CommunityError, "postcode"),
        ({"country": "US", "postcode": "00000"}, CommunityError, "postcode"),
        ({"country": "US", "postcode": A_ZIP, "name": "x" * 41}, CommunityError, "name"),
        ({"country": "US", "postcode": A_ZIP, "name": "bad\x00name"}, CommunityError, "name"),
    ]
    for fields, error, location in cases:
        with pytest.raises(error) as refused, unit_of_work(vault_env.factory) as session:
            directory.opt_in(
                session=session,
                crypto=vault_env.crypto,
                member=m,
                country=fields["country"],
                postcode=fields["postcode"],
                name=fields.get("name"),
                now=NOW,
                policy=OPEN,
            )
        assert refused.value.location == location
        assert fields["postcode"] not in str(refused.value)
    with unit_of_work(vault_env.factory) as session:  # nothing was stored by the refusals
        assert session.execute(select(CommunityDirEntry)).first() is None
    mine = _place(vault_env, m, f"{A_ZIP}-1234", name="  Sam   from the support group ")
    assert (mine.country, mine.postcode, mine.name) == ("US", A_ZIP, "Sam from the support group")


def test_near_lists_others_by_band_then_handle_with_paging(town: Any) -> None:
    env, people, _zips = town
    listed = _all_pages(env, people[0])
    handles = [x.handle for x in listed]
    assert people[0].id not in handles
    assert sorted(handles) == sorted(p.id for p in people[1:])
    assert [(x.band, x.handle) for x in listed] == sorted((x.band, x.handle) for x in listed)
    by_handle = {x.handle: x for x in listed}
    assert by_handle[people[1].id].band == 0  # same fine cell: same area
    assert by_handle[people[1].id].band_label == "same area"
    for far in people[-4:]:
        assert by_handle[far.id].band_label == "more than 200 km"
    assert by_handle[people[2].id].name == "Canary Name 02"
    assert by_handle[people[3].id].name is None
    with unit_of_work(env.factory) as session:
        first = directory.near(
            address=None, session=session, crypto=env.crypto, member=people[0], page=1, now=NOW, policy=OPEN
        )
        assert len(first.items) == 5
        assert first.has_more
        with pytest.raises(CommunityError):
            directory.near(
                address=None, session=session, crypto=env.crypto, member=people[0], page=0, now=NOW, policy=OPEN
            )


def test_the_listing_is_exactly_the_attack_models_answer(town: Any) -> None:
    """The triangulation test attacks geo.partition + geo.band directly; this pins the service to
    the same answers, so that attack is an attack on the real directory."""
    env, people, zips = town
    world = A.World(policy=SMALL, residents=zips, settle_days=0)
    for viewer, vzip in zip(people, zips, strict=True):
        vfine = geo.locate(country="US", postcode=vzip).fine
        got = {x.handle: x.band for x in _all_pages(env, viewer)}
        want = {
            p.id: world.answer(vfine, geo.locate(country="US", postcode=z).fine)
            for p, z in zip(people, zips, strict=True)
            if p.id != viewer.id
        }
        assert got == want


def test_a_lone_member_is_neither_shown_nor_shown_anything(town: Any) -> None:
    env, people, _zips = town
    lone = _join(env, 99)
    mine = _place(env, lone, "99501")  # Anchorage: nobody else in that root cell
    assert not mine.listed
    assert not mine.sparse
    with unit_of_work(env.factory) as session:
        page = directory.near(
            address=None, session=session, crypto=env.crypto, member=lone, page=1, now=NOW, policy=OPEN
        )
    assert (page.listed, page.items) == (False, ())
    assert lone.id not in {x.handle for x in _all_pages(env, people[0])}


def test_members_of_a_root_below_the_area_floor_are_never_listed(vault_env: Any) -> None:
    """Ocean City, MD: its root cell holds only 21842/21843 (one standard ZIP area). Ten settled
    members there used to be listed in the root, i.e. placed to one town; now nobody is, and
    they are told why."""
    cells = geo.CellPolicy()
    policy = directory.DirectoryPolicy(cells=cells, settle=timedelta(0), listing=OPEN.listing, placing=OPEN.placing)
    assert geo.postcode_count(geo.root_of(geo.locate(country="US", postcode="21842").fine)) < cells.min_postcodes
    people = [_join(vault_env, i) for i in range(cells.min_members + 1)]
    for m in people:
        mine = _place(vault_env, m, "21842", policy=policy)
    assert not mine.listed
    assert mine.sparse
    with unit_of_work(vault_env.factory) as session:
        page = directory.near(
            address=None, session=session, crypto=vault_env.crypto, member=people[0], page=1, now=NOW, policy=policy
        )
    assert (page.listed, page.items) == (False, ())
    assert _listed_cells(vault_env) == {}


def test_moved_placements_count_towards_k_only_after_the_settle_period(vault_env: Any) -> None:
    waiting = directory.DirectoryPolicy(
        cells=SMALL,
        settle=timedelta(days=28),
        listing=OPEN.listing,
        placing=OPEN.placing,
    )
    people = [_join(vault_env, i) for i in range(4)]
    for m, z in zip(people, CITY[:4], strict=True):
        _place(vault_env, m, z, policy=waiting)
    with unit_of_work(vault_env.factory) as session:
        early = directory.near(
            address=None, session=session, crypto=vault_env.crypto, member=people[0], page=1, now=NOW, policy=waiting
        )
    assert not early.listed  # nobody counts yet: nobody is shown
    later = NOW + timedelta(days=28, seconds=1)
    with unit_of_work(vault_env.factory) as session:
        settled = directory.near(
            address=None, session=session, crypto=vault_env.crypto, member=people[0], page=1, now=later, policy=waiting
        )
    assert settled.listed
    assert {x.handle for x in settled.items} == {p.id for p in people[1:]}
    # Renaming keeps the placement; moving starts the wait again.
    renamed = _place(vault_env, people[1], CITY[1], name="New name", policy=waiting, now=later)
    assert renamed.counts_from == NOW + timedelta(days=28)
    moved = _place(vault_env, people[1], FAR[0], policy=waiting, now=later)
    assert moved.counts_from == later + timedelta(days=28)


def _listed_cells(env: Any) -> dict[str, str]:
    with unit_of_work(env.factory) as session:
        rows = session.execute(select(CommunityDirEntry.member_id, CommunityDirEntry.cell)).all()
    return {r.member_id: r.cell for r in rows if r.cell is not None}


def _assert_listed_cells_hide_k_in_the_floor(env: Any, policy: geo.CellPolicy) -> None:
    """Every cell a listed entry maps to holds >= k listed members and, once the listed cells
    nested inside it are taken away, still spans >= z ZIP areas."""
    cells = _listed_cells(env)
    counts = Counter(cells.values())
    for cell, n in counts.items():
        assert n >= policy.min_members, (cell, n)
        res = h3.get_resolution(cell)
        inner = [c for c in counts if h3.get_resolution(c) > res and h3.cell_to_parent(c, res) == cell]
        outermost = [
            c
            for c in inner
            if not any(
                h3.get_resolution(o) < h3.get_resolution(c) and h3.cell_to_parent(c, h3.get_resolution(o)) == o
                for o in inner
            )
        ]
        areas = geo.postcode_count(cell) - sum(geo.postcode_count(c) for c in outermost)
        assert areas >= policy.min_postcodes, (cell, areas)


def test_a_newcomer_is_not_listed_alone_in_a_pool_its_settled_members_left(vault_env: Any) -> None:
    """The reviewer's Racine case, shipped cells (k=10, 8 ZIP areas): settled members fill the two
    children of a res-4 cell that can split off, leaving one ZIP (53402) in its pool; a newcomer
    there used to be listed alone in that one-ZIP cell, to a spy placed next to them. Now neither
    is listed before their placement counts, and afterwards only in a cell of >= k and >= z."""
    cells = geo.CellPolicy()
    waiting = directory.DirectoryPolicy(settle=timedelta(days=28), listing=OPEN.listing, placing=OPEN.placing)
    parent = "84275d3ffffffff"
    kids: dict[str, list[str]] = {}
    for z in sorted(geo._us_zips()):
        fine = geo.locate(country="US", postcode=z).fine
        if h3.cell_to_parent(fine, 4) == parent and geo.postcode_count(fine) >= cells.min_postcodes:
            kids.setdefault(fine, []).append(z)
    old = NOW - timedelta(days=30)
    i = 0
    for zs in kids.values():
        for j in range(cells.min_members):
            _place(vault_env, _join(vault_env, i), zs[j % len(zs)], policy=waiting, now=old)
            i += 1
    target, spy = _join(vault_env, 900), _join(vault_env, 901)
    assert not _place(vault_env, target, "53402", name="Target", policy=waiting).listed
    assert not _place(vault_env, spy, "53402", policy=waiting).listed
    with unit_of_work(vault_env.factory) as session:
        page = directory.near(
            address=None, session=session, crypto=vault_env.crypto, member=spy, page=1, now=NOW, policy=waiting
        )
    assert (page.listed, page.items) == (False, ())
    assert target.id not in _listed_cells(vault_env)
    _assert_listed_cells_hide_k_in_the_floor(vault_env, cells)
    later = NOW + timedelta(days=28, seconds=1)
    with unit_of_work(vault_env.factory) as session:
        page = directory.near(
            address=None, session=session, crypto=vault_env.crypto, member=spy, page=1, now=later, policy=waiting
        )
    listed = _listed_cells(vault_env)
    assert page.listed
    assert listed[target.id] == listed[spy.id]
    _assert_listed_cells_hide_k_in_the_floor(vault_env, cells)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(placements=st.lists(st.tuples(st.sampled_from(CITY[::3]), st.booleans()), min_size=1, max_size=14))
def test_every_listed_cell_holds_k_listed_members_and_the_floor(
    vault_env: Any, placements: list[tuple[str, bool]]
) -> None:
    """Any mix of settled and waiting placements: every cell a listed entry maps to holds >= k
    listed members and spans >= z ZIP areas (property, on both backends)."""
    waiting = directory.DirectoryPolicy(
        cells=SMALL, settle=timedelta(days=28), listing=OPEN.listing, placing=OPEN.placing
    )
    with unit_of_work(vault_env.factory) as session:  # the fixture outlives one example
        session.execute(delete(CommunityDirEntry))
    for zip_code, settled in placements:
        m = _join(vault_env, next(_fresh_ids))
        _place(vault_env, m, zip_code, policy=waiting, now=NOW - timedelta(days=30) if settled else NOW)
    with unit_of_work(vault_env.factory) as session:
        directory._recompute(
            session=session,
            crypto=vault_env.crypto,
            region=geo.root_of(geo.locate(country="US", postcode=CITY[0]).fine),
            policy=waiting,
            now=NOW,
        )
    _assert_listed_cells_hide_k_in_the_floor(vault_env, SMALL)
    listed = _listed_cells(vault_env)
    assert len(listed) <= sum(settled for _z, settled in placements)


_fresh_ids = itertools.count(10_000)  # members of earlier examples stay in the fixture's vault


def test_concurrent_moves_in_one_region_neither_fail_nor_leave_stale_cells(vault_env: Any) -> None:
    """The reviewer's race: members moving at once between fine cells of one region (each move
    re-partitions the region and rewrites other members' cells), with viewers listing between.
    PostgreSQL used to abort about half of them with DeadlockDetected (a 500 page); now every one
    succeeds and the stored cells equal a fresh partition of the final placements."""
    by: dict[str, list[str]] = {}
    for z in CITY:
        by.setdefault(geo.locate(country="US", postcode=z).fine, []).append(z)
    spots = [v[0] for _f, v in sorted(by.items())][:4]
    people = [_join(vault_env, i) for i in range(12)]
    for i, m in enumerate(people):
        _place(vault_env, m, spots[i % 4])
    threads, rounds = 6, 8
    barrier = threading.Barrier(threads)
    errors: list[str] = []

    def work(t: int) -> None:
        for r in range(rounds):
            barrier.wait(timeout=60)  # every round starts together: the most contention
            try:
                if r % 3 == 2:  # a listing (which may recompute due regions) among the moves
                    with unit_of_work(vault_env.factory) as session:
                        directory.near(
                            address=None,
                            session=session,
                            crypto=vault_env.crypto,
                            member=people[t],
                            page=1,
                            now=NOW,
                            policy=OPEN,
                        )
                else:
                    _place(vault_env, people[t], spots[(t + r) % 4], name=f"n{r}")
            except Exception as exc:  # noqa: BLE001  # counted and reported, not swallowed
                errors.append(type(exc).__name__)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with unit_of_work(vault_env.factory) as session:
        rows = session.execute(
            select(CommunityDirEntry.member_id, CommunityDirEntry.cell, CommunityDirEntry.fine_sealed)
        ).all()
        _dk, key = vault_env.crypto.data_key(session, purpose="identity", owner=directory._DIRECTORY_OWNER)
        fine = {
            r.member_id: vault_env.crypto.sealer.open(
                key, r.fine_sealed, directory._aad(r.member_id, "fine_sealed")
            ).decode()
            for r in rows
        }
    part = geo.partition(Counter(fine.values()), SMALL)
    assert {r.member_id: r.cell for r in rows} == {m: part.effective(f) for m, f in fine.items()}
    assert len(set(fine.values())) > 1  # the members really are spread over several cells


def test_listing_views_and_placements_are_rate_limited_per_account(town: Any) -> None:
    env, people, zips = town
    tight = directory.DirectoryPolicy(
        cells=SMALL,
        settle=timedelta(0),
        listing=limits.Limit(bucket="dir-list", count=2, seconds=3600),
        placing=limits.Limit(bucket="dir-place", count=1, seconds=86_400),
    )
    for _ in range(2):
        with unit_of_work(env.factory) as session:
            directory.near(
                address=None, session=session, crypto=env.crypto, member=people[0], page=1, now=NOW, policy=tight
            )
    with pytest.raises(RateLimited), unit_of_work(env.factory) as session:
        directory.near(
            address=None, session=session, crypto=env.crypto, member=people[0], page=2, now=NOW, policy=tight
        )
    with unit_of_work(env.factory) as session:  # another account has its own count
        directory.near(
            address=None, session=session, crypto=env.crypto, member=people[1], page=1, now=NOW, policy=tight
        )
    _place(env, people[2], zips[3], policy=tight)
    with pytest.raises(RateLimited):
        _place(env, people[2], zips[4], policy=tight)


def test_listing_views_are_rate_limited_per_address_across_accounts(town: Any) -> None:
    """Issue item 8: per account AND per address. Accounts behind one address share its budget
    (each still has its own); another address has its own count."""
    env, people, _zips = town
    tight = directory.DirectoryPolicy(
        cells=SMALL,
        settle=timedelta(0),
        listing=limits.Limit(bucket="dir-list", count=2, seconds=3600),
        listing_address=limits.Limit(bucket="dir-list-addr", count=3, seconds=3600),
        placing=OPEN.placing,
    )

    def look(member: members.Member, address: str | None) -> None:
        with unit_of_work(env.factory) as session:
            directory.near(
                session=session, crypto=env.crypto, member=member, page=1, address=address, now=NOW, policy=tight
            )

    shared = "2001:db8:1:2::/64"
    look(people[0], shared)
    look(people[0], shared)
    look(people[1], shared)
    with pytest.raises(RateLimited):  # people[1] has 1 view left on its account, none on the address
        look(people[1], shared)
    look(people[1], "192.0.2.7")  # another address: its own count
    with pytest.raises(RateLimited):
        look(people[1], "192.0.2.7")  # now the account's own limit


def test_suspended_members_are_not_listed_and_cannot_look(town: Any) -> None:
    env, people, _zips = town
    with unit_of_work(env.factory) as session:
        session.execute(
            update(CommunityMember)
            .where(CommunityMember.id == people[3].id)
            .values(suspended_until=NOW + timedelta(days=7))
        )
    assert people[3].id not in {x.handle for x in _all_pages(env, people[0])}
    with unit_of_work(env.factory) as session:
        suspended = members.by_id(session=session, member_id=people[3].id)
        with pytest.raises(Forbidden):
            directory.near(
                address=None, session=session, crypto=env.crypto, member=suspended, page=1, now=NOW, policy=OPEN
            )
        assert directory.excluded_for(session=session, crypto=env.crypto, viewer=people[0]) == frozenset()


def test_a_block_hides_both_members_from_each_other(town: Any) -> None:
    env, people, _zips = town
    assert people[2].id in {x.handle for x in _all_pages(env, people[1])}
    with unit_of_work(env.factory) as session:
        messages.block(session=session, crypto=env.crypto, member=people[1], peer_id=people[2].id, now=NOW)
    assert people[2].id not in {x.handle for x in _all_pages(env, people[1])}
    assert people[1].id not in {x.handle for x in _all_pages(env, people[2])}
    assert people[3].id in {x.handle for x in _all_pages(env, people[1])}


def test_opt_out_and_account_deletion_remove_the_entry_and_export_shows_it_all(town: Any) -> None:
    env, people, zips = town
    with unit_of_work(env.factory) as session:
        exported = directory.export_member(session=session, crypto=env.crypto, member=people[0])
    assert exported["opted_in"] is True
    assert (exported["country"], exported["postcode"], exported["display_name"]) == ("US", zips[0], "Canary Name 00")
    assert exported["listed"] is True
    assert "area_cell" not in exported
    assert set(exported) == {"opted_in", "country", "postcode", "display_name", "listed", "placed", "counts_from"}
    with unit_of_work(env.factory) as session:
        assert directory.opt_out(session=session, crypto=env.crypto, member=people[0], now=NOW, policy=OPEN)
        assert not directory.opt_out(session=session, crypto=env.crypto, member=people[0], now=NOW, policy=OPEN)
        assert directory.delete_member(session=session, crypto=env.crypto, member=people[2], now=NOW, policy=OPEN)
    with unit_of_work(env.factory) as session:
        left = set(session.execute(select(CommunityDirEntry.member_id)).scalars())
        assert directory.mine(session=session, crypto=env.crypto, member=people[0]) is None
    assert left == {p.id for p in people} - {people[0].id, people[2].id}
    assert {people[0].id, people[2].id}.isdisjoint({x.handle for x in _all_pages(env, people[1])})


def test_sealed_columns_are_bound_to_their_row(town: Any) -> None:
    env, people, _zips = town
    with unit_of_work(env.factory) as session:
        a, b = (session.get(CommunityDirEntry, p.id) for p in people[:2])
        assert a is not None
        assert b is not None
        a.locality_sealed, b.locality_sealed = b.locality_sealed, a.locality_sealed
    with pytest.raises(DecryptionFailed), unit_of_work(env.factory) as session:
        directory.mine(session=session, crypto=env.crypto, member=people[0])


@pytest.fixture
def wide_town(vault_env: Any) -> tuple[Any, list[members.Member], list[str]]:
    """The same 14 members under the default cells (k=10, 8 ZIP areas), placed at once: their
    effective cells are wider than their fine cells, so members of one cell live apart."""
    return _town(vault_env, directory.DirectoryPolicy(settle=timedelta(0), placing=OPEN.placing))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.sampled_from(CITY[::4] + FAR[::4]), min_size=1, max_size=4))
def test_two_members_of_one_cell_are_indistinguishable_to_any_attacker(wide_town: Any, moves: list[str]) -> None:
    """An attacker placed anywhere, and re-placed (its own account moves the partition), gets the
    same band for every two members who share an effective cell at that moment, though they live
    in different fine cells and ZIPs; and those two members' own listings are the same up to each
    other's handle."""
    env, people, zips = wide_town
    policy = directory.DirectoryPolicy(settle=timedelta(0), placing=OPEN.placing, listing=OPEN.listing)
    fine = {p.id: geo.locate(country="US", postcode=z).fine for p, z in zip(people, zips, strict=True)}
    spy = _join(env, 500)
    apart = 0
    for move in moves:
        _place(env, spy, move, policy=policy)
        with unit_of_work(env.factory) as session:
            cells = {
                r.member_id: r.cell
                for r in session.execute(select(CommunityDirEntry.member_id, CommunityDirEntry.cell))
            }
        seen = {x.handle: x.band for x in _all_pages(env, spy, policy=policy)}
        for a in people:
            for b in people:
                if a.id < b.id and cells[a.id] is not None and cells[a.id] == cells[b.id]:
                    assert seen.get(a.id) == seen.get(b.id)  # both absent if the spy is not placed
                    apart += fine[a.id] != fine[b.id]
    assert apart, "no two members of one cell lived in different fine cells: the test would prove little"
    a, b = next(
        (a, b)
        for a in people
        for b in people
        if a.id != b.id and cells[a.id] == cells[b.id] and fine[a.id] != fine[b.id]
    )
    view_a = [(x.handle, x.band) for x in _all_pages(env, a, policy=policy)]
    view_b = [(x.handle, x.band) for x in _all_pages(env, b, policy=policy)]
    swap = {a.id: b.id, b.id: a.id}
    assert sorted((swap.get(h, h), band) for h, band in view_a) == sorted(view_b)


def _needles(zips: list[str], names: list[str]) -> dict[str, list[bytes]]:
    needles: dict[str, list[bytes]] = {"name": [], "zip": [], "coordinate": [], "fine cell": []}
    for n in names:
        needles["name"] += [n.encode(), n.encode("utf-16-le")]
    for z in zips:
        needles["zip"].append(z.encode())
        lat, lng = A.point_of(z)
        for value in (lat, lng):
            needles["coordinate"] += [f"{value:.4f}".encode(), struct.pack("<d", value), struct.pack(">d", value)]
    return needles


def test_stolen_copy_holds_no_postcode_coordinate_name_or_fine_cell(wide_town: Any, backend: str, request: Any) -> None:
    env, people, zips = wide_town
    names = [f"Canary Name {i:02d}" for i in range(0, len(zips), 2)]
    needles = _needles(zips, names)
    with unit_of_work(env.factory) as session:
        rows = session.execute(select(CommunityDirEntry.cell, CommunityDirEntry.member_id)).all()
    # A fine cell finer than the member's effective cell must not show either.
    for (cell, _mid), z in zip(
        sorted(rows, key=lambda r: [p.id for p in people].index(r.member_id)), zips, strict=True
    ):
        fine = geo.locate(country="US", postcode=z).fine
        if fine != cell:
            needles["fine cell"].append(fine.encode())
    assert needles["fine cell"], "the test needs members whose fine cell is finer than their area"
    if backend == "sqlite":
        env.engine.dispose()
        blobs = [
            p.read_bytes() for p in Path(env.settings.data_dir).rglob("*") if p.is_file() and "keys" not in p.parts
        ]
    else:
        schema = request.getfixturevalue("pg_schema")
        dump = subprocess.run(
            ["pg_dump", "--schema", schema.name, schema.libpq_url], capture_output=True, check=True, timeout=120
        )
        blobs = [dump.stdout]
    found = {kind: [n for n in ns if any(n in blob for blob in blobs)] for kind, ns in needles.items()}
    assert found == {kind: [] for kind in needles}
    # Control: the same scan finds every postcode and name where they are meant to be readable,
    # in the members' own exports.
    with unit_of_work(env.factory) as session:
        exports = repr([directory.export_member(session=session, crypto=env.crypto, member=p) for p in people])
    assert all(n in exports.encode() for n in needles["zip"])
    assert all(n.encode() in exports.encode() for n in names)
