"""Run by ``benchmarks.cluster`` on a Docker cluster, or locally for comparison.

    dockkit run benchmarks/cluster_job.py [-n N] [--local] T|W1|W2|W4

Prints one line ``BENCH {json}`` with the figure. T (a trivial run) reports the wall-clock
time of its first results, so the caller can time a run from its start to them; the
others warm the pool first and time the workload alone (W1 and W4: the median of 5 maps).
"""

import json
import os
import statistics
import sys
import time

import dockkit
from dockkit import futures

W1_TASKS = 1_000_000
W2_TASKS, W2_SLEEP = 4_000, 0.01
REPEATS = 5  # W1 and W4 report the median of this many maps


def square(x):
    return x * x


def nap(_):
    time.sleep(W2_SLEEP)
    return os.getpid()


def size(blob):
    return len(blob)


def main(workload: str) -> dict:
    if workload == "T":
        list(futures.map(square, range(dockkit.SIZE)))
        return {"first_results_at": time.time()}
    list(futures.map(square, range(1000)))  # warm: every worker has the code
    if workload == "W1":
        return {"tasks_per_s": W1_TASKS / _median_seconds(lambda: list(futures.map(square, range(W1_TASKS))))}
    if workload == "W2":
        started = time.perf_counter()
        list(futures.map(nap, range(W2_TASKS)))
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "efficiency": W2_TASKS * W2_SLEEP / dockkit.SIZE / elapsed}
    payload = [os.urandom(1 << 20) for _ in range(64)]
    list(futures.map(size, payload[:4]))
    return {"mb_per_s": 64 * (1 << 20) / 1e6 / _median_seconds(lambda: list(futures.map(size, payload)))}


def _median_seconds(work, times: int = REPEATS) -> float:
    """The median wall time of ``work()``: one map of W1 or W4 takes a tenth of a second or less."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


if __name__ == "__main__":
    print("BENCH " + json.dumps(main(sys.argv[1])), flush=True)
