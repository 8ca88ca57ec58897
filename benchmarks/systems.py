"""One adapter per system under test: ``start`` / ``map`` / ``stream`` / ``stop``.

Every adapter imports its library inside :meth:`System.start`, never at import time:
the orchestrator imports this module for the names only, and W5 times the import.
The harness's own imports are kept light for the same reason (W5's clock starts
before them): ``importlib.metadata`` alone took 30 ms here.
A library that is missing or too old raises :class:`Unavailable`, which the suite
reports as "not available: <why>" instead of failing.

``map`` is each system's ordinary map, as its documentation shows it (defaults left
alone). ``stream`` is its streaming form for W7: a lazy iterator where the system
has one, else windows of :data:`~benchmarks.workloads.STREAM_WINDOW` items.
"""

from __future__ import annotations

import os
import platform
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from benchmarks.workloads import STREAM_CHUNKSIZE, STREAM_WINDOW


class Unavailable(Exception):
    """The system cannot be used here; the message says why."""


def _require(module: str, fix: str = "pip install the 'bench' extra"):
    """Import ``module`` or raise :class:`Unavailable` naming the install to do."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise Unavailable(f"{exc} ({fix})") from exc


def _windowed(submit: Callable, collect: Callable, items: Iterable, window: int) -> Iterator:
    """Yield results in order, keeping at most two windows of items in flight."""
    source = iter(items)
    pending: deque = deque()
    while True:
        chunk = list(islice(source, window))
        if chunk:
            pending.append(submit(chunk))
        if not pending:
            return
        if chunk and len(pending) < 2:
            continue
        yield from collect(pending.popleft())


class System:
    """Base adapter; a context manager over :meth:`start` and :meth:`stop`."""

    name = ""
    label = ""
    dist = ""  # the distribution whose version is reported
    map_api = ""
    stream_api = ""
    launched = False  # True: the run must happen under the system's own launcher
    start_cost = 0  # rough seconds to start; --quick runs the cheap systems first

    def __init__(self) -> None:
        self.workers = 0

    def probe(self) -> str:
        """Import the library and return its version; raise :class:`Unavailable` if not."""
        from importlib import metadata  # here, not at the top: W5 would time its import

        _require(self.dist)
        return metadata.version(self.dist)

    def start(self, workers: int) -> None:
        raise NotImplementedError

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        raise NotImplementedError

    def stream(self, fn: Callable, items: Iterable) -> Iterator:
        return self.map(fn, items)

    def stop(self) -> None:
        """Release the workers; safe to call twice and after a failed start."""

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Dockkit(System):
    name = label = "dockkit"
    dist = "dockkit"
    map_api = "Executor(workers=n).map(fn, items, chunksize=None)"
    stream_api = "the same (automatic batching)"

    def __init__(self) -> None:
        super().__init__()
        self._executor = None

    def _executor_class(self):
        dockkit = _require("dockkit", "pip install -e .")
        try:
            return dockkit.Executor
        except (AttributeError, ImportError) as exc:
            raise Unavailable(f"dockkit.Executor cannot be imported: {exc}") from exc

    def probe(self) -> str:
        from importlib import metadata

        self._executor_class()
        try:
            return metadata.version("dockkit")
        except metadata.PackageNotFoundError:
            return "source tree"

    def start(self, workers: int) -> None:
        self.workers = workers
        self._executor = self._executor_class()(workers=workers)

    def map(self, fn, items):
        return self._executor.map(fn, items, chunksize=None)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class Pool(System):
    name = "pool"
    label = "mp.Pool"
    map_api = "multiprocessing.Pool(n).map(fn, items) (default chunking)"
    stream_api = f"Pool.imap(fn, items, chunksize={STREAM_CHUNKSIZE})"

    def __init__(self) -> None:
        super().__init__()
        self._pool = None

    def probe(self) -> str:
        return f"Python {platform.python_version()}"

    def start(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self._pool = multiprocessing.Pool(workers)

    def map(self, fn, items):
        return iter(self._pool.map(fn, items))

    def stream(self, fn, items):
        return self._pool.imap(fn, items, chunksize=STREAM_CHUNKSIZE)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


class ProcessPool(System):
    name = "processpool"
    label = "ProcessPool"
    map_api = "concurrent.futures.ProcessPoolExecutor(n).map(fn, items) (chunksize=1)"
    stream_api = (
        f"ProcessPoolExecutor.map(fn, items, chunksize={STREAM_CHUNKSIZE}) "
        "(submits the whole input before the first result)"
    )

    def __init__(self) -> None:
        super().__init__()
        self._executor = None

    def probe(self) -> str:
        return f"Python {platform.python_version()}"

    def _make(self, workers: int):
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(workers)

    def start(self, workers: int) -> None:
        self.workers = workers
        self._executor = self._make(workers)

    def map(self, fn, items):
        return self._executor.map(fn, items)

    def stream(self, fn, items):
        return self._executor.map(fn, items, chunksize=STREAM_CHUNKSIZE)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class Loky(ProcessPool):
    name = "loky"
    label = "loky"
    dist = "loky"
    start_cost = 1
    map_api = "loky.get_reusable_executor(max_workers=n).map(fn, items) (chunksize=1)"
    stream_api = (
        f"the same with chunksize={STREAM_CHUNKSIZE} "
        "(submits the whole input before the first result)"
    )

    def probe(self) -> str:
        return System.probe(self)

    def _make(self, workers: int):
        loky = _require("loky")
        return loky.get_reusable_executor(max_workers=workers)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, kill_workers=True)
            self._executor = None


class Dask(System):
    name = "dask"
    label = "Dask"
    dist = "distributed"
    start_cost = 3
    map_api = (
        "Client(LocalCluster(n_workers=n, threads_per_worker=1)); "
        "client.gather(client.map(fn, items, pure=False))"
    )
    stream_api = f"the same over windows of {STREAM_WINDOW} items, two in flight"

    def __init__(self) -> None:
        super().__init__()
        self._cluster = self._client = None

    def start(self, workers: int) -> None:
        import logging

        distributed = _require("distributed")
        self.workers = workers
        self._cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self._client = distributed.Client(self._cluster)

    def map(self, fn, items):
        return iter(self._client.gather(self._client.map(fn, list(items), pure=False)))

    def stream(self, fn, items):
        def submit(chunk):
            return self._client.map(fn, chunk, pure=False)

        return _windowed(submit, self._client.gather, items, STREAM_WINDOW)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


class Ray(System):
    name = "ray"
    label = "Ray"
    dist = "ray"
    start_cost = 6
    map_api = "ray.init(num_cpus=n); ray.get([ray.remote(fn).remote(x) for x in items])"
    stream_api = f"the same over windows of {STREAM_WINDOW} items, two in flight"

    def __init__(self) -> None:
        super().__init__()
        self._ray = None
        self._remote: dict = {}

    def probe(self) -> str:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return super().probe()

    def start(self, workers: int) -> None:
        import logging

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = _require("ray")
        self.workers = workers
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        self._ray = ray

    def _remote_fn(self, fn):
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        return self._remote[fn]

    def map(self, fn, items):
        remote = self._remote_fn(fn)
        return iter(self._ray.get([remote.remote(x) for x in items]))

    def stream(self, fn, items):
        remote = self._remote_fn(fn)

        def submit(chunk):
            return [remote.remote(x) for x in chunk]

        return _windowed(submit, self._ray.get, items, STREAM_WINDOW)

    def stop(self) -> None:
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None


class Scoop(System):
    name = "scoop"
    label = "SCOOP"
    dist = "scoop"
    map_api = "python -m scoop -n N script.py; scoop.futures.map(fn, items)"
    stream_api = f"the same over windows of {STREAM_WINDOW} items, two in flight"
    launched = True
    start_cost = 1

    def __init__(self) -> None:
        super().__init__()
        self._futures = None

    def start(self, workers: int) -> None:
        # The launcher started the workers (``-n``) before this process ran.
        scoop = _require("scoop")
        if not scoop.IS_RUNNING:
            raise RuntimeError("SCOOP runs only under its launcher: python -m scoop -n N")
        from scoop import futures

        self.workers = workers
        self._futures = futures

    def map(self, fn, items):
        return self._futures.map(fn, items)

    def stream(self, fn, items):
        def submit(chunk):
            return [self._futures.submit(fn, x) for x in chunk]

        def collect(pending):
            return [future.result() for future in pending]

        return _windowed(submit, collect, items, STREAM_WINDOW)


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Dockkit, Pool, ProcessPool, Loky, Dask, Ray, Scoop)
}
