"""BrokerWatch on real ZeroMQ sockets: when a peer's connection to the broker counts as down.

The broker side is a real ROUTER guarded by the run's Gatekeeper, whose ZAP requests the
tests answer, or leave pending as a root holding the GIL would.
"""

from __future__ import annotations

import socket as stdlib_socket
import time

import pytest
import zmq

from dockkit.runtime import liveness
from dockkit.runtime.auth import Gatekeeper, join_as_peer
from dockkit.runtime.liveness import BrokerWatch

SECRET = "s3cret"


def settled(watch: BrokerWatch, expected: bool, within: float = 5.0) -> bool:
    """Whether ``watch.update()`` gives ``expected`` before ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if watch.update() == expected:
            return True
        time.sleep(0.02)
    return False


def handshaken(watch: BrokerWatch, within: float = 5.0) -> bool:
    """Whether the connection's handshake succeeds before ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if watch.update() and watch.connected:
            return True
        time.sleep(0.02)
    return False


class Broker:
    """A guarded ROUTER on loopback, in a context of its own as a root's would be."""

    def __init__(self, port: int = 0):
        self.context = zmq.Context()
        self.gatekeeper = Gatekeeper(self.context, secret=SECRET.encode(), curve=None)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        self.gatekeeper.guard(self.router)
        self.address = f"tcp://127.0.0.1:{port or free_port()}"
        self.router.bind(self.address)

    def handshake_pending(self) -> bool:
        return bool(self.gatekeeper.socket.poll(5000))

    def die(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture
def broker():
    broker = Broker()
    yield broker
    broker.die()


def watched_peer(context, address: str) -> tuple[zmq.Socket, BrokerWatch]:
    peer = context.socket(zmq.DEALER)
    peer.linger = 0
    join_as_peer(peer, secret=SECRET, curve=None)
    watch = BrokerWatch(peer, silence=2.0)
    peer.connect(address)
    return peer, watch


def free_port() -> int:
    with stdlib_socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_broker_that_is_not_there_is_down(zmq_context):
    _peer, watch = watched_peer(zmq_context, f"tcp://127.0.0.1:{free_port()}")
    time.sleep(0.5)  # connection refused, and retried
    assert not watch.update()
    watch.close()


def test_a_first_handshake_waiting_on_the_broker_is_not_down(zmq_context, broker):
    _peer, watch = watched_peer(zmq_context, broker.address)
    # The ZAP request stays unanswered, as while the root holds the GIL: linked, not up.
    assert broker.handshake_pending(), "the handshake never reached the ZAP handler"
    assert settled(watch, True)
    assert not watch.connected
    broker.gatekeeper.answer()
    assert handshaken(watch)
    watch.close()


def test_a_first_handshake_waits_no_longer_than_its_bound(zmq_context, broker, monkeypatch):
    monkeypatch.setattr(liveness, "FIRST_HANDSHAKE_WAIT", 0.5)
    _peer, watch = watched_peer(zmq_context, broker.address)
    assert broker.handshake_pending()
    assert watch.update()
    assert settled(watch, False, within=3.0), "a handshake that never ends kept the peer waiting"
    watch.close()


def test_a_connection_that_was_up_and_dropped_is_down_though_it_links_again(zmq_context, broker):
    _peer, watch = watched_peer(zmq_context, broker.address)
    assert broker.handshake_pending()
    broker.gatekeeper.answer()
    assert handshaken(watch)
    broker.die()
    assert settled(watch, False)
    # A new broker at the same address links again, its handshake pending: only a
    # handshake would make the connection up again, a bare TCP link no longer does.
    again = Broker(port=int(broker.address.rsplit(":", 1)[1]))
    try:
        assert again.handshake_pending(), "the peer never linked again"
        assert not settled(watch, True, within=1.0)
        again.gatekeeper.answer()
        assert handshaken(watch)
    finally:
        again.die()
    watch.close()
