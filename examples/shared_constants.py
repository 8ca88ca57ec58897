"""A large lookup table sent once to every worker: ``shared.setConst`` and ``shared.getConst``.

The root sieves the primes below ``--limit`` into a table of one byte per number
and broadcasts it with ``setConst``: it travels once per worker (workers that
join later get it too), not once per task. Each task then counts the twin primes
(p and p + 2 both prime) in its own slice of the range, reading the table with
``getConst``. Constants are read-only; set each name once, before the tasks.

    dockkit run examples/shared_constants.py -n 4
    dockkit run examples/shared_constants.py -n 4 --limit 50000000 --tasks 200
    dockkit up && dockkit run examples/shared_constants.py

It prints the table's size and the number of twin prime pairs below the limit.
"""

import argparse
import operator

from dockkit import futures, shared


def sieve(limit: int) -> bytes:
    """``table[n] == 1`` exactly when ``n`` is prime, for ``0 <= n < limit``."""
    table = bytearray([1]) * limit
    table[:2] = b"\0\0"[:limit]
    for n in range(2, int(limit ** 0.5) + 1):
        if table[n]:
            table[n * n::n] = bytes(len(range(n * n, limit, n)))
    return bytes(table)


def twin_primes(start: int, stop: int) -> int:
    """The pairs (p, p + 2) of primes with ``start <= p < stop`` and ``p + 2`` in the table."""
    table = shared.getConst("primes", timeout=60)
    stop = min(stop, len(table) - 2)
    return sum(1 for p in range(start, stop) if table[p] and table[p + 2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10_000_000, help="count pairs below this")
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()

    shared.setConst(primes=sieve(args.limit))
    step = -(-args.limit // args.tasks)  # ceiling division: the slices cover the whole range
    starts = range(0, args.limit, step)
    pairs = futures.mapReduce(twin_primes, operator.add, starts, [s + step for s in starts])
    print(f"lookup table: {args.limit / 1e6:.1f} MB, sent once to each worker")
    print(f"twin prime pairs below {args.limit}: {pairs}")


if __name__ == "__main__":
    main()
