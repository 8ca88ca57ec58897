"""How each workload is timed inside one fresh process (the "root" of the system).

Every function takes a started-on-demand :class:`~benchmarks.systems.System`, the
:class:`~benchmarks.workloads.Case` and returns a flat dict of figures. The system is
left running: the caller reports the figures first and stops the system after, so a
slow shutdown can never lose a measurement.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Callable

from benchmarks import workloads as wl
from benchmarks.systems import System
from benchmarks.workloads import Case

#: W3's calls timed in the root on each side of the map.
_CALLS_TIMED = 5
#: How often (in items) W7 looks at its time budget.
_BUDGET_CHECK_EVERY = 10_000


def _start_warm(system: System, case: Case, fn: Callable = wl.square) -> None:
    """Start the pool and run a tiny map so every system is past its lazy setup.

    W2 warms with its own 10 ms sleeps, which reach every one of its 16 workers even
    on a system that spawns workers on demand.
    """
    system.start(case.workers)
    warm = range(2 * case.workers)
    if len(list(system.map(fn, warm))) != len(warm):
        raise AssertionError("warm-up map returned wrong results")


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _peak_rss_mb() -> float:
    """Peak resident set of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _budget_watch(case: Case, give_up: Callable[[dict], None] | None) -> threading.Timer | None:
    """Past ``case.budget`` seconds from now, hand ``give_up`` the figures of a map
    that has not returned (``too_slow``). A map still submitting or waiting cannot be
    interrupted in its own thread, so ``give_up`` runs on a timer thread and must end
    the process."""
    if case.budget is None or give_up is None:
        return None
    started = time.perf_counter()

    def expire() -> None:
        seconds = time.perf_counter() - started
        give_up({"seconds": seconds, "tasks_per_s_below": case.size / seconds, "too_slow": True})

    timer = threading.Timer(case.budget, expire)
    timer.daemon = True
    timer.start()
    return timer


def tiny(system: System, case: Case, give_up: Callable[[dict], None] | None = None) -> dict:
    """W1: many tasks that do nothing; the per-task overhead, in tasks/s.

    A case with a budget (W1-1M) is abandoned past it through ``give_up``; its rate is
    then only known to be under ``size / seconds`` (``tasks_per_s_below``).
    """
    _start_warm(system, case)
    watch = _budget_watch(case, give_up)
    try:
        seconds, results = _timed(lambda: list(system.map(wl.square, range(case.size))))
    finally:  # a map that failed is reported as such, never later as too slow
        if watch is not None:
            watch.cancel()
    if results != [x * x for x in range(case.size)]:
        raise AssertionError("W1 returned wrong results")
    return {"seconds": seconds, "tasks_per_s": case.size / seconds}


def sleepy(system: System, case: Case) -> dict:
    """W2: 10 ms sleeps over many workers; efficiency against a perfect spread."""
    _start_warm(system, case, wl.sleep_pid)
    seconds, pids = _timed(lambda: list(system.map(wl.sleep_pid, range(case.size))))
    ideal = wl.ideal_sleep_seconds(case)
    return {
        "seconds": seconds,
        "ideal_s": ideal,
        "efficiency": ideal / seconds,
        "workers_seen": len(set(pids)),
    }


def cpu(system: System, case: Case) -> dict:
    """W3: ~10 ms pure-Python calls; efficiency against ``size * t_call / workers``.

    t_call is the median of calls timed just before and just after the map: this
    machine's speed drifts (one call took 5.7 ms in one run and 9.9 ms in the next),
    and calls on one side only weighed that drift on one side of the ratio.
    """
    wl.spin(wl.SPIN_ITERS)
    calls = [_timed(lambda: wl.spin(wl.SPIN_ITERS))[0] for _ in range(_CALLS_TIMED)]
    _start_warm(system, case)
    seconds, _ = _timed(lambda: list(system.map(wl.spin, [wl.SPIN_ITERS] * case.size)))
    calls += [_timed(lambda: wl.spin(wl.SPIN_ITERS))[0] for _ in range(_CALLS_TIMED)]
    t_call = statistics.median(calls)
    ideal = case.size * t_call / case.workers
    return {"seconds": seconds, "t_call_s": t_call, "ideal_s": ideal, "efficiency": ideal / seconds}


def payload(system: System, case: Case) -> dict:
    """W4: 1 MiB arguments, tiny results; MB/s (10**6 bytes) of argument moved."""
    items = wl.payloads(case.size)
    _start_warm(system, case)
    seconds, results = _timed(lambda: list(system.map(wl.nbytes, items)))
    if results != [wl.MIB] * case.size:
        raise AssertionError("W4 returned wrong results")
    moved = case.size * wl.MIB
    return {"seconds": seconds, "mb_per_s": moved / 1e6 / seconds}


def startup(system: System, case: Case, since_start: Callable[[], float]) -> dict:
    """W5: from the top of this process (before the import) to a first result."""
    system.start(case.workers)
    first = next(iter(system.map(wl.square, [3])))
    seconds = since_start()
    if first != 9:
        raise AssertionError("W5 returned a wrong result")
    return {"seconds": seconds}


def portable(system: System, case: Case, fn: Callable[[int], tuple]) -> dict:
    """W6: can the system map ``fn``, a lambda or closure from ``__main__``?

    ``fn(x)`` returns ``(x + 1, pid)``; "yes" needs right values and at least one of
    them computed outside this process (SCOOP's root also runs tasks).
    """
    system.start(case.workers)
    try:
        results = list(system.map(fn, range(case.size)))
    except Exception as exc:  # the answer is "no", and this says why
        return {"supported": False, "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    if [value for value, _ in results] != [x + 1 for x in range(case.size)]:
        return {"supported": False, "reason": "wrong results"}
    if all(pid == os.getpid() for _, pid in results):
        return {"supported": False, "reason": "every call ran in the root process"}
    return {"supported": True}


def stream(system: System, case: Case) -> dict:
    """W7: a lazy map over a generator, results consumed one by one.

    Stops consuming past ``case.budget`` seconds and says so (``too_slow``), with the
    throughput reached until then.
    """
    _start_warm(system, case)
    rss_start = _peak_rss_mb()
    done = 0
    too_slow = False
    start = time.perf_counter()
    for value in system.stream(wl.square, wl.stream_items(case.size)):
        if value != done * done:
            raise AssertionError(f"W7 item {done} is out of order or wrong")
        done += 1
        if done % _BUDGET_CHECK_EVERY == 0 and time.perf_counter() - start > case.budget:
            too_slow = done < case.size
            break
    seconds = time.perf_counter() - start
    if done < case.size and not too_slow:
        raise AssertionError(f"W7 stream ended after {done} of {case.size} items")
    return {
        "seconds": seconds,
        "items": done,
        "items_per_s": done / seconds,
        "too_slow": too_slow,
        "rss_start_mb": rss_start,
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure(system: System, case: Case, since_start: Callable[[], float], main_fns: dict,
            give_up: Callable[[dict], None] | None = None) -> dict:
    """Run ``case`` on ``system`` and return its figures.

    Args:
        system: A not yet started adapter.
        case: What to run.
        since_start: Seconds since this process started (W5).
        main_fns: W6's functions defined in ``__main__``, by case id.
        give_up: Called from another thread with the figures of a W1 map past its
            budget; it reports them and ends the process.
    """
    if case.workload == "W1":
        return tiny(system, case, give_up)
    if case.workload == "W5":
        return startup(system, case, since_start)
    if case.workload == "W6":
        return portable(system, case, main_fns[case.id])
    runners = {"W2": sleepy, "W3": cpu, "W4": payload, "W7": stream}
    return runners[case.workload](system, case)
