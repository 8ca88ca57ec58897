"""An authenticated peer that breaks the protocol is dropped; the run goes on.

A raw ZeroMQ DEALER with the run's secret plays a broken or hostile worker: it
says HELLO as a worker and then sends what no dockkit peer sends. Each time the
broker drops that peer (it gets STOP), the executor's own workers keep every
result right, and no worker of the run dies.
"""

from __future__ import annotations

import struct

import pytest

import dockkit
from dockkit.runtime import protocol as P
from dockkit.runtime.serialize import dumps
from tests.contract import still_works
from tests.unit.test_security import hello, raw_dealer, receive

MALFORMED = {
    "EXITED with a str identity": [P.EXITED, P.pack_info({"identity": "w0", "reason": "x"})],
    "EXITED for another peer's worker": [P.EXITED, P.pack_info({"identity": b"someone/w0", "reason": "x"})],
    "CREDIT of 2**32-1": [P.CREDIT, P.CREDIT_HEADER.pack(2**32 - 1)],
    "CREDIT with a short header": [P.CREDIT, b"\x01"],
    "HEARTBEAT that is not a mapping": [P.HEARTBEAT, b"\x80\x04K\x01."],
    "SUBMIT with a bad header": [P.SUBMIT, struct.pack("!H", 1), b"", b""],
}


@pytest.fixture(scope="module")
def executor():
    with dockkit.Executor(workers=2) as ex:
        ex.wait_for_workers()
        yield ex


@pytest.fixture
def peer(executor):
    import zmq

    context = zmq.Context()
    sock = raw_dealer(context, executor.address, user=P.AUTH_USER, password=executor._secret.encode())
    sock.send_multipart(hello())
    kind, info = receive(sock, 10_000)
    assert kind == P.WELCOME and P.unpack_info(info)["accepted"]
    yield sock
    context.destroy(linger=0)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_message_drops_its_sender_not_the_run(executor, peer, case):
    peer.send_multipart(MALFORMED[case])
    answers = []
    while (message := receive(peer, 3_000)) is not None:
        answers.append(message[0])
        if message[0] == P.STOP:
            break
    if case.startswith("HEARTBEAT"):  # a worker's own socket: not an agent's, so nothing to vouch
        assert P.STOP not in answers
    else:
        assert P.STOP in answers, answers
    still_works(executor)
    assert len(executor.worker_pids) == 2 and all(map(_alive, executor.worker_pids))


def test_garbage_shared_constants_are_ignored_by_every_worker(executor, peer, caplog):
    peer.send_multipart([P.SETCONST, b"", b"\x80\x04this is not a pickle"])
    peer.send_multipart([P.SETCONST, b"", *dumps([1, 2])])
    still_works(executor)
    assert len(executor.worker_pids) == 2 and all(map(_alive, executor.worker_pids))  # none died
    executor.set_constants({"after_garbage": 7})
    assert list(executor.map(_get_const, ["after_garbage"] * 6)) == [7] * 6
    ignored = [r for r in caplog.records if "ignored shared constants that could not be read" in r.getMessage()]
    assert len(ignored) == 2, caplog.text  # the root's own word; each worker prints the same


def _get_const(name):
    return dockkit.shared.getConst(name, timeout=5)


def _alive(pid: int) -> bool:
    from dockkit.launch.supervisor import process_running

    return process_running(pid)


def test_refused_connections_are_said_a_few_times_then_counted():
    from dockkit.runtime.auth import RefusalLog

    said, now = [], [0.0]
    refusals = RefusalLog(said.append, first=3, every=60.0, clock=lambda: now[0])
    for i in range(206):
        refusals.refused_from(f"10.0.0.{i % 250}")
    assert len(said) == 3 and "(more are counted, not listed)" in said[2]
    now[0] = 61.0
    refusals.refused_from("10.0.0.9")
    assert said[3] == ("dockkit broker: refused 204 more connection(s) without the run's credentials "
                       "(207 in all)")
    refusals.refused_from("10.0.0.10")
    refusals.flush(force=True)
    assert said[4].startswith("dockkit broker: refused 1 more connection(s)") and len(said) == 5
