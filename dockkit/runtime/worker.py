"""A worker process: connects out to the broker, runs batches, sends results back.

Started as ``python -m dockkit.runtime.worker`` by a supervisor (the root's local
launcher or a host agent), which writes one JSON line of configuration to its
stdin (broker address, the run's secret, identity) and then keeps stdin open:
stdin reaching EOF means the supervisor is gone, and the worker exits at once.
A watchdog thread, with a socket of its own, exchanges heartbeats with the
broker and ends the worker when the broker has been silent for most of the
run's ``heartbeat_timeout`` (a hung, stopped or unreachable root). So a worker
never outlives its root, even while busy in a long task, and secrets never
appear on a command line.

The loop is re-entrant: a task that waits on futures it submitted calls back
into :meth:`WorkerLoop.wait`, which keeps receiving and running other batches,
so a pool whose every worker is waiting still makes progress (recursive fib).
A wait with a timeout must also end on time, so it runs no batch itself: it hands
them to a helper thread, one at a time, and only receives. The socket stays with
the main thread; what helper threads send waits in an outbox the main thread
empties, and their own waits block on a condition the main thread notifies.
"""

from __future__ import annotations

import collections
import faulthandler
import logging
import os
import queue
import runpy
import signal
import sys
import threading
import time
import traceback
import types
from itertools import starmap

import zmq

from dockkit.runtime import protocol as P
from dockkit.runtime.auth import join_as_peer
from dockkit.runtime.client import Client
from dockkit.runtime.context import become_worker, current
from dockkit.runtime.liveness import BrokerWatch
from dockkit.errors import RemoteError, SerializationError
from dockkit.runtime.serialize import (SCRIPT_MODULE, ExceptionWithTraceback, dumps, find_unpicklable,
                                       load_constants, loads, out_of_band_items, script_frames)
from dockkit.runtime.wakeup import WakePipe

INITIAL_CREDIT = 2
#: A worker leaves when the broker has been silent for this share of heartbeat_timeout,
#: so that it is gone before the broker itself would give up on it.
SILENCE_SHARE = 0.7
#: Helper threads a worker may start for batches that arrive while tasks wait with a
#: timeout (one more for each such task blocked in a nested wait); past this, such a
#: batch runs in the waiting thread, late rather than never.
MAX_HELPERS = 64


def broker_socket(context: zmq.Context, config: P.WorkerConfig, identity: str) -> zmq.Socket:
    """A DEALER connected to the broker with the run's credentials (workers, agents)."""
    socket = _dealer(context, config, identity)
    socket.connect(config.address)
    return socket


def watched_broker_socket(context: zmq.Context, config: P.WorkerConfig, identity: str,
                          silence: float) -> tuple[zmq.Socket, BrokerWatch]:
    """:func:`broker_socket`, and a :class:`BrokerWatch` of its connection made before the
    connection is, so that it misses none of its news."""
    socket = _dealer(context, config, identity)
    watch = BrokerWatch(socket, silence)
    socket.connect(config.address)
    return socket, watch


def _dealer(context: zmq.Context, config: P.WorkerConfig, identity: str) -> zmq.Socket:
    socket = context.socket(zmq.DEALER)
    socket.identity = identity.encode()
    socket.ipv6 = True  # IPv4 as well
    join_as_peer(socket, secret=config.secret, curve=config.curve)
    socket.linger = 1000
    socket.sndhwm = socket.rcvhwm = 0  # credit bounds what is queued, not the socket
    return socket


class WorkerLoop:
    """One worker's connection and task loop; also the waiter of its nested Client."""

    pumps = True

    def __init__(self, config: P.WorkerConfig):
        self.name = config.name
        self.host = config.host or os.uname().nodename
        self.where = f"worker {self.name} (pid {os.getpid()}) on {self.host}"
        self._context = zmq.Context()
        self._socket = broker_socket(self._context, config, config.identity)
        self._owner = threading.get_ident()  # the one thread that uses the socket
        self._functions: dict[int, object] = {}
        # A function's code comes with the first batch that uses it; batches may then run
        # out of order (helper threads), so the code is kept from arrival until loaded.
        self._function_code: dict[int, object] = {}
        self._functions_lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self.stopped = False
        self.import_error: RemoteError | None = None  # the script failed to import here
        # What helper threads need: a condition for their waits, an outbox for their
        # frames, and a pipe that wakes the main thread when either has news.
        self.lock = threading.Condition()
        self._outbox: collections.deque = collections.deque()
        self._wake_pipe = WakePipe()
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_pipe.fileno(), zmq.POLLIN)  # poll() reports the fd
        self._handoffs: queue.SimpleQueue = queue.SimpleQueue()
        self._helpers = 0
        self._idle_helpers = 0
        self._running_elsewhere = 0  # batches on helper threads, not blocked in a wait
        self.client = Client(self._send, workers=int(config.workers), waiter=self)
        self.context = become_worker(host=self.host, worker=self.name, client=self.client,
                                     wait_for_constants=self.wait, size=int(config.workers),
                                     debug=bool(config.debug))
        silence = SILENCE_SHARE * float(config.heartbeat_timeout)
        threading.Thread(target=self._watch_broker, args=(config, silence),
                         name="dockkit-watchdog", daemon=True).start()

    def _watch_broker(self, config: P.WorkerConfig, silence: float) -> None:
        """Heartbeats on a socket of its own; ends the process when the broker has gone silent
        and its connection is down (see :mod:`dockkit.runtime.liveness`)."""
        socket, watch = watched_broker_socket(self._context, config,
                                              config.identity + P.WATCHDOG_SUFFIX.decode(), silence)
        last_heard = next_ping = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_ping:
                socket.send_multipart([P.HEARTBEAT, b""])
                next_ping = now + P.HEARTBEAT_INTERVAL
            # A poll that timed out while a long C call held the GIL returns late and empty
            # though beats arrived meanwhile: look again before judging the silence.
            if socket.poll(max(0.0, next_ping - now) * 1000) or socket.poll(0):
                # Drain everything: after a stall (a C call holding the GIL) the beats the
                # broker sent meanwhile are waiting here and prove it is alive.
                while socket.poll(0):
                    if socket.recv_multipart()[0] == P.STOP:  # run over, or given up on us
                        _leave(0)
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard > silence and not watch.update():
                print(f"dockkit {self.where}: the broker at {config.address} has been silent "
                      f"for {silence:.0f} s and its connection is down; exiting", file=sys.stderr)
                _leave(1)

    def _send(self, frames) -> None:
        if threading.get_ident() == self._owner:
            if self._outbox:
                self._flush()  # a helper's frames first: they may carry a function's code
            self._socket.send_multipart(frames, copy=False)
        else:
            self._outbox.append(frames)
            self._wake_pipe.wake()

    def _flush(self) -> None:
        while self._outbox:
            self._socket.send_multipart(self._outbox.popleft(), copy=False)

    def notify(self) -> None:
        """Wake helper threads waiting on a delivery (called holding ``lock``)."""
        self.lock.notify_all()

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        self._send(P.hello_worker(self.name, self.host, os.getpid()))
        self._send([P.CREDIT, P.CREDIT_HEADER.pack(INITIAL_CREDIT)])
        while not self.stopped:
            self._step(1000)

    def wait(self, predicate, timeout) -> bool:
        """Run the loop until ``predicate()`` holds or ``timeout`` seconds pass."""
        if threading.get_ident() != self._owner:
            return self._wait_on_main_thread(predicate, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            if self.stopped:
                _leave(0)  # STOP arrived while a task waited: the run is over (output flushed)
            left = 1000 if deadline is None else (deadline - time.monotonic()) * 1000
            if left <= 0:
                return False
            if deadline is None:
                self._step(min(1000, left))
            elif not self._hand_off():
                self._receive(min(1000, left))
        return True

    def _hand_off(self) -> bool:
        """Give the next queued batch to a helper thread; False if the caller need not.

        One batch at a time runs elsewhere, so helpers add no CPU contention, except
        that a helper blocked in a wait of its own no longer counts (progress). Past
        MAX_HELPERS the batch runs here (True), late rather than never.
        """
        with self.lock:
            if not self._queue or self._running_elsewhere > 0:
                return False
            if not self._idle_helpers and self._helpers >= MAX_HELPERS:
                frames = None
            else:
                frames = self._queue.popleft()
                self._running_elsewhere += 1
                if self._idle_helpers:
                    self._idle_helpers -= 1
                else:
                    self._helpers += 1
                    threading.Thread(target=self._help, name=f"dockkit-helper-{self._helpers}",
                                     daemon=True).start()
        if frames is None:
            self._step(0)
            return True
        self._handoffs.put(frames)
        return False

    def _help(self) -> None:
        """A helper thread: runs the batches handed to it while tasks wait with a timeout."""
        while True:
            frames = self._handoffs.get()
            try:
                self._execute(frames)
            finally:
                with self.lock:
                    self._running_elsewhere -= 1
                    self._idle_helpers += 1
                self._wake_pipe.wake()  # the main thread may hand out the next batch

    def _wait_on_main_thread(self, predicate, timeout) -> bool:
        """A helper's task waits: the main thread receives, and notifies ``lock``."""
        with self.lock:
            if predicate():
                return True
            self._running_elsewhere -= 1  # blocked: another batch may be handed out
            self._wake_pipe.wake()
            try:
                return self.lock.wait_for(predicate, timeout)
            finally:
                self._running_elsewhere += 1

    def _step(self, timeout_ms: float) -> None:
        if self._queue:
            self._receive(0)
            self._execute(self._queue.popleft())
        else:
            self._receive(timeout_ms)

    def _receive(self, timeout_ms: float) -> None:
        if self._outbox:
            self._flush()
        events = dict(self._poller.poll(timeout_ms))
        if self._wake_pipe.fileno() in events:
            self._wake_pipe.drain()
            self._flush()
        if self._socket not in events:
            return
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames[0].bytes, frames[1:])

    def _handle(self, kind: bytes, frames) -> None:
        if kind == P.TASKS:
            if len(P.view(frames[1])):
                self._function_code[P.TASKS_HEADER.unpack(P.view(frames[0]))[1]] = frames[1]
            self._queue.append(frames)
        elif kind in (P.RESULT, P.FAILED, P.RUNNING, P.INFO):
            self.client.deliver(kind, frames)
        elif kind == P.SETCONST:
            try:
                values = load_constants(frames[1:])
            except SerializationError as exc:  # a broken peer's message must not end this worker
                print(f"dockkit {self.where}: ignored {exc}", file=sys.stderr)
                return
            with self.lock:
                self.context.constants.update(values)
                self.notify()
        elif kind == P.DROP:
            with self._functions_lock:
                for key in P.unpack_ids(P.view(frames[0])):
                    self._functions.pop(key, None)
                    self._function_code.pop(key, None)
        elif kind == P.WELCOME:
            info = P.unpack_info(frames[0].bytes)
            if not info.get("accepted"):
                print(f"dockkit {self.where}: refused by the broker: {info.get('reason')}",
                      file=sys.stderr)
                self.stopped = True
        elif kind == P.STOP:
            self.stopped = True

    # --- running a batch -------------------------------------------------------------------
    def _execute(self, frames) -> None:
        self._send([P.CREDIT, P.CREDIT_HEADER.pack(1)])  # the next batch arrives while we work
        task_key, func_key, ntasks, flags = P.TASKS_HEADER.unpack(P.view(frames[0]))
        started = time.perf_counter_ns()
        error = self.import_error
        if error is None:
            try:
                fn = self._function(func_key)
                items = loads(frames[2:])
            except Exception as exc:
                error = SerializationError(
                    f"{self.where} could not unpickle a batch of {ntasks} task(s): {exc!r}. "
                    "Is every module the task needs installed on this host?")
        if error is not None:
            values, errors = [None] * ntasks, {i: ExceptionWithTraceback(error, self.where) for i in range(ntasks)}
        else:
            values, errors = run_batch(fn, items, flags, self.where)
        elapsed = time.perf_counter_ns() - started
        self._send([P.RESULT, P.RESULT_HEADER.pack(task_key, elapsed, ntasks),
                    *self._pack_results(values, errors)])

    def _function(self, key: int):
        with self._functions_lock:
            fn = self._functions.get(key)
            if fn is None:
                code = self._function_code.get(key)
                if code is None:
                    raise LookupError(f"function #{key} never arrived")
                fn = self._functions[key] = loads([code])
                del self._function_code[key]
            return fn

    def _pack_results(self, values, errors) -> list:
        try:
            return dumps((out_of_band_items(values), errors))
        except Exception:  # find the results that can't travel and send errors in their place
            while (bad := find_unpicklable(values)) is not None:
                index, obj, exc = bad
                values[index] = None
                errors[index] = ExceptionWithTraceback(SerializationError(
                    f"a task's result cannot be pickled on {self.where}: "
                    f"{type(obj).__module__}.{type(obj).__qualname__}: {exc}"), self.where)
            return dumps((values, errors))


def run_batch(fn, items, flags: int, where: str):
    """Call ``fn`` on every item; returns (values, {index: error}).

    The loop runs in C (``list.extend`` over ``map``/``starmap``), which keeps
    tiny tasks cheap; after a failure it resumes with the next item.
    """
    if flags & P.KWARGS:
        items = [_Call(fn, args, kwargs) for args, kwargs in items]
        fn = _Call.__call__
    mapper = starmap if flags & P.STAR else map
    values: list = []
    errors: dict = {}
    remaining = iter(items)
    while True:
        try:
            values.extend(mapper(fn, remaining))
            return values, errors
        except (Exception, SystemExit) as exc:
            errors[len(values)] = ExceptionWithTraceback(exc, where)
            values.append(None)


class _Call:
    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self):
        return self.fn(*self.args, **self.kwargs)


def import_main(path: str, argv: list[str]) -> None:
    """Import the user's script under a non-main name, as multiprocessing's spawn does.

    Module-level definitions (classes registered by DEAP's ``creator.create``,
    constants) then exist here too; ``if __name__ == "__main__":`` keeps the
    root's part from running. Objects pickled as ``__main__.X`` resolve to it.
    """
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    module = types.ModuleType(SCRIPT_MODULE)
    sys.modules[SCRIPT_MODULE] = module
    context = current()
    context.importing_script = path  # its top level may not start tasks (see refuse_tasks_while_importing)
    try:
        module.__dict__.update(runpy.run_path(path, run_name=SCRIPT_MODULE))
    finally:
        context.importing_script = None
    sys.modules["__main__"] = module


def script_import_error(exc: BaseException, path: str, where: str) -> RemoteError:
    """The error every task on this worker fails with when the script did not import."""
    text = "".join(traceback.format_exception(type(exc), exc, script_frames(exc.__traceback__, path)))
    return RemoteError(f"{where} could not import {os.path.basename(path)}: "
                       f"{type(exc).__name__}: {exc}", text)


def _leave(status: int) -> None:
    """Exit now, from any thread, without interpreter teardown (a task may be running)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _exit_when_orphaned(stream) -> None:
    """Block on the supervisor's pipe; EOF means it is gone (or stops us), so this worker goes too."""
    try:
        while stream.read(65536):
            pass
    finally:
        _leave(0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the root's to handle
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    config = P.WorkerConfig.from_json(sys.stdin.buffer.readline())
    threading.Thread(target=_exit_when_orphaned, args=(sys.stdin.buffer,), daemon=True).start()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))  # nested waits recurse
    if config.cwd:
        os.chdir(config.cwd)
    sys.path.extend(p for p in config.sys_path if p not in sys.path)
    if config.debug:
        logging.basicConfig(level=logging.DEBUG)
    loop = WorkerLoop(config)
    if config.main:
        try:
            import_main(config.main, config.argv)
        except BaseException as exc:
            # Not printed here: the root imports the same script and shows the error as
            # Python would; if only this host fails, its tasks fail with this error.
            loop.import_error = script_import_error(exc, config.main, loop.where)
    loop.run()
    _leave(0)  # skip interpreter teardown: it is slow, and a watchdog thread still runs


if __name__ == "__main__":
    main()
