"""The one shape every launcher has.

A launcher starts a run's workers and stops them; the executor drives it the same
way whatever it is::

    launcher = make_launcher(workers, hosts=...)   # or LocalLauncher(...), SSHLauncher(...), ...
    launcher.prepare()                 # what may begin before the broker exists
    broker = Broker(host=launcher.bind_address, ...)
    launcher.start(broker, config)     # workers connect out to the broker
    ...
    launcher.stop()                    # polite, then forced; idempotent

Attributes every launcher has:
    bind_address: the address the broker must bind for these workers to reach it.
    total_workers: how many workers it starts.
    wait_at_start: whether the executor waits for every worker before it returns
        (remote launches do: a failed host must fail the executor, not a later task).
    pids: the process ids of its workers on this machine (empty by default: workers
        that run elsewhere).

This module imports no launcher: every launcher imports it. Which one a run gets is
decided in :mod:`dockkit.launch.choose`. New ways to start workers (a batch
scheduler's ``srun``, a Swarm service) plug in here: nothing in the runtime or the
executor changes.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from dockkit.runtime.protocol import WorkerConfig


class Launcher(Protocol):
    bind_address: str
    total_workers: int
    wait_at_start: bool

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, where they run on this machine; empty otherwise."""
        return []

    def prepare(self) -> None:
        """Begin what can begin before the broker exists (start interpreters, connect)."""

    def start(self, broker, config: WorkerConfig) -> None:
        """Start the workers, announcing them with ``broker.expect``; report exits with
        ``broker.report_exit``. Raises LaunchError when they cannot be started."""

    def stop(self) -> None:
        """Stop every worker: polite first, then forced. Idempotent; safe before start()."""


def new_run_id() -> str:
    """A short id that makes this run's worker identities unique at its broker."""
    return uuid.uuid4().hex[:8]
