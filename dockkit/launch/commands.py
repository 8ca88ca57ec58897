"""Shell command lines for remote hosts, built as pure functions (no I/O, no paramiko).

The command line of a remote process is visible to every user of that host
(``ps``), so nothing secret ever goes into one: secrets travel on stdin.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from dockkit.errors import ConfigError

__all__ = ["remote_command", "python_command", "with_prolog", "exports"]

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


def with_prolog(prolog: str | None, command: str) -> str:
    """Return ``command`` preceded by the shell code ``prolog``, run only if the prolog succeeds.

    Braces keep a multi-command prolog one step; the newline lets it end in ``;`` or a
    ``#`` comment. Without a prolog (None or blank) the command is returned unchanged.
    """
    if not prolog or not prolog.strip():
        return command
    return "{ " + prolog.strip() + "\n} && " + command


def python_command(
    python: str,
    args: Sequence[str],
    *,
    cwd: str | None = None,
    prolog: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Build the POSIX shell command that runs ``python ARGS`` on a host.

    The result looks like ``cd DIR && { PROLOG
    } && K=V exec python ARGS``: each step must succeed, and ``exec`` makes
    Python take over the shell's PID (and process group). The launcher's probe
    and the agent both come from here, so a probe that passes means the agent
    starts the same way.

    Args:
        python: The remote interpreter, e.g. ``"python3"`` or ``"~/venv/bin/python"``.
        args: The interpreter's arguments, e.g. ``["-m", "dockkit.launch.agent"]`` or ``["-c", CODE]``.
        cwd: Directory to run in (``~/`` is the remote home), or None to stay in the home.
        prolog: Shell code run first, unquoted, e.g. ``"source ~/venv/bin/activate"``.
        env: Non-secret environment variables for Python.

    Returns:
        The command line.

    Raises:
        ConfigError: ``args`` is empty or an environment name is invalid.
    """
    if not args:
        raise ConfigError("python_command needs arguments for the interpreter")
    env_part = exports(env)
    argv = " ".join(shlex.quote(arg) for arg in args)
    command = with_prolog(prolog, f"{env_part + ' ' if env_part else ''}exec {_quote_path(python)} {argv}")
    return f"cd {_quote_path(cwd)} && {command}" if cwd else command


def remote_command(
    python: str,
    module_args: Sequence[str],
    *,
    cwd: str | None = None,
    prolog: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Build the shell command that runs ``python -m MODULE ARGS`` on a host (see :func:`python_command`).

    Args:
        module_args: The module and its arguments, e.g. ``["dockkit.launch.agent", "--port", "5"]``.

    Raises:
        ConfigError: ``module_args`` is empty or an environment name is invalid.
    """
    if not module_args:
        raise ConfigError("remote_command needs a module to run")
    return python_command(python, ["-m", *module_args], cwd=cwd, prolog=prolog, env=env)
