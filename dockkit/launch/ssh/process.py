"""Commands running on a host: :class:`RemoteProcess` and its stdin.

Stopping a remote process: sshd starts each command in its own session
(``setsid``), so the command's shell PID is also its process group id.
:func:`pgid_reporting_command` has the shell report ``$$`` first, and
:meth:`RemoteProcess.kill` signals that whole group (TERM, then KILL) before
closing the channel. Closing the channel alone only gives the process EOF on
stdin (sshd sends SIGHUP to pty sessions only, and we use none, to keep stdin
binary-clean); the dockkit agent also exits on stdin EOF, as a backstop.
Remote login shells are assumed to be POSIX shells (sh, dash, bash, zsh).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping

import paramiko

from dockkit.errors import TimeoutError as DockkitTimeoutError
from dockkit.launch.commands import exports as _exports
from dockkit.launch.ssh.channels import sendall
from dockkit.launch.ssh.target import SSHTarget, translate

__all__ = ["RemoteProcess", "pgid_reporting_command"]


_PGID_MARKER = "__dockkit_pgid__"


def pgid_reporting_command(cmd: str, env: Mapping[str, str] | None = None) -> str:
    """The shell line that runs ``cmd`` after exporting ``env`` and reporting its process group.

    :class:`RemoteProcess` reads the report off stdout; :meth:`RemoteProcess.kill` needs it.

    Raises:
        ConfigError: An environment variable name is invalid.
    """
    exports = _exports(env)
    return f"echo {_PGID_MARKER} $$; " + (f"export {exports}; " if exports else "") + cmd


class RemoteProcess:
    """A command started by :meth:`dockkit.launch.ssh.connection.SSHConnection.start`.

    Args:
        target: The host it runs on, for messages.
        channel: Its session channel, the command already executed.
        signal_group: Sends a signal (``"TERM"``, ``"KILL"``) to a process group on the
            host, over the same connection; False when it could not.
        on_stdout: Called with each stdout line, or None to queue lines for :meth:`lines`.
        on_stderr: The same for stderr.
        on_end: Called with the process once it has ended or been killed.

    Attributes:
        stdin: Binary file-like: ``write(bytes)``, ``flush()``, ``close()`` (sends EOF).
        pgid: The remote process group id, once reported (None before or if unknown).
    """

    def __init__(
        self,
        target: SSHTarget,
        channel: paramiko.Channel,
        on_stdout: Callable[[str], None] | None,
        on_stderr: Callable[[str], None] | None,
        on_end: Callable[[RemoteProcess], None],
        signal_group: Callable[[str, int], bool],
    ):
        self._target, self._channel, self._on_end = target, channel, on_end
        self._signal_group = signal_group
        self.stdin = _Stdin(channel, target)
        self.pgid: int | None = None
        self._pgid_known = threading.Event()
        self._queues = {"stdout": queue.SimpleQueue(), "stderr": queue.SimpleQueue()}
        self._readers = [
            threading.Thread(target=self._read, args=(channel.makefile("rb"), "stdout", on_stdout), daemon=True),
            threading.Thread(target=self._read, args=(channel.makefile_stderr("rb"), "stderr", on_stderr), daemon=True),
        ]  # fmt: skip
        for reader in self._readers:
            reader.start()

    def _read(self, stream, name: str, callback) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if name == "stdout" and not self._pgid_known.is_set() and line.startswith(_PGID_MARKER):
                    self.pgid = int(line.split()[1])
                    self._pgid_known.set()
                elif callback is not None:
                    callback(line)
                else:
                    self._queues[name].put(line)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            self._queues[name].put(None)
            if name == "stdout":
                self._pgid_known.set()  # no marker will come now

    def lines(self, stream: str = "stdout") -> Iterator[str]:
        """Yield the lines of ``"stdout"`` or ``"stderr"`` as they arrive, until EOF.

        Only without an ``on_stdout``/``on_stderr`` callback for that stream.
        """
        while (line := self._queues[stream].get()) is not None:
            yield line
        self._queues[stream].put(None)  # a second iteration ends at once too

    @property
    def exit_status(self) -> int | None:
        """None while running; then its exit status, -1 if killed by a signal or lost."""
        return self._channel.exit_status if self._channel.status_event.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end and its output to be delivered.

        Args:
            timeout: Seconds to wait, or None for no limit.

        Returns:
            The exit status; -1 if it was killed by a signal or the connection was lost.

        Raises:
            dockkit.errors.TimeoutError: Still running after ``timeout`` seconds.
        """
        if not self._channel.status_event.wait(timeout):
            raise DockkitTimeoutError(f"{self._target.where}: remote process still running after {timeout} s")
        for reader in self._readers:
            reader.join(timeout)
        self._on_end(self)
        return self._channel.exit_status

    def kill(self, grace: float = 2.0) -> None:
        """Stop it politely (SIGTERM to its process group), then by force (SIGKILL), then close.

        Idempotent; never raises (a dead connection means the host sees EOF instead).
        """
        self._pgid_known.wait(grace)
        for signal in ("TERM", "KILL"):
            if self.exit_status is not None or self.pgid is None:
                break
            if not self._signal_group(signal, self.pgid):
                break
            self._channel.status_event.wait(grace)
        self._channel.close()
        for reader in self._readers:
            reader.join(grace)
        self._on_end(self)


class _Stdin:
    """The write end of a remote process's stdin."""

    def __init__(self, channel: paramiko.Channel, target: SSHTarget):
        self._channel, self._target = channel, target

    def write(self, data: bytes) -> int:
        """Send ``data`` (blocks while the SSH window is full).

        Raises:
            SSHError: The process ended, stdin was closed, or the connection dropped.
        """
        try:
            sendall(self._channel, data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise translate(exc, self._target, "writing to a remote process's stdin") from exc
        return len(data)

    def flush(self) -> None:
        """Nothing to do: writes are sent at once."""

    def close(self) -> None:
        """Send EOF; the process sees its stdin end."""
        self._channel.shutdown_write()
