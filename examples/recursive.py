"""Tasks that submit tasks and wait on them: a parallel quicksort with ``futures.submit``.

Each task splits its list around a pivot, submits both halves as new tasks and
waits for their results, down to ``--cutoff`` items, which it sorts itself. A
task waiting on its futures does not hold its worker idle: the worker runs other
tasks meanwhile, so even with fewer workers than waiting tasks nothing deadlocks.

    dockkit run examples/recursive.py -n 4
    dockkit run examples/recursive.py -n 4 --size 1000000 --cutoff 20000
    dockkit up && dockkit run examples/recursive.py

It prints how many tasks the sort took, how deep it went, and whether the
result equals ``sorted()``'s.
"""

import argparse
import random

from dockkit import futures


def quicksort(items: list, cutoff: int, depth: int = 0) -> tuple[list, int, int]:
    """``items`` sorted, with the number of tasks used and the deepest level reached."""
    if len(items) <= cutoff:
        return sorted(items), 1, depth
    pivot = items[len(items) // 2]
    lower = [x for x in items if x < pivot]
    equal = [x for x in items if x == pivot]
    upper = [x for x in items if x > pivot]
    left = futures.submit(quicksort, lower, cutoff, depth + 1)
    right = futures.submit(quicksort, upper, cutoff, depth + 1)
    (low, low_tasks, low_depth), (high, high_tasks, high_depth) = left.result(), right.result()
    return low + equal + high, 1 + low_tasks + high_tasks, max(low_depth, high_depth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="numbers to sort")
    parser.add_argument("--cutoff", type=int, default=10_000, help="sort serially below this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data = [rng.randrange(10 * args.size) for _ in range(args.size)]

    result, tasks, depth = futures.submit(quicksort, data, args.cutoff).result()
    print(f"sorted {len(result)} numbers in {tasks} tasks, {depth} levels deep")
    print(f"equal to sorted(): {result == sorted(data)}")


if __name__ == "__main__":
    main()
