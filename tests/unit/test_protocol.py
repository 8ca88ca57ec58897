"""The wire protocol module: message kinds, id frames, info frames, the configuration lines."""

from __future__ import annotations

import json
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


# --- the configuration lines a worker and a host agent read on stdin ---------------------------
SECRET = "the-runs-plain-password"
CLIENT_SECRET = "the-clients-curve-secret-key"


def worker_config(**changes) -> P.WorkerConfig:
    """A configuration with every field away from its default."""
    values = {"address": "tcp://10.0.0.1:5555", "secret": SECRET, "workers": 4, "heartbeat_timeout": 7.5,
              "debug": True, "main": "/home/u/job.py", "argv": ["--n", "3"], "cwd": "/home/u",
              "sys_path": ["/home/u/lib"], "host": "node1", "name": "w2", "identity": "run/node1/w2",
              "curve": {"server_public": "S", "client_public": "C", "client_secret": CLIENT_SECRET}}
    assert set(values) == set(P.WorkerConfig.DEFAULTS)  # a new field is given a value here too
    return P.WorkerConfig(**{**values, **changes})


def agent_line(**changes) -> dict:
    config = P.AgentConfig(worker_config(), identity="run/node1/agent",
                           workers=[("node1:w0", "run/node1/w0")], env={"A": "1"}, files=12)
    return {**json.loads(config.to_json()), **changes}


def test_a_worker_configuration_round_trips_through_one_json_line():
    config = worker_config()
    line = config.to_json()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert P.WorkerConfig.from_json(line).as_dict() == config.as_dict()
    assert P.WorkerConfig.from_json(line.decode()).as_dict() == config.as_dict()


def test_a_worker_configuration_with_an_unknown_field_is_refused():
    line = {**json.loads(worker_config().to_json()), "colour": "blue"}
    with pytest.raises(ProtocolError, match=r"no field\(s\) colour; install the same dockkit version"):
        P.WorkerConfig.from_json(json.dumps(line))
    with pytest.raises(TypeError, match=r"no field\(s\) colour"):
        P.WorkerConfig(address="tcp://10.0.0.1:5555", colour="blue")


@pytest.mark.parametrize("address", [None, ""], ids=["missing", "empty"])
def test_a_worker_configuration_without_a_broker_address_is_refused(address):
    line = json.loads(worker_config().to_json())
    if address is None:
        del line["address"]
    else:
        line["address"] = address
    with pytest.raises(ProtocolError, match="worker configuration without a broker address"):
        P.WorkerConfig.from_json(json.dumps(line))


def test_a_worker_configuration_never_shows_its_secrets():
    config = worker_config()
    for text in (repr(config), str(config), repr(config.replace(name="w3"))):
        assert SECRET not in text and CLIENT_SECRET not in text, text
        assert "tcp://10.0.0.1:5555" in text  # what it does show: where it goes, who it is
    agent = P.AgentConfig(config, identity="run/node1/agent", workers=[])
    assert SECRET not in repr(agent) and CLIENT_SECRET not in repr(agent)


def test_an_agent_configuration_round_trips_and_its_optional_fields_may_be_missing():
    config = P.AgentConfig.from_json(json.dumps(agent_line()))
    assert config.worker.as_dict() == worker_config().as_dict()
    assert (config.identity, config.workers, config.env, config.files) == (
        "run/node1/agent", [("node1:w0", "run/node1/w0")], {"A": "1"}, 12)
    line = agent_line()
    del line["env"], line["files"]  # a root that sends neither
    config = P.AgentConfig.from_json(json.dumps(line))
    assert (config.env, config.files) == ({}, 0)


def test_an_agent_configuration_with_an_unknown_field_is_refused_by_name():
    with pytest.raises(ProtocolError, match=r"agent configuration has no field\(s\) colour, size; "
                                            "install the same dockkit version on every host"):
        P.AgentConfig.from_json(json.dumps(agent_line(size=3, colour="blue")))


@pytest.mark.parametrize("missing", ["worker", "identity", "workers"])
def test_an_agent_configuration_without_a_required_field_is_refused(missing):
    line = agent_line()
    del line[missing]
    with pytest.raises(ProtocolError, match=f"agent configuration: KeyError\\('{missing}'\\)"):
        P.AgentConfig.from_json(json.dumps(line))
