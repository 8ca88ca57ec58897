"""A healthy task that holds the GIL for longer than the heartbeat timeout is not a hung one.

A long C call (``sum`` over a range, many numpy and regex calls) keeps the worker's
own threads from running, so the worker sends nothing for its whole length. Its
supervisor, another process, still sees it running and vouches for it; a stopped
worker gets no such word and is given up on as before.
"""

from __future__ import annotations

import os
import signal
import time

import dockkit

HEARTBEAT_TIMEOUT = 3.0


def hold_the_gil(seconds: float, sample: int = 2_000_000):
    """In one C call, hold the GIL for about ``seconds`` (calibrated where it runs, on
    ``sample`` additions: more where other threads or a busy machine make short samples lie)."""
    n = sample
    started = time.perf_counter()
    sum(range(n))
    n = int(n * seconds / max(time.perf_counter() - started, 1e-6))
    started = time.monotonic()
    total = sum(range(n))  # one C call: no other thread of this process runs until it ends
    return total == n * (n - 1) // 2, time.monotonic() - started


def test_a_task_holding_the_gil_past_the_timeout_runs_once_and_completes():
    with dockkit.Executor(workers=1, heartbeat_timeout=HEARTBEAT_TIMEOUT, max_retries=0) as ex:
        right, held = ex.submit(hold_the_gil, 2.5 * HEARTBEAT_TIMEOUT).result(timeout=120)
        assert right
        assert held > 1.5 * HEARTBEAT_TIMEOUT, f"the GIL was held only {held:.1f} s: calibrate again"
        assert ex.submit(pow, 2, 10).result(timeout=30) == 1024  # the worker is still in the pool
        assert ex.stats()["requeued"] == 0


def test_a_stopped_worker_is_still_given_up_on(processes):
    with dockkit.Executor(workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT) as ex:
        ex.wait_for_workers()
        stopped = ex.worker_pids[0]
        os.kill(stopped, signal.SIGSTOP)
        try:
            started = time.monotonic()
            while ex.stats()["workers"] == 2 and time.monotonic() - started < 30:
                time.sleep(0.2)
            assert ex.stats()["workers"] == 1, "the stopped worker was never given up on"
            assert list(ex.map(abs, range(-50, 0))) == list(range(50, 0, -1))
        finally:
            os.kill(stopped, signal.SIGCONT)


def test_a_root_holding_the_gil_past_the_timeout_keeps_its_workers():
    """The root's own long C call (unpickling a huge result, for one) stops its broker thread,
    so no beat reaches the workers for its whole length; they must not take the quiet for a
    dead root while the connection to it is alive."""
    with dockkit.Executor(workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT, max_retries=0) as ex:
        ex.wait_for_workers()
        pids = set(ex.worker_pids)
        # here, in the root, whose broker thread makes a calibration err on the short side
        right, held = hold_the_gil(4 * HEARTBEAT_TIMEOUT, sample=30_000_000)
        assert right and held > 1.5 * HEARTBEAT_TIMEOUT, f"the GIL was held only {held:.1f} s"
        assert list(ex.map(abs, range(-50, 0))) == list(range(50, 0, -1))
        assert set(ex.worker_pids) == pids and ex.stats()["requeued"] == 0  # the same workers


def test_workers_that_connect_while_the_root_holds_the_gil_wait_for_it():
    """A worker's first handshake waits on the root's ZAP handler, a Python thread: a root
    that holds the GIL just as its workers start keeps them waiting, alive, not gone."""
    with dockkit.Executor(workers=2, heartbeat_timeout=HEARTBEAT_TIMEOUT, max_retries=0) as ex:
        right, held = hold_the_gil(4 * HEARTBEAT_TIMEOUT, sample=30_000_000)  # workers start meanwhile
        assert right and held > 1.5 * HEARTBEAT_TIMEOUT, f"the GIL was held only {held:.1f} s"
        ex.wait_for_workers()
        pids = set(ex.worker_pids)
        time.sleep(2 * HEARTBEAT_TIMEOUT)  # a worker that judged the root gone would leave by now
        assert list(ex.map(abs, range(-50, 0))) == list(range(50, 0, -1))
        assert set(ex.worker_pids) == pids and ex.stats()["workers"] == 2
        assert ex.stats()["requeued"] == 0
