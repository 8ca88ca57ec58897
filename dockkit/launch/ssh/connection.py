"""SSH connections to worker hosts: run commands, start agents, tunnel the broker port.

The launcher opens ONE :class:`SSHConnection` per host and uses it for
everything: a version probe (:meth:`~SSHConnection.run`), the long-running host
agent (:meth:`~SSHConnection.start`, a :class:`~dockkit.launch.ssh.process.RemoteProcess`)
and, with ``--tunnel``, a reverse port forward
(:meth:`~SSHConnection.forward_remote_port`) so workers reach the root's broker at
``127.0.0.1:<port>`` on their own host. The forward is an OpenSSH ``ssh -R`` process
(:mod:`dockkit.launch.ssh.openssh`) where there is a client, which carries the data outside
this process; else, or if it fails, paramiko's relays (:mod:`dockkit.launch.ssh.tunnel`).

Hosts are resolved the way OpenSSH resolves them (``ssh_config`` Host aliases,
HostName, User, Port, IdentityFile, IdentitiesOnly, UserKnownHostsFile,
HostKeyAlias, StrictHostKeyChecking; see :mod:`dockkit.launch.ssh.target`) and host keys
are pinned: an unknown key is rejected unless the caller opts in to accepting NEW
keys, and a CHANGED key is always rejected. Only this module and the four it
builds on use paramiko for connections; they import in one direction only::

    target (resolve, translate) ◄── channels (channel I/O) ◄── process, tunnel ◄── connection
                                ◄── openssh (an ssh -R process) ◄──────────────────┘

A remote process signals its process group through a function the connection hands
it, not through the connection itself. Every paramiko/socket error becomes a dockkit
error in one place, :func:`dockkit.launch.ssh.target.translate`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import paramiko

from dockkit.errors import DockkitError, HostKeyError, SSHError
from dockkit.errors import TimeoutError as DockkitTimeoutError
from dockkit.launch.hosts import HostSpec
from dockkit.launch.ssh.channels import CHUNK, drain_stderr, feed
from dockkit.launch.ssh.process import RemoteProcess, pgid_reporting_command
from dockkit.launch.ssh.keys import known_hosts_name
from dockkit.launch.ssh.openssh import OpenSSHForward, openssh_client
from dockkit.launch.ssh.target import SSHTarget, resolve, translate
from dockkit.launch.ssh.tunnel import ReverseTunnels

__all__ = ["SSHConnection", "SSHTarget", "RemoteProcess", "resolve"]

log = logging.getLogger(__name__)
# paramiko logs every failed handshake with a traceback; we raise a clear error instead, so keep
# its records off stderr unless the application configures logging itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Per-channel SSH window. The tunnel carries MB-sized payloads, so more than paramiko's 2 MiB helps
# on links with latency; far more hurts, because paramiko's receive buffer moves its whole content
# on every read (measured on loopback: 4 MiB ~110 MB/s echoed, 16 MiB ~40-80 MB/s).
_WINDOW = 4 * 1024 * 1024
_known_hosts_lock = threading.Lock()  # parallel connections may record keys at once


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko for an UNKNOWN key only (a changed key never gets here)."""

    def __init__(self, target: SSHTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key):
        t = self.target
        found = f"{key.get_name()} key {key.fingerprint}"
        if not t.accept_new:
            keyscan = f"ssh-keyscan -p {t.port} {t.hostname} >> {t.known_hosts[0]}"
            raise HostKeyError(
                f"{t.where}: unknown host key {found} (not in {', '.join(t.known_hosts)}) — "
                f"if that fingerprint is the host's, accept it with --accept-new-host-keys "
                f"(accept_new_host_keys=True) or add it with: {keyscan}",
                failures={t.spec.label: f"unknown host key {key.fingerprint}"},
            )
        path = t.known_hosts[0]
        with _known_hosts_lock:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            line = f"{t.key_name} {key.get_name()} {key.get_base64()}\n".encode()
            with open(path, "a+b") as handle:
                if handle.seek(0, os.SEEK_END) > 0:  # don't glue our line to an unterminated last one
                    handle.seek(-1, os.SEEK_END)
                    line = line if handle.read(1) == b"\n" else b"\n" + line
                handle.write(line)
        log.warning("%s: recorded new host key %s in %s", t.where, found, path)


class SSHConnection:
    """One authenticated SSH connection to a host; a context manager.

    Args:
        spec: The host.
        ssh_config: ssh_config file; None uses ``~/.ssh/config`` if it exists.
        known_hosts: known_hosts file; None uses ssh_config's or ``~/.ssh/known_hosts``.
        accept_new_host_keys: Accept an unknown host key and append it to
            known_hosts. A changed key is rejected regardless.
        connect_timeout: Seconds allowed for TCP connect, handshake and login each.
        openssh_tunnels: Carry reverse forwards in an OpenSSH ``ssh`` process when one
            works; False keeps them in paramiko's relays in this process.

    Raises:
        ConfigError: ssh_config cannot be read.
    """

    def __init__(
        self,
        spec: HostSpec,
        *,
        ssh_config: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        accept_new_host_keys: bool = False,
        connect_timeout: float = 10,
        openssh_tunnels: bool = True,
    ):
        self.spec = spec
        self.target = resolve(
            spec, ssh_config=ssh_config, known_hosts=known_hosts, accept_new_host_keys=accept_new_host_keys
        )
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._processes: set[RemoteProcess] = set()  # started, not yet ended: close() kills them
        self._tunnels = ReverseTunnels(self.target, connect_timeout)
        self._openssh_tunnels = openssh_tunnels
        self._forwards: list[OpenSSHForward] = []

    def __repr__(self) -> str:
        return f"<SSHConnection {self.target.where} {'open' if self.is_active else 'closed'}>"

    def __enter__(self) -> SSHConnection:
        return self.connect()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def is_active(self) -> bool:
        """True while the connection is up."""
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def local_address(self) -> str:
        """This machine's address on the route to the host: what its workers can connect back to."""
        return self._transport().sock.getsockname()[0]

    def _keys_tried(self) -> str:
        t = self.target
        keys = [f if os.path.exists(f) else f"{f} (missing)" for f in t.identity_files]
        if not t.identities_only:
            keys += [p for n in ("rsa", "ecdsa", "ed25519") if os.path.isfile(p := os.path.expanduser(f"~/.ssh/id_{n}"))]
            if os.environ.get("SSH_AUTH_SOCK"):
                keys.append("the keys in ssh-agent")
        return ", ".join(keys)

    def connect(self) -> SSHConnection:
        """Connect, check the host key and log in. Idempotent.

        Returns:
            self.

        Raises:
            SSHError: The host is unreachable, refuses, or login fails.
            HostKeyError: The host key is unknown (and not accepted) or changed.
        """
        if self._client is not None:
            return self
        t = self.target
        log.debug("connecting to %s as %s", t.where, t.user)
        try:
            self._client = client = paramiko.SSHClient()
            keys = client.get_host_keys()
            for path in t.known_hosts:
                if os.path.isfile(path):
                    keys.load(path)
            if t.host_key_alias:  # paramiko knows no HostKeyAlias: copy the alias's keys to the real name
                real = known_hosts_name(t.hostname, t.port)
                for keytype, key in (keys.lookup(t.host_key_alias) or {}).items():
                    keys.add(real, keytype, key)
            client.set_missing_host_key_policy(_HostKeyPolicy(t))
            sock = socket.create_connection((t.hostname, t.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                t.hostname, t.port, username=t.user, sock=sock,
                key_filename=[f for f in t.identity_files if os.path.exists(f)] or None,
                look_for_keys=not t.identities_only, allow_agent=not t.identities_only,
                timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout, channel_timeout=self.connect_timeout,
                transport_factory=lambda sock, **kw: paramiko.Transport(sock, default_window_size=_WINDOW, **kw),
            )  # fmt: skip
            client.get_transport().set_keepalive(30)
        except Exception as exc:
            self.close()  # a half-open connection must not leak its socket and thread
            raise translate(exc, t, "connecting", self._keys_tried()) from exc
        return self

    def close(self) -> None:
        """Kill started processes that still run, stop forwards and relays, disconnect. Idempotent."""
        with self._lock:
            processes, self._processes = list(self._processes), set()
        for process in processes:
            process.kill(grace=1.0)
        client, self._client = self._client, None
        self._close_forwards()
        self._tunnels.close(client.get_transport() if client is not None else None)
        if client is not None:
            client.close()

    def drop(self) -> None:
        """Disconnect at once, asking nothing of the host: for one that cannot answer (paused,
        frozen, cut off), where a kill or a cancelled forward would wait on it. What it runs
        stops on its own when it finds its session gone. Idempotent."""
        with self._lock:
            self._processes = set()
        client, self._client = self._client, None
        self._close_forwards()
        self._tunnels.close(None)
        if client is not None:
            client.close()

    def _transport(self) -> paramiko.Transport:
        if not self.is_active:
            raise SSHError(f"{self.target.where}: not connected (call connect() first, or the connection dropped)",
                           failures={self.spec.label: "not connected"})  # fmt: skip
        return self._client.get_transport()

    def _exec(self, cmd: str, doing: str) -> paramiko.Channel:
        try:
            channel = self._transport().open_session(timeout=self.connect_timeout)
            channel.exec_command(cmd)
            return channel
        except Exception as exc:
            raise translate(exc, self.target, doing) from exc

    def open_command(self, cmd: str) -> paramiko.Channel:
        """Start ``cmd`` and hand over its raw channel: for a caller that relays bytes as they come
        (a command's output passed on live), which :meth:`run` collects and :meth:`start` splits
        into lines.

        Raises:
            SSHError: The connection failed.
        """
        return self._exec(cmd, f"running {cmd!r}")

    def run(self, cmd: str, *, stdin: bytes | None = None, timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """Run a short command and collect its output (for probes, not for agents).

        Args:
            cmd: A shell command line (build it with ``shlex.quote``).
            stdin: Bytes to feed it; its stdin is closed after them either way.
            timeout: Seconds to wait for it to finish, or None for no limit. On a
                timeout the channel is closed, which a well-behaved command sees as EOF.

        Returns:
            ``(exit_status, stdout, stderr)``; exit_status is -1 if it died from a signal.

        Raises:
            SSHError: The connection failed.
            dockkit.errors.TimeoutError: It did not finish in time (the channel is closed).
        """
        channel = self._exec(cmd, f"running {cmd!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        errors: list[bytes] = []
        # Feed stdin and drain stderr on their own threads while this one reads stdout: the
        # streams share one window, so doing them in turn can deadlock on large outputs.
        helpers = [threading.Thread(target=drain_stderr, args=(channel, errors), daemon=True),
                   threading.Thread(target=feed, args=(channel, stdin or b""), daemon=True)]  # fmt: skip
        for helper in helpers:
            helper.start()
        output = bytearray()
        remaining = lambda: None if deadline is None else max(deadline - time.monotonic(), 0.001)  # noqa: E731
        try:
            while True:
                channel.settimeout(remaining())
                if not (data := channel.recv(CHUNK)):
                    break
                output += data
            if not channel.status_event.wait(remaining()):
                raise TimeoutError
            status = channel.exit_status
        except TimeoutError:
            raise DockkitTimeoutError(f"{self.target.where}: {cmd!r} did not finish within {timeout} s") from None
        except Exception as exc:
            raise translate(exc, self.target, f"running {cmd!r}") from exc
        finally:
            if channel.status_event.is_set():
                # It ended: its stderr is at EOF or nearly, and closing the channel before
                # the reader got there loses it (a probe's error message, under load)
                helpers[0].join(5)
            channel.close()
            for helper in helpers:
                helper.join(5)
        return status, bytes(output), b"".join(errors)

    def start(
        self,
        cmd: str,
        *,
        env: Mapping[str, str] | None = None,
        stdin_data: bytes | None = None,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
    ) -> RemoteProcess:
        """Start a long-running command (the host agent) and return its handle.

        Args:
            cmd: A shell command line, e.g. from :func:`dockkit.launch.commands.remote_command`.
            env: Non-secret variables, exported before ``cmd`` (visible in ``ps``).
            stdin_data: Bytes written to its stdin first: where secrets go. Stdin
                stays open afterwards (the agent exits when it closes).
            on_stdout: Called with each stdout line (without the newline) from a
                reader thread; without it, read lines with :meth:`RemoteProcess.lines`.
            on_stderr: The same for stderr.

        Returns:
            The running process.

        Raises:
            SSHError: The connection failed.
            ConfigError: An environment variable name is invalid.
        """
        wrapped = pgid_reporting_command(cmd, env)
        process = RemoteProcess(self.target, self._exec(wrapped, f"starting {cmd!r}"), on_stdout, on_stderr,
                                self._forget, self._signal_group)
        with self._lock:
            self._processes.add(process)
        if stdin_data:
            process.stdin.write(stdin_data)
        return process

    def _signal_group(self, signal: str, pgid: int) -> bool:
        """Send ``signal`` to process group ``pgid`` on the host; False if that failed."""
        if not self.is_active:
            return False
        try:
            self.run(f"kill -s {signal} -- -{pgid} 2>/dev/null", timeout=self.connect_timeout)
        except DockkitError as exc:
            log.debug("kill -%s -%s failed: %s", signal, pgid, exc)
            return False
        return True

    def _forget(self, process: RemoteProcess) -> None:
        with self._lock:  # ended: close() need not kill it
            self._processes.discard(process)

    def forward_remote_port(self, remote_port: int = 0, *, local_host: str = "127.0.0.1", local_port: int) -> int:
        """Reverse tunnel: the host's 127.0.0.1:<port> leads to local_host:local_port here.

        Args:
            remote_port: Port to listen on at the host's loopback; 0 lets sshd pick (only
                such a forward goes through OpenSSH, which reports the port it got).
            local_host: Where to relay connections on this side.
            local_port: The port there (the broker's).

        Returns:
            The port sshd listens on.

        Raises:
            SSHError: sshd refused (AllowTcpForwarding off, or the port is taken).
        """
        transport = self._transport()
        if self._openssh_tunnels and remote_port == 0:
            try:
                forward = OpenSSHForward(self.target, local_host, local_port, self.connect_timeout)
            except SSHError as exc:  # paramiko's relays do the same, only slower
                level = logging.WARNING if openssh_client() else logging.DEBUG
                log.log(level, "%s; forwarding through this process instead (slower)", exc)
            else:
                with self._lock:
                    self._forwards.append(forward)
                return forward.port
        return self._tunnels.forward(transport, remote_port, local_host, local_port)

    def _close_forwards(self) -> None:
        with self._lock:
            forwards, self._forwards = self._forwards, []
        for forward in forwards:
            forward.close()
