"""The executor behaviour contract: one suite that every backend must pass.

A backend's test module subclasses :class:`ExecutorContract` and provides an
``executor`` fixture (a ``dockkit.Executor`` with at least two workers; it may
be shared by the whole module)::

    from tests.contract import ExecutorContract

    @pytest.fixture(scope="module")
    def executor():
        with dockkit.Executor(workers=2) as ex:
            yield ex

    class TestLocal(ExecutorContract):
        pass

Every test leaves the executor usable for the next one, so sharing it hides
nothing: tests that break an executor on purpose belong in the backend's own
module. Task functions live at module level here (pickled by reference, so
the workers import this module) or are built inside tests (pickled by value).
The module-level ``dockkit.futures`` functions run on the root's default
executor; inside a task they use the worker's own connection.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import operator
import re
import threading
import time
import uuid
from contextlib import contextmanager

import pytest

from dockkit import futures, shared
from dockkit.runtime.context import current, debug_requested
from dockkit.errors import ConfigError, RemoteError, SerializationError

# Generous bounds: these check that a timeout is honoured, not how fast anything is.
TIMEOUT_SLACK = 5.0
GATE_LIMIT = 60.0  # a gated task gives up after this long even if its test never opens the gate
WORKER_TRACEBACK = re.compile(r"Traceback on worker \S+ \(pid \d+\) on \S+")


# --- task functions (module level: pickled by reference) ---------------------------------------
def square(x):
    return x * x


def add(x, y):
    return x + y


def add3(x, y, z):
    return x + y + z


def describe_call(*args, **kwargs):
    return args, kwargs


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def fail_on(x, bad, message="boom"):
    if x == bad:
        raise ValueError(f"{message} {x}")
    return x


def raise_value_error(text):
    raise ValueError(text)


def sleep_then_raise(seconds, text):
    time.sleep(seconds)
    raise ValueError(text)


def digest(data):
    """A checksum and the same object back: large payloads travel both ways."""
    import hashlib

    return hashlib.sha256(bytes(data)).hexdigest(), type(data).__name__, data


def make_bytes(size):
    return bytes(range(256)) * (size // 256)


def return_lock(_=None):
    return threading.Lock()


def constant(name):
    return shared.getConst(name, timeout=5)


def set_constant_in_task(name, value):
    shared.setConst(**{name: value})
    return shared.getConst(name)


def scoop_attributes(_=None):
    import dockkit

    return {"SIZE": dockkit.SIZE, "IS_RUNNING": dockkit.IS_RUNNING, "IS_ORIGIN": dockkit.IS_ORIGIN,
            "worker": dockkit.worker, "DEBUG": dockkit.DEBUG}


def wait_for_gate(name, value=None):
    """Block until the root opens gate ``name`` (a shared constant); see :class:`Gate`."""
    shared.getConst(name, timeout=GATE_LIMIT)
    return value


def gated(x, name):
    """``x``, except that 1 waits for the gate first."""
    return wait_for_gate(name, x) if x == 1 else x


class Point:
    """A class defined in the test module: instances travel both ways."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))

    def moved(self, dx):
        return Point(self.x + dx, self.y)


class CustomError(Exception):
    """An exception type of the test module: it must come back as itself."""

    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code


def raise_custom(code):
    raise CustomError(code, f"custom failure {code}")


class UnpicklableError(Exception):
    """Carries a lock, so it cannot be pickled on the worker."""

    def __init__(self, text):
        super().__init__(text)
        self.lock = threading.Lock()


def raise_unpicklable(text):
    raise UnpicklableError(text)


def _rebuild_only_on_workers(text):
    if current().role == "root":
        raise RuntimeError("this exception refuses to be rebuilt in the root")
    return RootUnpicklableError(text)


class RootUnpicklableError(Exception):
    """Pickles on the worker, but cannot be unpickled in the root (a worker-only library's error)."""

    def __reduce__(self):
        return _rebuild_only_on_workers, (self.args[0],)


def raise_root_unpicklable(text):
    raise RootUnpicklableError(text)


def _rebuild_only_in_root(value):
    if current().role != "root":
        raise RuntimeError("this argument refuses to be rebuilt on a worker")
    return WorkerUnpicklable(value)


class WorkerUnpicklable:
    """Pickles in the root, but cannot be unpickled on a worker (a root-only module's object)."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return _rebuild_only_in_root, (self.value,)


def identity(x):
    return x


# --- nested futures (these run inside a worker) ----------------------------------------------------
def nested_submit(x):
    return futures.submit(square, x).result(timeout=60) + 1


def nested_map(n):
    return list(futures.map(square, range(n)))


def nested_wait(n):
    fs = [futures.submit(sleep_then, 0.01 * i, i) for i in range(n)]
    done, not_done = futures.wait(fs, timeout=60)
    first = next(futures.as_completed(fs, timeout=60))
    return sorted(f.result() for f in done), len(not_done), first.done()


def nested_map_reduce(n, with_initial):
    if with_initial:
        return futures.mapReduce(square, operator.add, range(n), initial=100)
    return futures.mapReduce(square, operator.add, range(n))


def nested_map_scan(n):
    return futures.mapScan(square, operator.add, range(n))


def fib(n):
    if n < 2:
        return n
    a = futures.submit(fib, n - 1)
    b = futures.submit(fib, n - 2)
    return a.result() + b.result()


def fib_with_timeouts(n):
    """fib where every wait has a timeout: the waits run no batch, helper threads do."""
    if n < 2:
        return n
    a = futures.submit(fib_with_timeouts, n - 1)
    b = futures.submit(fib_with_timeouts, n - 2)
    return a.result(timeout=100) + b.result(timeout=100)


def fib_local(n):
    return n if n < 2 else fib_local(n - 1) + fib_local(n - 2)


# --- test utilities -------------------------------------------------------------------------------------
@contextmanager
def takes_between(low, high):
    """Assert the block took at least ``low`` and at most ``high`` seconds."""
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert low <= elapsed <= high, f"took {elapsed:.2f} s, expected {low}..{high} s"


class CountingIterable:
    """An endless (or long) source that records how far it was read."""

    def __init__(self, limit=None):
        self.limit = limit
        self.consumed = 0

    def __iter__(self):
        for i in itertools.count() if self.limit is None else range(self.limit):
            self.consumed += 1
            yield i


class Gate:
    """Tasks that stay unfinished until the test opens the gate (or ``GATE_LIMIT`` passes).

    A long sleep would do, but it would keep a worker busy into the next tests; a gate is
    a shared constant set on the executor, so opening it ends every gated task at once
    (a waiting worker keeps running other tasks meanwhile). Use it as a context manager.
    """

    def __init__(self, executor):
        self.executor = executor
        self.name = f"gate_{uuid.uuid4().hex}"
        self.opened = False

    def submit(self, value=None):
        return self.executor.submit(wait_for_gate, self.name, value)

    def open(self) -> None:
        if not self.opened:
            self.opened = True
            self.executor.set_constants({self.name: True})

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc) -> None:
        self.open()


def remote_cause(exc) -> str:
    cause = exc.__cause__
    assert cause is not None, f"{exc!r} has no remote traceback attached"
    return str(cause)


def still_works(executor):
    """The executor runs a map and a submit correctly."""
    assert list(executor.map(square, range(20))) == [x * x for x in range(20)]
    assert executor.submit(add, 2, 3).result(timeout=60) == 5


# ====================================================================================================
class ExecutorContract:
    """The behaviour every dockkit executor backend must show. Needs an ``executor`` fixture."""

    # --- map ------------------------------------------------------------------------------------------
    @pytest.mark.parametrize("n", [0, 1, 2, 7, 300])
    @pytest.mark.parametrize("chunksize", [None, 1, 4, 1000])
    def test_map_results_in_order(self, executor, n, chunksize):
        assert list(executor.map(square, range(n), chunksize=chunksize)) == [x * x for x in range(n)]

    def test_map_over_a_generator_and_unordered_lengths(self, executor):
        source = (x for x in range(57))
        assert list(executor.map(square, source)) == [x * x for x in range(57)]

    def test_map_with_several_iterables_stops_at_the_shortest(self, executor):
        assert list(executor.map(add, range(10), range(100, 150))) == [100 + 2 * x for x in range(10)]
        assert list(executor.map(add3, [1, 2], (10, 20, 30), iter([100, 200, 300]))) == [111, 222]
        assert list(executor.map(add, [], range(5))) == []
        assert list(executor.map(pow, [2, 3, 4], [5, 2, 0], chunksize=2)) == [32, 9, 1]

    def test_map_results_of_builtins_and_tuples(self, executor):
        assert list(executor.map(len, ["", "ab", "abc"])) == [0, 2, 3]
        assert list(executor.map(describe_call, [1, (2, 3)])) == [((1,), {}), (((2, 3),), {})]

    def test_map_as_completed_yields_every_result(self, executor):
        results = list(executor.map_as_completed(square, range(40)))
        assert sorted(results) == [x * x for x in range(40)]

    # --- what can travel --------------------------------------------------------------------------------
    def test_lambdas_closures_and_partials(self, executor):
        offset = 7
        assert list(executor.map(lambda x: x + offset, range(5))) == [7, 8, 9, 10, 11]

        def make_scaler(k):
            return lambda x: x * k

        assert list(executor.map(make_scaler(3), range(4))) == [0, 3, 6, 9]
        assert list(executor.map(functools.partial(add, 10), range(3))) == [10, 11, 12]
        assert executor.submit(functools.partial(describe_call, 1, k=2), 3).result(timeout=60) == (
            (1, 3), {"k": 2})

    def test_functions_and_classes_of_the_test_module(self, executor):
        points = [Point(i, -i) for i in range(5)]
        moved = list(executor.map(Point.moved, points, [10] * 5))
        assert moved == [Point(i + 10, -i) for i in range(5)]
        assert all(type(p) is Point for p in moved)
        assert executor.submit(Point, 1, 2).result(timeout=60) == Point(1, 2)

    def test_classes_defined_inside_a_test(self, executor):
        class Local:
            def __init__(self, value):
                self.value = value

            def doubled(self):
                return Local(self.value * 2)

        results = list(executor.map(Local.doubled, [Local(1), Local(5)]))
        assert [type(r).__name__ for r in results] == ["Local", "Local"]
        assert [r.value for r in results] == [2, 10]

    def test_submit_passes_args_and_kwargs(self, executor):
        future = executor.submit(describe_call, 1, "two", [3], key="value", other=None)
        assert future.result(timeout=60) == ((1, "two", [3]), {"key": "value", "other": None})
        assert executor.submit(describe_call).result(timeout=60) == ((), {})
        # names the Executor API itself uses are passed through as keywords
        assert executor.submit(describe_call, fn=1, timeout=2).result(timeout=60) == ((), {"fn": 1, "timeout": 2})

    def test_large_payloads_round_trip_intact(self, executor):
        import hashlib

        size = 6 * 1024 * 1024
        blob = bytes(range(256)) * (size // 256)
        mutable = bytearray(blob[::-1])
        expected = {bytes: hashlib.sha256(blob).hexdigest(), bytearray: hashlib.sha256(mutable).hexdigest()}
        for data in (blob, mutable):
            checksum, kind, echoed = executor.submit(digest, data).result(timeout=120)
            assert checksum == expected[type(data)]
            assert kind == type(data).__name__
            assert type(echoed) is type(data) and echoed == data
        results = list(executor.map(digest, [blob, mutable, b"", bytearray()]))
        assert [r[0] for r in results[:2]] == [expected[bytes], expected[bytearray]]
        assert results[2][2] == b"" and results[3][2] == bytearray()
        made = executor.submit(make_bytes, size).result(timeout=120)
        assert made == blob

    # --- the Future API ------------------------------------------------------------------------------------
    def test_future_result_with_timeout(self, executor):
        with Gate(executor) as gate:
            future = gate.submit("late")
            with takes_between(0.3, 0.3 + TIMEOUT_SLACK):
                with pytest.raises(TimeoutError):
                    future.result(timeout=0.3)
            assert not future.done()
            gate.open()
            assert future.result(timeout=60) == "late"
        assert executor.submit(sleep_then, 0.2, "ok").result(timeout=60) == "ok"

    def test_future_exception_waits_for_the_task(self, executor):
        future = executor.submit(sleep_then_raise, 0.5, "late failure")
        exc = future.exception(timeout=60)
        assert isinstance(exc, ValueError) and str(exc) == "late failure"
        assert future.done() and not future.cancelled()
        assert executor.submit(add, 1, 1).exception(timeout=60) is None

    def test_future_exception_with_timeout(self, executor):
        with Gate(executor) as gate:
            future = gate.submit()
            with takes_between(0.3, 0.3 + TIMEOUT_SLACK):
                with pytest.raises(TimeoutError):
                    future.exception(timeout=0.3)
            gate.open()
            assert future.exception(timeout=60) is None

    def test_a_running_task_cannot_be_cancelled(self, executor):
        with Gate(executor) as gate:
            future = gate.submit("seen")
            deadline = time.monotonic() + 60
            while not future.running():  # RUNNING once a worker has it, as in ProcessPoolExecutor
                assert time.monotonic() < deadline, "the task never reached a worker"
                time.sleep(0.01)
            assert not future.cancel()
            assert not future.cancelled() and not future.done()
            gate.open()
            assert future.result(timeout=60) == "seen"
        finished = executor.submit(add, 1, 2)
        assert finished.result(timeout=60) == 3
        assert finished.done()
        assert not finished.cancel()
        assert not finished.cancelled()
        still_works(executor)

    def test_add_done_callback(self, executor):
        called = threading.Event()
        seen = []

        def callback(future):
            seen.append(future.result())
            called.set()

        future = executor.submit(sleep_then, 0.2, "value")
        future.add_done_callback(callback)
        assert called.wait(60)
        assert seen == ["value"]
        # on a finished future the callback runs at once
        late = []
        future.add_done_callback(lambda f: late.append(f is future))
        assert late == [True]

    # --- wait and as_completed --------------------------------------------------------------------------
    def test_wait_first_completed(self, executor):
        with Gate(executor) as gate:
            slow = gate.submit()
            fast = executor.submit(sleep_then, 0.1, "fast")
            done, not_done = futures.wait([slow, fast], timeout=60, return_when=futures.FIRST_COMPLETED)
            assert done == {fast} and not_done == {slow}
            gate.open()
            done, not_done = futures.wait([slow, fast], timeout=60)
            assert done == {slow, fast} and not not_done

    def test_wait_first_exception_returns_the_failed_future(self, executor):
        with Gate(executor) as gate:
            slow = gate.submit()
            fine = executor.submit(add, 1, 2)
            bad = executor.submit(sleep_then_raise, 0.2, "first exception")
            done, not_done = futures.wait([slow, fine, bad], timeout=60,
                                          return_when=futures.FIRST_EXCEPTION)
            assert bad in done and slow in not_done
            assert isinstance(bad.exception(), ValueError)

    def test_wait_all_completed_returns_failures_without_raising(self, executor):
        fs = [executor.submit(fail_on, i, 2) for i in range(5)]
        done, not_done = futures.wait(fs, timeout=60)
        assert done == set(fs) and not not_done
        assert [f.exception() is not None for f in fs] == [False, False, True, False, False]
        # the standard library's wait agrees on dockkit futures
        done, not_done = concurrent.futures.wait(fs, timeout=0)
        assert done == set(fs)

    def test_wait_timeout_is_honoured(self, executor):
        with Gate(executor) as gate:
            slow = gate.submit()
            for return_when in (futures.ALL_COMPLETED, futures.FIRST_COMPLETED, futures.FIRST_EXCEPTION):
                with takes_between(0.3, 0.3 + TIMEOUT_SLACK):
                    done, not_done = futures.wait([slow], timeout=0.3, return_when=return_when)
                assert not done and not_done == {slow}

    def test_as_completed(self, executor):
        fs = [executor.submit(sleep_then, 0.05 * (4 - i), i) for i in range(4)]
        assert sorted(f.result() for f in futures.as_completed(fs, timeout=60)) == [0, 1, 2, 3]

    def test_as_completed_timeout(self, executor):
        with Gate(executor) as gate:
            fast = executor.submit(add, 1, 1)
            slow = gate.submit()
            seen = []
            with takes_between(0.5, 0.5 + TIMEOUT_SLACK):
                with pytest.raises(TimeoutError):
                    for future in futures.as_completed([fast, slow], timeout=0.5):
                        seen.append(future)
            assert seen == [fast]

    # --- errors from tasks ----------------------------------------------------------------------------
    def test_task_exception_keeps_its_type_and_remote_traceback(self, executor):
        future = executor.submit(raise_value_error, "broken input 42")
        exc = future.exception(timeout=60)
        assert type(exc) is ValueError and str(exc) == "broken input 42"
        text = remote_cause(exc)
        assert WORKER_TRACEBACK.search(text), text
        assert "raise_value_error" in text and "broken input 42" in text
        with pytest.raises(ValueError, match="broken input 42"):
            future.result()

    def test_custom_exception_type_and_attributes(self, executor):
        exc = executor.submit(raise_custom, 17).exception(timeout=60)
        assert type(exc) is CustomError and exc.code == 17
        assert "raise_custom" in remote_cause(exc)

    def test_map_raises_the_first_failure_in_order(self, executor):
        results = executor.map(fail_on, range(10), [6] * 10, chunksize=2)
        seen = []
        with pytest.raises(ValueError, match="boom 6") as info:
            for value in results:
                seen.append(value)
        assert seen == [0, 1, 2, 3, 4, 5]
        assert WORKER_TRACEBACK.search(remote_cause(info.value))
        with pytest.raises(StopIteration):
            next(results)

    def test_map_stops_reading_and_cancels_the_rest_after_a_failure(self, executor):
        source = CountingIterable()  # endless: list() returns only because the map stops
        results = executor.map(fail_on, source, itertools.repeat(3))
        with pytest.raises(ValueError, match="boom 3"):
            list(results)
        consumed = source.consumed
        still_works(executor)
        assert source.consumed == consumed
        # the tasks after the failure are cancelled: the workers are free for new work long
        # before the 30 s the rest would take
        with takes_between(0, 15):
            results = executor.map(sleep_then_raise, [0.0] + [0.3] * 200, itertools.repeat("stop"),
                                   chunksize=1)
            with pytest.raises(ValueError, match="stop"):
                list(results)
            still_works(executor)

    def test_exception_that_cannot_be_pickled_becomes_remote_error(self, executor):
        exc = executor.submit(raise_unpicklable, "lock inside").exception(timeout=60)
        assert isinstance(exc, RemoteError)
        assert "UnpicklableError" in str(exc) and "lock inside" in str(exc)
        assert "raise_unpicklable" in exc.remote_traceback
        still_works(executor)

    def test_exception_that_cannot_be_unpickled_in_the_root_becomes_remote_error(self, executor):
        exc = executor.submit(raise_root_unpicklable, "only on workers").exception(timeout=60)
        assert isinstance(exc, RemoteError), repr(exc)
        assert "RootUnpicklableError" in str(exc) and "only on workers" in str(exc)
        assert "raise_root_unpicklable" in exc.remote_traceback
        # in a map, the good results of the same batch still arrive
        results = executor.map(lambda x: raise_root_unpicklable("in map") if x == 2 else x, range(4),
                               chunksize=4)
        assert next(results) == 0 and next(results) == 1
        with pytest.raises(RemoteError, match="in map"):
            next(results)
        still_works(executor)

    # --- many callers ---------------------------------------------------------------------------------
    def test_many_caller_threads_at_once(self, executor):
        # the root's one client serves them all: batches, results and futures never cross
        results, errors = {}, []

        def caller(n):
            try:
                results[n] = (list(executor.map(square, range(n * 100))),
                              executor.submit(sleep_then, 0.01 * n, n).result(timeout=60))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=100)
        assert not errors and not any(thread.is_alive() for thread in threads)
        assert results == {n: ([x * x for x in range(n * 100)], n) for n in range(1, 9)}

    def test_a_done_callback_may_submit(self, executor):
        chained = concurrent.futures.Future()

        def then(future):
            try:
                chained.set_result(executor.submit(square, future.result()))
            except BaseException as exc:  # noqa: BLE001 - reported through chained
                chained.set_exception(exc)

        executor.submit(square, 3).add_done_callback(then)
        assert chained.result(timeout=60).result(timeout=60) == 81

    # --- what cannot travel ------------------------------------------------------------------------------
    def test_unpicklable_function(self, executor):
        lock = threading.Lock()
        holds_lock = lambda x: (lock, x)  # noqa: E731 - a closure over a lock
        future = executor.submit(holds_lock, 1)
        with pytest.raises(SerializationError, match="function.*lambda.*lock"):
            future.result(timeout=10)
        with pytest.raises(SerializationError, match="function.*lambda"):
            list(executor.map(holds_lock, range(3)))
        still_works(executor)

    def test_unpicklable_argument(self, executor):
        lock = threading.Lock()
        future = executor.submit(identity, lock)
        with pytest.raises(SerializationError, match="argument.*lock"):
            future.result(timeout=10)
        with pytest.raises(SerializationError, match="argument.*lock"):
            executor.submit(describe_call, 1, key=lock).result(timeout=10)
        results = executor.map(identity, [1, 2, lock, 4])
        assert next(results) == 1 and next(results) == 2
        with pytest.raises(SerializationError, match=r"argument #2 .*lock"):
            next(results)
        still_works(executor)

    def test_unpicklable_result(self, executor):
        with pytest.raises(SerializationError, match="result.*lock"):
            executor.submit(return_lock).result(timeout=60)
        results = executor.map(lambda x: return_lock() if x == 3 else x, range(6), chunksize=6)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(SerializationError, match="result.*lock"):
            next(results)
        still_works(executor)

    def test_argument_that_cannot_be_unpickled_on_the_worker(self, executor):
        future = executor.submit(identity, WorkerUnpicklable(1))
        with pytest.raises(SerializationError, match="could not unpickle"):
            future.result(timeout=60)
        still_works(executor)

    # --- laziness, early stops and timeouts ---------------------------------------------------------
    def test_map_over_an_endless_generator_stopped_early(self, executor):
        source = CountingIterable()
        with takes_between(0, 60):
            results = executor.map(square, source)
            assert list(itertools.islice(results, 50)) == [x * x for x in range(50)]
            results.close()
        consumed = source.consumed
        assert consumed < 1_000_000, consumed  # bounded read-ahead, not the whole input
        for value in executor.map(square, itertools.count()):
            if value >= 100:
                break
        with takes_between(0, 30):
            still_works(executor)
        assert source.consumed == consumed

    def test_map_timeout(self, executor):
        with Gate(executor) as gate, takes_between(0.5, 0.5 + TIMEOUT_SLACK):
            results = executor.map(gated, [0, 1, 2], [gate.name] * 3, timeout=0.5)
            assert next(results) == 0
            with pytest.raises(TimeoutError):
                next(results)
        # a map that finishes in time is unaffected by its timeout
        assert list(executor.map(square, range(5), timeout=60)) == [0, 1, 4, 9, 16]

    # --- nested futures ------------------------------------------------------------------------------
    def test_task_submits_and_waits_inside_the_worker(self, executor):
        assert list(executor.map(nested_submit, range(6))) == [x * x + 1 for x in range(6)]

    def test_task_maps_inside_the_worker(self, executor):
        assert executor.submit(nested_map, 30).result(timeout=60) == [x * x for x in range(30)]
        assert list(executor.map(nested_map, [0, 1, 5])) == [[], [0], [0, 1, 4, 9, 16]]

    def test_wait_and_as_completed_inside_the_worker(self, executor):
        assert executor.submit(nested_wait, 5).result(timeout=60) == ([0, 1, 2, 3, 4], 0, True)

    @pytest.mark.timeout(120)
    def test_recursive_fib_through_nested_submits(self, executor):
        # every worker ends up waiting on its own children: this deadlocks without re-entrant waits
        assert executor.submit(fib, 15).result(timeout=110) == fib_local(15) == 610

    @pytest.mark.timeout(120)
    def test_recursive_fib_whose_every_wait_has_a_timeout(self, executor):
        # the same, with waits that must end on time and so hand batches to helper threads,
        # whose own waits then block until the worker's main thread delivers
        assert executor.submit(fib_with_timeouts, 12).result(timeout=110) == fib_local(12) == 144

    @pytest.mark.parametrize("n", [0, 1, 40])
    def test_map_reduce_and_map_scan_inside_the_worker(self, executor, n):
        squares = [x * x for x in range(n)]
        assert executor.submit(nested_map_reduce, n, True).result(timeout=60) == 100 + sum(squares)
        assert executor.submit(nested_map_scan, n).result(timeout=60) == list(itertools.accumulate(squares))
        if n:
            assert executor.submit(nested_map_reduce, n, False).result(timeout=60) == sum(squares)
        else:
            with pytest.raises(TypeError, match="initial"):
                executor.submit(nested_map_reduce, n, False).result(timeout=60)

    # --- shared constants -----------------------------------------------------------------------------
    def test_constants_reach_the_workers_and_are_read_only(self, executor):
        name = f"contract_{uuid.uuid4().hex}"
        executor.set_constants({name: {"answer": 42}})
        assert list(executor.map(constant, [name] * 6)) == [{"answer": 42}] * 6
        with pytest.raises(ConfigError, match=name):
            executor.set_constants({name: "changed"})
        assert executor.submit(constant, name).result(timeout=60) == {"answer": 42}

    def test_a_task_sets_a_constant_for_every_worker_and_the_root(self, executor):
        name = f"in_task_{uuid.uuid4().hex}"
        assert executor.submit(set_constant_in_task, name, [7]).result(timeout=60) == [7]
        assert shared.getConst(name) == [7]  # the root has it once the task's result is back
        assert list(executor.map(constant, [name] * 8)) == [[7]] * 8
        with pytest.raises(TypeError, match="read-only"):  # SCOOP's error type, and a ConfigError
            executor.set_constants({name: "root's"})
        error = executor.submit(set_constant_in_task, name, "task's").exception(timeout=60)
        assert isinstance(error, TypeError) and isinstance(error, ConfigError), error
        assert "read-only" in str(error)
        assert executor.submit(constant, name).result(timeout=60) == [7]

    # --- SCOOP's module attributes ----------------------------------------------------------------------
    def test_scoop_module_attributes_in_tasks(self, executor):
        seen = list(executor.map(scoop_attributes, range(executor.workers * 4)))
        for values in seen:
            assert values["SIZE"] == executor.workers
            assert values["IS_RUNNING"] is True and values["IS_ORIGIN"] is False
            assert values["DEBUG"] is debug_requested()
        names = {values["worker"] for values in seen}
        assert "root" not in names and 1 <= len(names) <= executor.workers, names

    def test_missing_constant_waits_its_timeout_then_gives_the_default(self, executor):
        value, waited = executor.submit(timed_get_const, "never_set_anywhere", 0.3).result(timeout=60)
        assert value is None and 0.3 <= waited < 0.3 + 10, waited
        value, waited = executor.submit(timed_get_const, "never_set_anywhere", 0.1, "absent").result(
            timeout=60)
        assert value == "absent" and waited >= 0.1


def timed_get_const(name, timeout, default=None):
    started = time.monotonic()
    value = shared.getConst(name, timeout=timeout, default=default)
    return value, time.monotonic() - started


def reduce_that_raises(a, b):
    raise TypeError("my own reducer failed on an empty string")


# --- the SCOOP-style functions on the root's default executor -----------------------------------------
class DefaultExecutorContract:
    """``dockkit.futures`` and ``dockkit.shared`` from the root, on the default executor."""

    @pytest.mark.parametrize("n", [0, 1, 50])
    def test_map_reduce_and_map_scan(self, n):
        squares = [x * x for x in range(n)]
        assert futures.mapReduce(square, operator.add, range(n), initial=100) == 100 + sum(squares)
        assert futures.mapScan(square, operator.add, range(n)) == list(itertools.accumulate(squares))
        assert futures.mapScan(square, operator.add, range(n), initial=1) == list(
            itertools.accumulate(squares, initial=1))[1:]
        if n:
            assert futures.mapReduce(square, operator.add, range(n)) == sum(squares)
        else:
            with pytest.raises(TypeError, match="initial"):
                futures.mapReduce(square, operator.add, range(n))

    def test_map_reduce_keeps_the_reducers_own_type_error(self):
        with pytest.raises(TypeError, match="my own reducer"):
            futures.mapReduce(square, reduce_that_raises, range(3))

    def test_futures_map_and_submit(self):
        assert list(futures.map(square, range(10))) == [x * x for x in range(10)]
        assert futures.submit(add, 1, y=2).result(timeout=60) == 3
        assert sorted(futures.map_as_completed(square, range(5))) == [0, 1, 4, 9, 16]

    def test_set_const_reaches_workers_and_is_read_only(self):
        name = f"default_{uuid.uuid4().hex}"
        shared.setConst(**{name: [1, 2, 3]})
        assert shared.getConst(name) == [1, 2, 3]
        assert list(futures.map(constant, [name] * 4)) == [[1, 2, 3]] * 4
        with pytest.raises(ConfigError, match="read-only"):
            shared.setConst(**{name: "again"})
        assert futures.submit(constant, name).result(timeout=60) == [1, 2, 3]

    def test_set_const_in_a_task_reaches_the_root(self):
        name = f"default_in_task_{uuid.uuid4().hex}"
        assert futures.submit(set_constant_in_task, name, 5).result(timeout=60) == 5
        assert shared.getConst(name) == 5
        assert list(futures.map(constant, [name] * 4)) == [5] * 4

    def test_scoop_module_attributes_in_the_root(self):
        import dockkit
        from dockkit.executor import default_executor

        assert dockkit.IS_ORIGIN is True and dockkit.worker == "root"
        assert dockkit.IS_RUNNING is False  # not under `dockkit run`
        assert dockkit.SIZE == default_executor().workers
        assert dockkit.DEBUG is debug_requested()

    def test_nested_futures_on_the_default_executor(self):
        assert list(futures.map(nested_submit, range(4))) == [1, 2, 5, 10]


__all__ = ["ExecutorContract", "DefaultExecutorContract", "Gate", "CountingIterable", "still_works"]
