"""The wire protocol module: message kinds, id frames, info frames."""

from __future__ import annotations

import pickle
import struct

import pytest
import zmq

from dockkit.runtime import protocol as P
from dockkit.errors import ProtocolError

KINDS = [P.HELLO, P.WELCOME, P.CREDIT, P.SUBMIT, P.TASKS, P.RESULT, P.FAILED, P.RUNNING, P.CANCEL, P.FORGET,
         P.DROP, P.SETCONST, P.EXITED, P.HEARTBEAT, P.INFO, P.STOP]


def test_kinds_are_distinct_single_bytes_with_names():
    assert all(isinstance(kind, bytes) and len(kind) == 1 for kind in KINDS)
    assert len(set(KINDS)) == len(KINDS)
    assert set(P.NAMES) == set(KINDS)
    assert len(set(P.NAMES.values())) == len(KINDS)


def test_name_of_known_and_unknown_kinds():
    assert P.name(P.SUBMIT) == "SUBMIT"
    assert P.name(bytearray(P.RESULT)) == "RESULT"
    assert P.name(memoryview(P.HELLO)) == "HELLO"
    assert P.name(b"?") == repr(b"?")


@pytest.mark.parametrize("ids", [[], [0], [1, 2, 3], [2**64 - 1, 0, 42], list(range(1000))])
def test_pack_and_unpack_ids(ids):
    frame = P.pack_ids(ids)
    assert len(frame) == 8 * len(ids)
    assert P.unpack_ids(frame) == tuple(ids)
    assert P.unpack_ids(memoryview(frame)) == tuple(ids)


def test_pack_ids_takes_any_iterable_and_rejects_negative():
    assert P.unpack_ids(P.pack_ids(x for x in (5, 6))) == (5, 6)
    with pytest.raises(struct.error):
        P.pack_ids([-1])


def test_info_round_trip():
    info = {"version": P.VERSION, "role": "worker", "pid": 123, "workers": [b"a/w0", b"a/w1"],
            "host": "hôst", "accepted": True, "reason": None}
    assert P.unpack_info(P.pack_info(info)) == info


@pytest.mark.parametrize("frame", [b"", b"garbage", b"\x80\x05", pickle.dumps([1, 2]), pickle.dumps("text")])
def test_malformed_info_is_a_protocol_error(frame):
    with pytest.raises(ProtocolError, match="malformed"):
        P.unpack_info(frame)


def test_headers_round_trip():
    values = (2**64 - 1, 7, 2**32 - 1, P.STAR | P.KWARGS)
    assert P.SUBMIT_HEADER.unpack(P.SUBMIT_HEADER.pack(*values)) == values
    assert P.TASKS_HEADER.unpack(P.TASKS_HEADER.pack(*values)) == values
    assert P.RESULT_HEADER.unpack(P.RESULT_HEADER.pack(1, 2, 3)) == (1, 2, 3)
    assert P.CREDIT_HEADER.unpack(P.CREDIT_HEADER.pack(5)) == (5,)
    assert P.FAILED_HEADER.unpack(P.FAILED_HEADER.pack(9)) == (9,)
    assert P.STAR != P.KWARGS and not P.STAR & P.KWARGS


def test_view_of_every_frame_type():
    data = b"payload"
    assert bytes(P.view(data)) == data
    assert bytes(P.view(memoryview(data))) == data
    assert bytes(P.view(bytearray(data))) == data
    frame = zmq.Frame(data)
    view = P.view(frame)
    assert isinstance(view, memoryview) and bytes(view) == data


@pytest.mark.parametrize(("host", "port", "url"), [
    ("10.0.0.5", 5555, "tcp://10.0.0.5:5555"),
    ("node1", 5555, "tcp://node1:5555"),
    ("fe80::1", 5555, "tcp://[fe80::1]:5555"),
    ("[fe80::1]", 5555, "tcp://[fe80::1]:5555"),   # already bracketed: not twice
    ("::1", None, "tcp://[::1]"),                    # no port: for bind_to_random_port
    ("127.0.0.1", None, "tcp://127.0.0.1"),
])
def test_tcp_url_brackets_ipv6(host, port, url):
    assert P.tcp_url(host, port) == url


def test_a_broker_on_ipv6_loopback_advertises_a_bracketed_url():
    from dockkit.runtime.broker import Broker

    broker = Broker(secret=b"s" * 32, host="::1")
    try:
        assert broker.address == f"tcp://[::1]:{broker.port}"
    finally:
        broker.stop()
