"""SSH connections to worker hosts: run commands, start agents, tunnel the broker port.

The launcher opens ONE :class:`SSHConnection` per host and uses it for
everything: a version probe (:meth:`~SSHConnection.run`), the long-running host
agent (:meth:`~SSHConnection.start`) and, with ``--tunnel``, a reverse port
forward (:meth:`~SSHConnection.forward_remote_port`) so workers reach the
root's broker at ``127.0.0.1:<port>`` on their own host::

    root                                        worker host
    broker <── relay threads ══ SSH ══ sshd listening on 127.0.0.1:<port> <── workers

Hosts are resolved the way OpenSSH resolves them (``ssh_config`` Host aliases,
HostName, User, Port, IdentityFile, IdentitiesOnly, UserKnownHostsFile,
HostKeyAlias, StrictHostKeyChecking) and host keys are pinned: an unknown key is
rejected unless the caller opts in to accepting NEW keys, and a CHANGED key is
always rejected. This is the only module that imports paramiko; every
paramiko/socket error becomes a dockkit error in one place, :func:`_translate`.

Stopping a remote process: sshd starts each command in its own session
(``setsid``), so the command's shell PID is also its process group id.
:meth:`SSHConnection.start` has the shell report ``$$`` first, and
:meth:`RemoteProcess.kill` signals that whole group (TERM, then KILL) before
closing the channel. Closing the channel alone only gives the process EOF on
stdin (sshd sends SIGHUP to pty sessions only, and we use none, to keep stdin
binary-clean); the dockkit agent also exits on stdin EOF, as a backstop.
Remote login shells are assumed to be POSIX shells (sh, dash, bash, zsh).
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import paramiko

from dockkit.errors import ConfigError, DockkitError, HostKeyError, SSHError
from dockkit.errors import TimeoutError as DockkitTimeoutError
from dockkit.commands import exports as _exports
from dockkit.hosts import HostSpec

__all__ = ["SSHConnection", "SSHTarget", "RemoteProcess", "resolve"]

log = logging.getLogger(__name__)
# paramiko logs every failed handshake with a traceback; we raise a clear error instead, so keep
# its records off stderr unless the application configures logging itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Per-channel SSH window. The tunnel carries MB-sized payloads, so more than paramiko's 2 MiB helps
# on links with latency; far more hurts, because paramiko's receive buffer moves its whole content
# on every read (measured on loopback: 4 MiB ~110 MB/s echoed, 16 MiB ~40-80 MB/s).
_WINDOW = 4 * 1024 * 1024
_CHUNK = 256 * 1024
_PGID_MARKER = "__dockkit_pgid__"
_known_hosts_lock = threading.Lock()  # parallel connections may record keys at once


@dataclasses.dataclass(frozen=True)
class SSHTarget:
    """A host spec resolved through ssh_config: what we actually connect to."""

    spec: HostSpec
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts: tuple[str, ...] = ()
    host_key_alias: str | None = None
    accept_new: bool = False

    @property
    def where(self) -> str:
        """``alias (hostname:port)`` for messages."""
        address = f"[{self.hostname}]:{self.port}" if ":" in self.hostname else f"{self.hostname}:{self.port}"
        return address if self.spec.host == self.hostname else f"{self.spec.host} ({address})"

    @property
    def key_name(self) -> str:
        """The name of this host's entries in known_hosts, as OpenSSH writes them."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve(
    spec: HostSpec,
    *,
    ssh_config: str | os.PathLike[str] | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    accept_new_host_keys: bool = False,
) -> SSHTarget:
    """Resolve a host spec through ssh_config, as ``ssh`` would.

    Args:
        spec: The host. Its user and port win over ssh_config's.
        ssh_config: Config file; None uses ``~/.ssh/config`` if it exists.
        known_hosts: known_hosts file; None uses ssh_config's
            UserKnownHostsFile, else ``~/.ssh/known_hosts``.
        accept_new_host_keys: Accept and record unknown host keys (also turned
            on by ``StrictHostKeyChecking accept-new`` or ``no`` in ssh_config).

    Returns:
        The resolved target.

    Raises:
        ConfigError: The ssh_config file is missing or cannot be parsed.
    """
    config = paramiko.SSHConfigDict()
    path = os.path.expanduser(os.fspath(ssh_config)) if ssh_config else os.path.expanduser("~/.ssh/config")
    if ssh_config or os.path.exists(path):
        try:
            config = paramiko.SSHConfig.from_path(path).lookup(spec.host)
        except (OSError, paramiko.SSHException) as exc:
            raise ConfigError(f"cannot read ssh_config {path!r}: {exc}") from exc
    if known_hosts:
        files = (os.fspath(known_hosts),)
    elif config.get("userknownhostsfile"):
        files = tuple(config["userknownhostsfile"].split())
    else:
        files = ("~/.ssh/known_hosts",)
    strict = config.get("stricthostkeychecking", "").lower()
    return SSHTarget(
        spec=spec,
        hostname=config.get("hostname", spec.host),
        port=spec.port or int(config.get("port", 22)),
        user=spec.user or config.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(f) for f in config.get("identityfile", [])),
        identities_only=config.get("identitiesonly", "no").lower() == "yes",
        known_hosts=tuple(os.path.expanduser(f) for f in files),
        host_key_alias=config.get("hostkeyalias"),
        accept_new=accept_new_host_keys or strict in ("accept-new", "no", "off"),
    )


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


def _translate(exc: BaseException, target: SSHTarget, doing: str, keys_tried: str = "") -> SSHError:
    """Turn a paramiko/socket error into an SSHError that names the host, the cause and the fix."""
    if isinstance(exc, SSHError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        got, old = exc.key, exc.expected_key
        cls, reason = HostKeyError, (
            f"HOST KEY CHANGED! It sent {got.get_name()} {got.fingerprint} but known_hosts has "
            f"{old.fingerprint}. Someone may be intercepting the connection, or the host was "
            f"rebuilt; only if you know it was rebuilt, remove the old key with: "
            f"ssh-keygen -R '{target.key_name}' -f {target.known_hosts[0]}"
        )
    elif isinstance(exc, paramiko.AuthenticationException):
        cls, reason = SSHError, (
            f"authentication failed as user {target.user!r} ({exc}); tried {keys_tried or 'no keys'} — "
            f"check that one of these public keys is in ~{target.user}/.ssh/authorized_keys on the host"
        )
    elif isinstance(exc, socket.gaierror):
        cls, reason = SSHError, (
            f"cannot resolve host name {target.hostname!r} ({exc.strerror}) — "
            "check the name, or its HostName in ssh_config"
        )
    elif isinstance(exc, ConnectionRefusedError):
        cls, reason = SSHError, f"connection refused — is sshd running and the port right?"
    elif isinstance(exc, TimeoutError):
        cls, reason = SSHError, f"no answer while {doing} (timed out) — is the host up and the port reachable?"
    elif isinstance(exc, paramiko.ChannelException):
        cls, reason = SSHError, f"the host refused a new channel while {doing} ({exc}) — check sshd's MaxSessions"
    elif isinstance(exc, (paramiko.SSHException, EOFError)):
        cls, reason = SSHError, (
            f"SSH failed while {doing}: {exc or type(exc).__name__} — "
            "is an SSH server listening on that port, and is the connection still up?"
        )
    elif isinstance(exc, OSError):
        cls, reason = SSHError, f"network error while {doing}: {exc.strerror or exc} — check the address and the network"
    else:
        cls, reason = SSHError, f"unexpected error while {doing}: {exc!r}"
    return cls(f"{target.where}: {reason}", failures={target.spec.label: reason})


class SSHConnection:
    """One authenticated SSH connection to a host; a context manager.

    Args:
        spec: The host.
        ssh_config: ssh_config file; None uses ``~/.ssh/config`` if it exists.
        known_hosts: known_hosts file; None uses ssh_config's or ``~/.ssh/known_hosts``.
        accept_new_host_keys: Accept an unknown host key and append it to
            known_hosts. A changed key is rejected regardless.
        connect_timeout: Seconds allowed for TCP connect, handshake and login each.

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
    ):
        self.spec = spec
        self.target = resolve(
            spec, ssh_config=ssh_config, known_hosts=known_hosts, accept_new_host_keys=accept_new_host_keys
        )
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._forwards: dict[int, tuple[str, int]] = {}
        self._open: set = set()  # relay sockets/channels and processes to close with us

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
                real = t.hostname if t.port == 22 else f"[{t.hostname}]:{t.port}"
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
            raise _translate(exc, t, "connecting", self._keys_tried()) from exc
        return self

    def close(self) -> None:
        """Kill started processes that still run, stop forwards and relays, disconnect. Idempotent."""
        with self._lock:
            resources, self._open = list(self._open), set()
            forwards, self._forwards = list(self._forwards), {}
        for resource in resources:
            if isinstance(resource, RemoteProcess):
                resource.kill(grace=1.0)
            else:
                _abort(resource)
        client, self._client = self._client, None
        if client is None:
            return
        transport = client.get_transport()
        for port in forwards:
            try:
                transport.cancel_port_forward("127.0.0.1", port)
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
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
            raise _translate(exc, self.target, doing) from exc

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
        helpers = [threading.Thread(target=_drain_stderr, args=(channel, errors), daemon=True),
                   threading.Thread(target=_feed, args=(channel, stdin or b""), daemon=True)]  # fmt: skip
        for helper in helpers:
            helper.start()
        output = bytearray()
        remaining = lambda: None if deadline is None else max(deadline - time.monotonic(), 0.001)  # noqa: E731
        try:
            while True:
                channel.settimeout(remaining())
                if not (data := channel.recv(_CHUNK)):
                    break
                output += data
            if not channel.status_event.wait(remaining()):
                raise TimeoutError
            status = channel.exit_status
        except TimeoutError:
            raise DockkitTimeoutError(f"{self.target.where}: {cmd!r} did not finish within {timeout} s") from None
        except Exception as exc:
            raise _translate(exc, self.target, f"running {cmd!r}") from exc
        finally:
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
            cmd: A shell command line, e.g. from :func:`dockkit.commands.remote_command`.
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
        exports = _exports(env)
        wrapped = f"echo {_PGID_MARKER} $$; " + (f"export {exports}; " if exports else "") + cmd
        process = RemoteProcess(self, self._exec(wrapped, f"starting {cmd!r}"), on_stdout, on_stderr)
        with self._lock:
            self._open.add(process)
        if stdin_data:
            process.stdin.write(stdin_data)
        return process

    def forward_remote_port(self, remote_port: int = 0, *, local_host: str = "127.0.0.1", local_port: int) -> int:
        """Reverse tunnel: the host's 127.0.0.1:<port> leads to local_host:local_port here.

        Args:
            remote_port: Port to listen on at the host's loopback; 0 lets sshd pick.
            local_host: Where to relay connections on this side.
            local_port: The port there (the broker's).

        Returns:
            The port sshd listens on.

        Raises:
            SSHError: sshd refused (AllowTcpForwarding off, or the port is taken).
        """
        transport = self._transport()
        try:
            with self._lock:  # hold the lock so a connection arriving at once finds its target
                port = transport.request_port_forward("127.0.0.1", remote_port, handler=self._on_forwarded)
                self._forwards[port] = (local_host, local_port)
        except paramiko.SSHException as exc:
            reason = (f"sshd refused to listen on 127.0.0.1:{remote_port or 'any port'} ({exc}) — check "
                      "'AllowTcpForwarding yes' in its sshd_config, and that the port is free")  # fmt: skip
            raise SSHError(f"{self.target.where}: {reason}", failures={self.spec.label: reason}) from exc
        log.debug("%s: 127.0.0.1:%d forwarded to %s:%d", self.target.where, port, local_host, local_port)
        return port

    def _on_forwarded(self, channel, origin, server) -> None:
        # Called on paramiko's transport thread, which must not block: relay elsewhere.
        threading.Thread(target=self._relay, args=(channel, server[1]), daemon=True, name="dockkit-ssh-relay").start()

    def _relay(self, channel: paramiko.Channel, server_port: int) -> None:
        with self._lock:
            target = self._forwards.get(server_port)
        try:
            sock = socket.create_connection(target, timeout=self.connect_timeout)
        except (OSError, TypeError) as exc:
            log.warning("%s: cannot relay port %d to %s: %s", self.target.where, server_port, target, exc)
            channel.close()
            return
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.update((sock, channel))
        # One thread per direction: a blocked write one way never stalls the other.
        back = threading.Thread(target=_pump, args=(channel.recv, sock.sendall, sock, channel), daemon=True)
        back.start()
        _pump(sock.recv, channel.sendall, channel, sock)
        back.join()
        for end in (sock, channel):
            end.close()
        with self._lock:
            self._open.difference_update((sock, channel))


def _sendall(channel: paramiko.Channel, data: bytes) -> None:
    # In slices: paramiko's sendall re-slices the whole remainder per 32 KiB packet (quadratic).
    for start in range(0, len(data), _CHUNK):
        channel.sendall(data[start : start + _CHUNK])


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    """Send ``data`` to a channel's stdin, then EOF."""
    try:
        _sendall(channel, data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command ended or the channel closed: run() reports what matters


def _drain_stderr(channel: paramiko.Channel, chunks: list[bytes]) -> None:
    """Collect a channel's stderr until EOF or close (run's timeout is enforced on stdout)."""
    while not channel.closed:
        try:
            if not (data := channel.recv_stderr(_CHUNK)):
                return
            chunks.append(data)
        except TimeoutError:
            continue
        except (OSError, EOFError, paramiko.SSHException):
            return


def _pump(recv, send, writer, other) -> None:
    """Copy until EOF, then half-close ``writer``; on an error abort both ends."""
    try:
        while data := recv(_CHUNK):
            send(data)
        writer.shutdown(socket.SHUT_WR) if isinstance(writer, socket.socket) else writer.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        _abort(writer)
        _abort(other)


def _abort(end) -> None:
    """Close a relay end so that a thread blocked reading it wakes up."""
    if isinstance(end, socket.socket):
        try:
            end.shutdown(socket.SHUT_RDWR)  # close() alone does not wake a recv() in another thread
        except OSError:
            pass
    end.close()


class RemoteProcess:
    """A command started by :meth:`SSHConnection.start`.

    Attributes:
        stdin: Binary file-like: ``write(bytes)``, ``flush()``, ``close()`` (sends EOF).
        pgid: The remote process group id, once reported (None before or if unknown).
    """

    def __init__(self, connection: SSHConnection, channel: paramiko.Channel, on_stdout, on_stderr):
        self._connection, self._channel = connection, channel
        self.stdin = _Stdin(channel, connection.target)
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
            raise DockkitTimeoutError(f"{self._connection.target.where}: remote process still running after {timeout} s")
        for reader in self._readers:
            reader.join(timeout)
        self._forget()
        return self._channel.exit_status

    def kill(self, grace: float = 2.0) -> None:
        """Stop it politely (SIGTERM to its process group), then by force (SIGKILL), then close.

        Idempotent; never raises (a dead connection means the host sees EOF instead).
        """
        self._pgid_known.wait(grace)
        for signal in ("TERM", "KILL"):
            if self.exit_status is not None or self.pgid is None or not self._connection.is_active:
                break
            try:
                self._connection.run(f"kill -s {signal} -- -{self.pgid} 2>/dev/null", timeout=grace)
            except DockkitError as exc:
                log.debug("kill -%s -%s failed: %s", signal, self.pgid, exc)
                break
            self._channel.status_event.wait(grace)
        self._channel.close()
        for reader in self._readers:
            reader.join(grace)
        self._forget()

    def _forget(self) -> None:
        with self._connection._lock:  # ended: SSHConnection.close() need not kill it
            self._connection._open.discard(self)


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
            _sendall(self._channel, data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _translate(exc, self._target, "writing to a remote process's stdin") from exc
        return len(data)

    def flush(self) -> None:
        """Nothing to do: writes are sent at once."""

    def close(self) -> None:
        """Send EOF; the process sees its stdin end."""
        self._channel.shutdown_write()
