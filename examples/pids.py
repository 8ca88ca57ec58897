"""The classic SCOOP demo: 1000 tasks, each sleeps 10 ms and returns its worker's pid.

    dockkit run examples/pids.py -n 16
    python -m dockkit -n 16 examples/pids.py
"""

import collections
import os
import time

from dockkit import futures, logger


def task(_):
    time.sleep(0.01)
    return os.getpid()


if __name__ == "__main__":
    started = time.perf_counter()
    pids = collections.Counter(futures.map(task, range(1000)))
    elapsed = time.perf_counter() - started
    logger.info("1000 tasks in %.2f s on %d distinct pids", elapsed, len(pids))
    for pid, count in sorted(pids.items()):
        logger.info("pid %d ran %d tasks", pid, count)
