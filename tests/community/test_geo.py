"""community/geo.py, pure: postcode placement, the partition's guarantees (every effective cell
with members holds at least k of them and spans at least the static floor of ZIP areas; the
result depends on the counts only), and bands between cells."""

from __future__ import annotations

from collections import Counter, defaultdict

import h3
import pytest
import zipcodes
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medvault.community import geo
from medvault.community.errors import CommunityError
from tests.community.attacker import state_zips

NY = state_zips("NY")
FINES = sorted({geo.locate(country="US", postcode=z).fine for z in NY})


def test_locate_normalises_and_refuses_what_it_cannot_place() -> None:
    place = geo.locate(country=" us ", postcode=" 10001-1234 ")
    assert (place.country, place.postcode) == ("US", "10001")
    assert h3.get_resolution(place.fine) == geo.FINE_RES
    assert geo.root_of(place.fine) == h3.cell_to_parent(place.fine, geo.ROOT_RES)
    with pytest.raises(geo.Unsupported):
        geo.locate(country="CA", postcode="K1A 0B1")
    arabic_indic, full_width = "\u0661\u0660\u0660\u0660\u0661", "\uff11\uff10\uff10\uff10\uff11"  # "10001"
    for bad in ("1000", "100011", "abcde", "00000", "", arabic_indic, full_width, "10001-\u0661\u0662\u0663\u0664"):
        with pytest.raises(CommunityError) as refused:
            geo.locate(country="US", postcode=bad)
        assert refused.value.location == "postcode"
    assert geo.postcode_count(h3.cell_to_parent(place.fine, 4)) >= geo.postcode_count(place.fine) >= 1


def test_bands_are_symmetric_coarse_and_zero_only_for_the_same_cell() -> None:
    a = geo.locate(country="US", postcode="10001").fine
    b = geo.locate(country="US", postcode="14201").fine  # Buffalo, ~470 km
    assert geo.band(a, a) == 0
    assert geo.band(a, b) == geo.band(b, a) == len(geo.BANDS) - 1
    assert geo.BANDS[geo.band(a, b)] == "more than 200 km"
    neighbour = h3.grid_ring(a, 1)[0]
    assert geo.band(a, neighbour) == 1  # adjacent fine cells: "within 25 km", never finer
    assert geo.BAND_EDGES_KM[0] > 2 * h3.average_hexagon_edge_length(geo.FINE_RES, unit="km")


def _region_areas(part: geo.Partition, cell: str) -> int:
    """ZIP areas left to an effective cell once its effective children are split off."""
    kids = [c for c in part.cells if h3.get_resolution(c) == h3.get_resolution(cell) + 1]
    return geo.postcode_count(cell) - sum(
        geo.postcode_count(c) for c in kids if h3.cell_to_parent(c, h3.get_resolution(cell)) == cell
    )


@settings(max_examples=40, deadline=None)
@given(
    picks=st.lists(st.sampled_from(FINES), min_size=1, max_size=400),
    k=st.integers(min_value=2, max_value=12),
    z=st.integers(min_value=1, max_value=10),
)
# Found by hypothesis: enough members, but a root of 3 ZIP areas under a floor of 4 (never listed).
@example(picks=["852b8127fffffff", "852b8127fffffff"], k=2, z=4)
def test_every_effective_cell_holds_k_members_and_the_static_floor(picks: list[str], k: int, z: int) -> None:
    policy = geo.CellPolicy(min_members=k, min_postcodes=z)
    counts = Counter(picks)
    part = geo.partition(counts, policy)
    groups: dict[str, int] = defaultdict(int)
    for fine, n in counts.items():
        cell = part.effective(fine)
        if cell is None:  # only where the whole root has fewer than k, or spans fewer than z areas
            root = geo.root_of(fine)
            in_root = sum(m for f, m in counts.items() if geo.root_of(f) == root)
            assert in_root < k or geo.postcode_count(root) < z
            continue
        assert h3.cell_to_parent(fine, h3.get_resolution(cell)) == cell
        groups[cell] += n
    assert all(n >= k for n in groups.values())
    # The static floor holds for every cell of the partition, roots and empty pools included:
    # whoever lands in a cell later is never placed in fewer than z ZIP areas.
    for cell in part.cells:
        assert _region_areas(part, cell) >= z, cell
    # Order and representation do not matter, only the counts.
    assert geo.partition(Counter(reversed(picks)), policy) == part
    assert geo.partition({**counts, FINES[0]: counts.get(FINES[0], 0)}, policy) == part


def _root_fines() -> dict[str, set[str]]:
    by_root: dict[str, set[str]] = defaultdict(set)
    for z in zipcodes.list_all():  # type: ignore[no-untyped-call]
        if z.get("country") == "US" and z.get("lat") and z.get("long"):
            fine = geo.locate(country="US", postcode=str(z["zip_code"])).fine
            by_root[geo.root_of(fine)].add(fine)
    return by_root


def test_the_area_floor_holds_in_every_us_root_even_fully_packed() -> None:
    """Every US root, with k members in each of its fine cells (the most it can be split): no cell
    of any partition spans fewer than z ZIP areas, and a root below the floor itself (Ocean City
    MD, Juneau, Big Sur, Guam...) lists nobody however many members it has."""
    policy = geo.CellPolicy()
    k, z = policy.min_members, policy.min_postcodes
    sparse = 0
    for root, fines in sorted(_root_fines().items()):
        part = geo.partition(dict.fromkeys(fines, k), policy)
        if geo.postcode_count(root) < z:
            sparse += 1
            assert part.cells == frozenset(), root
            assert all(part.effective(f) is None for f in fines)
        for cell in part.cells:
            assert _region_areas(part, cell) >= z, (root, cell)
    ocean_city = geo.root_of(geo.locate(country="US", postcode="21842").fine)
    assert geo.postcode_count(ocean_city) < z
    assert sparse > 10  # the check above did meet sparse roots


def test_a_pool_left_empty_by_split_children_still_spans_the_floor() -> None:
    """Racine, WI: the settled members of a res-4 cell all sit in its two children that can split
    off, leaving one ZIP (53402) in the parent's pool. The pool must not stay a one-ZIP cell that
    a newcomer there would be mapped to."""
    policy = geo.CellPolicy()
    parent = "84275d3ffffffff"
    in_root = _root_fines()[geo.root_of(geo.locate(country="US", postcode="53402").fine)]
    kids = {f for f in in_root if h3.cell_to_parent(f, 4) == parent and geo.postcode_count(f) >= policy.min_postcodes}
    assert len(kids) == 2
    part = geo.partition(dict.fromkeys(kids, policy.min_members), policy)
    newcomer = part.effective(geo.locate(country="US", postcode="53402").fine)
    assert newcomer is not None
    assert _region_areas(part, newcomer) >= policy.min_postcodes
