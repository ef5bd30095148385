"""Where a directory member is, as coarsely as the community allows (issue 5 item 5). Pure: no
database, no network; the only data is the US ZIP table shipped inside the `zipcodes` wheel.

The model, and why it resists triangulation:

* A postcode is mapped **once** to a *fine cell*: the H3 cell (resolution `FINE_RES` = 5, about
  250 km², some 10 km across) of its ZIP centroid. Nothing finer is ever computed or stored.
* The fine cells of all opted-in members are grouped into a **partition** of *effective cells*
  (`partition`): starting from huge root cells (resolution 2), a cell is split into its children
  only where a child holds at least `min_members` members **and** at least `min_postcodes` US
  ZIP areas; children that do not qualify stay pooled in their parent, and the pool itself must
  also hold `min_members` members and `min_postcodes` ZIP areas, or qualifying children are folded
  back (smallest first) until it does (the area floor holds for an empty pool too). A root is
  used only if it spans `min_postcodes` ZIP areas itself; members of a sparser root are never
  listed. So every effective cell holds at least k members (k-anonymity among the members it is
  built from: the directory lists only those, see directory.py), and spans at least
  `min_postcodes` ZIP areas. The second condition is static (it
  does not depend on who opted in): an attacker who adds its own accounts can make a cell reach k
  sooner, but can never split the map finer than that floor. In a dense city the floor is the fine
  resolution; in the countryside it is hundreds to thousands of km².
* Every answer about a member is a function of the two effective cells only (`band`): the
  great-circle distance between the cells' centres, rounded up into bands whose first edge (25 km)
  is larger than a fine cell. Two members of one effective cell are therefore indistinguishable
  to every query, and an attacker who learns everything learns the effective cell and no more.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import h3
import zipcodes

from medvault.community.errors import CommunityError

__all__ = [
    "BANDS",
    "BAND_EDGES_KM",
    "FINE_RES",
    "ROOT_RES",
    "CellPolicy",
    "Partition",
    "Place",
    "Unsupported",
    "band",
    "centre",
    "locate",
    "partition",
    "postcode_count",
    "root_of",
]

FINE_RES = 5  # ~252 km² average: the finest area any member is ever placed in
ROOT_RES = 2  # ~86,800 km²: the coarsest; a root with fewer than k members lists nobody

# Bands between effective-cell centres, rounded up. The first edge is above the diameter of a
# fine cell (~20 km), so a band never says more than "neighbouring areas".
BAND_EDGES_KM: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0)
BANDS: tuple[str, ...] = (
    "same area",
    "within 25 km",
    "25 to 50 km",
    "50 to 100 km",
    "100 to 200 km",
    "more than 200 km",
)

# [0-9], not \d: \d also matches other scripts' digits (Arabic-Indic "10001" would pass).
_US_ZIP = re.compile(r"([0-9]{5})(?:-[0-9]{4})?")


class Unsupported(CommunityError):
    """A country whose postcodes the directory cannot place yet."""

    code = "not-supported"


@dataclass(frozen=True)
class CellPolicy:
    """How far cells grow: at least `min_members` opted-in members and `min_postcodes` ZIP areas."""

    min_members: int = 10
    min_postcodes: int = 8

    def __post_init__(self) -> None:
        if self.min_members < 2 or self.min_postcodes < 1:
            raise ValueError("a cell needs at least 2 members and 1 postcode area")


@dataclass(frozen=True)
class Place:
    """A member's normalised postcode and the fine cell it maps to (no coordinates)."""

    country: str
    postcode: str
    fine: str


@lru_cache(maxsize=1)
def _us_zips() -> dict[str, tuple[str, bool]]:
    """ZIP -> (fine cell, whether it is a standard delivery area), from the wheel's own table.
    PO box and single-organisation ZIPs are placed too (at their post office) but do not count
    as areas for the static floor: they cover no ground of their own."""
    table: dict[str, tuple[str, bool]] = {}
    for z in zipcodes.list_all():  # type: ignore[no-untyped-call]  # the package's own table
        if z.get("country") != "US" or not z.get("lat") or not z.get("long"):
            continue  # military and overseas ZIPs: not placeable
        cell = h3.latlng_to_cell(float(z["lat"]), float(z["long"]), FINE_RES)
        table[str(z["zip_code"])] = (cell, z.get("zip_code_type") == "STANDARD")
    return table


@lru_cache(maxsize=1)
def _area_counts() -> dict[str, int]:
    """Standard ZIP areas per cell at every resolution from the root to the fine one."""
    counts: dict[str, int] = defaultdict(int)
    for cell, standard in _us_zips().values():
        if standard:
            for c in _chain(cell):
                counts[c] += 1
    return dict(counts)


def postcode_count(cell: str) -> int:
    """How many standard US ZIP areas have their centroid in `cell` (static data)."""
    return _area_counts().get(cell, 0)


def locate(*, country: str, postcode: str) -> Place:
    """Map a postcode to its fine cell. Only US ZIP codes are supported yet: any other country is
    refused with `Unsupported` (a clear message for the form), never guessed. Messages never echo
    what was entered."""
    if country.strip().upper() not in ("US", "USA"):
        raise Unsupported("only US ZIP codes are supported so far", location="country")
    match = _US_ZIP.fullmatch(postcode.strip())
    if match is None:
        raise CommunityError("enter a 5-digit US ZIP code", location="postcode")
    found = _us_zips().get(match.group(1))
    if found is None:
        raise CommunityError("that ZIP code is not one we can place", location="postcode")
    return Place(country="US", postcode=match.group(1), fine=found[0])


@lru_cache(maxsize=65536)
def _chain(fine: str) -> tuple[str, ...]:
    """The fine cell's ancestors from the root resolution down to itself."""
    res = h3.get_resolution(fine)
    if res != FINE_RES:
        raise ValueError("not a fine cell")
    return (*(h3.cell_to_parent(fine, r) for r in range(ROOT_RES, FINE_RES)), fine)


def root_of(fine: str) -> str:
    return _chain(fine)[0]


@dataclass(frozen=True)
class Partition:
    """The effective cells: a nested set of H3 cells; a place belongs to its finest ancestor in it."""

    cells: frozenset[str]

    def effective(self, fine: str) -> str | None:
        """The effective cell of a fine cell, or None where its root has fewer than k members or
        fewer ZIP areas than the floor. Only meaningful for the places the partition was built
        from: anyone else mapped here is not counted in the cell's k."""
        for cell in reversed(_chain(fine)):
            if cell in self.cells:
                return cell
        return None


def partition(fine_counts: Mapping[str, int], policy: CellPolicy) -> Partition:
    """The effective cells for the opted-in members, given as {fine cell: how many members}.
    Deterministic: it depends on the counts only, never on order or on who the members are."""
    members: dict[str, int] = defaultdict(int)
    children: dict[str, set[str]] = defaultdict(set)
    for fine, count in fine_counts.items():
        if count <= 0:
            continue
        chain = _chain(fine)
        for parent, child in pairwise(chain):
            children[parent].add(child)
        for cell in chain:
            members[cell] += count
    cells: set[str] = set()
    roots = sorted({c for c in members if h3.get_resolution(c) == ROOT_RES})
    for root in roots:
        # The static floor holds for roots too: a root with fewer than `min_postcodes` ZIP areas
        # (Ocean City MD, Juneau, Big Sur, Guam...) would place everyone in it at one town or two,
        # so nobody there is listed, however many members it has.
        if members[root] >= policy.min_members and postcode_count(root) >= policy.min_postcodes:
            _split(root, members, children, policy, cells)
    return Partition(frozenset(cells))


def _split(
    cell: str, members: Mapping[str, int], children: Mapping[str, set[str]], policy: CellPolicy, out: set[str]
) -> None:
    out.add(cell)
    if h3.get_resolution(cell) == FINE_RES:
        return
    k, z = policy.min_members, policy.min_postcodes
    qualifying = sorted(
        (c for c in children.get(cell, ()) if members[c] >= k and postcode_count(c) >= z),
        key=lambda c: (members[c], postcode_count(c), c),
    )
    pooled = members[cell] - sum(members[c] for c in qualifying)
    pooled_areas = postcode_count(cell) - sum(postcode_count(c) for c in qualifying)
    # The pool (members left in this cell) must itself be k-anonymous and wide: fold the smallest
    # qualifying children back into it until it is. The area floor applies even to an empty pool:
    # the cell stays in the partition, so whoever is placed in the leftover later (a newcomer
    # whose placement starts to count, a PO-box ZIP) must land in an area of at least z ZIPs.
    while qualifying and (0 < pooled < k or pooled_areas < z):
        back = qualifying.pop(0)
        pooled += members[back]
        pooled_areas += postcode_count(back)
    for child in qualifying:
        _split(child, members, children, policy, out)


@lru_cache(maxsize=65536)
def centre(cell: str) -> tuple[float, float]:
    """The H3 centre of a cell (a public, static point: not any member's location)."""
    lat, lng = h3.cell_to_latlng(cell)
    return (float(lat), float(lng))


@lru_cache(maxsize=262144)
def band(a: str, b: str) -> int:
    """The distance band (an index into BANDS) between two effective cells: 0 when they are the
    same cell, else the great-circle distance between their centres rounded up into a band."""
    if a == b:
        return 0
    km = h3.great_circle_distance(centre(a), centre(b), unit="km")
    for i, edge in enumerate(BAND_EDGES_KM, start=1):
        if km <= edge:
            return i
    return len(BAND_EDGES_KM) + 1
