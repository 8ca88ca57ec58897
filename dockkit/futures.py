"""SCOOP's ``futures`` API, with SCOOP's bugs fixed, over one reusable executor.

In the root process these functions use :func:`dockkit.executor.default_executor`
(local workers unless ``dockkit run`` configured hosts). Inside a task they use
the worker's own connection, so tasks can submit and wait on tasks: waiting runs
other tasks meanwhile instead of blocking a worker.

The futures are standard ``concurrent.futures.Future`` objects; ``wait`` returns
failed futures instead of raising, and every timeout is honoured.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import time
import warnings

from dockkit.runtime.context import current, refuse_tasks_while_importing
from dockkit.errors import TimeoutError
from dockkit.executor import default_executor, shutdown_default

FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED
_NOTHING = object()
_warned_options: set[str] = set()

__all__ = ["map", "map_as_completed", "submit", "as_completed", "wait", "mapReduce", "mapScan",
           "shutdown", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"]


def _worker_client():
    refuse_tasks_while_importing()
    return current().client


def _ignore_options(options: dict, function: str) -> None:
    """SCOOP ignores keywords it does not know (``parallelLevel=2``); so do we, saying so once.

    Once per run: the root warns, once per keyword; workers never do, or a nested call in
    a task would print the same warning from every worker. Each public function calls
    this itself, so that the warning points at its caller's line (``stacklevel``).
    """
    if not options or current().role == "worker":
        return
    new = sorted(set(options) - _warned_options)
    if new:
        _warned_options.update(new)
        warnings.warn(f"dockkit ignores these futures.{function} options: {', '.join(new)}",
                      stacklevel=3)


def _blocking(timeout):
    """SCOOP's timeouts: a negative one (its default, -1) means wait as long as it takes."""
    return None if timeout is not None and timeout < 0 else timeout


def map(func, *iterables, timeout=None, chunksize=None, progress=None, **ignored):  # noqa: A001
    """Apply ``func`` to every item, on the workers; results in input order (SCOOP's name).

    Inputs are read lazily as workers free up, so endless generators work; batching
    adapts to task time unless ``chunksize`` is given. ``progress=True`` shows a
    progress bar on a terminal. Other keywords (SCOOP's ``parallelLevel``, say) are
    ignored with a warning (from the root, once), never passed to ``func``.

    Raises:
        The first failing task's exception (with the remote traceback as ``__cause__``),
        when iteration reaches it; the remaining tasks are cancelled.
    """
    _ignore_options(ignored, "map")
    return _map(func, iterables, timeout, chunksize, progress)


def _map(func, iterables, timeout, chunksize, progress):
    timeout = _blocking(timeout)
    client = _worker_client()
    if client is not None:
        return client.map(func, iterables, timeout=timeout, chunksize=chunksize)
    if progress is None:
        progress = current().progress
    return default_executor().map(func, *iterables, timeout=timeout, chunksize=chunksize,
                                  progress=progress)


def map_as_completed(func, *iterables, timeout=None, chunksize=None, **ignored):
    """Like :func:`map`, but yields results in completion order."""
    _ignore_options(ignored, "map_as_completed")
    timeout = _blocking(timeout)
    client = _worker_client()
    if client is not None:
        return client.map(func, iterables, timeout=timeout, chunksize=chunksize, ordered=False)
    return default_executor().map_as_completed(func, *iterables, timeout=timeout, chunksize=chunksize)


def submit(func, *args, **kwargs) -> concurrent.futures.Future:
    """Run ``func(*args, **kwargs)`` on a worker; returns a Future."""
    client = _worker_client()
    if client is not None:
        return client.submit(func, args, kwargs)
    return default_executor().submit(func, *args, **kwargs)


def _pump_until(predicate, timeout) -> None:
    """Inside a worker, run other tasks until ``predicate()`` holds (or time is up)."""
    client = _worker_client()
    if client is not None:
        client.waiter.wait(predicate, timeout)


def wait(fs, timeout=None, return_when=ALL_COMPLETED):
    """Wait for futures; returns ``(done, not_done)`` sets, failed futures included in done.

    A negative ``timeout`` (SCOOP's default is -1) waits as long as it takes, as None does.
    """
    fs = set(fs)
    timeout = _blocking(timeout)

    def finished():
        done = [f for f in fs if f.done()]
        if return_when == FIRST_COMPLETED:
            return bool(done)
        if return_when == FIRST_EXCEPTION and any(
                not f.cancelled() and f.exception(timeout=0) is not None for f in done):
            return True
        return len(done) == len(fs)

    _pump_until(finished, timeout)
    return concurrent.futures.wait(fs, timeout=0 if _worker_client() else timeout,
                                   return_when=return_when)


def as_completed(fs, timeout=None):
    """Yield futures as they finish; TimeoutError if ``timeout`` passes first (negative: never)."""
    timeout = _blocking(timeout)
    if _worker_client() is None:
        yield from concurrent.futures.as_completed(fs, timeout=timeout)
        return
    pending = set(fs)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        _pump_until(lambda: any(f.done() for f in pending), left)
        done = {f for f in pending if f.done()}
        if not done:
            raise TimeoutError(f"{len(pending)} (of {len(fs)}) futures unfinished")
        pending -= done
        yield from done


def mapReduce(mapFunc, reductionOp, *iterables, initial=_NOTHING, timeout=None,  # noqa: N802,N803
              chunksize=None, progress=None, **ignored):
    """``functools.reduce(reductionOp, map(mapFunc, *iterables))``, the map on the workers.

    Works for every input length: with ``initial`` an empty input gives ``initial``;
    without it, an empty input raises TypeError as ``functools.reduce`` does.
    ``timeout``, ``chunksize``, ``progress`` and ignored keywords are :func:`map`'s.
    """
    _ignore_options(ignored, "mapReduce")
    results = _map(mapFunc, iterables, timeout, chunksize, progress)
    if initial is _NOTHING:
        initial = next(results, _NOTHING)  # peek, rather than guess from reduce's TypeError
        if initial is _NOTHING:
            raise TypeError("mapReduce() of an empty input needs initial=")
    return functools.reduce(reductionOp, results, initial)


def mapScan(mapFunc, reductionOp, *iterables, initial=_NOTHING, timeout=None,  # noqa: N802,N803
            chunksize=None, progress=None, **ignored):
    """The running reductions of the mapped results: a list as long as the input.

    ``timeout``, ``chunksize``, ``progress`` and ignored keywords are :func:`map`'s.
    """
    _ignore_options(ignored, "mapScan")
    results = _map(mapFunc, iterables, timeout, chunksize, progress)
    if initial is _NOTHING:
        return list(itertools.accumulate(results, reductionOp))
    return list(itertools.accumulate(results, reductionOp, initial=initial))[1:]


def shutdown(wait=True):  # noqa: A002 - stdlib's name
    """Stop the default executor and its workers (a new one starts on next use)."""
    shutdown_default(wait=wait)
