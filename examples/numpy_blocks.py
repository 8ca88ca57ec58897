"""Large numpy arrays in and out of tasks, on the zero-copy path; prints the MB/s.

Arrays travel with pickle protocol 5: an array's memory goes as its own message
frame, sent without a copy and never re-pickled on the way, so moving blocks of
megabytes costs little more than the network. The blocks come from a generator,
which ``futures.map`` reads as workers free up (up to a bounded read-ahead), so
the input is made as the work goes rather than all up front. Each result is
checked against the same computation done here.

    pip install numpy                                      # or: pip install -r examples/requirements.txt
    dockkit run examples/numpy_blocks.py -n 4
    dockkit run examples/numpy_blocks.py -n 4 --blocks 64 --mb 16
    dockkit up --requirements examples/requirements.txt && dockkit run examples/numpy_blocks.py

It prints how many blocks were verified and the throughput (MB sent plus MB
received, per second of wall time).
"""

import argparse
import time

import numpy as np

from dockkit import futures


def make_block(index: int, values: int) -> np.ndarray:
    """Block ``index``: ``values`` float64 numbers, the same every time for one index."""
    return np.random.default_rng(index).standard_normal(values)


def transform(block: np.ndarray) -> np.ndarray:
    """The task: a new array of the same size and type."""
    return np.cumsum(block) * 0.5 + block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=32)
    parser.add_argument("--mb", type=float, default=8.0, help="size of each block in MB")
    args = parser.parse_args()
    values = int(args.mb * 1e6) // 8
    blocks = (make_block(i, values) for i in range(args.blocks))
    list(futures.map(transform, [np.zeros(8)] * 16))  # workers are up and have numpy: start the clock

    started = time.perf_counter()
    results = list(futures.map(transform, blocks))
    elapsed = time.perf_counter() - started

    for index, result in enumerate(results):
        if not np.array_equal(result, transform(make_block(index, values))):
            raise SystemExit(f"block {index} came back wrong")
    moved = 2 * args.blocks * values * 8 / 1e6
    print(f"verified {len(results)} blocks of {values * 8 / 1e6:.1f} MB")
    print(f"moved {moved:.0f} MB in {elapsed:.2f} s: {moved / elapsed:.0f} MB/s")


if __name__ == "__main__":
    main()
