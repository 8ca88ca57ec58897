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

import json
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
MAX_CREDIT = 1024  # batches a worker may ask for ahead; more is a broken or hostile peer
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


# --- messages built in more than one place ---------------------------------------------
def hello_worker(name: str, host: str, pid: int) -> list:
    """A worker's HELLO: it joins the run."""
    return [HELLO, pack_info({"version": VERSION, "role": "worker", "name": name, "host": host,
                              "pid": pid})]


def hello_agent(host: str, workers) -> list:
    """A host agent's HELLO (or the root's, for its own workers): these workers are starting."""
    return [HELLO, pack_info({"version": VERSION, "role": "agent", "host": host,
                              "workers": [_as_bytes(w) for w in workers]})]


def vouch(identities) -> list:
    """An agent's HEARTBEAT that also vouches for its workers whose processes are running.

    A worker in one long C call that holds the GIL can't send its own heartbeats; its
    supervisor, another process, still sees it running (see ``dockkit.launch.supervisor``).
    """
    return [HEARTBEAT, pack_info({"running": [_as_bytes(w) for w in identities]})]


def exited(identity, reason: str) -> list:
    """EXITED: a supervised worker ended (``reason`` says how, e.g. 'was killed by SIGKILL')."""
    return [EXITED, pack_info({"identity": _as_bytes(identity), "reason": reason})]


def _as_bytes(identity) -> bytes:
    return identity.encode() if isinstance(identity, str) else bytes(identity)


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


# --- the configuration a worker or host agent reads on its stdin ---------------------------
class WorkerConfig:
    """Everything a worker needs to join a run; one JSON line on its stdin (never argv: secrets).

    One class for every hop (executor → launcher → agent → supervisor → worker), so a new
    setting is one new field here. Plain slots, not a dataclass: this module is imported
    by every worker, and start-up time counts.

    Attributes:
        address: the broker's ``tcp://host:port`` as this worker reaches it.
        secret: the run's PLAIN password; curve: the peers' CurveZMQ keys, or None.
        workers: the run's worker count (sizes nested maps' windows).
        heartbeat_timeout: seconds of silence after which the broker gives a worker up.
        debug: broker and worker traces. main, argv: the user's script and its arguments,
            imported on the worker under a non-main name. cwd: the working directory.
        sys_path: extra import paths (local workers see the root's).
        host: the host name workers report. name, identity: this worker's (set per worker).
    """

    DEFAULTS = {"address": "", "secret": "", "curve": None, "workers": 1, "heartbeat_timeout": 10.0,
                "debug": False, "main": None, "argv": [], "cwd": None, "sys_path": [], "host": None,
                "name": "", "identity": ""}
    __slots__ = tuple(DEFAULTS)

    def __init__(self, **values):
        unknown = sorted(set(values) - set(self.DEFAULTS))
        if unknown:
            raise TypeError(f"WorkerConfig has no field(s) {', '.join(unknown)}")
        for key, default in self.DEFAULTS.items():
            value = values.get(key, default)
            setattr(self, key, list(value) if isinstance(default, list) else value)

    def replace(self, **changes) -> "WorkerConfig":
        """A copy with some fields changed."""
        return WorkerConfig(**{**self.as_dict(), **changes})

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.DEFAULTS}

    def to_json(self) -> bytes:
        """One line of JSON, newline included."""
        return (json.dumps(self.as_dict()) + "\n").encode()

    @classmethod
    def from_json(cls, line: bytes | str) -> "WorkerConfig":
        """Read what :meth:`to_json` wrote.

        Raises:
            ProtocolError: not a JSON object of known fields with an address (a peer of
                another dockkit version, or a supervisor that died before writing it).
        """
        values = _json_object(line, "worker configuration")
        try:
            config = cls(**values)
        except TypeError as exc:
            raise _protocol_error(f"worker configuration: {exc}; install the same dockkit "
                                  "version on every host") from None
        if not config.address:
            raise _protocol_error("worker configuration without a broker address")
        return config

    def __repr__(self) -> str:  # never print the secret
        return f"WorkerConfig(address={self.address!r}, identity={self.identity!r}, host={self.host!r})"


class AgentConfig:
    """A host agent's configuration: the run's :class:`WorkerConfig` plus the workers to start.

    Attributes:
        worker: what each of its workers gets (name and identity are filled in per worker).
        identity: the agent's own identity at the broker.
        workers: ``(name, identity)`` of each worker to start on this host.
        env: extra environment variables for the workers.
        files: bytes of a tar that follow the line on stdin, for the agent to unpack at ``/``
            before its workers start (members carry their paths from ``/``); 0 for none.
    """

    __slots__ = ("worker", "identity", "workers", "env", "files")

    def __init__(self, worker: WorkerConfig, identity: str, workers, env: dict | None = None, files: int = 0):
        self.worker, self.identity = worker, identity
        self.workers = [tuple(w) for w in workers]
        self.env = dict(env or {})
        self.files = int(files)

    def to_json(self) -> bytes:
        return (json.dumps({"worker": self.worker.as_dict(), "identity": self.identity,
                            "workers": self.workers, "env": self.env, "files": self.files}) + "\n").encode()

    @staticmethod
    def table_to_json(by_host: dict[str, "AgentConfig"]) -> bytes:
        """One line holding every host's configuration, for launchers that send the same
        stdin to every host (``srun --input=all``); each agent picks its own (:meth:`from_table`)."""
        return (json.dumps({"by_host": {host: json.loads(config.to_json())
                                        for host, config in by_host.items()}}) + "\n").encode()

    @classmethod
    def from_table(cls, line: bytes | str, host: str) -> "AgentConfig":
        """This host's configuration from a :meth:`table_to_json` line.

        Raises: ProtocolError: not such a line, or no entry for ``host``.
        """
        table = _json_object(line, "agent configuration table").get("by_host")
        if not isinstance(table, dict) or host not in table:
            hosts = ", ".join(sorted(table)) if isinstance(table, dict) else "none"
            raise _protocol_error(f"agent configuration table has no entry for host {host!r} "
                                  f"(it has: {hosts})")
        return cls.from_json(json.dumps(table[host]))

    @classmethod
    def from_json(cls, line: bytes | str) -> "AgentConfig":
        """Read what :meth:`to_json` wrote; ``env`` and ``files`` may be missing.

        Raises:
            ProtocolError: not what :meth:`to_json` writes: a field missing or unknown
                (a root of another dockkit version), or of the wrong type.
        """
        values = _json_object(line, "agent configuration")
        unknown = sorted(set(values) - set(cls.__slots__))
        if unknown:
            raise _protocol_error(f"agent configuration has no field(s) {', '.join(unknown)}; "
                                  "install the same dockkit version on every host")
        try:
            worker = WorkerConfig.from_json(json.dumps(values["worker"]))
            return cls(worker, str(values["identity"]), values["workers"], values.get("env"),
                       values.get("files", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise _protocol_error(f"agent configuration: {exc!r}") from None


def _json_object(line, what: str) -> dict:
    try:
        values = json.loads(line)
    except ValueError as exc:
        raise _protocol_error(f"{what} is not JSON ({exc}); was the process started by dockkit?") from None
    if not isinstance(values, dict):
        raise _protocol_error(f"{what} is not a JSON object")
    return values


def _protocol_error(message: str):
    from dockkit.errors import ProtocolError

    return ProtocolError(message)
