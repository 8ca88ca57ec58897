"""The broker on its own, driven by real peer sockets: how it counts the workers it waits
for, and which worker gets a batch.

An agent announces its workers on a connection of its own, so under load its
announcement may reach the broker after some of those workers already said hello.
"""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from dockkit.runtime import protocol as P
from dockkit.runtime.broker import Broker
from dockkit.runtime.worker import broker_socket

SECRET = "a-run-secret"


class Counts:
    """The (live, starting) worker counts the broker reports to the root, as they come."""

    def __init__(self):
        self.seen: list[tuple[int, int]] = []
        self._changed = threading.Condition()

    def on_local(self, kind, frames) -> None:
        if kind == P.INFO:
            with self._changed:
                self.seen.append(P.INFO_HEADER.unpack(P.view(frames[0])))
                self._changed.notify_all()

    def wait_for(self, counts: tuple[int, int], timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.seen and self.seen[-1] == counts, timeout):
                raise AssertionError(f"the broker reported {self.seen}, never ending on {counts}")


@pytest.fixture
def broker_and_peers():
    counts = Counts()
    broker = Broker(secret=SECRET.encode(), on_local=counts.on_local).start()
    context = zmq.Context()
    sockets = []

    def peer(identity: str, info: dict) -> zmq.Socket:
        socket = broker_socket(context, P.WorkerConfig(secret=SECRET, address=broker.address), identity)
        sockets.append(socket)
        socket.send_multipart([P.HELLO, P.pack_info({"version": P.VERSION, **info})])
        return socket

    try:
        yield counts, peer, broker
    finally:
        for socket in sockets:
            socket.close(linger=0)
        broker.stop()
        context.destroy(linger=0)


def worker_hello(name: str) -> dict:
    return {"role": "worker", "name": name, "host": "h", "pid": 1}


def test_workers_that_arrive_before_their_agent_are_not_expected_again(broker_and_peers):
    counts, peer, _ = broker_and_peers
    peer("run/0/w0", worker_hello("w0"))
    counts.wait_for((1, 0))
    peer("run/0/agent", {"role": "agent", "host": "h", "workers": [b"run/0/w0", b"run/0/w1"]})
    counts.wait_for((1, 1))  # only w1 is still starting; w0 is here already
    peer("run/0/w1", worker_hello("w1"))
    counts.wait_for((2, 0))


def test_an_announced_worker_is_expected_until_it_arrives(broker_and_peers):
    counts, peer, _ = broker_and_peers
    peer("run/0/agent", {"role": "agent", "host": "h", "workers": [b"run/0/w0", b"run/0/w1"]})
    counts.wait_for((0, 2))
    peer("run/0/w1", worker_hello("w1"))
    counts.wait_for((1, 1))
    peer("run/0/w0", worker_hello("w0"))
    counts.wait_for((2, 0))


def submit(broker: Broker, batch_id: int) -> None:
    """The root submits a one-task batch (the function's code goes with the first)."""
    header = P.SUBMIT_HEADER.pack(batch_id, 1, 1, 0)
    broker.send_local([P.SUBMIT, header, b"code" if batch_id == 1 else b"", b"args"])


def wait_for_credit(broker: Broker, identity: bytes, credit: int, timeout: float = 5.0) -> None:
    """Wait until the broker thread has booked ``credit`` for ``identity``; fail if it never does."""
    deadline = time.monotonic() + timeout
    while broker.workers[identity].credit != credit:
        if time.monotonic() > deadline:
            raise AssertionError(f"the broker never booked a credit of {credit} for {identity!r} within "
                                 f"{timeout:g} s (it has {broker.workers[identity].credit})")
        time.sleep(0.01)


def tasks_received(socket: zmq.Socket, timeout: float = 0.5) -> int:
    received = 0
    while socket.poll(timeout * 1000):
        if socket.recv_multipart()[0] == P.TASKS:
            received += 1
    return received


def test_an_idle_worker_gets_a_batch_before_a_busy_one_gets_a_second(broker_and_peers):
    # w0's credits came first: by credit order alone both batches went to w0, and w1,
    # with credit and nothing to do, waited while w0 ran them one after the other.
    counts, peer, broker = broker_and_peers
    w0, w1 = peer("run/0/w0", worker_hello("w0")), peer("run/0/w1", worker_hello("w1"))
    counts.wait_for((2, 0))
    for socket, identity in ((w0, b"run/0/w0"), (w1, b"run/0/w1")):
        socket.send_multipart([P.CREDIT, P.CREDIT_HEADER.pack(2)])
        wait_for_credit(broker, identity, 2)
    submit(broker, 1)
    submit(broker, 2)
    assert (tasks_received(w0), tasks_received(w1)) == (1, 1)
    # With nobody idle, the credit order decides: w0 and w1 each take one more.
    submit(broker, 3)
    submit(broker, 4)
    assert (tasks_received(w0), tasks_received(w1)) == (1, 1)


def test_one_batch_at_a_time_leaves_the_credit_queue_bounded(broker_and_peers):
    # Each batch goes to the idle worker; the credit it returns must not add an entry to
    # the credit queue every time (a long run of single submits would grow it forever).
    counts, peer, broker = broker_and_peers
    worker = peer("run/0/w0", worker_hello("w0"))
    counts.wait_for((1, 0))
    worker.send_multipart([P.CREDIT, P.CREDIT_HEADER.pack(2)])
    for batch_id in range(1, 201):
        submit(broker, batch_id)
        kind = None
        while kind != P.TASKS:  # past the WELCOME
            assert worker.poll(5000), f"batch {batch_id} never reached the worker"
            kind, header, *_ = worker.recv_multipart()
        task_key = P.TASKS_HEADER.unpack(header)[0]
        worker.send_multipart([P.CREDIT, P.CREDIT_HEADER.pack(1)])
        worker.send_multipart([P.RESULT, P.RESULT_HEADER.pack(task_key, 1, 1), b"result"])
    wait_for_credit(broker, b"run/0/w0", 2)
    assert len(broker._ready) <= 2


def test_a_broker_raises_a_low_open_files_limit_towards_its_hard_limit():
    # A root started with the common soft limit of 1024 (here 256) could not accept a
    # connection per worker of hundreds of hosts; the broker lifts it, no privilege needed.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        from dockkit.runtime.broker import Broker
        broker = Broker(secret=b"s")
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
        broker.stop()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    soft, hard = (int(value) for value in out.stdout.split())
    assert soft == min(65536, hard if hard >= 0 else 65536) and soft > 256


def listen_queue_limit(port: int) -> int:
    """The accept-queue limit the kernel keeps for this process's socket listening on ``port``.

    For a listening socket, Linux reports that limit in TCP_INFO's ``tcpi_sacked``
    (what ``ss -lt`` shows as Send-Q)."""
    import os
    import socket
    import struct

    for fd in map(int, os.listdir("/proc/self/fd")):
        if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
            continue
        sock = socket.socket(fileno=os.dup(fd))
        with sock:
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                bound_port = sock.getsockname()[1] if sock.family in (socket.AF_INET, socket.AF_INET6) else None
            except OSError:
                continue
            if listening and bound_port == port:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                return struct.unpack_from("I", info, 28)[0]  # 8 bytes of u8 fields, then rto … sacked
    raise AssertionError(f"no socket of this process listens on port {port}")


def test_the_brokers_port_queues_every_worker_of_a_large_run_until_it_accepts_them():
    # A run's workers all connect within a second. With ZeroMQ's default backlog (100) the
    # kernel dropped SYNs beyond it while the machine was busy, and each cost a second.
    from pathlib import Path

    from dockkit.runtime.broker import LISTEN_BACKLOG

    broker = Broker(secret=SECRET.encode())
    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert listen_queue_limit(broker.port) == min(LISTEN_BACKLOG, somaxconn) >= 1024
    finally:
        broker.stop()
