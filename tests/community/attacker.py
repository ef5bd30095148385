"""A triangulation attacker against the directory (issue 5, item 5 acceptance), shared by
tests/community/test_triangulation.py (a smaller configuration) and bench/bench_triangulation.py.

The world: synthetic opted-in members at real ZIP centroids of one state (uniform over its
standard ZIPs, so denser where ZIPs are denser, as people are), placed by the directory's own
`geo.partition` and answered with its own `geo.band` (tests/community/test_directory.py checks
that the service's listing gives exactly these answers).

The attacker is made as strong as we could:
* 5 accounts, each re-placed at any ZIP before every query (the service's placement rate limit
  is switched off: worst case), each query reveals the band to every target;
* an **oracle**: at every query it knows the current partition, i.e. which effective cell any
  place maps to (a real attacker would have to infer it);
* its accounts see from wherever they are placed at once, as if their placement had settled (the
  service lists an account, and shows it anyone, only once its placement counts: a real attacker
  who moves sees nothing for 28 days); their placements count towards k only once settled, as in
  the service;
* it multilaterates over a fine grid of candidate points (grouped by the fine cell they fall in,
  since nothing finer can ever change an answer), keeping exactly the candidates consistent with
  every band seen;
* it chooses positions adaptively (greedy expected information over the targets' remaining
  candidates, jointly for the accounts of a round), and once a target's candidates all fall in
  one effective cell it turns its accounts into sybils inside that cell, to make sub-cells reach
  k and split;
* it estimates with two strategies and both are scored: the centre of the feasible region (grid
  points), and the ZIP prior (it knows members sit at ZIP centroids of the state: it picks the
  feasible ZIP centroid that minimises the expected error).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import h3
import zipcodes

from medvault.community import geo

Point = tuple[float, float]


@lru_cache(maxsize=1)
def _all_us() -> dict[str, dict[str, object]]:
    return {
        str(z["zip_code"]): z
        for z in zipcodes.list_all()
        if z.get("country") == "US" and z.get("lat") and z.get("long")
    }


def point_of(postcode: str) -> Point:
    z = _all_us()[postcode]
    return (float(str(z["lat"])), float(str(z["long"])))


def state_zips(state: str) -> list[str]:
    """The state's standard (delivery-area) ZIPs, sorted."""
    return sorted(p for p, z in _all_us().items() if z["state"] == state and z["zip_code_type"] == "STANDARD")


def km(a: Point, b: Point) -> float:
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def urban_targets(state_list: Sequence[str], centre: Point, radius_km: float) -> list[str]:
    return [p for p in state_list if km(point_of(p), centre) <= radius_km]


def rural_targets(state_list: Sequence[str], counties: Iterable[str]) -> list[str]:
    wanted = set(counties)
    return [p for p in state_list if _all_us()[p]["county"] in wanted]


class World:
    """Opted-in members (residents, long settled) plus the attacker's accounts, partitioned per
    root cell as the service does: a placement counts towards k only `settle_days` after it was
    made (a move starts the wait again); time advances with the queries."""

    def __init__(self, *, policy: geo.CellPolicy, residents: Sequence[str], settle_days: float = 0.0) -> None:
        self.policy = policy
        self.settle_days = settle_days
        self.now = 0.0  # days
        self.resident_fines = [geo.locate(country="US", postcode=p).fine for p in residents]
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        for fine in self.resident_fines:
            self._counts[geo.root_of(fine)][fine] += 1
        self._parts: dict[tuple[str, tuple[str, ...]], geo.Partition] = {}
        self.accounts: list[str | None] = []
        self._placed: list[float] = []
        self._now_parts: dict[str, geo.Partition] = {}  # valid until the next move or tick

    def _settled_accounts(self, root: str) -> tuple[str, ...]:
        return tuple(
            sorted(
                f
                for f, at in zip(self.accounts, self._placed, strict=True)
                if f is not None and geo.root_of(f) == root and self.now - at >= self.settle_days
            )
        )

    def _part(self, root: str) -> geo.Partition:
        now = self._now_parts.get(root)
        if now is not None:
            return now
        key = (root, self._settled_accounts(root))
        part = self._parts.get(key)
        if part is None:
            if len(self._parts) > 20_000:
                self._parts.clear()
            counts = Counter(self._counts.get(root, Counter()))
            counts.update(key[1])
            part = self._parts[key] = geo.partition(counts, self.policy)
        self._now_parts[root] = part
        return part

    def place(self, account: int, fine: str) -> None:
        """(Re-)place an attacker account; the same fine cell again is no move (the service keeps
        the placement's time then too)."""
        while len(self.accounts) <= account:
            self.accounts.append(None)
            self._placed.append(0.0)
        if self.accounts[account] != fine:
            self.accounts[account] = fine
            self._placed[account] = self.now
            self._now_parts.clear()

    def advance(self, days: float) -> None:
        self.now += days
        self._now_parts.clear()

    def effective(self, fine: str) -> str | None:
        return self._part(geo.root_of(fine)).effective(fine)

    def answer(self, viewer: str, target: str) -> int | None:
        """What the viewer's listing says about the target: a band, or None when not listed."""
        mine, theirs = self.effective(viewer), self.effective(target)
        if mine is None or theirs is None:
            return None
        return geo.band(mine, theirs)


@dataclass
class Universe:
    """Candidate points: a grid over the state's box (plus a margin), grouped by fine cell; and
    the ZIP prior (the state's ZIP centroids, by fine cell)."""

    grid: dict[str, tuple[float, float, int]]  # fine cell -> (sum lat, sum lng, points)
    prior: dict[str, list[Point]]  # fine cell -> ZIP centroids the members are drawn from
    positions: list[str]  # every US ZIP in the box: where the attacker may place accounts
    fine_of: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, population: Sequence[str], *, grid_km: float, margin_deg: float = 0.5) -> Universe:
        pts = [point_of(p) for p in population]
        lat0, lat1 = min(p[0] for p in pts) - margin_deg, max(p[0] for p in pts) + margin_deg
        lng0, lng1 = min(p[1] for p in pts) - margin_deg, max(p[1] for p in pts) + margin_deg
        grid: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        dlat = grid_km / 111.2
        lat = lat0
        while lat <= lat1:
            dlng = grid_km / (111.2 * math.cos(math.radians(lat)))
            lng = lng0
            while lng <= lng1:
                acc = grid[h3.latlng_to_cell(lat, lng, geo.FINE_RES)]
                acc[0] += lat
                acc[1] += lng
                acc[2] += 1
                lng += dlng
            lat += dlat
        prior: dict[str, list[Point]] = defaultdict(list)
        for p in population:
            prior[geo.locate(country="US", postcode=p).fine].append(point_of(p))
        fine_of: dict[str, str] = {}
        for code, z in _all_us().items():
            la, ln = float(str(z["lat"])), float(str(z["long"]))
            if lat0 <= la <= lat1 and lng0 <= ln <= lng1:
                fine_of[code] = geo.locate(country="US", postcode=code).fine
        for fine in prior:  # every prior cell is a candidate even if the grid missed it
            grid.setdefault(fine, [*h3.cell_to_latlng(fine), 1.0])
        return cls(
            grid={c: (v[0], v[1], int(v[2])) for c, v in grid.items()},
            prior=dict(prior),
            positions=sorted(fine_of),
            fine_of=fine_of,
        )


def _entropy(weights: Iterable[float]) -> float:
    ws = [w for w in weights if w > 0]
    total = sum(ws)
    return -sum(w / total * math.log2(w / total) for w in ws) if total else 0.0


@dataclass
class Target:
    group: str  # "urban" | "rural"
    postcode: str
    fine: str
    point: Point


class Attacker:
    def __init__(
        self,
        world: World,
        universe: Universe,
        targets: Sequence[Target],
        *,
        accounts: int = 5,
        pool: int = 40,
        queries_per_day: float = 40.0,
        park_rounds: int = 3,
        seed: int = 1,
    ) -> None:
        self.pool = pool
        self.queries_per_day = queries_per_day
        self.park_rounds = park_rounds
        self.world = world
        self.universe = universe
        self.targets = list(targets)
        self.accounts = accounts
        self.rng = random.Random(seed)
        self.feasible: list[set[str]] = [set(universe.grid) for _ in self.targets]
        self.queries = 0  # per account

    def _weight(self, fine: str) -> float:
        return float(len(self.universe.prior.get(fine, ())))

    def _predict(self, viewer_eff: str, fine: str) -> int | None:
        theirs = self.world.effective(fine)
        return None if theirs is None else geo.band(viewer_eff, theirs)

    def _saturated(self, t: int) -> bool:
        cells = {self.world.effective(c) for c in self.feasible[t] if self._weight(c) > 0}
        return len(cells) <= 1

    def _choose(self) -> list[str]:
        """Positions for this round's accounts: sybils inside a saturated target's cell, and the
        rest by greedy joint information gain over the unsaturated targets' candidates."""
        chosen: list[str] = []
        saturated = [t for t in range(len(self.targets)) if self._saturated(t)]
        open_targets = [t for t in range(len(self.targets)) if t not in saturated]
        sybils = self.accounts if not open_targets else min(2, self.accounts)
        if saturated:
            # Sybils stay parked for `park_rounds` queries (long enough to settle), then move on to
            # another child or target.
            turn = self.queries // self.park_rounds
            t = saturated[turn % len(saturated)]
            weighted = sorted(c for c in self.feasible[t] if self._weight(c) > 0)
            cell = self.world.effective(weighted[0]) if weighted else None
            if cell is not None and h3.get_resolution(cell) < geo.FINE_RES and weighted:
                # All sybils into one child of the target's cell (a different one each turn): the
                # child reaches k sooner and splits off, and the target's answer tells in or out.
                res = h3.get_resolution(cell) + 1
                kids = sorted({h3.cell_to_parent(c, res) for c in weighted})
                kid = kids[(turn // len(saturated)) % len(kids)]
                inside = [c for c in weighted if h3.cell_to_parent(c, res) == kid]
                chosen.extend(inside[0] for _ in range(sybils))
        if not open_targets:
            while len(chosen) < self.accounts:
                chosen.append(self.universe.fine_of[self.rng.choice(self.universe.positions)])
            return chosen
        # Only candidates the prior gives weight count towards information (members live at ZIPs).
        labels: dict[int, dict[str, tuple[int | None, ...]]] = {
            t: dict.fromkeys((c for c in self.feasible[t] if self._weight(c) > 0), ()) for t in open_targets
        }
        pool = {self.universe.fine_of[p] for p in self.rng.sample(self.universe.positions, self.pool)}
        for t in open_targets:
            weighted = [c for c in self.feasible[t] if self._weight(c) > 0]
            pool.update(self.rng.sample(weighted, min(6, len(weighted))))
        candidates = sorted(pool)
        while len(chosen) < self.accounts:
            best, best_gain = candidates[0], -1.0
            for pos in candidates:
                mine = self.world.effective(pos)
                if mine is None:
                    continue
                gain = 0.0
                for t in open_targets:
                    groups: dict[tuple[int | None, ...], float] = defaultdict(float)
                    for c, label in labels[t].items():
                        groups[(*label, self._predict(mine, c))] += self._weight(c)
                    gain += _entropy(groups.values())
                if gain > best_gain:
                    best, best_gain = pos, gain
            chosen.append(best)
            mine = self.world.effective(best)
            if mine is not None:
                for t in open_targets:
                    labels[t] = {c: (*label, self._predict(mine, c)) for c, label in labels[t].items()}
        return chosen

    def round(self) -> None:
        """Each account is (re-)placed, then queries once; candidates inconsistent with any band go."""
        for i, fine in enumerate(self._choose()):
            self.world.place(i, fine)
        for i in range(self.accounts):
            viewer = self.world.accounts[i]
            assert viewer is not None
            mine = self.world.effective(viewer)
            if mine is None:
                continue  # not listed yet: the query shows nothing
            for t, target in enumerate(self.targets):
                seen = self.world.answer(viewer, target.fine)
                self.feasible[t] = {c for c in self.feasible[t] if self._predict(mine, c) == seen}
        self.queries += 1
        self.world.advance(1.0 / self.queries_per_day)

    def estimates(self, t: int) -> tuple[Point, Point]:
        """(centre of the feasible region, best ZIP-prior point) for target t."""
        # Sorted: float sums over a set depend on its order, i.e. on PYTHONHASHSEED.
        cells = sorted(self.feasible[t])
        lat = math.fsum(self.universe.grid[c][0] for c in cells)
        lng = math.fsum(self.universe.grid[c][1] for c in cells)
        n = sum(self.universe.grid[c][2] for c in cells)
        centre = (lat / n, lng / n)
        zips = [p for c in cells for p in self.universe.prior.get(c, ())]
        if not zips:
            return centre, centre
        options = zips if len(zips) <= 150 else random.Random(t).sample(zips, 150)
        sample = zips if len(zips) <= 400 else random.Random(t + 1).sample(zips, 400)
        best = min([*options, centre], key=lambda o: sum(km(o, z) for z in sample))
        return centre, best

    def errors(self) -> dict[str, dict[str, list[float]]]:
        """Per group, per estimator: the error (km) of each target's estimate vs its true centroid."""
        out: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"region centre": [], "ZIP prior": []})
        for t, target in enumerate(self.targets):
            centre, prior = self.estimates(t)
            out[target.group]["region centre"].append(km(centre, target.point))
            out[target.group]["ZIP prior"].append(km(prior, target.point))
        return dict(out)


def medians(errors: dict[str, dict[str, list[float]]]) -> dict[tuple[str, str], float]:
    return {(g, e): statistics.median(v) for g, by in errors.items() for e, v in by.items()}


def setup(
    *,
    state: str,
    members: int,
    urban_centre: Point,
    urban_radius_km: float,
    rural_counties: Sequence[str],
    targets_per_group: int,
    grid_km: float,
    policy: geo.CellPolicy,
    settle_days: float,
    seed: int = 7,
) -> tuple[World, Universe, list[Target]]:
    """A state's synthetic members, with the chosen targets among them."""
    rng = random.Random(seed)
    population = state_zips(state)
    urban = rng.sample(urban_targets(population, urban_centre, urban_radius_km), targets_per_group)
    rural = rng.sample(rural_targets(population, rural_counties), targets_per_group)
    residents = [rng.choice(population) for _ in range(members - len(urban) - len(rural))] + urban + rural
    world = World(policy=policy, residents=residents, settle_days=settle_days)
    universe = Universe.build(population, grid_km=grid_km)
    targets = [
        Target(group, p, geo.locate(country="US", postcode=p).fine, point_of(p))
        for group, chosen in (("urban", urban), ("rural", rural))
        for p in chosen
    ]
    return world, universe, targets
