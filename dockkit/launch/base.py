"""The one shape every launcher has, and the choice of launcher for a run.

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

New ways to start workers (a batch scheduler's ``srun``, a Swarm service) plug in
here: nothing in the runtime or the executor changes.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from dockkit.errors import ConfigError
from dockkit.runtime.protocol import WorkerConfig

LOCAL_OPTIONS = ("python", "path", "env", "prolog")


class Launcher(Protocol):
    bind_address: str
    total_workers: int
    wait_at_start: bool

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


def make_launcher(workers: int | None = None, *, hosts=None, hostfile=None, script: bool = False,
                  launcher: str | None = None, **options) -> Launcher:
    """The launcher for an executor's arguments: srun or SSH when asked or hosts are given, else local.

    Args:
        workers: the total worker count (``-n``); None for the default.
        hosts, hostfile: SSH hosts (or a SLURM job's nodes); without them the workers
            run on this machine.
        script: the workers import a script (they must start as fresh interpreters).
        launcher: ``"srun"`` (inside a SLURM job: one job step, no SSH) or ``"ssh"``;
            None picks SSH when hosts are given, else local processes.
        **options: the launcher's own options (python, path, env, prolog; for SSH also
            tunnel, ssh_config, ...).

    Raises:
        ConfigError: an unknown launcher, or an option the chosen launcher does not take.
    """
    if launcher not in (None, "ssh", "srun"):
        raise ConfigError(f"unknown launcher {launcher!r}: use 'ssh' or 'srun'")
    if launcher == "srun":
        from dockkit.launch.srun import OPTIONS, SrunLauncher

        _refuse(options, OPTIONS, "the srun launcher")
        return SrunLauncher(hosts=hosts, hostfile=hostfile, workers=workers, **options)
    if hosts or hostfile or launcher == "ssh":
        from dockkit.launch.ssh.launcher import SSHLauncher  # only remote runs load paramiko

        return SSHLauncher(hosts=hosts, hostfile=hostfile, workers=workers, **options)
    _refuse(options, LOCAL_OPTIONS, "local workers (give hosts=)")
    from dockkit.launch.local import LocalLauncher

    return LocalLauncher(workers, allow_fork=not script,
                         **{key: options[key] for key in LOCAL_OPTIONS if key in options})


def _refuse(options: dict, allowed, what: str) -> None:
    unknown = sorted(key for key, value in options.items() if value and key not in allowed)
    if unknown:
        raise ConfigError(f"options {unknown} do not apply to {what}")
