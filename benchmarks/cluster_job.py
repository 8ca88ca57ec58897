"""Run inside the Docker cluster by ``benchmarks.cluster``: W1, W2 or W4 over the nodes.

    dockkit run benchmarks/cluster_job.py -n N W1|W2|W4

Prints one line ``BENCH {json}`` with the figure (the pool is warmed first).
"""

import json
import os
import sys
import time

from dockkit import futures


def square(x):
    return x * x


def seed(_):
    time.sleep(0.01)
    return os.getpid()


def size(blob):
    return len(blob)


def main(workload: str) -> dict:
    list(futures.map(square, range(1000)))  # warm: every worker has the code
    if workload == "W1":
        started = time.perf_counter()
        list(futures.map(square, range(20_000)))
        return {"tasks_per_s": 20_000 / (time.perf_counter() - started)}
    if workload == "W2":
        started = time.perf_counter()
        list(futures.map(seed, range(1000)))
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "efficiency": 0.625 / elapsed}
    payload = [os.urandom(1 << 20) for _ in range(64)]
    list(futures.map(size, payload[:4]))
    started = time.perf_counter()
    list(futures.map(size, payload))
    return {"mb_per_s": 64 * (1 << 20) / 1e6 / (time.perf_counter() - started)}


if __name__ == "__main__":
    print("BENCH " + json.dumps(main(sys.argv[1])), flush=True)
