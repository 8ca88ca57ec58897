"""Frames for functions, arguments and results; exceptions that travel with their tracebacks."""

from __future__ import annotations

import pickle
import threading

import zmq

from dockkit.errors import RemoteError, SerializationError
from dockkit.runtime.serialize import (OUT_OF_BAND_BYTES, ExceptionWithTraceback, RemoteTraceback, describe,
                               dumps, find_unpicklable, load_exception, loads, out_of_band_items,
                               serialization_error)

WHERE = "worker w3 (pid 4242) on node-7"


def raise_and_wrap(exc):
    def failing_task():
        raise exc

    try:
        failing_task()
    except BaseException as caught:  # noqa: BLE001 - wrapping whatever a task raised
        return ExceptionWithTraceback(caught, WHERE)


def travel(obj):
    """What the other end gets: pickled, sent, unpickled."""
    return pickle.loads(pickle.dumps(obj, protocol=5))


# --- dumps / loads ---------------------------------------------------------------------------------
def test_round_trip_of_plain_values_and_lambdas():
    value = {"a": [1, 2.5, None], "b": ("x", b"y"), "c": {3}}
    assert loads(dumps(value)) == value
    offset = 4
    fn = loads(dumps(lambda x: x + offset))
    assert fn(1) == 5


class ZeroCopyBytes(bytearray):
    """Reduces to a PickleBuffer, as numpy arrays do (the pickle docs' ZeroCopyByteArray)."""

    def __reduce_ex__(self, protocol):
        return type(self)._rebuild, (pickle.PickleBuffer(self),)

    @classmethod
    def _rebuild(cls, buffer):
        with memoryview(buffer) as view:
            return cls(view)


def test_pickle_buffers_travel_out_of_band():
    data = ZeroCopyBytes(b"\x01\x02" * (1 << 20))
    frames = dumps([data, 5])
    assert len(frames) == 2  # the pickle, then the buffer as its own frame, not copied into it
    assert len(frames[0]) < 1000 and frames[1].nbytes == len(data)
    assert bytes(frames[1]) == data
    assert loads(frames) == [data, 5]
    # zmq frames (what the sockets deliver) load the same way
    assert loads([zmq.Frame(bytes(f)) for f in frames]) == [data, 5]


def test_bytes_and_bytearray_round_trip():
    for data in (bytes(range(256)) * 4096, bytearray(b"xy" * 500_000), b"", bytearray()):
        (result,) = loads(dumps([data]))
        assert type(result) is type(data) and result == data


def test_large_bytes_of_a_batch_travel_as_their_own_memory():
    big, other = bytes(range(256)) * 4096, b"\x07" * OUT_OF_BAND_BYTES
    frames = dumps(out_of_band_items([big, other, 3, b"small"]))
    assert len(frames) == 3 and len(frames[0]) < 1000
    assert frames[1].obj is big and frames[2].obj is other  # the objects' memory, no copy
    values = loads([zmq.Frame(bytes(f)) for f in frames])
    assert values == [big, other, 3, b"small"] and type(values[0]) is bytes


def test_a_batch_of_small_items_is_pickled_as_it_is():
    items = [b"x" * (OUT_OF_BAND_BYTES - 1), b"y" * OUT_OF_BAND_BYTES, 5]
    assert out_of_band_items(items) is items  # only a large first item makes it look further
    assert len(dumps(out_of_band_items(items))) == 1 and out_of_band_items([]) == []


def test_find_unpicklable_names_the_first_bad_item():
    lock = threading.Lock()
    index, item, error = find_unpicklable([1, "two", lock, threading.Lock()])
    assert index == 2 and item is lock and "lock" in str(error)
    assert find_unpicklable([1, 2, lambda: 3]) is None
    assert find_unpicklable([]) is None


def test_describe_is_short_and_safe():
    assert describe(42) == "42 (type builtins.int)"
    long = describe("x" * 500)
    assert len(long) < 140 and "..." in long and "builtins.str" in long

    class BadRepr:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert describe(BadRepr()).startswith("<")


def test_serialization_error_names_the_object_and_the_fix():
    error = serialization_error("argument #2 of map(f)", threading.Lock(), TypeError("cannot pickle"))
    assert isinstance(error, SerializationError) and isinstance(error, TypeError)
    text = str(error)
    assert "argument #2 of map(f)" in text and "_thread.lock" in text and "cannot pickle" in text
    assert "picklable" in text


# --- exceptions -----------------------------------------------------------------------------------
def test_exception_keeps_type_args_and_remote_traceback():
    exc = travel(raise_and_wrap(KeyError("missing key")))
    assert type(exc) is KeyError and exc.args == ("missing key",)
    assert isinstance(exc.__cause__, RemoteTraceback)
    text = str(exc.__cause__)
    assert f"Traceback on {WHERE}" in text
    assert "in failing_task" in text and "KeyError: 'missing key'" in text


def test_exception_attributes_survive():
    original = OSError(2, "No such file")
    original.filename = "/nowhere"
    exc = travel(raise_and_wrap(original))
    assert type(exc) is FileNotFoundError and exc.errno == 2 and exc.filename == "/nowhere"


class HoldsALock(Exception):
    def __init__(self, text):
        super().__init__(text)
        self.lock = threading.Lock()


def test_exception_that_cannot_be_pickled_becomes_remote_error():
    exc = travel(raise_and_wrap(HoldsALock("cannot travel")))
    assert type(exc) is RemoteError
    assert "HoldsALock" in str(exc) and "cannot travel" in str(exc)
    assert "in failing_task" in exc.remote_traceback
    assert str(exc.__cause__) == exc.remote_traceback


class BadArgs(Exception):
    """Pickles, but its __init__ signature makes unpickling fail."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def test_exception_that_cannot_be_unpickled_becomes_remote_error():
    exc = travel(raise_and_wrap(BadArgs(1, 2)))
    assert type(exc) is RemoteError
    assert "BadArgs: 1-2" in str(exc)
    assert "in failing_task" in exc.remote_traceback


_REFUSE = {"on": False}


def _rebuild_refusing(text):
    if _REFUSE["on"]:
        raise ImportError("no module named 'worker_only_library'")
    return RefusesHere(text)


class RefusesHere(Exception):
    """Unpickles where it was raised, not at the other end (its module is missing there)."""

    def __reduce__(self):
        return _rebuild_refusing, (self.args[0],)


def test_exception_unpicklable_only_at_the_other_end_becomes_remote_error():
    wrapped = raise_and_wrap(RefusesHere("worker-only error"))
    blob = pickle.dumps(wrapped, protocol=5)
    _REFUSE["on"] = True
    try:
        exc = pickle.loads(blob)
    finally:
        _REFUSE["on"] = False
    assert type(exc) is RemoteError
    assert "RefusesHere: worker-only error" in str(exc) and "worker_only_library" in str(exc)
    assert "in failing_task" in exc.remote_traceback


def test_remote_error_pickles_with_its_traceback():
    error = travel(RemoteError("text", "remote traceback"))
    assert str(error) == "text" and error.remote_traceback == "remote traceback"


def test_load_exception_falls_back_to_remote_error():
    good = load_exception(dumps(ValueError("v")))
    assert type(good) is ValueError
    garbage = load_exception([b"not a pickle"])
    assert type(garbage) is RemoteError and "could not be unpickled" in str(garbage)
    not_an_exception = load_exception(dumps([1, 2]))
    assert type(not_an_exception) is RemoteError and "expected an exception" in str(not_an_exception)


def test_system_exit_in_a_task_travels_as_itself():
    exc = travel(raise_and_wrap(SystemExit(3)))
    assert type(exc) is SystemExit and exc.code == 3
