"""A swarm node's container reached through its own sshd, where no client of its engine is given.

Swarm places a node's task on whichever of its nodes it likes; the manager's API starts
and stops services there, but cannot run a command in their containers or copy files in
and out. Every node runs sshd, published on its swarm node's address, and this machine
holds the cluster's client key and every node's pinned host key (the cluster's
``ssh_config``): that reaches any node the swarm can place one on.

:class:`ContainerOverSSH` does over SSH what the cluster asks of a docker-py container
(``exec_run``, ``put_archive``, ``get_archive``, ``logs``, ``reload`` and ``status``), so
:mod:`dockkit.cluster.copying`, :mod:`dockkit.cluster.fetch` and
:func:`dockkit.cluster.nodes.wait_ready` serve both; :meth:`ContainerOverSSH.exec_streaming`
is :func:`dockkit.cluster.nodes.exec_streaming`'s twin. Its state and logs come from the
manager, which tracks the service's tasks wherever they run. Each call is one SSH
connection, closed when the call ends.
"""

from __future__ import annotations

import posixpath
import shlex
import threading
import time
from pathlib import Path
from typing import NamedTuple

import paramiko

from dockkit.cluster import swarm
from dockkit.cluster.copying import GO_MODE_DIR
from dockkit.cluster.engine import docker_errors
from dockkit.cluster.nodes import EXEC_DRAIN_S, LIFELINE_GRACE_S, StdStreams
from dockkit.cluster.state import NodeInfo
from dockkit.errors import ClusterError, ConfigError
from dockkit.launch.hosts import HostSpec
from dockkit.launch.ssh.channels import CHUNK, sendall
from dockkit.launch.ssh.connection import SSHConnection

__all__ = ["ContainerOverSSH", "ExecResult"]

CONNECT_TIMEOUT_S = 10.0
# Swarm's task states as Docker's container states, which is what wait_ready reads
_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}


class ExecResult(NamedTuple):
    """As docker-py's: ``output`` is bytes, or ``(stdout, stderr)`` when demultiplexed."""

    exit_code: int
    output: bytes | tuple[bytes | None, bytes | None]


class ContainerOverSSH:
    """Node ``node``'s container (a task of the swarm service ``service``), reached as ``node.name``
    through the cluster's ``ssh_config``; ``manager`` is the swarm manager's docker-py client."""

    def __init__(self, node: NodeInfo, *, service: str, cluster: str, ssh_config: Path, manager):
        self.node, self.name, self.id = node, service, node.container
        self._cluster, self._ssh_config, self._manager = cluster, ssh_config, manager
        self.status = "running" if node.state in ("running", "unknown") else "exited"
        self.attrs: dict = {"State": {"ExitCode": None}}

    def __repr__(self) -> str:
        return f"<ContainerOverSSH {self.name} {self.node.address}:{self.node.port}>"

    def _connection(self) -> SSHConnection:
        return SSHConnection(HostSpec(self.node.name), ssh_config=self._ssh_config, connect_timeout=CONNECT_TIMEOUT_S)

    # --- what the cluster reads of a docker-py container --------------------------------------
    def reload(self) -> None:
        """Read the service's newest task from the manager: a task that replaced this
        container, or one that ended, leaves this container 'exited'."""
        task = swarm.node_tasks(self._manager, self._cluster).get(self.name)
        if task is None:
            self.status = "removed"
        elif task.container_id and not task.container_id.startswith(self.id):
            self.status = "exited"  # Swarm runs a new container in its place
        elif task.state == "running":
            self.status = "running"
        else:
            self.status = "created" if task.state in _STARTING else "exited"
        self.attrs = {"State": {"ExitCode": None, "Error": task.error if task else ""}}

    def exec_run(self, argv: list[str], *, demux: bool = False) -> ExecResult:
        """Run ``argv`` to its end and collect its output (stdout then stderr when not ``demux``)."""
        status, stdout, stderr = self._run(shlex.join(argv))
        return ExecResult(status, (stdout or None, stderr or None) if demux else stdout + stderr)

    def put_archive(self, path: str, data: bytes) -> bool:
        """Unpack the tar ``data`` into the directory ``path``, which must exist.

        Raises:
            ClusterError: tar failed there (the directory is missing, the disk is full, …).
        """
        status, _, stderr = self._run(f"tar -C {shlex.quote(path)} -xf -", stdin=data)
        if status != 0:
            raise ClusterError(f"copying into {path} in {self.node.name}: "
                               f"{stderr.decode(errors='replace').strip() or f'tar exited with {status}'}")
        return True

    def get_archive(self, path: str):
        """``(chunks, stat)`` as docker-py gives them: a tar of ``path`` and whether it is a directory.

        Raises:
            ConfigError: ``path`` is missing in the node.
        """
        name = posixpath.basename(path.rstrip("/")) or "."
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        # the kind first, on stderr, so that stdout is the tar alone
        script = (f"if [ -d {shlex.quote(path)} ]; then echo dir >&2; elif [ ! -e {shlex.quote(path)} ]; "
                  f"then echo none >&2; exit 3; fi; exec tar -C {shlex.quote(parent)} -cf - {shlex.quote(name)}")
        status, stdout, stderr = self._run(script)
        if status == 3:
            raise ConfigError(f"{self.name}: {path}: no such file or directory")
        if status != 0:
            raise ClusterError(f"copying {path} from {self.node.name}: {stderr.decode(errors='replace').strip()}")
        is_dir = stderr.startswith(b"dir\n")
        return iter([stdout]), {"name": name, "mode": GO_MODE_DIR if is_dir else 0o644}

    def logs(self, tail: int | str = "all") -> bytes:
        """The service's log (every task it ran, this container's last), from the manager."""
        with docker_errors(f"reading the logs of {self.name}", ClusterError):
            return b"".join(self._manager.api.service_logs(self.name, stdout=True, stderr=True, tail=tail))

    def _run(self, command: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        with self._connection() as connection:
            return connection.run(command, stdin=stdin)

    # --- a command whose output is passed on live -----------------------------------------------
    def exec_streaming(self, argv: list[str], *, stream=None, workdir: str | None = None,
                       environment: dict | None = None, lifeline: bool = False, stdin_data: bytes = b"") -> int:
        """As :func:`dockkit.cluster.nodes.exec_streaming`, over SSH: ``argv`` runs in ``workdir``
        with ``environment``, its output passed on as it comes; returns its exit status (128+N
        when a signal N killed it, as a shell reports it).

        Raises:
            ClusterError: the connection ended without an exit status (the node went down).

        With ``lifeline``, its stdin stays open while this call runs and reaches end-of-file
        when it stops, however it stops: on Ctrl-C here, or when this process dies and the
        connection with it.
        """
        out = stream or StdStreams()
        env = " ".join(shlex.quote(f"{key}={value}") for key, value in (environment or {}).items())
        # not the command's last word: the shell waits for it and reports a signal's death as 128+N
        command = f"cd {shlex.quote(workdir or '/')} && env {env} {shlex.join(argv)}; exit $?"
        with self._connection() as connection:
            channel = connection.open_command(command)
            readers = [threading.Thread(target=_relay, args=(channel.recv, out.stdout), daemon=True),
                       threading.Thread(target=_relay, args=(channel.recv_stderr, out.stderr), daemon=True)]
            for reader in readers:
                reader.start()
            threading.Thread(target=_write, args=(channel, stdin_data, not lifeline), daemon=True).start()
            try:
                while not channel.status_event.wait(0.5):
                    pass
            except KeyboardInterrupt:
                if lifeline:  # stdin's end-of-file stops the command; show what it says while stopping
                    _shutdown_write(channel)
                    channel.status_event.wait(LIFELINE_GRACE_S)
                raise
            finally:
                deadline = time.monotonic() + EXEC_DRAIN_S
                for reader in readers:
                    reader.join(max(0.0, deadline - time.monotonic()))
            if channel.exit_status == -1:  # closed with no status: the shell itself is gone
                raise ClusterError(f"the connection to {self.node.name} ended before its command did "
                                   f"(its container or its swarm node went down?); `dockkit status` "
                                   "says where it runs now")
            return channel.exit_status


def _relay(receive, deliver) -> None:
    try:
        while data := receive(CHUNK):
            deliver(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the channel closed: the exit status says how it ended


def _write(channel, data: bytes, close: bool) -> None:
    try:
        if data:
            sendall(channel, data)
        if close:
            channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command ended before it read it all: its status and output say why


def _shutdown_write(channel) -> None:
    try:
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass
