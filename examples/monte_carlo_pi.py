"""Estimate pi by throwing random points at a square: ``futures.map`` and ``futures.mapReduce``.

Each task draws its points from its own ``random.Random(seed)``, one seed per
task, so the estimate depends on the seeds alone: not on how many workers there
are, which worker ran which task, or in what order they finished. ``map`` gives
every task's count (in input order); ``mapReduce`` adds the counts as they come.

    dockkit run examples/monte_carlo_pi.py -n 4                          # 4 local workers
    dockkit run examples/monte_carlo_pi.py -n 4 --tasks 200 --points 500000
    dockkit up --nodes 3 && dockkit run examples/monte_carlo_pi.py       # on a cluster

It prints how many of the points fell inside the quarter circle and the estimate.
"""

import argparse
import functools
import math
import operator
import random

from dockkit import futures


def hits(seed: int, points: int) -> int:
    """How many of ``points`` random points in the unit square lie inside the quarter circle."""
    rng = random.Random(seed)
    return sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(points))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64, help="tasks, one seed each")
    parser.add_argument("--points", type=int, default=50_000, help="points per task")
    args = parser.parse_args()
    seeds = range(args.tasks)

    per_task = list(futures.map(hits, seeds, [args.points] * args.tasks))
    inside = futures.mapReduce(functools.partial(hits, points=args.points), operator.add, seeds)
    assert inside == sum(per_task), "map and mapReduce disagree"

    total = args.tasks * args.points
    estimate = 4 * inside / total
    print(f"per task: min {min(per_task)}, max {max(per_task)} of {args.points} points")
    print(f"inside: {inside} of {total} points")
    print(f"pi is about {estimate:.6f} (error {abs(estimate - math.pi):.1e})")


if __name__ == "__main__":
    main()
