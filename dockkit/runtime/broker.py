"""The broker: one ROUTER socket that routes batches between clients and workers.

::

    root process                                          every host
    ┌─────────────────────────────┐                       ┌──────────────────────┐
    │ Executor / futures.* ──┐    │                       │ agent (remote hosts) │
    │   (Client)    queue + pipe  │      one TCP port     │   EXITED, HEARTBEAT  │
    │ LocalWorkers ──┘    │       │   (PLAIN auth, ZAP)   │ worker … worker      │
    │          broker thread ◄────┼──────────────────────►│   (DEALER, CREDIT)   │
    └─────────────────────────────┘                       └──────────────────────┘

Workers connect out to the broker and ask for work with CREDIT; the broker sends
a worker at most as many batches as it asked for, so a fast worker takes more
and a slow one fewer, and nothing queues on a busy worker. Results travel back
through the broker. The broker never unpickles a payload: it forwards frames,
and sends each function's blob to a worker once (functions travel once).

Worker loss is one explicit state, handled in :meth:`Broker._worker_lost`: the
host's agent (or the root's local supervisor) reports the exit at once with its
status; the broker re-queues exactly that worker's in-flight batches, up to
``max_retries`` attempts each, then fails them with a WorkerLostError naming
the worker, its host and the exit status. Healthy long tasks are never re-sent.
A remote agent that goes silent for ``heartbeat_timeout`` counts as lost with
all its workers, and so does a worker that falls silent (stopped or cut off).
A worker speaks through its watchdog, a thread with its own socket; a task in
one long C call that holds the GIL silences that thread too, so each agent (and
the root for its local workers) also vouches, every heartbeat, for its workers
whose processes are running: a healthy task is never taken for a lost one, however
long it holds the GIL. Watchdogs exit their worker when the broker goes silent.
Silence counts only while the broker listens: when the root itself stalls (a long C
call holding the GIL), peers whose beats could not even reach it meanwhile (a watchdog
whose handshake waits on the broker's ZAP handler) are not blamed for the stall.

The root's own client and supervisor hand their messages to the broker thread
through a queue (``send_local``), so one thread owns every socket: a message is
one append, and a wake-up pipe is written only while the broker thread sleeps.
(An inproc socket released the GIL once per frame, handing it to the broker
thread and back several times per batch.)

Peers authenticate with the run's credentials, checked in this thread by a
:class:`~dockkit.runtime.auth.Gatekeeper` (PLAIN on loopback, CurveZMQ beyond it).
"""

from __future__ import annotations

import collections
import itertools
import logging
import struct
import threading
import time

import zmq

from dockkit.runtime import protocol as P
from dockkit.runtime.auth import Gatekeeper, RefusalLog
from dockkit.runtime.context import debug_requested
from dockkit.errors import BrokenExecutor, ConfigError, ProtocolError, WorkerLostError
from dockkit.runtime.interrupts import interrupts_deferred
from dockkit.runtime.serialize import dumps
from dockkit.runtime.wakeup import WakePipe

log = logging.getLogger("dockkit.broker")
TRACE = debug_requested()

LOCAL = b"\x00root"  # identity of messages from the root process itself
#: What a handler raises on a malformed message (a header that does not unpack, a bad id).
MALFORMED = (ValueError, KeyError, IndexError, TypeError, struct.error)
#: Connections the kernel queues for the broker's port until ZeroMQ accepts them (capped by
#: net.core.somaxconn). Every worker and agent of a run connects within the same second; past
#: ZeroMQ's default of 100, on a busy machine, the kernel dropped their SYNs, and each dropped
#: one cost its worker a second (the SYN's first retransmission).
LISTEN_BACKLOG = 4096


# Plain classes with __slots__, not dataclasses: they are made per batch on the hot
# path, and dataclass creation costs milliseconds at import (executor start-up).
class Batch:
    """One submitted batch of tasks, from SUBMIT until its RESULT reaches the client."""

    __slots__ = ("key", "client", "batch_id", "func_key", "ntasks", "flags", "payload",
                 "attempts", "worker", "cancelled")

    def __init__(self, key: int, client: bytes, batch_id: int, func_key: int, ntasks: int,
                 flags: int, payload: list):
        self.key, self.client, self.batch_id, self.func_key = key, client, batch_id, func_key
        self.ntasks, self.flags, self.payload = ntasks, flags, payload
        self.attempts = 0
        self.worker: bytes | None = None
        self.cancelled = False


class Function:
    """A pickled function; freed once its client forgot it and no task uses it."""

    __slots__ = ("key", "blob", "refs", "held")

    def __init__(self, key: int, blob):
        self.key, self.blob, self.refs, self.held = key, blob, 0, True


class Worker:
    __slots__ = ("identity", "name", "host", "pid", "credit", "inflight", "funcs", "watchdog",
                 "last_seen", "idle_queued", "ready_entries")

    def __init__(self, identity: bytes, name: str, host: str, pid: int, now: float):
        self.identity, self.name, self.host, self.pid = identity, name, host, pid
        self.credit = 0
        self.inflight: dict[int, Batch] = {}
        self.funcs: set[int] = set()
        self.watchdog: bytes | None = None  # its watchdog's identity (identity + WATCHDOG_SUFFIX)
        self.last_seen = now
        self.idle_queued = False  # in the broker's idle queue
        self.ready_entries = 0  # its entries in the broker's credit queue


class AgentPeer:
    """A host agent (or the root, for its own workers) and the workers it announced."""

    __slots__ = ("identity", "host", "expected", "last_seen")

    def __init__(self, identity: bytes, host: str, expected: set, last_seen: float):
        self.identity, self.host, self.expected, self.last_seen = identity, host, expected, last_seen


OPEN_FILES_WANTED = 65536  # every worker and agent is one connection, one descriptor


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise this process's soft limit of open descriptors towards ``wanted``, as far as
    its hard limit allows; return the soft limit now in force.

    Many systems start processes with a soft limit of 1024, which a broker of 250 hosts
    with 4 workers each would pass; the hard limit is usually far higher, and raising
    the soft one up to it needs no privilege.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class Broker:
    """Routes batches between clients and workers; runs in its own thread.

    Args:
        secret: the run's password; peers must authenticate with it (ZMQ PLAIN via ZAP).
        host: address to bind; loopback unless remote workers must reach it directly.
        port: TCP port, 0 for any free one.
        max_retries: how many times a batch is re-run after its worker died (0: never).
        on_local: called in the broker thread with (kind, frames) for messages to the root.
        curve: the run's keys from :func:`new_curve_keys` to encrypt with CurveZMQ, or
            None for PLAIN (loopback only).
        heartbeat_timeout: seconds of silence after which a remote agent, or a worker's
            watchdog, counts as lost.
    """

    def __init__(self, *, secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 max_retries: int = 3, on_local=None, heartbeat_timeout: float = 10.0,
                 curve: dict | None = None):
        self.max_retries = max_retries
        self.heartbeat_timeout = heartbeat_timeout
        self._on_local = on_local or (lambda kind, frames: None)
        raise_open_files_limit()
        self._context = zmq.Context()
        self._gatekeeper = Gatekeeper(self._context, secret=secret, curve=curve)
        self._router = self._context.socket(zmq.ROUTER)
        self._gatekeeper.guard(self._router)
        self._router.router_mandatory = True  # a vanished peer raises instead of dropping silently
        self._router.ipv6 = True  # IPv4 as well; lets the launcher advertise an IPv6 address
        self._router.linger = 0
        self._router.sndhwm = self._router.rcvhwm = 0
        self._router.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        try:
            if port:
                self._router.bind(P.tcp_url(host, port))
                self.port = port
            else:
                self.port = self._router.bind_to_random_port(P.tcp_url(host))
        except zmq.ZMQError as exc:
            self._context.destroy(linger=0)
            raise ConfigError(f"the broker cannot listen on {host}:{port or 'any port'} ({exc}): "
                              "give an address of this machine, or a free port") from None
        self.host = host
        self._inbox: collections.deque[list] = collections.deque()  # from the root's threads
        self._asleep = False  # the broker thread is in (or about to enter) its poll
        self._wake = WakePipe()
        self._thread = threading.Thread(target=self._run, name="dockkit-broker", daemon=True)
        self._stopping = threading.Event()

        self._keys = itertools.count(1)
        self.workers: dict[bytes, Worker] = {}
        self.agents: dict[bytes, AgentPeer] = {}
        self._queue: collections.deque[Batch] = collections.deque()
        self._ready: collections.deque[bytes] = collections.deque()  # one entry per credit
        # Workers with credit and nothing in flight, served before the credit order: a
        # worker whose credits came first must not take every batch while another idles.
        self._idle: collections.deque[bytes] = collections.deque()
        self._batches: dict[tuple[bytes, int], Batch] = {}
        self._funcs: dict[int, Function] = {}
        self._client_funcs: dict[tuple[bytes, int], int] = {}
        self._consts: list[list] = []
        self._expected: set[bytes] = set()  # workers announced but not yet seen
        # Workers that said hello or were lost: an agent's announcement, which travels on
        # a connection of its own, may arrive after them and must not expect them again.
        self._arrived: set[bytes] = set()
        self._lost: set[bytes] = set()      # workers and agents dropped as lost: told to stop if they speak
        self._silent_hosts: set[str] = set()  # hosts whose agent was given up on for silence
        self._last_exit = ""
        self.batches_dispatched = 0         # read by Executor.stats(); ints are safe to share
        self.tasks_dispatched = 0
        self.batches_requeued = 0

    # --- life cycle ---------------------------------------------------------------
    @property
    def address(self) -> str:
        return P.tcp_url(self.host, self.port)

    def start(self) -> "Broker":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Tell every worker and agent to stop, then close all sockets. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.is_alive():
            self.send_local([P.STOP, b""])
            self._thread.join(timeout=5)
        self._wake.close()
        self._context.destroy(linger=0)

    def expect(self, host: str, identities) -> None:
        """Thread-safe: announce workers that are starting, so tasks wait for them."""
        self.send_local(P.hello_agent(host, identities))

    def connected(self, identities) -> int:
        """Thread-safe: how many of these peers (workers or agents) are connected now."""
        return sum(i in self.workers or i in self.agents for i in identities)  # atomic reads

    def unresponsive_hosts(self, quiet_for: float = 3 * P.HEARTBEAT_INTERVAL) -> set[str]:
        """Thread-safe: hosts whose agent was given up on, or has not been heard for ``quiet_for`` s.

        A launcher that stops does not wait on them (a paused or cut-off host answers nothing).
        """
        now = time.monotonic()
        quiet = {agent.host for agent in list(self.agents.values())  # a copy: the broker thread edits it
                 if agent.identity != LOCAL and now - agent.last_seen > quiet_for}
        return quiet | self._silent_hosts

    def report_exit(self, identity, reason: str) -> None:
        """Thread-safe: a worker of this process's own supervision exited."""
        self.send_local(P.exited(identity, reason))

    def send_local(self, frames) -> None:
        """Thread-safe: hand a message from the root process to the broker thread.

        Small buffers are copied now, as a socket would copy them: the caller may reuse
        them at once. Large ones are sent from their own memory, as with ``copy=False``.
        """
        frames = [f if type(f) is bytes or P.view(f).nbytes >= zmq.COPY_THRESHOLD else bytes(f)
                  for f in frames]
        with interrupts_deferred():  # a Ctrl-C must not leave a message without its wake-up
            self._inbox.append(frames)
            if self._asleep:
                self._wake.wake()

    # --- the loop -------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake.fileno(), zmq.POLLIN)  # poll() reports the fd itself
        poller.register(self._gatekeeper.socket, zmq.POLLIN)
        next_beat = time.monotonic() + P.HEARTBEAT_INTERVAL
        refusals = RefusalLog(log.warning)
        try:
            while True:
                # Asleep first, then look at the inbox: a message appended after the look
                # sees the flag and writes the pipe, so none waits for the poll's timeout.
                self._asleep = True
                idle = not self._inbox
                started = time.monotonic()
                events = dict(poller.poll(P.HEARTBEAT_INTERVAL * 1000 if idle else 0))
                self._asleep = False
                if self._gatekeeper.socket in events:
                    admitted, peer = self._gatekeeper.answer()
                    if not admitted:
                        refusals.refused_from(peer)
                if self._wake.fileno() in events:
                    self._wake.drain()
                if not self._drain_local():
                    break
                if self._router in events:
                    self._drain_router()
                self._dispatch()
                now = time.monotonic()
                deaf = now - started - (P.HEARTBEAT_INTERVAL if idle else 0)
                if deaf > P.HEARTBEAT_INTERVAL:
                    self._excuse_silence(deaf, now)
                if now >= next_beat:
                    next_beat = now + P.HEARTBEAT_INTERVAL
                    # After a stall (a long C call in the root holding the GIL) the peers'
                    # beats may wait unread though this poll saw none: read them before judging.
                    self._drain_router()
                    self._beat(now)
                    refusals.flush()
        except Exception:  # the broker must never die silently: fail every waiting batch
            log.exception("dockkit broker crashed")
            self._fail_all(BrokenExecutor("the dockkit broker crashed; see the log above"))
        finally:
            refusals.flush(force=True)
            self._broadcast_stop()
            self._on_local(P.STOP, [])
            for sock in (self._router, self._gatekeeper.socket):
                sock.close(linger=0)

    def _drain_router(self) -> None:
        for _ in range(10_000):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 3:
                continue
            self._handle(frames[0].bytes, frames[1].bytes, frames[2:])

    def _drain_local(self) -> bool:
        for _ in range(10_000):
            try:
                frames = self._inbox.popleft()
            except IndexError:
                return True
            kind = frames[0]
            if kind == P.STOP:
                return False
            self._handle(LOCAL, kind, frames[1:])
        return True

    def _handle(self, peer: bytes, kind: bytes, frames: list) -> None:
        if TRACE:
            log.debug("broker <- %r %s", peer, P.name(kind))
        handler = self._handlers.get(kind)
        if handler is None:
            log.warning("dockkit broker: ignoring unknown message %r from %r", kind, peer)
            return
        try:
            handler(self, peer, frames)
        except (*MALFORMED, ProtocolError, ArithmeticError, AttributeError, MemoryError) as exc:
            if peer == LOCAL:  # the root's own message: a bug here, not a bad peer
                raise
            # An authenticated peer that breaks the protocol is dropped; the run goes on.
            log.warning("dockkit broker: dropping %r: malformed %s: %s", peer, P.name(kind), exc)
            self._drop_peer(peer, f"sent a malformed {P.name(kind)} message ({exc})")

    def _drop_peer(self, peer: bytes, reason: str) -> None:
        self._send(peer, [P.STOP, b""])
        if peer in self.workers:
            self._lost.add(peer)
            self._worker_lost(peer, reason)

    # --- sending --------------------------------------------------------------------
    def _send(self, peer: bytes, frames: list) -> None:
        if peer == LOCAL:
            self._on_local(frames[0], frames[1:])
            return
        try:
            self._router.send_multipart([peer, *frames], copy=False)
        except zmq.ZMQError as exc:  # peer vanished (EHOSTUNREACH); its exit report handles the rest
            if TRACE:
                log.debug("broker -> %r failed: %s", peer, exc)

    def _broadcast_stop(self) -> None:
        watchdogs = [w.watchdog for w in self.workers.values() if w.watchdog is not None]
        for peer in [*self.workers, *watchdogs, *self.agents]:  # watchdogs: a busy worker goes too
            self._send(peer, [P.STOP, b""])

    def _info(self) -> None:
        self._send(LOCAL, [P.INFO, P.INFO_HEADER.pack(len(self.workers), len(self._expected))])

    # --- handlers ---------------------------------------------------------------------
    def _on_hello(self, peer, frames) -> None:
        info = P.unpack_info(P.view(frames[0]).tobytes())
        if info.get("version") != P.VERSION:
            self._send(peer, [P.WELCOME, P.pack_info({
                "accepted": False,
                "reason": f"protocol version {info.get('version')} != broker's {P.VERSION}; "
                          "install the same dockkit version on every host"})])
            return
        if info.get("role") == "agent":
            expected = set(info.get("workers", ()))
            self._expected |= expected - self._arrived
            self.agents[peer] = AgentPeer(peer, info.get("host", "?"), expected, time.monotonic())
            if peer != LOCAL:
                self._send(peer, [P.WELCOME, P.pack_info({"accepted": True})])
            self._info()
            return
        self._expected.discard(peer)
        self._arrived.add(peer)
        self.workers[peer] = Worker(peer, info.get("name", peer.decode(errors="replace")),
                                    info.get("host", "?"), int(info.get("pid", 0)), time.monotonic())
        # Its watchdog's name is known now: beats go to it before it first speaks, so a task
        # that holds the GIL from the start can't leave the watchdog thinking the broker gone.
        self.workers[peer].watchdog = peer + P.WATCHDOG_SUFFIX
        self._send(peer, [P.WELCOME, P.pack_info({"accepted": True, "workers": len(self.workers)})])
        for blob in self._consts:
            self._send(peer, [P.SETCONST, b"", *blob])
        self._info()

    def _on_credit(self, peer, frames) -> None:
        worker = self.workers.get(peer)
        if worker is None:
            return
        (n,) = P.CREDIT_HEADER.unpack(frames[0].buffer)
        if worker.credit + n > P.MAX_CREDIT:
            raise ProtocolError(f"credit {worker.credit} + {n} is over the limit of {P.MAX_CREDIT}")
        worker.credit += n
        # At least one entry per credit; a credit taken through the idle queue left its
        # entry behind, and that entry serves the next one (never an endless queue).
        missing = worker.credit - worker.ready_entries
        if missing > 0:
            self._ready.extend([peer] * missing)
            worker.ready_entries += missing
        self._mark_idle(worker)

    def _on_submit(self, peer, frames) -> None:
        batch_id, func_id, ntasks, flags = P.SUBMIT_HEADER.unpack(P.view(frames[0]))
        blob, payload = frames[1], list(frames[2:])
        func_key = self._client_funcs.get((peer, func_id))
        if func_key is None:
            if not len(P.view(blob)):
                raise ValueError(f"SUBMIT for unknown function id {func_id} without its code")
            func_key = next(self._keys)
            self._client_funcs[(peer, func_id)] = func_key
            self._funcs[func_key] = Function(func_key, blob)
        self._funcs[func_key].refs += 1
        batch = Batch(next(self._keys), peer, batch_id, func_key, ntasks, flags, payload)
        self._batches[(peer, batch_id)] = batch
        if not self.workers and not self._expected:
            self._fail(batch, BrokenExecutor(self._no_workers_reason()))
            return
        self._queue.append(batch)

    def _on_result(self, peer, frames) -> None:
        worker = self.workers.get(peer)
        if worker is None:
            return
        task_key, elapsed, ntasks = P.RESULT_HEADER.unpack(frames[0].buffer)
        batch = worker.inflight.pop(task_key, None)
        if batch is None:
            return
        self._mark_idle(worker)
        if not batch.cancelled:
            header = P.RESULT_HEADER.pack(batch.batch_id, elapsed, ntasks)
            self._send(batch.client, [P.RESULT, header, *frames[1:]])
        self._retire(batch)

    def _on_cancel(self, peer, frames) -> None:
        for batch_id in P.unpack_ids(P.view(frames[0])):
            batch = self._batches.get((peer, batch_id))
            if batch is not None:
                batch.cancelled = True

    def _on_forget(self, peer, frames) -> None:
        for func_id in P.unpack_ids(P.view(frames[0])):
            key = self._client_funcs.pop((peer, func_id), None)
            if key is not None:
                self._funcs[key].held = False
                self._maybe_free(key)

    def _on_setconst(self, peer, frames) -> None:
        blob = list(frames[1:])
        self._consts.append(blob)
        # Everyone but the sender: the workers, and the root when a task set them
        for identity in (*self.workers, LOCAL):
            if identity != peer:
                self._send(identity, [P.SETCONST, b"", *blob])

    def _on_exited(self, peer, frames) -> None:
        info = P.unpack_info(P.view(frames[0]).tobytes())
        identity, reason = info.get("identity"), info.get("reason", "exited")
        agent = self.agents.get(peer)
        if agent is None and peer in self._lost:
            # a host given up on as silent, awake again: its workers were dealt with then
            self._send(peer, [P.STOP, b""])
            return
        if not isinstance(identity, bytes) or not isinstance(reason, str) or len(reason) > 1000:
            raise ProtocolError("EXITED needs a bytes identity and a short str reason")
        # An agent reports its own workers only; the root also speaks for hosts whose SSH link died.
        if peer != LOCAL and (agent is None or identity not in agent.expected):
            raise ProtocolError(f"EXITED for {identity!r}, which is not this peer's worker")
        self._worker_lost(identity, reason)

    def _on_heartbeat(self, peer, frames) -> None:
        agent = self.agents.get(peer)
        if agent is not None:
            agent.last_seen = now = time.monotonic()
            payload = P.view(frames[0]).tobytes() if frames else b""
            running = P.unpack_info(payload).get("running", ()) if payload else ()
            if not isinstance(running, (list, tuple)):
                return
            # Its own workers only: an agent can't keep another host's workers alive.
            for identity in {w for w in running if isinstance(w, bytes)} & agent.expected:
                if (worker := self.workers.get(identity)) is not None:
                    worker.last_seen = now
            return
        if not peer.endswith(P.WATCHDOG_SUFFIX):
            return
        identity = peer[:-len(P.WATCHDOG_SUFFIX)]
        worker = self.workers.get(identity)
        if worker is not None:
            worker.watchdog = peer
            worker.last_seen = time.monotonic()
        elif identity in self._lost:  # dropped as silent, and now awake again: it must go
            self._send(peer, [P.STOP, b""])

    _handlers = {
        P.HELLO: _on_hello, P.CREDIT: _on_credit, P.SUBMIT: _on_submit, P.RESULT: _on_result,
        P.CANCEL: _on_cancel, P.FORGET: _on_forget, P.SETCONST: _on_setconst,
        P.EXITED: _on_exited, P.HEARTBEAT: _on_heartbeat,
    }

    # --- scheduling -----------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._queue:
            batch = self._queue[0]
            if batch.cancelled:
                self._queue.popleft()
                self._retire(batch)
                continue
            worker = self._next_worker()
            if worker is None:
                return
            self._queue.popleft()
            worker.credit -= 1
            blob = b""
            if batch.func_key not in worker.funcs:
                worker.funcs.add(batch.func_key)
                blob = self._funcs[batch.func_key].blob
            batch.worker = worker.identity
            worker.inflight[batch.key] = batch
            self.batches_dispatched += 1
            self.tasks_dispatched += batch.ntasks
            header = P.TASKS_HEADER.pack(batch.key, batch.func_key, batch.ntasks, batch.flags)
            self._send(worker.identity, [P.TASKS, header, blob, *batch.payload])
            if batch.flags & P.NOTIFY_RUNNING and batch.attempts == 0:
                self._send(batch.client, [P.RUNNING, P.pack_ids([batch.batch_id])])

    def _mark_idle(self, worker: Worker) -> None:
        if worker.credit > 0 and not worker.inflight and not worker.idle_queued:
            worker.idle_queued = True
            self._idle.append(worker.identity)

    def _next_worker(self) -> Worker | None:
        """The worker for the next batch: an idle one first, else by credit order.

        Both queues are checked lazily: an entry whose worker is gone, or has no credit
        left (or, in the idle queue, is busy now), is dropped. Taking a credit through
        the idle queue leaves its entry in the credit queue, to be used or dropped there.
        """
        while self._idle:
            worker = self.workers.get(self._idle.popleft())
            if worker is not None:
                worker.idle_queued = False
                if worker.credit > 0 and not worker.inflight:
                    return worker
        while self._ready:
            worker = self.workers.get(self._ready.popleft())
            if worker is not None:
                worker.ready_entries -= 1
                if worker.credit > 0:
                    return worker
        return None

    def _retire(self, batch: Batch) -> None:
        self._batches.pop((batch.client, batch.batch_id), None)
        function = self._funcs.get(batch.func_key)
        if function is not None:
            function.refs -= 1
            self._maybe_free(batch.func_key)

    def _maybe_free(self, key: int) -> None:
        function = self._funcs[key]
        if function.held or function.refs > 0:
            return
        del self._funcs[key]
        frame = P.pack_ids([key])
        for worker in self.workers.values():
            if key in worker.funcs:
                worker.funcs.discard(key)
                self._send(worker.identity, [P.DROP, frame])

    def _fail(self, batch: Batch, exc: BaseException) -> None:
        if not batch.cancelled:
            self._send(batch.client, [P.FAILED, P.FAILED_HEADER.pack(batch.batch_id), *dumps(exc)])
        self._retire(batch)

    def _worker_lost(self, identity: bytes, reason: str) -> None:
        """The one place a lost worker is handled: requeue its batches or fail them."""
        self._expected.discard(identity)
        self._arrived.add(identity)
        worker = self.workers.pop(identity, None)
        if worker is None:
            self._check_broken(f"worker {identity.decode(errors='replace')} {reason}")
            return
        where = f"worker {worker.name} (pid {worker.pid}) on {worker.host} {reason}"
        self._last_exit = where
        log.warning("dockkit: %s", where)
        # A batch whose worker ran out of memory would take each worker it lands on: fail it.
        out_of_memory = "out-of-memory" in reason
        for batch in sorted(worker.inflight.values(), key=lambda t: t.key, reverse=True):
            batch.attempts += 1
            batch.worker = None
            if out_of_memory:
                self._fail(batch, WorkerLostError(
                    f"a batch of {batch.ntasks} task(s) ran out of memory: {where}; it is not "
                    "re-run, as it would take each worker it lands on. Give the nodes more memory "
                    "(dockkit up --memory) or make the tasks smaller"))
            elif batch.attempts > self.max_retries:
                self._fail(batch, WorkerLostError(
                    f"a batch of {batch.ntasks} task(s) was lost: {where}; it ran "
                    f"{batch.attempts} time(s), more than max_retries={self.max_retries} allows"))
            else:
                self._queue.appendleft(batch)
                self.batches_requeued += 1
        for batch in self._batches.values():
            if batch.client == identity:  # nested work of a dead worker: nobody waits for it
                batch.cancelled = True
        self._info()
        self._check_broken(where)

    def _check_broken(self, where: str) -> None:
        if not self.workers and not self._expected:
            self._last_exit = where
            self._fail_all(BrokenExecutor(self._no_workers_reason()))
            self._info()  # the root learns it has no worker left (see broken_reason)

    def broken_reason(self) -> str | None:
        """Why no task can run any more (no worker left, none starting), or None.

        Only meaningful in the broker thread, e.g. from ``on_local`` on an INFO message.
        """
        if self.workers or self._expected:
            return None
        return self._no_workers_reason()

    def _no_workers_reason(self) -> str:
        last = f" (last: {self._last_exit})" if self._last_exit else ""
        return f"no dockkit worker is left to run tasks{last}; start a new executor"

    def _fail_all(self, exc: BaseException) -> None:
        while self._queue:
            self._fail(self._queue.popleft(), exc)

    def _excuse_silence(self, deaf: float, now: float) -> None:
        """The broker could not listen for ``deaf`` seconds: give every peer that time back."""
        for peer in (*self.workers.values(), *self.agents.values()):
            peer.last_seen = min(now, peer.last_seen + deaf)

    def _beat(self, now: float) -> None:
        for identity, worker in list(self.workers.items()):
            if now - worker.last_seen > self.heartbeat_timeout:
                # Hung, stopped or cut off: its batches run elsewhere, and if it wakes up
                # it is told to stop (here, or by the watchdog reply in _on_heartbeat).
                self._lost.add(identity)
                for peer in (identity, worker.watchdog):
                    if peer is not None:
                        self._send(peer, [P.STOP, b""])
                self._worker_lost(identity, f"went silent for {self.heartbeat_timeout:.0f} s "
                                            "(hung, stopped or cut off)")
            elif worker.watchdog is not None:
                self._send(worker.watchdog, [P.HEARTBEAT, b""])
        for identity, agent in list(self.agents.items()):
            if identity == LOCAL:
                continue
            if now - agent.last_seen > self.heartbeat_timeout:
                del self.agents[identity]
                self._lost.add(identity)  # if it speaks again, it is told to stop
                self._silent_hosts.add(agent.host)
                for worker_id in [w for w in self.workers if w in agent.expected] + list(
                        agent.expected & self._expected):
                    self._worker_lost(worker_id, f"lost: host {agent.host} silent for "
                                                 f"{self.heartbeat_timeout:.0f} s")
            else:
                self._send(identity, [P.HEARTBEAT, b""])
