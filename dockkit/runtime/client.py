"""The client side of the broker: turns submit/map calls into batches and back.

The same class serves the root process (through the broker's local queue)
and a worker that submits nested tasks (through the worker's own socket); only
``send`` and the *waiter* differ. In the root, waiting blocks on a condition the
broker thread notifies; in a worker, waiting runs the worker's task loop, so a
worker that waits on its own futures keeps executing other tasks and a pool of
waiting workers cannot deadlock.

``map`` is lazy and streaming: it reads its inputs only while fewer than
``window`` batches are in flight, and while the items read but not yet consumed
stay under ``MAX_AHEAD_ITEMS`` and their pickled arguments under
``MAX_AHEAD_BYTES`` (whatever the worker count), so a generator of ten million
items is never materialised, and it yields results in order. How many batches
may be in flight and how many items each holds is decided by a
:class:`~dockkit.runtime.batching.BatchSizer` from measured task time and pickled
size; :mod:`dockkit.runtime.batching` describes the rule.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time

import cloudpickle

from dockkit.runtime import protocol as P
from dockkit.runtime.batching import BatchSizer, known_length
from dockkit.errors import BrokenExecutor, SerializationError, TimeoutError
from dockkit.runtime.interrupts import interrupts_deferred
from dockkit.runtime.serialize import (describe, dumps, find_unpicklable, load_exception, loads, out_of_band,
                        out_of_band_items, serialization_error)

MAX_AHEAD_ITEMS = 200_000
MAX_AHEAD_BYTES = 256 << 20
FUNCTION_CACHE = 128


class Future(concurrent.futures.Future):
    """A standard Future that, inside a worker, runs other tasks while it waits."""

    _client: "Client | None" = None
    _batch_id = 0

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled and self._client is not None:
            self._client.cancel_batches([self._batch_id])
        return cancelled

    def result(self, timeout=None):
        self._pump_until_done(timeout)
        return super().result(timeout=0 if self._pumped else timeout)

    def exception(self, timeout=None):
        self._pump_until_done(timeout)
        return super().exception(timeout=0 if self._pumped else timeout)

    _pumped = False

    def _pump_until_done(self, timeout) -> None:
        client = self._client
        if client is not None and client.pumps and not self.done():
            client.waiter.wait(self.done, timeout)
            self._pumped = True


class ThreadWaiter:
    """Waiting in the root process: the broker thread notifies a condition."""

    pumps = False

    def __init__(self):
        self.lock = threading.Condition()

    def notify(self) -> None:
        self.lock.notify_all()

    def wait(self, predicate, timeout) -> bool:
        with self.lock:
            return self.lock.wait_for(predicate, timeout)


class Client:
    """Submits batches through ``send`` and completes them from :meth:`deliver`.

    Args:
        send: called with a list of frames for the broker; must be thread-safe in the root.
        workers: how many workers are expected (sizes the in-flight window).
        waiter: a ThreadWaiter in the root, the worker's task loop in a worker.
    """

    def __init__(self, send, *, workers: int, waiter=None):
        self._send = send
        self.workers = max(1, workers)
        self.waiter = waiter or ThreadWaiter()
        self.pumps = bool(getattr(self.waiter, "pumps", False))
        self._lock = threading.Lock()  # a worker's helper threads submit too
        self._batch_ids = itertools.count(1)
        self._func_ids = itertools.count(1)
        self._pending: dict[int, object] = {}  # batch_id -> Future or _Slot
        self._functions: collections.OrderedDict = collections.OrderedDict()  # id(fn) -> (fn, fid)
        self._unsent: dict[int, bytes] = {}  # fid -> blob, for functions the broker has not seen
        self.broken: BaseException | None = None
        self.live_workers = 0
        self.starting_workers = workers  # until the broker says otherwise

    # --- functions travel once --------------------------------------------------------
    def _function(self, fn) -> tuple[int, bytes]:
        """Return (function id, blob to send or b"" if the broker already has it)."""
        with self._lock:
            entry = self._functions.get(id(fn))
            if entry is not None and entry[0] is fn:
                self._functions.move_to_end(id(fn))
                return entry[1], self._unsent.get(entry[1], b"")
            try:
                blob = cloudpickle.dumps(fn, protocol=5)
            except Exception as exc:
                raise serialization_error("the function", fn, exc) from exc
            fid = next(self._func_ids)
            self._functions[id(fn)] = (fn, fid)
            self._unsent[fid] = blob
            forget = []
            while len(self._functions) > FUNCTION_CACHE:
                old = self._functions.popitem(last=False)[1][1]
                if self._unsent.pop(old, None) is None:  # the broker never saw it otherwise
                    forget.append(old)
        if forget:
            self._send([P.FORGET, P.pack_ids(forget)])
        return fid, blob

    def _submit_batch(self, handler, fn_ref, payload, ntasks: int, flags: int) -> int:
        fid, _ = fn_ref
        batch_id = next(self._batch_ids)
        # The function's code goes with the first batch that actually reaches the broker (a
        # map of nothing, or a batch whose arguments failed to pickle, never sends it).
        # Recorded and sent whole: a batch recorded but never sent would be waited for.
        with interrupts_deferred(), self._lock:
            self._pending[batch_id] = handler
            blob = self._unsent.pop(fid, b"")
            self._send([P.SUBMIT, P.SUBMIT_HEADER.pack(batch_id, fid, ntasks, flags), blob, *payload])
        return batch_id

    def _check_usable(self) -> None:
        if self.broken is not None:
            raise BrokenExecutor(f"this executor is broken: {self.broken}")

    # --- submit -------------------------------------------------------------------------
    def submit(self, fn, args, kwargs) -> Future:
        """Send one task; returns a Future. Pickling errors land in the Future."""
        self._check_usable()
        future = Future()
        future._client = self
        try:
            fn_ref = self._function(fn)
            payload = dumps([(tuple(map(out_of_band, args)), kwargs)])
        except SerializationError as exc:
            future.set_exception(exc)
            return future
        except Exception as exc:
            bad = find_unpicklable([*args, *kwargs.values()])
            obj = bad[1] if bad else (args, kwargs)
            future.set_exception(serialization_error(
                f"an argument of {_fn_name(fn)}", obj, bad[2] if bad else exc))
            return future
        future._batch_id = self._submit_batch(future, fn_ref, payload, 1, P.KWARGS | P.NOTIFY_RUNNING)
        return future

    # --- map --------------------------------------------------------------------------------
    def map(self, fn, iterables, *, timeout=None, chunksize=None, ordered=True):
        """Lazy, streaming map; see the module docstring. Returns an iterator."""
        self._check_usable()
        run = _MapRun(self, fn, iterables, timeout=timeout, chunksize=chunksize, ordered=ordered)
        run.top_up()  # start work now, like concurrent.futures, not at the first next()
        return MapIterator(run.batches())

    def set_constants(self, values: dict) -> None:
        """Send shared constants to the broker, which passes them to every worker and the root."""
        self._send([P.SETCONST, b"", *dumps(values)])

    def cancel_batches(self, batch_ids) -> None:
        ids = [b for b in batch_ids if self._pending.pop(b, None) is not None]
        if ids:
            self._send([P.CANCEL, P.pack_ids(ids)])

    # --- incoming -------------------------------------------------------------------------
    def deliver(self, kind: bytes, frames) -> None:
        """Called with a RESULT, FAILED, RUNNING or INFO message meant for this client."""
        if kind == P.INFO:
            live, starting = P.INFO_HEADER.unpack(P.view(frames[0]))
            self.workers = max(self.workers, live)
            with self.waiter.lock:
                self.live_workers, self.starting_workers = live, starting
                self.waiter.notify()
            return
        if kind == P.RUNNING:
            # As ProcessPoolExecutor does when a call moves to its workers' queue: from
            # now on cancel() returns False and the result will come.
            for batch_id in P.unpack_ids(P.view(frames[0])):
                handler = self._pending.get(batch_id)
                if isinstance(handler, Future) and not handler.set_running_or_notify_cancel():
                    self.cancel_batches([batch_id])  # cancelled just before: drop its result
            return
        if kind == P.RESULT:
            batch_id, elapsed, _ = P.RESULT_HEADER.unpack(P.view(frames[0]))  # ntasks: the slot knows
            outcome = ("ok", frames[1:], elapsed)
        elif kind == P.FAILED:
            (batch_id,) = P.FAILED_HEADER.unpack(P.view(frames[0]))
            outcome = ("failed", load_exception(frames[1:]), 0)
        else:
            return
        handler = self._pending.pop(batch_id, None)
        if handler is None:
            return  # cancelled meanwhile
        if isinstance(handler, Future):
            _complete_future(handler, outcome)
            with self.waiter.lock:
                self.waiter.notify()
            return
        with self.waiter.lock:
            handler.complete(outcome)
            self.waiter.notify()

    def fail_all(self, exc: BaseException) -> None:
        """The broker is gone: every pending batch fails with ``exc``."""
        self.broken = exc
        pending, self._pending = self._pending, {}
        for batch_id, handler in pending.items():
            if isinstance(handler, Future):
                _complete_future(handler, ("failed", exc, 0))
            else:
                with self.waiter.lock:
                    handler.complete(("failed", exc, 0))
        with self.waiter.lock:
            self.waiter.notify()

    def pending_futures(self) -> list[Future]:
        return [h for h in list(self._pending.values()) if isinstance(h, Future)]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no batch is outstanding (or the broker is gone)."""
        return self.waiter.wait(lambda: not self._pending or self.broken is not None, timeout)


def _complete_future(future: Future, outcome) -> None:
    status, value, _ = outcome
    if not future.running() and not future.set_running_or_notify_cancel():
        return  # cancelled
    if status == "failed":
        future.set_exception(value)
        return
    try:
        values, errors = loads(value)
    except Exception as exc:
        future.set_exception(SerializationError(f"the result could not be unpickled here: {exc!r}"))
        return
    if errors:
        future.set_exception(errors[0])
    else:
        future.set_result(values[0])


class _Slot:
    """One batch of a map, in input order."""

    __slots__ = ("batch_id", "start", "count", "nbytes", "outcome", "run")

    def __init__(self, run, start: int, count: int, nbytes: int = 0):
        self.run = run
        self.start = start
        self.count = count
        self.nbytes = nbytes
        self.batch_id = 0
        self.outcome = None

    def complete(self, outcome) -> None:
        self.outcome = outcome
        run = self.run
        run.inflight -= 1
        run.completed.append(self)
        if outcome[0] == "ok" and self.count:
            run.sizer.timed(outcome[2], self.count)


class _MapRun:
    """The state of one map call; only the consuming thread reads its inputs."""

    def __init__(self, client: Client, fn, iterables, *, timeout, chunksize, ordered):
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        self.client = client
        self.fn = fn
        client._function(fn)  # an unpicklable function fails here, at the call
        self.star = len(iterables) > 1
        self.source = zip(*iterables) if self.star else iter(iterables[0])
        # A list, tuple or range is cut by slicing, not item by item: a C copy (a range
        # travels as a range), several times cheaper than reading it through an iterator.
        self.sequence = (iterables[0] if not self.star and type(iterables[0]) in _SLICEABLE
                         else None)
        self.sizer = BatchSizer(known_length(iterables), client.workers, chunksize)
        self.ordered = ordered
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.slots: collections.deque[_Slot] = collections.deque()
        self.completed: collections.deque[_Slot] = collections.deque()
        self.inflight = 0
        self.sent = 0
        self.ahead_items = 0  # read from the input, not yet consumed by the caller
        self.ahead_bytes = 0
        self.exhausted = False

    def window(self) -> int:
        return self.sizer.window(self.client.workers)

    def top_up(self) -> None:
        # Results not yet consumed count too, with room to spare: a slow head batch must
        # neither let the whole input be read (memory) nor idle the workers (head-of-line).
        while (not self.exhausted and self.inflight < self.window()
               and len(self.slots) < 8 * self.window()
               and self.ahead_items < MAX_AHEAD_ITEMS and self.ahead_bytes < MAX_AHEAD_BYTES):
            size = self.sizer.next_size(self.sent, self.client.workers)
            try:
                if self.sequence is not None:
                    items = self.sequence[self.sent:self.sent + size]
                else:
                    items = list(itertools.islice(self.source, size))
            except Exception as exc:  # the caller's iterable failed: report it in order
                self._add_error_slot(exc)
                return
            if not items:
                self.exhausted = True
                return
            self._send(items)
            if len(items) < size:
                self.exhausted = True

    def _send(self, items) -> None:
        try:
            payload = dumps(out_of_band_items(items))
        except Exception as exc:
            slot = _Slot(self, self.sent, len(items))
            self.sent += len(items)
            self.ahead_items += len(items)
            bad = find_unpicklable(items)
            index, obj, err = bad if bad else (0, items, exc)
            slot.outcome = ("failed", serialization_error(
                f"argument #{slot.start + index} of map({_fn_name(self.fn)})", obj, err), 0)
            self.slots.append(slot)
            self.completed.append(slot)
            return
        nbytes = sum(len(P.view(frame)) for frame in payload)
        step = self.sizer.pickled(nbytes, len(items))
        if step < len(items):  # big items: smaller batches keep pickling, transfer and work overlapping
            for start in range(0, len(items), step):
                self._send(items[start:start + step])
            return
        slot = _Slot(self, self.sent, len(items), nbytes)
        self.sent += len(items)
        self.ahead_items += len(items)
        self.ahead_bytes += nbytes
        with self.client.waiter.lock:
            self.inflight += 1
            self.slots.append(slot)
        # look the function up again: another caller may have pushed it out of the cache
        slot.batch_id = self.client._submit_batch(slot, self.client._function(self.fn), payload,
                                                  len(items), P.STAR if self.star else 0)

    def _add_error_slot(self, exc) -> None:
        slot = _Slot(self, self.sent, 0)
        slot.outcome = ("failed", exc, 0)
        self.slots.append(slot)
        self.completed.append(slot)
        self.exhausted = True

    def _ready(self) -> bool:
        if self.ordered:
            return bool(self.slots) and self.slots[0].outcome is not None
        return bool(self.completed)

    def _next_slot(self) -> _Slot | None:
        waiter = self.client.waiter
        while True:
            self.top_up()
            if not self.slots:
                return None
            if not self._ready():
                remaining = None if self.deadline is None else self.deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"map({_fn_name(self.fn)}) did not finish within its timeout")
                # wake up on any completion so inputs keep flowing while the head is slow
                count = len(self.completed)
                waiter.wait(lambda: self._ready() or len(self.completed) != count, remaining)
                continue
            with waiter.lock:
                slot = self.slots.popleft() if self.ordered else self.completed.popleft()
                if self.ordered:
                    self.completed.remove(slot)
                else:
                    self.slots.remove(slot)
            self.ahead_items -= slot.count
            self.ahead_bytes -= slot.nbytes
            return slot

    def batches(self):
        """Yield each batch's results as a list, in order; raise where a task failed."""
        try:
            while True:
                slot = self._next_slot()
                if slot is None:
                    return
                status, value, _ = slot.outcome
                if status == "failed":
                    raise value
                try:
                    values, errors = loads(value)
                except Exception as exc:
                    raise SerializationError(
                        f"results of map({_fn_name(self.fn)}) items {slot.start}..{slot.start + slot.count - 1} "
                        f"could not be unpickled here: {exc!r}") from exc
                if not errors:
                    yield values
                    continue
                first = min(errors)
                yield values[:first]
                if isinstance(errors[first], SerializationError):  # the worker knows its batch, not the map
                    errors[first].add_note(f"map({_fn_name(self.fn)}): item {slot.start + first}")
                raise errors[first]
        finally:
            self.close()

    def close(self) -> None:
        self.exhausted = True
        self.client.cancel_batches([s.batch_id for s in self.slots if s.outcome is None])
        self.slots.clear()


class MapIterator:
    """The results of a map, one by one, with the per-item step in C.

    A generator that yields every item costs about 25 ns an item in Python; here the
    map yields whole batches and iteration goes through ``itertools.chain`` over them,
    which ``list()``, ``for`` and ``zip`` then drive without a Python frame per item.
    ``close()`` (or dropping the iterator) cancels the work not yet done.
    """

    __slots__ = ("_batches", "_items")

    def __init__(self, batches):
        self._batches = batches
        self._items = itertools.chain.from_iterable(batches)

    def __iter__(self):
        return self._items  # the C iterator itself: what makes iteration fast

    def __next__(self):
        return next(self._items)

    def close(self) -> None:
        """Stop the map: cancel the batches not yet done and read no more input."""
        self._batches.close()


_SLICEABLE = (list, tuple, range)


def _fn_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or describe(fn)
