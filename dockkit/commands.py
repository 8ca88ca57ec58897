"""Shell command lines for remote hosts, built as pure functions (no I/O, no paramiko).

The command line of a remote process is visible to every user of that host
(``ps``), so nothing secret ever goes into one: secrets travel on stdin.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from dockkit.errors import ConfigError

__all__ = ["remote_command", "exports"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _quote_path(path: str) -> str:
    """shlex.quote, but keep a leading ``~/`` meaning the remote home directory."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def exports(env: Mapping[str, str] | None) -> str:
    parts = []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise ConfigError(f"bad environment variable name {name!r}")
        parts.append(f"{name}={shlex.quote(str(value))}")
    return " ".join(parts)


def remote_command(
    python: str,
    module_args: Sequence[str],
    *,
    cwd: str | None = None,
    prolog: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Build the POSIX shell command that runs ``python -m MODULE ARGS`` on a host.

    The result looks like ``cd DIR && { PROLOG
    } && K=V exec python -m dockkit.agent ...``: each step must succeed, and
    ``exec`` makes Python take over the shell's PID (and process group). The
    command line is visible to every user of the host (``ps``), so secrets
    must never be passed here: send them on stdin.

    Args:
        python: The remote interpreter, e.g. ``"python3"`` or ``"~/venv/bin/python"``.
        module_args: The module and its arguments, e.g. ``["dockkit.agent", "--port", "5"]``.
        cwd: Directory to run in (``~/`` is the remote home), or None to stay in the home.
        prolog: Shell code run first, unquoted, e.g. ``"source ~/venv/bin/activate"``.
        env: Non-secret environment variables for Python.

    Returns:
        The command line.

    Raises:
        ConfigError: ``module_args`` is empty or an environment name is invalid.
    """
    if not module_args:
        raise ConfigError("remote_command needs a module to run")
    steps = []
    if cwd:
        steps.append(f"cd {_quote_path(cwd)}")
    if prolog and prolog.strip():
        # Braces keep a multi-command prolog one step; the newline lets it end in ';' or '#'.
        steps.append("{ " + prolog.strip() + "\n}")
    env_part = exports(env)
    argv = " ".join(shlex.quote(arg) for arg in module_args)
    steps.append(f"{env_part + ' ' if env_part else ''}exec {_quote_path(python)} -m {argv}")
    return " && ".join(steps)
