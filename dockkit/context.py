"""What this process is in a dockkit run: the root, or one worker on one host.

Like ``multiprocessing.current_process()``, this is process-wide by nature: a
worker sets it once at start, and ``dockkit.futures``, ``dockkit.shared`` and
``dockkit.logger`` read it to know whether to use the worker's own connection
(nested tasks) or the root's default executor.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class ProcessContext:
    role: str = "root"
    host: str = field(default_factory=socket.gethostname)
    worker: str = "root"
    client: object = None          # the worker's Client for nested tasks; None in the root
    constants: dict = field(default_factory=dict)
    wait_for_constants: object = None  # in a worker: pumps its loop until a constant arrives
    progress: bool = False  # `dockkit run --progress`: futures.map shows a progress bar


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
