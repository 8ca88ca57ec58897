"""The choice of launcher for a run: srun, SSH or local processes, from an executor's arguments.

Kept apart from the interface (:mod:`dockkit.launch.base`) because it imports every
implementation, and every implementation imports the interface. Each is imported only
when chosen: a local run never loads paramiko.
"""

from __future__ import annotations

from dockkit.errors import ConfigError
from dockkit.launch.base import Launcher

LOCAL_OPTIONS = ("python", "path", "env", "prolog")


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
