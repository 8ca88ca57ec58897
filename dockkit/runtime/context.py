"""What this process is in a dockkit run: the root, or one worker on one host.

Like ``multiprocessing.current_process()``, this is process-wide by nature: a
worker sets it once at start, and ``dockkit.futures``, ``dockkit.shared`` and
``dockkit.logger`` read it to know whether to use the worker's own connection
(nested tasks) or the root's default executor.
"""

from __future__ import annotations

import socket


class ProcessContext:
    __slots__ = ("role", "host", "worker", "client", "constants", "wait_for_constants", "progress")

    def __init__(self):
        self.role = "root"
        self.host = socket.gethostname()
        self.worker = "root"
        self.client = None              # the worker's Client for nested tasks; None in the root
        self.constants: dict = {}
        self.wait_for_constants = None  # in a worker: pumps its loop until a constant arrives
        self.progress = False           # `dockkit run --progress`: futures.map shows a progress bar


_current = ProcessContext()


def current() -> ProcessContext:
    """The context of this process."""
    return _current


def become_worker(*, host: str, worker: str, client, wait_for_constants) -> ProcessContext:
    """Mark this process as a worker; called once by the worker's main."""
    _current.role = "worker"
    _current.host = host
    _current.worker = worker
    _current.client = client
    _current.wait_for_constants = wait_for_constants
    return _current
