"""A pipe that wakes a thread blocked in a poll: other threads write it, that thread drains it.

The broker thread and a worker's main thread each own their sockets; other threads
hand them work through a queue and call :meth:`WakePipe.wake` so that the owner's
poll (which watches :meth:`WakePipe.fileno` next to its sockets) returns at once.
"""

from __future__ import annotations

import os
import threading


class WakePipe:
    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()  # closed once, never written after
        self._closed = False

    def fileno(self) -> int:
        """The end to poll for reading (register the number: a zmq Poller reports it so)."""
        return self._read

    def wake(self) -> None:
        """Thread-safe: make the owner's poll return (a no-op once closed)."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write, b"!")
            except BlockingIOError:
                pass  # the pipe is full: the owner wakes anyway

    def drain(self) -> None:
        """In the owner, after its poll: read what the wake-ups wrote."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)
