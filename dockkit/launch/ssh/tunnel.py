"""Reverse port forwards over one SSH connection, and the relay threads behind them.

With ``--tunnel`` the launcher has each host's sshd listen on ``127.0.0.1:<port>``
so workers reach the root's broker on their own host::

    root                                        worker host
    broker <── relay threads ══ SSH ══ sshd listening on 127.0.0.1:<port> <── workers

sshd hands each connection it accepts to paramiko as a channel; a relay connects
a local socket to it and copies both ways until either end closes.
"""

from __future__ import annotations

import logging
import socket
import threading

import paramiko

from dockkit.errors import SSHError
from dockkit.launch.ssh.channels import CHUNK
from dockkit.launch.ssh.target import SSHTarget

__all__ = ["ReverseTunnels"]

log = logging.getLogger(__name__)


class ReverseTunnels:
    """The reverse forwards of one connection and their open relays; closed with it.

    Args:
        target: The host, for messages.
        connect_timeout: Seconds a relay may take to connect to its local end.
    """

    def __init__(self, target: SSHTarget, connect_timeout: float):
        self.target = target
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._forwards: dict[int, tuple[str, int]] = {}
        self._ends: set = set()  # relay sockets and channels to close with us

    def forward(self, transport: paramiko.Transport, remote_port: int, local_host: str, local_port: int) -> int:
        """Have sshd listen on its 127.0.0.1:remote_port and relay what arrives to local_host:local_port.

        Args:
            transport: The connection's transport.
            remote_port: Port to listen on at the host's loopback; 0 lets sshd pick.
            local_host: Where to relay connections on this side.
            local_port: The port there.

        Returns:
            The port sshd listens on.

        Raises:
            SSHError: sshd refused (AllowTcpForwarding off, or the port is taken).
        """
        try:
            with self._lock:  # hold the lock so a connection arriving at once finds its target
                port = transport.request_port_forward("127.0.0.1", remote_port, handler=self._on_forwarded)
                self._forwards[port] = (local_host, local_port)
        except paramiko.SSHException as exc:
            reason = (f"sshd refused to listen on 127.0.0.1:{remote_port or 'any port'} ({exc}) — check "
                      "'AllowTcpForwarding yes' in its sshd_config, and that the port is free")  # fmt: skip
            raise SSHError(f"{self.target.where}: {reason}", failures={self.target.spec.label: reason}) from exc
        log.debug("%s: 127.0.0.1:%d forwarded to %s:%d", self.target.where, port, local_host, local_port)
        return port

    def close(self, transport: paramiko.Transport | None) -> None:
        """Abort every relay, then cancel every forward on ``transport`` (None: it is gone). Idempotent."""
        with self._lock:
            ends, self._ends = list(self._ends), set()
            ports, self._forwards = list(self._forwards), {}
        for end in ends:
            _abort(end)
        if transport is None:
            return
        for port in ports:
            try:
                transport.cancel_port_forward("127.0.0.1", port)
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass

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
            self._ends.update((sock, channel))
        # One thread per direction: a blocked write one way never stalls the other.
        back = threading.Thread(target=_pump, args=(channel.recv, sock.sendall, sock, channel), daemon=True)
        back.start()
        _pump(sock.recv, channel.sendall, channel, sock)
        back.join()
        for end in (sock, channel):
            _close(end)
        with self._lock:
            self._ends.difference_update((sock, channel))


def _pump(recv, send, writer, other) -> None:
    """Copy until EOF, then half-close ``writer``; on an error abort both ends."""
    try:
        while data := recv(CHUNK):
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
    _close(end)


def _close(end) -> None:
    """Close a relay end; a channel whose SSH connection is going down may raise instead."""
    try:
        end.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass
