"""Holding Ctrl-C back while a message or a piece of shared state is half written.

KeyboardInterrupt is raised in the main thread between any two bytecodes. Raised
between recording a batch and sending it, it would leave the client waiting for a
batch that never left; raised between queueing a message for the broker thread
and waking it, it would leave the message waiting for the broker's next beat.
:func:`interrupts_deferred` delays the interrupt to the end of such a section.
Elsewhere (other threads, workers that ignore SIGINT) it does nothing.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


_depth = 0  # sections open in the main thread: only the outermost swaps the handler (~10 µs)


@contextmanager
def interrupts_deferred():
    """Run the block whole; a SIGINT that came meanwhile is acted on at its end."""
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or previous == signal.SIG_IGN:
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, caught[0])  # the default one raises KeyboardInterrupt
            else:
                signal.raise_signal(signal.SIGINT)
