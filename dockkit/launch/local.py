"""Workers on this machine: a :class:`~dockkit.launch.supervisor.WorkerGroup` behind the launcher shape.

Its workers start in :meth:`LocalLauncher.prepare`, before the broker exists: an
interpreter's start-up is most of an executor's start-up time, and they import
while the broker is set up. The root itself is their host agent: it announces
them to the broker and reports each exit the moment it happens.
"""

from __future__ import annotations

import os
import sys
import threading

from dockkit.launch.base import Launcher, new_run_id
from dockkit.launch.supervisor import WorkerGroup
from dockkit.runtime.protocol import HEARTBEAT_INTERVAL, WorkerConfig, vouch


class LocalLauncher(Launcher):
    """N worker processes on this machine.

    Args:
        workers: how many (default: this machine's CPU count).
        python: their interpreter (default: this one); path: their working directory;
        env: extra environment variables; prolog: shell code run before each starts.
        allow_fork: fork them from this process where that is safe (faster; off when
            they must import the user's script afresh).
    """

    bind_address = "127.0.0.1"
    wait_at_start = False

    def __init__(self, workers: int | None = None, *, python: str | None = None,
                 path: str | None = None, env: dict | None = None, prolog: str | None = None,
                 allow_fork: bool = True):
        self.total_workers = workers or os.cpu_count() or 1
        self.path = path
        run_id = new_run_id()
        names = [(f"w{i}", f"{run_id}/w{i}") for i in range(self.total_workers)]
        self._broker = None
        self._stopped = threading.Event()
        self._group = WorkerGroup(names, on_exit=self._on_exit, python=python or sys.executable,
                                  env=env, cwd=path, prolog=prolog, allow_fork=allow_fork)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return self._group.pids

    def prepare(self) -> None:
        self._group.spawn()

    def start(self, broker, config: WorkerConfig) -> None:
        self._broker = broker
        # Local workers see this process's import path, as multiprocessing's spawn does, so
        # functions of modules imported from a path added at run time (tests, notebooks)
        # are found there too.
        broker.expect("localhost", self._group.identities)
        self._group.start(config.replace(sys_path=list(sys.path), cwd=self.path or config.cwd))
        threading.Thread(target=self._vouch, name="dockkit-vouch", daemon=True).start()

    def _vouch(self) -> None:
        """Tell the broker, every heartbeat, which workers are running (see ``protocol.vouch``)."""
        while not self._stopped.wait(HEARTBEAT_INTERVAL):
            try:
                self._broker.send_local(vouch(self._group.running_identities()))
            except Exception:  # the broker is gone: the executor is ending or broken
                return

    def _on_exit(self, identity: str, reason: str) -> None:
        if self._broker is not None:
            self._broker.report_exit(identity, reason)

    def stop(self) -> None:
        self._stopped.set()
        self._group.stop()
