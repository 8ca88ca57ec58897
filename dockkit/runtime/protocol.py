"""The wire protocol between the broker, its clients, workers and host agents.

Every message is a ZeroMQ multipart message ``[kind, header, *payload]`` (the
broker's ROUTER socket adds the peer identity in front). ``kind`` is one byte,
``header`` a fixed ``struct`` per kind, and the payload frames are opaque bytes
the broker forwards without unpickling (functions, arguments, results and their
out-of-band buffers). No sockets and no logic live here.

Flow of one batch of tasks::

    client --SUBMIT(batch_id, func_id)--> broker --TASKS(task_key, func_key)--> worker
    client <--RESULT(batch_id)----------- broker <--RESULT(task_key)----------- worker

Workers ask for work with CREDIT; the broker never sends a worker more batches
than it asked for. Host agents report worker exits with EXITED. HEARTBEATs go
both ways between the broker and every agent and worker watchdog.
"""

from __future__ import annotations

import pickle
import struct

VERSION = 1

# --- message kinds -----------------------------------------------------------
HELLO = b"H"      # peer -> broker: pickled dict describing the peer (role, host, pid, versions)
WELCOME = b"W"    # broker -> peer: pickled dict (accepted, reason, workers)
CREDIT = b"C"     # worker -> broker: can take N more batches
SUBMIT = b"S"     # client -> broker: a batch of tasks
TASKS = b"T"      # broker -> worker: a batch of tasks
RESULT = b"R"     # worker -> broker -> client: results of one batch
FAILED = b"!"     # broker -> client: a batch could not run (pickled exception)
RUNNING = b"G"    # broker -> client: these batches (flagged NOTIFY_RUNNING) reached a worker
CANCEL = b"X"     # client -> broker: drop these batches if not started
FORGET = b"F"     # client -> broker: this function id will not be used again
DROP = b"D"       # broker -> worker: forget these function keys
SETCONST = b"K"   # client -> broker -> workers: shared constants (pickled dict)
EXITED = b"E"     # agent -> broker: one of its workers exited (pickled dict)
HEARTBEAT = b"B"  # both ways, every HEARTBEAT_INTERVAL: broker <-> agents, broker <-> worker watchdogs
INFO = b"I"       # broker -> clients: number of live workers changed
STOP = b"Q"       # broker -> workers/agents: finish and exit

NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", CREDIT: "CREDIT", SUBMIT: "SUBMIT", TASKS: "TASKS",
    RESULT: "RESULT", FAILED: "FAILED", RUNNING: "RUNNING", CANCEL: "CANCEL", FORGET: "FORGET", DROP: "DROP",
    SETCONST: "SETCONST", EXITED: "EXITED", HEARTBEAT: "HEARTBEAT", INFO: "INFO", STOP: "STOP",
}

# --- task flags ----------------------------------------------------------------
STAR = 1     # each argument item is a tuple to unpack: fn(*item)
KWARGS = 2   # each argument item is (args, kwargs): fn(*args, **kwargs)
NOTIFY_RUNNING = 4  # tell the client with RUNNING when the batch is dispatched (submit's futures)

# --- headers -------------------------------------------------------------------
# SUBMIT: batch_id, func_id, ntasks, flags
SUBMIT_HEADER = struct.Struct("!QQIB")
# TASKS: task_key, func_key, ntasks, flags
TASKS_HEADER = struct.Struct("!QQIB")
# RESULT: batch_id (to a client) or task_key (from a worker), compute time in ns, ntasks
RESULT_HEADER = struct.Struct("!QQI")
# CREDIT: how many more batches
CREDIT_HEADER = struct.Struct("!I")
# INFO: live workers, workers announced but not connected yet
INFO_HEADER = struct.Struct("!II")
# FAILED: batch_id (payload: one pickled exception)
FAILED_HEADER = struct.Struct("!Q")
ID_LIST = struct.Struct("!Q")

# Seconds between heartbeats. A worker's watchdog pings from its own socket, whose
# identity is the worker's plus WATCHDOG_SUFFIX, so a long task never delays it.
HEARTBEAT_INTERVAL = 1.0
WATCHDOG_SUFFIX = b"/hb"

# The PLAIN-mechanism user name every peer authenticates as; the password is the run's secret.
AUTH_USER = b"dockkit"


def tcp_url(host: str, port: int | None = None) -> str:
    """The ZeroMQ endpoint ``tcp://host:port``, with an IPv6 address in brackets.

    Args:
        host: A host name, an IPv4 address, or an IPv6 address with or without brackets.
        port: The TCP port; None leaves it out (for ``bind_to_random_port``).

    Returns:
        ``tcp://10.0.0.5:5555``, ``tcp://[fe80::1]:5555``, or ``tcp://[fe80::1]`` without a port.
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}" if port is None else f"tcp://{host}:{port}"


def pack_ids(ids) -> bytes:
    """Pack integer ids (batch ids, function keys) into one frame."""
    ids = list(ids)
    return struct.pack(f"!{len(ids)}Q", *ids)


def unpack_ids(frame: bytes) -> tuple[int, ...]:
    """Inverse of :func:`pack_ids`."""
    return struct.unpack(f"!{len(frame) // 8}Q", frame)


def pack_info(info: dict) -> bytes:
    """Encode a small dict of plain values (HELLO, WELCOME, EXITED)."""
    return pickle.dumps(info, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_info(frame: bytes) -> dict:
    """Decode a frame made by :func:`pack_info`; malformed input gives a ProtocolError."""
    from dockkit.errors import ProtocolError

    try:
        info = pickle.loads(frame)
    except Exception as exc:  # a peer sent garbage; never let it reach the broker loop
        raise ProtocolError(f"malformed message: {exc}") from None
    if not isinstance(info, dict):
        raise ProtocolError("malformed message: expected a mapping")
    return info


def view(frame) -> memoryview:
    """A zero-copy view of a frame, whether a zmq.Frame, bytes or a memoryview."""
    buffer = getattr(frame, "buffer", None)
    return buffer if buffer is not None else memoryview(frame)


def name(kind: bytes) -> str:
    """The readable name of a message kind, for logs."""
    return NAMES.get(bytes(kind), repr(bytes(kind)))
