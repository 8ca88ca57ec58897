"""dockkit: spread an ordinary Python ``map`` over many cores, SSH hosts and containers.

``dockkit.futures`` has SCOOP's names (``map``, ``submit``, ``mapReduce`` …);
``dockkit.Executor`` is a standard ``concurrent.futures.Executor``. The Docker
cluster (``dockkit.Cluster``) loads docker-py only when first used.

SCOOP's module attributes, so that ``import dockkit as scoop`` serves its programs:

- ``SIZE``: the number of workers of the current run (in the root, that of the
  executor behind ``dockkit.futures``, which starts it if it is not running);
- ``IS_RUNNING``: true under ``dockkit run`` or ``python -m dockkit``, and in tasks;
- ``IS_ORIGIN``: true in the root process, false in tasks;
- ``worker``: this process's worker name: ``"w3"`` for a local worker, ``"host:w3"``
  for one on an SSH host, a cluster node or a SLURM node (numbered per host), and
  ``"root"`` in the root;
- ``DEBUG``: true when debugging is on (``--debug``, or ``DOCKKIT_DEBUG`` set to
  anything but ``0``, ``false``, ``no``, ``off`` or nothing).

They are computed when read, and listed by ``dir(dockkit)`` and ``__all__``; ``from
dockkit import *`` binds their values at that moment (``SIZE`` in the root starts the
workers, as reading it does).
"""

from __future__ import annotations

from dockkit.errors import (BrokenExecutor, DockkitError, RemoteError, SerializationError,
                     TimeoutError, WorkerLostError)
from dockkit.version import __version__

__all__ = ["Executor", "Cluster", "DockkitError", "BrokenExecutor", "RemoteError",
           "SerializationError", "TimeoutError", "WorkerLostError", "futures", "shared", "logger",
           "SIZE", "IS_RUNNING", "IS_ORIGIN", "worker", "DEBUG"]


def __dir__():  # the lazy names too (PEP 562), SCOOP's module attributes among them
    return sorted(set(globals()) | set(__all__))


def __getattr__(name):  # lazy: workers import only what they use; no docker, paramiko or rich
    if name == "Executor":
        from dockkit.executor import Executor

        return Executor
    if name == "Cluster":
        from dockkit.cluster.cluster import Cluster

        return Cluster
    if name in ("futures", "shared"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in _SCOOP_ATTRIBUTES:
        return _SCOOP_ATTRIBUTES[name]()
    if name == "logger":
        from dockkit.log import logger

        return logger
    raise AttributeError(f"module 'dockkit' has no attribute {name!r}")


def _size() -> int:
    from dockkit.runtime.context import current

    context = current()
    if context.size is not None:
        return context.size
    from dockkit.executor import default_executor

    return default_executor().workers


def _context():
    from dockkit.runtime.context import current

    return current()


_SCOOP_ATTRIBUTES = {
    "SIZE": _size,
    "IS_RUNNING": lambda: _context().launched,
    "IS_ORIGIN": lambda: _context().role == "root",
    "worker": lambda: _context().worker,
    "DEBUG": lambda: _context().debug,
}
