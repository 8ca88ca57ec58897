"""What this process is in a dockkit run: the root, or one worker on one host.

Like ``multiprocessing.current_process()``, this is process-wide by nature: a
worker sets it once at start, and ``dockkit.futures``, ``dockkit.shared`` and
``dockkit.logger`` read it to know whether to use the worker's own connection
(nested tasks) or the root's default executor.
"""

from __future__ import annotations

import os
import socket
import threading

from dockkit.errors import ConstantRedefinedError, UnguardedScriptError


class ProcessContext:
    __slots__ = ("role", "host", "worker", "client", "constants", "wait_for_constants", "progress",
                 "launched", "size", "debug", "importing_script")

    def __init__(self):
        self.role = "root"
        self.launched = False           # under `dockkit run` or `python -m dockkit` (SCOOP's IS_RUNNING)
        self.size = None                # a worker's run size; the root asks its executor
        self.debug = debug_requested()
        self.host = socket.gethostname()
        self.worker = "root"
        self.client = None              # the worker's Client for nested tasks; None in the root
        self.constants: dict = {}
        self.wait_for_constants = _wait_in_root  # in a worker: pumps its loop until one arrives
        self.progress = False           # `dockkit run --progress`: futures.map shows a progress bar
        self.importing_script = None    # in a worker: the script's path while it imports it


#: Notified whenever constants arrive: what a root's getConst waits on (the broker thread
#: records the constants a task sets). A worker waits by running its loop instead.
_constants_arrived = threading.Condition()


def _wait_in_root(predicate, timeout) -> bool:
    with _constants_arrived:
        return _constants_arrived.wait_for(predicate, timeout)


def add_constants(values: dict) -> None:
    """Record shared constants set here or sent by the broker; wakes a getConst waiting for them."""
    with _constants_arrived:
        _current.constants.update(values)
        _constants_arrived.notify_all()


def debug_requested() -> bool:
    """Whether ``DOCKKIT_DEBUG`` turns debugging on: any value but "", "0", "false", "no"
    and "off" (in any case), so that ``DOCKKIT_DEBUG=0`` means off."""
    return os.environ.get("DOCKKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


_current = ProcessContext()


def current() -> ProcessContext:
    """The context of this process."""
    return _current


def become_worker(*, host: str, worker: str, client, wait_for_constants, size: int,
                  debug: bool) -> ProcessContext:
    """Mark this process as a worker; called once by the worker's main."""
    _current.role = "worker"
    _current.launched = True
    _current.size = size
    _current.debug = debug
    _current.host = host
    _current.worker = worker
    _current.client = client
    _current.wait_for_constants = wait_for_constants
    return _current


def refuse_tasks_while_importing() -> None:
    """Raise UnguardedScriptError if this worker is importing the script right now: the
    script's top level asked for tasks (or an executor) outside its main guard. Every
    worker would do the same, and each would wait for the others forever."""
    path = _current.importing_script
    if path:
        name = os.path.basename(path)
        raise UnguardedScriptError(
            f"{name} starts dockkit tasks at its top level, and so did each worker that imported "
            f"it for its definitions (as multiprocessing's spawn does). Put {name}'s main code "
            f"under `if __name__ == \"__main__\":`.")


def check_new_constants(values: dict, known) -> None:
    """Constants are read-only: refuse any name already in ``known``."""
    taken = sorted(set(values) & set(known))
    if taken:
        raise ConstantRedefinedError(f"shared constants are read-only; already set: {', '.join(taken)}")
