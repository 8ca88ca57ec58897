"""Turning functions, arguments, results and exceptions into frames and back.

cloudpickle handles what plain pickle cannot ship (lambdas, closures, functions
and classes defined in ``__main__``); its pickler is the C pickler with a hook,
so lists of plain values still pickle at C speed. Protocol 5 moves buffers
that reduce to ``pickle.PickleBuffer`` (numpy arrays, for one) out of band:
they travel as their own ZeroMQ frames, sent without copying, and are never
re-pickled. So do ``bytearray`` and, wrapped by :func:`out_of_band_items`, large
``bytes`` (which the pickler would otherwise copy into the pickle).

Remote exceptions come back with their own type and the remote traceback as
``__cause__`` (as ``concurrent.futures.process`` does); one that cannot be
pickled, or unpickled here, becomes a :class:`~dockkit.errors.RemoteError`
carrying the text.
"""

from __future__ import annotations

import functools
import linecache
import os
import pickle
import sys
import traceback

import cloudpickle

from dockkit.errors import RemoteError, SerializationError
from dockkit.runtime.protocol import view

PROTOCOL = 5
SCRIPT_MODULE = "__dockkit_main__"  # the name a worker imports the run's script under
DYNAMIC_CODE = "<dynamic-code>"  # cloudpickle's file name for code it ships by value
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dockkit's own frames
#: ``bytes`` at least this long travel out of band once wrapped by :func:`out_of_band_items`.
OUT_OF_BAND_BYTES = 64 << 10


def dumps(obj) -> list:
    """Pickle ``obj`` into ``[data, *out_of_band_buffers]``.

    Raises:
        Whatever the pickler raises; callers turn it into a SerializationError
        naming the object (see :func:`describe_pickling_error`).
    """
    buffers: list = []
    data = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    return [data, *(b.raw() for b in buffers)]


def out_of_band_items(items) -> list:
    """A batch's items or results, ready for :func:`dumps` with large ``bytes`` out of band.

    The pickler copies ``bytes`` into the pickle and gives them no hook to do otherwise,
    so large ones are wrapped to reduce to a ``PickleBuffer`` of themselves: the frame
    is the object's own memory (``bytes`` are immutable, so that is safe). The check is
    on the first item only, to cost tiny items nothing.
    """
    if items and type(items[0]) is bytes and len(items[0]) >= OUT_OF_BAND_BYTES:
        return [out_of_band(item) for item in items]
    return items


def out_of_band(obj):
    """``obj``, or for large ``bytes`` a stand-in that pickles them out of band."""
    if type(obj) is bytes and len(obj) >= OUT_OF_BAND_BYTES:
        return _OutOfBandBytes(obj)
    return obj


class _OutOfBandBytes:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __reduce_ex__(self, protocol):
        return bytes, (pickle.PickleBuffer(self.data),)


def loads(frames):
    """Inverse of :func:`dumps`; ``frames`` may be bytes, memoryviews or zmq Frames."""
    data, *buffers = frames
    return pickle.loads(view(data), buffers=[view(b) for b in buffers])


def describe(obj) -> str:
    """A short, safe description of an object for error messages."""
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (type {type(obj).__module__}.{type(obj).__qualname__})"


def find_unpicklable(items) -> tuple[int, object, Exception] | None:
    """Return (index, item, error) for the first item that fails to pickle, if any."""
    for index, item in enumerate(items):
        try:
            cloudpickle.dumps(item, protocol=PROTOCOL, buffer_callback=lambda _b: None)
        except Exception as exc:  # any pickling failure is what we are looking for
            return index, item, exc
    return None


class RemoteTraceback(Exception):
    """Holds a worker's formatted traceback; attached as ``__cause__``."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _rebuild_exception(exc, tb_text, summary=None):
    if summary is not None:  # ``exc`` is the pickled exception: load it here, or keep its text
        try:
            exc = pickle.loads(exc)
        except Exception as err:
            exc = RemoteError(f"{summary} (it could not be unpickled here: {err!r})", tb_text)
    exc.__cause__ = RemoteTraceback(tb_text)
    return exc


def load_constants(frames) -> dict:
    """The shared constants a SETCONST message carries.

    Raises:
        SerializationError: the frames are not a pickled dict (a broken peer sent them).
    """
    try:
        values = loads(frames)
    except Exception as exc:
        raise SerializationError(f"shared constants that could not be read: {exc!r}") from None
    if not isinstance(values, dict):
        raise SerializationError(f"shared constants that could not be read: a {type(values).__name__}, "
                                 "not a dict")
    return values


def script_frames(tb, script: str):
    """The part of traceback ``tb`` from the first frame of ``script`` on (None if it has none).

    The frames above it (the runner's, runpy's) are dockkit's, not the user's.
    """
    script = os.path.realpath(script)
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return tb


def format_script_error(exc: BaseException, script: str) -> str:
    """``exc`` as ``python script`` would print it: from the script's first frame on.

    A task's failure, re-raised where the script reads its result, ends at the script's
    line: its remote traceback, printed above, says where it happened, and the frames of
    dockkit's that re-raised it say nothing more.
    """
    report = traceback.TracebackException(type(exc), exc, script_frames(exc.__traceback__, script))
    if isinstance(exc.__cause__, RemoteTraceback):
        frames = list(report.stack)
        while len(frames) > 1 and os.path.abspath(frames[-1].filename).startswith(_PACKAGE + os.sep):
            frames.pop()
        report.stack = traceback.StackSummary.from_list(frames)
    return "".join(report.format())


def task_traceback(exc: BaseException) -> str:
    """``exc`` with its traceback, as its task's author would read it.

    The worker's own frames above the task are left out, and code that came by value
    (functions of the script, which cloudpickle names ``<dynamic-code>``) is named after
    the script this worker imported, with its source lines, as Python would print them.
    """
    report = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    main = sys.modules.get("__main__")  # the script, on a worker that imported one
    script = getattr(main, "__file__", None) if getattr(main, "__name__", None) == SCRIPT_MODULE else None
    names = _code_names(os.path.realpath(script)) if script else frozenset()
    parts, seen = [report], set()
    while parts:
        part = parts.pop()
        if part is None or id(part) in seen:
            continue
        seen.add(id(part))
        frames = [_named_after(frame, script, names) for frame in part.stack]
        if part is report:
            frames = _past_dockkit(frames)
        part.stack = traceback.StackSummary.from_list(frames)
        parts += [part.__cause__, part.__context__, *(getattr(part, "exceptions", None) or [])]
    return "".join(report.format())


def _past_dockkit(frames: list) -> list:
    """``frames`` from the first one outside the dockkit package on (all of them if none is)."""
    for index, frame in enumerate(frames):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE + os.sep):
            return frames[index:]
    return frames


def _named_after(frame, script: str | None, names: frozenset):
    if frame.filename != DYNAMIC_CODE or frame.name not in names or not linecache.getline(script, frame.lineno):
        return frame
    positions = {key: getattr(frame, key) for key in ("end_lineno", "colno", "end_colno") if hasattr(frame, key)}
    return traceback.FrameSummary(script, frame.lineno, frame.name, **positions)


@functools.lru_cache(maxsize=4)
def _code_names(script: str) -> frozenset:
    """The names of every function, lambda and class body that ``script`` defines."""
    try:
        with open(script, "rb") as source:
            codes = [compile(source.read(), script, "exec")]
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    names = set()
    while codes:
        code = codes.pop()
        names.add(code.co_name)
        codes += [const for const in code.co_consts if hasattr(const, "co_consts")]
    return frozenset(names)


class ExceptionWithTraceback:
    """A task's exception plus its traceback text, ready to pickle.

    Unpickling yields the original exception with the remote traceback as its
    ``__cause__``; if the exception itself cannot be pickled, a RemoteError with
    the same text is sent instead.
    """

    def __init__(self, exc: BaseException, where: str):
        self.tb_text = f'\n"""\nTraceback on {where}:\n{task_traceback(exc)}"""'
        exc.__traceback__ = None  # tracebacks don't pickle; the text carries them
        self.summary = f"{type(exc).__qualname__}: {exc}"
        # The exception travels pickled inside this object, so one that cannot be unpickled
        # at the other end (its module is missing there) still arrives as a RemoteError.
        try:
            self.blob = cloudpickle.dumps(exc, protocol=PROTOCOL)
            pickle.loads(self.blob)
        except Exception:
            self.blob = pickle.dumps(RemoteError(self.summary, self.tb_text), protocol=PROTOCOL)

    def __reduce__(self):
        return _rebuild_exception, (self.blob, self.tb_text, self.summary)


def load_exception(frames) -> BaseException:
    """Unpickle an exception sent by a peer; one we cannot rebuild becomes a RemoteError."""
    try:
        exc = loads(frames)
    except Exception as err:
        return RemoteError(f"a remote exception could not be unpickled here: {err!r}")
    if isinstance(exc, BaseException):
        return exc
    return RemoteError(f"expected an exception, got {describe(exc)}")


def serialization_error(what: str, obj, exc: Exception) -> SerializationError:
    """A SerializationError that names the object and what to do."""
    return SerializationError(
        f"{what} cannot be pickled: {describe(obj)}: {exc}. Pass only picklable values "
        "(open files, locks, sockets and generators cannot travel to a worker)."
    )
