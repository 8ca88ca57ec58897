"""Only peers with the run's secret reach the broker.

A raw ZeroMQ DEALER plays the intruder: without credentials, or with a wrong
user name or password, its HELLO and SUBMIT get no answer and its task never
runs, and the executor keeps working. With the right secret the same raw socket
does get a WELCOME and a RESULT, which shows the refusals are not an artefact of
a broken test client. An encrypted run (CurveZMQ) admits only its own client key:
not a PLAIN peer that knows the secret, not a CURVE peer with a key of its own.
"""

from __future__ import annotations

import pathlib
import uuid
from pathlib import Path

import pytest
import zmq

import dockkit
from dockkit.runtime import protocol as P
from dockkit.runtime.serialize import dumps, loads
from tests.contract import still_works

REFUSAL_WAIT_MS = 1500
SEND_WAIT_MS = 2000


@pytest.fixture(scope="module")
def executor():
    # Spawned, not forked: a spawned worker's command line is its own, so the test
    # that looks for the secret there looks at what a worker really runs.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKKIT_START_METHOD", "spawn")
        ex = dockkit.Executor(workers=2)
    with ex:
        yield ex


def raw_dealer(context, address, *, user=None, password=None):
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = SEND_WAIT_MS
    sock.identity = f"raw-{uuid.uuid4().hex[:8]}".encode()
    if user is not None:
        sock.plain_username = user
        sock.plain_password = password
    sock.connect(address)
    return sock


def hello():
    return [P.HELLO, P.pack_info({"version": P.VERSION, "role": "worker", "name": "intruder",
                                  "host": "elsewhere", "pid": 1})]


def submit_touch(marker: Path, batch_id: int = 1):
    """A SUBMIT whose task creates ``marker``: proof that the task ran."""
    import cloudpickle

    blob = cloudpickle.dumps(pathlib.Path.touch, protocol=5)
    payload = dumps([((marker,), {})])
    return [P.SUBMIT, P.SUBMIT_HEADER.pack(batch_id, 1, 1, P.KWARGS), blob, *payload]


def send_unless_refused(sock, frames) -> bool:
    """Send, or find that nothing can be sent: a DEALER whose handshake the broker
    rejected has no peer left, and its send would otherwise block for good."""
    try:
        sock.send_multipart(frames)
        return True
    except zmq.Again:
        return False


def receive(sock, timeout_ms=REFUSAL_WAIT_MS):
    if not sock.poll(timeout_ms):
        return None
    return sock.recv_multipart()


CREDENTIALS = {
    "no credentials": {},
    "wrong password": {"user": P.AUTH_USER, "password": b"not-the-secret"},
    "wrong user": {"user": b"intruder", "password": None},  # filled with the right secret below
}


@pytest.mark.parametrize("case", sorted(CREDENTIALS))
def test_peer_without_the_secret_gets_nothing(executor, zmq_context, tmp_path, case):
    credentials = dict(CREDENTIALS[case])
    if credentials.get("user") == b"intruder":
        credentials["password"] = executor._secret.encode()
    marker = tmp_path / "ran"
    sock = raw_dealer(zmq_context, executor.address, **credentials)
    if send_unless_refused(sock, hello()):
        send_unless_refused(sock, submit_touch(marker))
    assert receive(sock) is None
    # the executor still works, and the intruder's task never ran
    still_works(executor)
    assert not marker.exists()


def test_peer_with_the_secret_is_answered(executor, zmq_context, tmp_path):
    secret = executor._secret.encode()
    client = raw_dealer(zmq_context, executor.address, user=P.AUTH_USER, password=secret)
    marker = tmp_path / "ran"
    client.send_multipart(submit_touch(marker, batch_id=7))
    kind, header, *frames = receive(client, 30_000)
    assert kind == P.RESULT
    batch_id, _elapsed, ntasks = P.RESULT_HEADER.unpack(header)
    assert (batch_id, ntasks) == (7, 1)
    values, errors = loads(frames)
    assert values == [None] and not errors
    assert marker.exists()

    worker = raw_dealer(zmq_context, executor.address, user=P.AUTH_USER, password=secret)
    worker.send_multipart(hello())
    kind, info = receive(worker, 30_000)[:2]
    assert kind == P.WELCOME and P.unpack_info(info)["accepted"] is True
    still_works(executor)


def test_secret_is_not_on_a_command_line(executor):
    secret = executor._secret.encode()
    assert executor.worker_pids
    for pid in executor.worker_pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"dockkit.runtime.worker" in cmdline, cmdline  # a worker's own command line
        assert secret not in cmdline


def test_a_worker_that_joins_later_gets_each_constant_once(executor, zmq_context):
    name = f"late_{uuid.uuid4().hex}"
    executor.set_constants({name: list(range(100))})
    still_works(executor)  # the constant is out, to the workers already there
    late = raw_dealer(zmq_context, executor.address, user=P.AUTH_USER, password=executor._secret.encode())
    late.send_multipart(hello())
    received = []
    while (message := receive(late, 1000)) is not None:
        received.append(message)
    assert received[0][0] == P.WELCOME
    ours = [m for m in received if m[0] == P.SETCONST and name in loads(m[2:])]
    assert len(ours) == 1 and loads(ours[0][2:])[name] == list(range(100))


# --- encrypted runs --------------------------------------------------------------------------------------
def curve_dealer(context, address, server_public: str, public: bytes, secret: bytes):
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = SEND_WAIT_MS
    sock.identity = f"raw-{uuid.uuid4().hex[:8]}".encode()
    sock.curve_serverkey = server_public.encode()
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.connect(address)
    return sock


def test_encryption_is_chosen_by_what_the_broker_binds():
    from dockkit.runtime.auth import binds_loopback_only

    assert binds_loopback_only("127.0.0.1") and binds_loopback_only("::1")
    assert binds_loopback_only("localhost") and binds_loopback_only("127.0.0.2")
    assert not binds_loopback_only("0.0.0.0") and not binds_loopback_only("10.1.2.3")
    assert not binds_loopback_only("head.example")  # a name may resolve to any interface


def test_an_encrypted_run_admits_its_own_client_key_only(zmq_context, tmp_path):
    with dockkit.Executor(workers=2, encrypt=True) as ex:
        still_works(ex)  # its own workers hold the run's client key
        keys = ex._curve
        secret = ex._secret.encode()
        marker = tmp_path / "ran"
        plain = raw_dealer(zmq_context, ex.address, user=P.AUTH_USER, password=secret)
        stranger = curve_dealer(zmq_context, ex.address, keys["server_public"], *zmq.curve_keypair())
        for intruder in (plain, stranger):
            send_unless_refused(intruder, submit_touch(marker))
            assert receive(intruder) is None
        still_works(ex)
        assert not marker.exists()
        member = curve_dealer(zmq_context, ex.address, keys["server_public"],
                              keys["client_public"].encode(), keys["client_secret"].encode())
        member.send_multipart(submit_touch(marker, batch_id=3))
        kind, header, *_ = receive(member, 30_000)
        assert kind == P.RESULT and P.RESULT_HEADER.unpack(header)[0] == 3
        assert marker.exists()
