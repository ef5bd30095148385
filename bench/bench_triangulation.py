"""Triangulation of directory members (issue 5, item 5): how close can 5 accounts get?

What it measures
    A world of `--members` synthetic opted-in members at real ZIP centroids of one state (the
    `zipcodes` table; uniform over the state's standard ZIPs), among them `--targets` city targets
    (ZIPs within `--city-radius` km of the city centre) and as many rural ones (ZIPs of sparse
    counties). An attacker with 5 accounts, re-placed at any ZIP before every query, makes
    `--queries` listing views per account; each view gives the band of every target. The attacker
    (tests/community/attacker.py) knows the partition at every moment (an oracle), multilaterates
    over a `--grid-km` grid of candidate points, picks positions by greedy joint information gain,
    parks sybil accounts inside a target's cell to split it, and estimates two ways: the centre of
    the feasible region, and the best ZIP centroid in it. Errors are great-circle km from the
    target's true ZIP centroid; medians per group after 1, 10, 100 and 1,000 queries per account.

    Runs: "default" is the directory as shipped (k=10, 8 ZIP areas, a placement counts after 28
    days, 40 listing views a day: 1,000 views take 25 days); "no settle period" lets every
    placement count at once (the sybil lever, for information); "control" has no static floor
    (k=2, 1 ZIP area) to show that the attack and the measurement can fail.

Targets (issue 5)
    median error >= 2 km for city targets and >= 5 km for rural targets, and no better after
    1,000 queries than after 10 (for the default directory)

How to run (from the repository root)
    python bench/bench_triangulation.py                       # New York: Manhattan and Adirondacks
    python bench/bench_triangulation.py --state IL --city 41.88,-87.63 \\
        --rural-counties "Pope County,Hardin County,Gallatin County,Calhoun County,Schuyler County,Brown County"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.community import attacker as A  # noqa: E402

from _common import banner, table, verdict  # noqa: E402
from medvault.community import directory, geo  # noqa: E402

NY_RURAL = (
    "Hamilton County,Essex County,Franklin County,Lewis County,Delaware County,Allegany County,"
    "Schuyler County,Yates County"
)
CHECKPOINTS = (1, 10, 100, 1000)


def run(args: argparse.Namespace, name: str, policy: geo.CellPolicy, settle_days: float) -> dict[int, dict]:
    per_day = directory.DEFAULT_POLICY.listing.count * 86_400 / directory.DEFAULT_POLICY.listing.seconds
    started = time.perf_counter()
    world, universe, targets = A.setup(
        state=args.state,
        members=args.members,
        urban_centre=args.city,
        urban_radius_km=args.city_radius,
        rural_counties=args.rural_counties.split(","),
        targets_per_group=args.targets,
        grid_km=args.grid_km,
        policy=policy,
        settle_days=settle_days,
        seed=args.seed,
    )
    attacker = A.Attacker(
        world,
        universe,
        targets,
        pool=args.pool,
        queries_per_day=per_day,
        park_rounds=int(settle_days * per_day) + 40 if settle_days else 3,
        seed=args.seed,
    )
    placed = [world.effective(t.fine) for t in targets]
    res = {
        g: sorted(h3.get_resolution(c) for t, c in zip(targets, placed, strict=True) if c and t.group == g)
        for g in ("urban", "rural")
    }
    print(
        f"\n## {name}: {len(universe.grid)} candidate fine cells, {len(universe.positions)} placeable ZIPs; "
        f"target cell resolutions urban {res['urban']}, rural {res['rural']}"
    )
    seen: dict[int, dict] = {}
    for n in range(1, max(CHECKPOINTS) + 1):
        attacker.round()
        if n in CHECKPOINTS:
            seen[n] = A.medians(attacker.errors())
            print(
                f"  after {n:>4} queries per account ({time.perf_counter() - started:6.1f} s): "
                + ", ".join(f"{g} {e} {v:.2f} km" for (g, e), v in sorted(seen[n].items()))
            )
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", default="NY")
    parser.add_argument("--city", default="40.75,-73.98", type=lambda s: tuple(float(x) for x in s.split(",")))
    parser.add_argument("--city-radius", type=float, default=10.0)
    parser.add_argument("--rural-counties", default=NY_RURAL)
    parser.add_argument("--members", type=int, default=3000)
    parser.add_argument("--targets", type=int, default=40, help="per group (city, rural)")
    parser.add_argument("--grid-km", type=float, default=1.0)
    parser.add_argument("--pool", type=int, default=60, help="random candidate positions per round")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-extra", action="store_true", help="only the default directory")
    args = parser.parse_args()
    banner("Directory triangulation (issue 5 item 5)")
    print(
        f"state {args.state}, {args.members} members, {args.targets} city + {args.targets} rural targets, "
        f"5 accounts x {max(CHECKPOINTS)} queries, grid {args.grid_km} km"
    )
    shipped = directory.DEFAULT_POLICY
    settle = shipped.settle.total_seconds() / 86_400
    default = run(args, "default", shipped.cells, settle)
    rows = []
    for group, floor in (("urban", 2.0), ("rural", 5.0)):
        for est in ("region centre", "ZIP prior"):
            e10, e1000 = default[10][(group, est)], default[1000][(group, est)]
            rows.append(
                [
                    f"{group} / {est}",
                    f"{default[1][(group, est)]:.2f}",
                    f"{e10:.2f}",
                    f"{default[100][(group, est)]:.2f}",
                    f"{e1000:.2f}",
                    f">= {floor:g} km",
                    verdict(min(e10, e1000) >= floor),
                    verdict(e1000 >= e10),
                ]
            )
    if not args.skip_extra:
        extra = {
            "no settle period": run(args, "no settle period (sybils count at once)", shipped.cells, 0.0),
            "control": run(args, "control: no static floor (k=2, 1 ZIP area)", geo.CellPolicy(2, 1), settle),
        }
        for name, seen in extra.items():
            for group, floor in (("urban", 2.0), ("rural", 5.0)):
                for est in ("region centre", "ZIP prior"):
                    rows.append(
                        [
                            f"{name}: {group} / {est}",
                            *(f"{seen[n][(group, est)]:.2f}" for n in CHECKPOINTS),
                            f">= {floor:g} km",
                            "(info)",
                            "(info)",
                        ]
                    )
    print()
    print(table(["run / group / estimator", "km @1", "@10", "@100", "@1000", "target", "median", "1000 >= 10"], rows))


if __name__ == "__main__":
    main()
