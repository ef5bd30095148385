"""Triangulation acceptance (issue 5, item 5), in a smaller configuration than
bench/bench_triangulation.py (fewer targets, a coarser candidate grid), same attacker, same rules:
5 accounts re-placed at will, 1,000 queries each, against 3,000 synthetic members at real New York
ZIP centroids. Median error >= 2 km for city targets (Manhattan and around) and >= 5 km for rural
ones (Adirondack and Southern Tier counties), and no better after 1,000 queries than after 10.
A control run against a directory without the static floor shows that the same attacker and the
same measurement do fail where the design is weaker.
"""

from __future__ import annotations

import pytest

from medvault.community import directory, geo
from tests.community import attacker as A

RURAL = [
    "Hamilton County",
    "Essex County",
    "Franklin County",
    "Lewis County",
    "Delaware County",
    "Allegany County",
    "Schuyler County",
    "Yates County",
]
POLICY = directory.DEFAULT_POLICY
PER_DAY = POLICY.listing.count * 86_400 / POLICY.listing.seconds
SETTLE_DAYS = POLICY.settle.total_seconds() / 86_400


# Medians are float sums of km: equal estimates may differ in the last bits, never by a metre.
TOLERANCE_KM = 1e-6


def _attack(
    policy: geo.CellPolicy, rounds: int, checkpoints: tuple[int, ...], *, per_day: float = PER_DAY
) -> tuple[A.Attacker, dict[int, dict]]:
    world, universe, targets = A.setup(
        state="NY",
        members=3000,
        urban_centre=(40.75, -73.98),
        urban_radius_km=10,
        rural_counties=RURAL,
        targets_per_group=8,
        grid_km=3.0,
        policy=policy,
        settle_days=SETTLE_DAYS,
    )
    attacker = A.Attacker(
        world, universe, targets, queries_per_day=per_day, park_rounds=int(SETTLE_DAYS * per_day) + 40
    )
    seen: dict[int, dict] = {}
    for n in range(1, rounds + 1):
        attacker.round()
        if n in checkpoints:
            seen[n] = A.medians(attacker.errors())
    return attacker, seen


@pytest.fixture(scope="module")
def attacked() -> tuple[A.Attacker, dict[int, dict]]:
    return _attack(POLICY.cells, 1000, (10, 1000))


def test_median_error_meets_the_floor_after_10_and_1000_queries(attacked) -> None:
    _attacker, seen = attacked
    for n in (10, 1000):
        for estimator in ("region centre", "ZIP prior"):
            assert seen[n][("urban", estimator)] >= 2.0, (n, estimator, seen[n])
            assert seen[n][("rural", estimator)] >= 5.0, (n, estimator, seen[n])


def test_no_better_after_1000_queries_than_after_10(attacked) -> None:
    _attacker, seen = attacked
    for key, after_10 in seen[10].items():
        assert seen[1000][key] >= after_10 - TOLERANCE_KM, key


def test_a_patient_attacker_whose_sybils_settle_gains_nothing_either() -> None:
    """One query a day, so sybils parked next to a target outlive the settle period and count
    towards k (1,000 days): the static floor still holds the errors, and no better than after 10."""
    _attacker, seen = _attack(POLICY.cells, 1000, (10, 1000), per_day=1.0)
    for n in (10, 1000):
        assert seen[n][("urban", "ZIP prior")] >= 2.0, (n, seen[n])
        assert seen[n][("rural", "ZIP prior")] >= 5.0, (n, seen[n])
    for key, after_10 in seen[10].items():
        assert seen[1000][key] >= after_10 - TOLERANCE_KM, key


def test_the_attacker_is_not_weak_it_pins_every_target_to_its_cell_within_10_queries() -> None:
    """What makes the errors above meaningful: the attacker learns all there is to learn, fast
    (every candidate left lies in the target's own effective cell), and still cannot do better."""
    attacker, _seen = _attack(POLICY.cells, 10, ())
    for t, target in enumerate(attacker.targets):
        cell = attacker.world.effective(target.fine)
        assert target.fine in attacker.feasible[t]
        assert {attacker.world.effective(c) for c in attacker.feasible[t] if attacker.universe.prior.get(c)} == {cell}


def test_control_without_the_static_floor_the_same_attack_finds_rural_members() -> None:
    """Control: cells split down to the fine resolution wherever 2 members share one (no floor of
    ZIP areas, k=2): the same attacker then places rural targets far closer than 5 km. So the
    measurement can fail, and the floor is what holds it."""
    _attacker, seen = _attack(geo.CellPolicy(min_members=2, min_postcodes=1), 10, (10,))
    assert seen[10][("rural", "ZIP prior")] < 5.0, seen[10]
