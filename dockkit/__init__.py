"""dockkit: spread an ordinary Python ``map`` over many cores, SSH hosts and containers.

``dockkit.futures`` has SCOOP's names (``map``, ``submit``, ``mapReduce`` …);
``dockkit.Executor`` is a standard ``concurrent.futures.Executor``. The Docker
cluster (``dockkit.Cluster``) loads docker-py only when first used.
"""

from __future__ import annotations

from dockkit.errors import (BrokenExecutor, DockkitError, RemoteError, SerializationError,
                     TimeoutError, WorkerLostError)

__version__ = "0.1.0"

__all__ = ["Executor", "Cluster", "DockkitError", "BrokenExecutor", "RemoteError",
           "SerializationError", "TimeoutError", "WorkerLostError", "futures", "shared", "logger"]


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
    if name == "logger":
        from dockkit.log import logger

        return logger
    raise AttributeError(f"module 'dockkit' has no attribute {name!r}")
