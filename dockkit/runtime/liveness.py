"""Whether the broker is still there, judged by its connection as well as by its beats.

Why: the broker's beats come from a Python thread of the root. A long C call in the root
(unpickling a result of a few GiB, for one) holds the GIL and silences that thread for as
long as it lasts, though the root is alive and well. ZeroMQ's own heartbeats (ZMTP PING
and PONG) are answered by libzmq's I/O thread, which needs no GIL: while they flow, the
connection is up and the root's process is there. A dead, stopped or cut-off root stops
answering them, and libzmq drops the connection. So a peer leaves only when the broker has
been silent for its whole allowance *and* the connection is down.
"""

from __future__ import annotations

import struct

import zmq

__all__ = ["BrokerWatch"]

PING_INTERVAL_MS = 1000


class BrokerWatch:
    """Follows one socket's connection to the broker; ``connected`` says whether it is up now.

    Args:
        socket: A DEALER about to connect (or connected) to the broker.
        silence: Seconds without a PONG after which libzmq drops the connection.
    """

    def __init__(self, socket: zmq.Socket, silence: float):
        socket.setsockopt(zmq.HEARTBEAT_IVL, PING_INTERVAL_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(PING_INTERVAL_MS, int(silence * 1000)))
        self._events = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.connected = False

    def update(self) -> bool:
        """Read the connection's news; return whether it is up now."""
        while self._events.poll(0):
            self.connected = _event(self._events.recv_multipart()) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        return self.connected

    def close(self) -> None:
        self._events.close(linger=0)


def _event(message: list[bytes]) -> int:
    """The event number of a monitor message (zmq_socket_monitor(3): its first frame starts with
    it, a native uint16). Read here rather than with zmq.utils.monitor, which imports asyncio:
    14 ms more for every worker to start."""
    return struct.unpack("=H", message[0][:2])[0]
