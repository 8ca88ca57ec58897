"""The workloads: the functions the workers run, and the cases the suite measures.

Worker processes of every system import this module by name, so it stays importable
on its own: standard library only, no side effects at import time.

A *workload* (W1 … W7) is what the issue names; a *case* is one measured cell of it
(W6 has a lambda case and a closure case, W7 one case per stream length). Each case
runs in a fresh process per system and repetition (see :mod:`benchmarks.child`).
"""

from __future__ import annotations

import collections
import os
import time

MIB = 1 << 20

#: Iterations of :func:`spin` that take about 10 ms on the reference machine.
#: W3's efficiency uses the duration measured in the same process, not this guess.
SPIN_ITERS = 90_000

#: Seconds :func:`sleep_pid` sleeps: W2's unit of work.
SLEEP_S = 0.01

#: ``chunksize`` given to the chunked streaming forms in W7 (``Pool.imap`` and
#: ``Executor.map`` of the stdlib and loky). dockkit is left on automatic batching.
STREAM_CHUNKSIZE = 1_000

#: Items in flight for the systems whose map submits everything up front
#: (Dask, Ray, SCOOP): W7 feeds them windows of this many items.
STREAM_WINDOW = 10_000


def square(x: int) -> int:
    """W1, W5, W7: the smallest useful task."""
    return x * x


def sleep_pid(_: int) -> int:
    """W2: sleep 10 ms and say which process did it."""
    time.sleep(SLEEP_S)
    return os.getpid()


def spin(iterations: int) -> int:
    """W3: a pure-Python loop that holds the GIL the whole time."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def nbytes(payload: bytes) -> int:
    """W4: receive a large argument, return a small result."""
    return len(payload)


def stream_items(count: int):
    """W7: a generator, so a system that streams never holds the whole input."""
    yield from range(count)


def payloads(count: int, size: int = MIB) -> list[bytes]:
    """W4's input: ``count`` distinct byte strings of ``size`` bytes."""
    return [bytes([i % 256]) * size for i in range(count)]


class Case(collections.namedtuple(
        "Case", "id workload title workers size timeout budget repeat", defaults=(None, True))):
    """One measured cell: a workload at one size, run in its own process.

    A named tuple, not a dataclass: W5's clock runs while the harness imports this
    module, and ``dataclasses`` costs 10 ms to import.

    Attributes:
        id: The case's key in the results, e.g. ``"W7-5M"``.
        workload: The issue's workload name, e.g. ``"W7"``.
        title: A short human label.
        workers: Worker processes the system is started with.
        size: Items mapped (meaning depends on the workload).
        timeout: Seconds after which the harness kills the run.
        budget: For W1-1M and W7, seconds after which the run stops and reports
            itself too slow (``None``: no budget).
        repeat: ``False`` for yes/no cases, which run once whatever ``--reps`` says.
    """

    __slots__ = ()


WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")

_TITLES = {
    "W1": "tiny tasks",
    "W2": "sleep 10 ms",
    "W3": "cpu 10 ms",
    "W4": "1 MiB payloads",
    "W5": "startup",
    "W6": "lambda / closure",
    "W7": "stream",
}


def workload_title(workload: str) -> str:
    """The short label of a workload, e.g. ``"tiny tasks"`` for W1."""
    return _TITLES[workload]


def build_cases(quick: bool = False) -> list[Case]:
    """The cases of the full suite, or the tiny ones of ``--quick``.

    Args:
        quick: Use the smoke-test sizes (seconds in all) instead of the real ones.

    Returns:
        The cases in table order.
    """
    if quick:
        w2_workers, w2_tasks, stream_sizes, budget = 4, 100, (10_000, 50_000), 10.0
        w1, w1_large, w3, w4 = 2_000, 50_000, 20, 8
    else:
        w2_workers, w2_tasks, stream_sizes, budget = 16, 1_000, (1_000_000, 5_000_000), 60.0
        w1, w1_large, w3, w4 = 20_000, 1_000_000, 200, 64
    timeout = 60.0 if quick else 180.0
    cases = [
        Case("W1", "W1", _TITLES["W1"], 2, w1, timeout),
        # The same map at a size that is not noise-bound; the slow peers would take
        # 1,000 s over it, so it has the streams' budget.
        Case("W1-1M", "W1", "tiny tasks, large", 2, w1_large, budget + 60.0, budget=budget),
        Case("W2", "W2", _TITLES["W2"], w2_workers, w2_tasks, timeout),
        Case("W3", "W3", _TITLES["W3"], 2, w3, timeout),
        Case("W4", "W4", _TITLES["W4"], 2, w4, timeout),
        Case("W5", "W5", _TITLES["W5"], 2, 1, timeout),
        Case("W6-lambda", "W6", "lambda", 2, 20, timeout, repeat=False),
        Case("W6-closure", "W6", "closure", 2, 20, timeout, repeat=False),
    ]
    for size in stream_sizes:
        label = f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1_000}k"
        cases.append(
            Case(f"W7-{label}", "W7", f"stream {label}", 2, size, budget + 60.0, budget=budget)
        )
    return cases


def ideal_sleep_seconds(case: Case) -> float:
    """W2's lower bound: every worker sleeping all the time."""
    return case.size * SLEEP_S / case.workers


#: The scale section's sizes, the same as ``cluster_job.py``'s (W1_TASKS, W2_TASKS), so
#: that its local and cluster figures are of the same maps.
SCALE_SIZES = {"W1": 1_000_000, "W2": 4_000}
SCALE_QUICK_SIZES = {"W1": 20_000, "W2": 200}
_SCALE_PREFIX = "scale-"


def scale_case(workload: str, workers: int, quick: bool = False) -> Case:
    """A case of the scale section: W1 or W2 on ``workers`` local workers."""
    size = (SCALE_QUICK_SIZES if quick else SCALE_SIZES)[workload]
    return Case(f"{_SCALE_PREFIX}{workload}-{workers}", workload, _TITLES[workload], workers, size,
                60.0 if quick else 180.0)


def find_case(case_id: str, quick: bool = False) -> Case:
    """The case a child process is asked to run, by id (``"W1"``, ``"scale-W2-32"``)."""
    if case_id.startswith(_SCALE_PREFIX):
        workload, workers = case_id[len(_SCALE_PREFIX):].split("-")
        return scale_case(workload, int(workers), quick)
    return {c.id: c for c in build_cases(quick)}[case_id]
