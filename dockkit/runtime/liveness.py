"""Whether the broker is still there, judged by its connection as well as by its beats.

Why: the broker's beats come from a Python thread of the root. A long C call in the root
(unpickling a result of a few GiB, for one) holds the GIL and silences that thread for as
long as it lasts, though the root is alive and well. ZeroMQ's own heartbeats (ZMTP PING
and PONG) are answered by libzmq's I/O thread, which needs no GIL: while they flow, the
connection is up and the root's process is there. A dead, stopped or cut-off root stops
answering them, and libzmq drops the connection. So a peer leaves only when the broker has
been silent for its whole allowance *and* the connection is down.

A connection that has never been up is not "down" while its TCP link is there: the
root's ZAP handler, which completes the handshake, is a Python thread too, so a root
that holds the GIL just as a peer connects keeps that peer waiting, alive. Such a wait
is bounded (FIRST_HANDSHAKE_WAIT): a stopped root behind a live SSH forward would
otherwise accept TCP connections forever.
"""

from __future__ import annotations

import struct
import time

import zmq

__all__ = ["BrokerWatch"]

PING_INTERVAL_MS = 1000
#: Seconds a peer waits for its first handshake over a live TCP link before it counts the
#: connection as down (libzmq's own handshake timeout, ZMQ_HANDSHAKE_IVL, is as long).
FIRST_HANDSHAKE_WAIT = 30.0
_NEWS = (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
         | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
         | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class BrokerWatch:
    """Follows one socket's connection to the broker; ``update()`` says whether it is up.

    Args:
        socket: A DEALER about to connect (or connected) to the broker.
        silence: Seconds without a PONG after which libzmq drops the connection.
    """

    def __init__(self, socket: zmq.Socket, silence: float):
        socket.setsockopt(zmq.HEARTBEAT_IVL, PING_INTERVAL_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(PING_INTERVAL_MS, int(silence * 1000)))
        self._events = socket.get_monitor_socket(_NEWS)
        self._since = time.monotonic()
        self.connected = False  # the handshake succeeded, and no drop since
        self._ever_connected = False
        self._linked = False  # TCP is connected (the handshake may be under way)

    def update(self) -> bool:
        """Read the connection's news; return whether it is up now, or still making its
        first handshake over a live link (for no longer than FIRST_HANDSHAKE_WAIT)."""
        while self._events.poll(0):
            event = _event(self._events.recv_multipart())
            self.connected = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
            self._ever_connected |= self.connected
            self._linked = event in (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED)
        if self.connected or self._ever_connected:
            return self.connected
        return self._linked and time.monotonic() - self._since < FIRST_HANDSHAKE_WAIT

    def close(self) -> None:
        self._events.close(linger=0)


def _event(message: list[bytes]) -> int:
    """The event number of a monitor message (zmq_socket_monitor(3): its first frame starts with
    it, a native uint16). Read here rather than with zmq.utils.monitor, which imports asyncio:
    14 ms more for every worker to start."""
    return struct.unpack("=H", message[0][:2])[0]
