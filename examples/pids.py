"""The classic SCOOP demo: 1000 tasks, each sleeps 10 ms and returns its worker's pid.

    dockkit run examples/pids.py -n 16
    python -m dockkit -n 16 examples/pids.py

Workers on other hosts or containers have pids of their own namespace, so each
task reports its host too and workers are counted as (host, pid) pairs.
"""

import collections
import os
import socket
import time

from dockkit import futures, logger


def task(_):
    time.sleep(0.01)
    return socket.gethostname(), os.getpid()


if __name__ == "__main__":
    started = time.perf_counter()
    workers = collections.Counter(futures.map(task, range(1000)))
    elapsed = time.perf_counter() - started
    hosts = sorted({host for host, _ in workers})
    logger.info("1000 tasks in %.2f s on %d distinct pids over %d host(s)", elapsed, len(workers), len(hosts))
    for (host, pid), count in sorted(workers.items()):
        logger.info("%s pid %d ran %d tasks", host, pid, count)
