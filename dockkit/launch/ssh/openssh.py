"""A reverse port forward carried by OpenSSH's own ``ssh`` process, off this process's GIL.

paramiko's forwards relay every byte through Python threads in the root, next to the broker
and the user's script: on loopback about 140 MB/s each way and 0.4 ms per round trip. An
``ssh -R`` process does the same in C in a process of its own: 270–380 MB/s and 0.06 ms.
So with ``--tunnel`` the launcher's connection asks for one of these first and keeps
paramiko's relays as the fallback (no ``ssh`` client, or it failed).

The process is pinned to exactly what the paramiko connection resolved: no ssh_config of
its own (``-F /dev/null``), the same host, port, user, keys and known_hosts files, and
``StrictHostKeyChecking yes`` (the paramiko connection has already recorded any key the
caller accepted). It runs ``cat >/dev/null`` on the host and ends when its stdin closes,
so when the root dies, even by SIGKILL, its end of the pipe closes and the forward goes
with it; it sits in a session of its own so a Ctrl-C at the terminal reaches the root
first, which stops the run in order.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import subprocess
import threading

from dockkit.errors import SSHError
from dockkit.launch.ssh.target import SSHTarget

__all__ = ["OpenSSHForward", "openssh_client"]

log = logging.getLogger(__name__)

# AES-GCM first: with AES-NI it is the fastest cipher OpenSSH has (chacha20 is its default).
CIPHERS = ("aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,"
           "aes128-ctr,aes192-ctr,aes256-ctr")  # fmt: skip
_ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward")


def openssh_client() -> str | None:
    """The ``ssh`` client on PATH, or None."""
    return shutil.which("ssh")


def forward_command(client: str, target: SSHTarget, local_host: str, local_port: int,
                    connect_timeout: float) -> list[str]:  # fmt: skip
    """The ``ssh`` command line that forwards the host's 127.0.0.1:<any port> to local_host:local_port."""
    known = " ".join(f'"{path}"' for path in target.known_hosts)
    argv = [client, "-F", os.devnull, "-T", "-x", "-a",
            "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=INFO",
            "-o", f"ConnectTimeout={max(1, round(connect_timeout))}", "-o", "ServerAliveInterval=30",
            "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no", "-o", f"UserKnownHostsFile={known}",
            "-o", f"GlobalKnownHostsFile={os.devnull}", "-o", f"Ciphers={CIPHERS}",
            "-p", str(target.port), "-l", target.user,
            "-R", f"127.0.0.1:0:{local_host}:{local_port}"]  # fmt: skip
    if target.host_key_alias:
        argv += ["-o", f"HostKeyAlias={target.host_key_alias}"]
    if target.identities_only:
        argv += ["-o", "IdentitiesOnly=yes"]
    for path in target.identity_files:
        if os.path.exists(path):
            argv += ["-i", path]
    return [*argv, "--", target.hostname, "cat >/dev/null"]


class OpenSSHForward:
    """One ``ssh -R`` process and the port it has sshd listen on; a context manager.

    Args:
        target: The host, as the paramiko connection resolved it.
        local_host: Where forwarded connections go on this side.
        local_port: The port there (the broker's).
        connect_timeout: Seconds allowed for the connection and the forward.
        client: The ``ssh`` client; None looks it up on PATH.

    Raises:
        SSHError: There is no client, or it could not connect or forward; the message
            carries what ssh said.
    """

    def __init__(self, target: SSHTarget, local_host: str, local_port: int, connect_timeout: float,
                 client: str | None = None):  # fmt: skip
        self.target = target
        client = client or openssh_client()
        if client is None:
            raise SSHError(f"{target.where}: no OpenSSH client (ssh) on PATH")
        argv = forward_command(client, target, local_host, local_port, connect_timeout)
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stderr, daemon=True, name="dockkit-openssh-stderr").start()
        try:
            self.port = self._await_port(connect_timeout + 5)
        except BaseException:
            self.close()
            raise
        log.debug("%s: 127.0.0.1:%d forwarded to %s:%d by ssh (pid %d)",
                  target.where, self.port, local_host, local_port, self._process.pid)  # fmt: skip

    @property
    def pid(self) -> int:
        """The ``ssh`` process's id."""
        return self._process.pid

    def __enter__(self) -> OpenSSHForward:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _read_stderr(self) -> None:
        for raw in self._process.stderr:
            self._lines.put(raw.decode(errors="replace").rstrip())
        self._lines.put(None)

    def _await_port(self, timeout: float) -> int:
        said: list[str] = []
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise SSHError(f"{self.target.where}: ssh set up no forward within {timeout:.0f} s") from None
            if line is None:
                status = self._process.wait()
                raise SSHError(f"{self.target.where}: ssh ended with status {status} before forwarding: "
                               + ("; ".join(said) or "it said nothing"))  # fmt: skip
            if found := _ALLOCATED.search(line):
                threading.Thread(target=self._drain, daemon=True, name="dockkit-openssh-drain").start()
                return int(found.group(1))
            said.append(line)

    def _drain(self) -> None:
        while (line := self._lines.get()) is not None:
            log.debug("%s: ssh: %s", self.target.where, line)

    def close(self) -> None:
        """End the ssh process (sshd then stops listening). Idempotent; asks nothing of the host."""
        process = self._process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        try:
            process.stdin.close()  # its stderr reader closes at EOF, which the exit brought
        except OSError:
            pass
