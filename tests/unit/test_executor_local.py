"""The executor contract on local workers, plus what only local workers can show.

Local-only behaviour: killing workers (one, with and without retries, all of them),
a healthy long task running once, shutdown leaving no process behind, workers
leaving when their root dies, and how far ahead a lazy map reads its input.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dockkit
from dockkit import futures, shared
from dockkit.runtime.batching import MAX_BATCH
from dockkit.runtime.client import MAX_AHEAD_ITEMS
from dockkit.errors import BrokenExecutor, WorkerLostError
from dockkit.executor import default_executor
from tests.contract import (CountingIterable, DefaultExecutorContract, ExecutorContract, constant, fib,
                            fib_local, sleep_then, still_works)


@pytest.fixture(scope="module")
def executor():
    with dockkit.Executor(workers=2) as ex:
        yield ex


class TestLocalExecutor(ExecutorContract):
    def test_remote_traceback_names_a_worker_of_this_executor(self, executor):
        exc = executor.submit(int, "not a number").exception(timeout=60)
        assert type(exc) is ValueError
        text = str(exc.__cause__)
        assert any(f"(pid {pid}) on {os.uname().nodename}" in text for pid in executor.worker_pids), text


class TestDefaultExecutor(DefaultExecutorContract):
    pass


# --- task functions of this module ---------------------------------------------------------------------
class Counter:
    def __init__(self, start):
        self.value = start

    def bumped(self):
        return Counter(self.value + 1)


def square_with_pid(x, seconds=0.0):
    time.sleep(seconds)
    return x * x, os.getpid()


def record_run_then_sleep(directory, seconds):
    """Leave one file per run (named by pid and time), then work for ``seconds``."""
    path = os.path.join(directory, f"run-{os.getpid()}-{time.monotonic_ns()}")
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def pid_of_run(name: str) -> int:
    """The pid in a run file's name: its content may not be written yet when it is seen."""
    return int(name.split("-")[1])


def slow_first(x):
    if x == 0:
        time.sleep(1.0)
    return x


def runs_in(directory):
    return sorted(os.listdir(directory))


def wait_for_runs(directory, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while len(runs_in(directory)) < count:
        assert time.monotonic() < deadline, f"only {runs_in(directory)} after {timeout} s"
        time.sleep(0.02)
    return runs_in(directory)


# --- functions of the test module itself --------------------------------------------------------------------
def test_functions_and_classes_of_this_module(executor):
    assert [c.value for c in executor.map(Counter.bumped, [Counter(1), Counter(9)])] == [2, 10]
    assert [r[0] for r in executor.map(square_with_pid, range(4))] == [0, 1, 4, 9]


def test_functions_and_classes_of_main_script(tmp_path):
    script = tmp_path / "uses_main.py"
    script.write_text(textwrap.dedent("""
        import dockkit

        class Box:
            def __init__(self, value):
                self.value = value

        def double(box):
            return Box(box.value * 2)

        if __name__ == "__main__":
            with dockkit.Executor(workers=2) as ex:
                boxes = list(ex.map(double, [Box(1), Box(2)]))
                assert all(type(b) is Box for b in boxes), boxes
                scale = 10
                print([b.value for b in boxes], list(ex.map(lambda x: x * scale, [1, 2])))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 4] [10, 20]"


def test_ctrl_c_during_maps_leaves_the_executor_whole(tmp_path):
    # Ctrl-C may land anywhere in the caller (here the main thread) while it maps: the
    # interrupt must come out, and the executor keep working.
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent("""
        import os, signal, threading
        import dockkit

        def square(x):
            return x * x

        if __name__ == "__main__":
            with dockkit.Executor(workers=2) as ex:
                interrupted = 0
                for attempt in range(30):
                    delay = 0.001 * (1 + attempt % 9)
                    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
                    try:
                        timer.start()
                        list(ex.map(square, range(50_000)))
                        timer.join()  # the interrupt may come after the map
                    except KeyboardInterrupt:
                        interrupted += 1
                    timer.join()
                    assert list(ex.map(square, range(2000))) == [x * x for x in range(2000)]
                    assert ex.submit(square, attempt).result(timeout=30) == attempt * attempt
                print("interrupted", interrupted)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    # (a rare interrupt is swallowed where Python ignores exceptions, in a C destructor)
    assert 20 <= int(done.stdout.split()[-1]) <= 30, done.stdout


# --- losing workers ---------------------------------------------------------------------------------------------
def test_worker_killed_mid_map_still_gives_every_result(processes):
    with dockkit.Executor(workers=2) as ex:
        victim, survivor = ex.worker_pids
        results = ex.map(square_with_pid, range(60), [0.05] * 60, chunksize=1)
        head = [next(results) for _ in range(6)]  # both workers are busy by now
        os.kill(victim, signal.SIGKILL)
        rest = list(results)
        assert [value for value, _ in head + rest] == [x * x for x in range(60)]
        assert not processes.wait_gone([victim], 0)
        # the lost batches were run again by the survivor
        assert {pid for _, pid in rest[-10:]} == {survivor}
        still_works(ex)


def test_without_retries_the_lost_batch_fails_naming_worker_and_signal(tmp_path):
    with dockkit.Executor(workers=2, max_retries=0) as ex:
        future = ex.submit(record_run_then_sleep, str(tmp_path), 60)
        (run,) = wait_for_runs(tmp_path, 1)
        victim = pid_of_run(run)
        name = f"w{ex.worker_pids.index(victim)}"
        os.kill(victim, signal.SIGKILL)
        exc = future.exception(timeout=30)
        assert isinstance(exc, WorkerLostError), repr(exc)
        assert f"worker {name} (pid {victim})" in str(exc) and "SIGKILL" in str(exc)
        assert "max_retries=0" in str(exc)
        assert len(runs_in(tmp_path)) == 1  # it was not run again
        still_works(ex)


def test_with_retries_the_lost_task_runs_again(tmp_path):
    with dockkit.Executor(workers=2, max_retries=1) as ex:
        future = ex.submit(record_run_then_sleep, str(tmp_path), 0.5)
        (run,) = wait_for_runs(tmp_path, 1)
        victim = pid_of_run(run)
        os.kill(victim, signal.SIGKILL)
        survivor = future.result(timeout=30)
        assert survivor != victim and survivor in ex.worker_pids
        assert len(runs_in(tmp_path)) == 2


def fail_first_or_record(x, directory):
    if x == 0:
        raise ValueError("the first item fails")
    return record_run_then_sleep(directory, 0.05)


def test_map_cancels_the_tasks_after_a_failure(executor, tmp_path):
    results = executor.map(fail_first_or_record, range(300), [str(tmp_path)] * 300, chunksize=1)
    with pytest.raises(ValueError, match="first item fails"):
        next(results)
    still_works(executor)
    time.sleep(0.5)
    ran = len(runs_in(tmp_path))
    # only what was already on its way to a worker ran (the window), not the other ~300
    assert ran < 50, ran
    time.sleep(0.5)
    assert len(runs_in(tmp_path)) == ran


def test_healthy_long_task_runs_exactly_once(tmp_path):
    # The task outlasts the heartbeat timeout: a busy worker still answers heartbeats
    # (its watchdog thread), so it is neither given up on nor its task re-sent.
    with dockkit.Executor(workers=2, heartbeat_timeout=3.0) as ex:
        long_task = ex.submit(record_run_then_sleep, str(tmp_path), 5.0)
        # the other worker keeps serving meanwhile
        assert [r[0] for r in ex.map(square_with_pid, range(10))] == [x * x for x in range(10)]
        assert long_task.result(timeout=60) in ex.worker_pids
        assert len(runs_in(tmp_path)) == 1
        assert ex.stats()["requeued"] == 0


def test_all_workers_killed_breaks_the_executor(processes):
    ex = dockkit.Executor(workers=2)
    try:
        assert ex.submit(abs, -1).result(timeout=60) == 1
        pending = ex.submit(time.sleep, 60)
        for pid in ex.worker_pids:
            os.kill(pid, signal.SIGKILL)
        exc = pending.exception(timeout=30)
        assert isinstance(exc, BrokenExecutor), repr(exc)
        assert "SIGKILL" in str(exc)
        with pytest.raises(BrokenExecutor):
            ex.submit(abs, -2).result(timeout=30)
        with pytest.raises(BrokenExecutor):
            list(ex.map(abs, [-3]))
    finally:
        ex.shutdown()
    assert not processes.wait_gone(ex.worker_pids, 5)


def test_default_executor_is_replaced_after_all_its_workers_died(processes):
    name = f"survives_{os.getpid()}_{time.monotonic_ns()}"
    shared.setConst(**{name: "kept"})
    assert futures.submit(constant, name).result(timeout=60) == "kept"
    old = default_executor()
    pending = futures.submit(time.sleep, 60)
    for pid in old.worker_pids:
        os.kill(pid, signal.SIGKILL)
    assert isinstance(pending.exception(timeout=30), BrokenExecutor)
    assert not processes.wait_gone(old.worker_pids, 10)
    # the next call gets a new executor, with the constants set before
    assert list(futures.map(abs, [-1, -2])) == [1, 2]
    new = default_executor()
    assert new is not old and not set(new.worker_pids) & set(old.worker_pids)
    assert futures.submit(constant, name).result(timeout=60) == "kept"


def wait_with_timeout_inside_a_worker(how, timeout):
    inner = futures.submit(time.sleep, 3)
    started = time.monotonic()
    try:
        if how == "wait":
            futures.wait([inner], timeout=timeout)
        elif how == "as_completed":
            next(futures.as_completed([inner], timeout=timeout))
        elif how == "result":
            inner.result(timeout=timeout)
        else:
            shared.getConst("never_set", timeout=timeout)
    except TimeoutError:
        pass
    return time.monotonic() - started


def test_one_worker_whose_every_task_waits_on_nested_ones_finishes():
    # Every batch this worker runs waits on batches it must be sent meanwhile: the credit
    # a batch frees when it starts is what lets them come.
    with dockkit.Executor(workers=1) as ex:
        assert ex.submit(fib, 9).result(timeout=60) == fib_local(9) == 34


@pytest.mark.parametrize("how", ["wait", "as_completed", "result", "getConst"])
def test_timeout_inside_a_worker_that_picks_up_a_long_task(how):
    # the only worker is sent the inner task itself: a timed wait must not run it in place
    with dockkit.Executor(workers=1) as ex:
        waited = ex.submit(wait_with_timeout_inside_a_worker, how, 0.3).result(timeout=60)
    assert 0.3 <= waited < 0.3 + 2.0, waited


def wait_briefly_then_for_good(seconds):
    inner = futures.submit(sleep_then, seconds, os.getpid())
    started = time.monotonic()
    done, _ = futures.wait([inner], timeout=seconds / 5)
    timed_out_after = time.monotonic() - started
    return bool(done), timed_out_after, inner.result(), os.getpid()


def test_a_task_handed_off_during_a_timed_wait_still_completes():
    with dockkit.Executor(workers=1) as ex:
        done_early, waited, inner_pid, outer_pid = ex.submit(wait_briefly_then_for_good, 1.5).result(timeout=60)
        assert not done_early and 0.3 <= waited < 1.5, waited
        assert inner_pid == outer_pid == ex.worker_pids[0]  # ran beside it, in the same worker
        assert ex.submit(abs, -3).result(timeout=60) == 3


# --- shutting down ---------------------------------------------------------------------------------------------------
def block_until_exists(path, limit=60.0):
    """Hold a worker without running its loop (a gate would let it take more tasks)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def test_a_pending_task_cancels_and_calls_back(tmp_path):
    release = str(tmp_path / "release")
    with dockkit.Executor(workers=1) as ex:
        # one worker holds at most three batches (one running, two waiting its turn)
        held = [ex.submit(block_until_exists, release) for _ in range(3)]
        deadline = time.monotonic() + 60
        while not all(f.running() for f in held):
            assert time.monotonic() < deadline, "the worker never took its three tasks"
            time.sleep(0.01)
        pending = ex.submit(abs, -1)  # no worker can take it: it waits in the broker
        seen = []
        pending.add_done_callback(lambda f: seen.append(f.cancelled()))
        assert not pending.running()
        assert pending.cancel() and pending.cancelled() and seen == [True]
        with pytest.raises(concurrent.futures.CancelledError):
            pending.result(timeout=1)
        assert not any(f.cancel() for f in held)  # those reached the worker: they run
        open(release, "w").close()
        assert [f.result(timeout=60) for f in held] == [ex.worker_pids[0]] * 3
        assert ex.submit(abs, -2).result(timeout=60) == 2


def test_an_idle_executor_sleeps(processes):
    # The broker thread and each worker's main thread sleep in a poll that a wake-up pipe
    # ends; a pipe left undrained would make every poll return at once, for ever after.
    with dockkit.Executor(workers=1) as ex:
        done, waited, _, _ = ex.submit(wait_briefly_then_for_good, 0.5).result(timeout=60)
        assert not done  # the timed wait ran: the worker's helper thread woke its main thread
        assert list(ex.map(abs, range(-50, 50))) == [abs(x) for x in range(-50, 50)]
        pids = [os.getpid(), *ex.worker_pids]
        time.sleep(0.2)
        before = [processes.cpu_seconds(pid) for pid in pids]
        time.sleep(1.0)
        used = [processes.cpu_seconds(pid) - start for pid, start in zip(pids, before)]
    assert max(used) < 0.3, f"CPU seconds used in one idle second (root, worker): {used}"


def test_shutdown_is_idempotent_and_leaves_no_worker(processes):
    ex = dockkit.Executor(workers=2)
    assert list(ex.map(abs, [-1, -2, -3])) == [1, 2, 3]
    pids = ex.worker_pids
    assert len(pids) == 2 and all(processes.alive(pid) for pid in pids)
    ex.shutdown()
    ex.shutdown()
    ex.shutdown(wait=False, cancel_futures=True)
    assert not processes.wait_gone(pids, 0)
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(abs, 1)
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.map(abs, [1])


def test_shutdown_waits_for_pending_futures(processes):
    ex = dockkit.Executor(workers=2)
    fs = [ex.submit(square_with_pid, x, 0.3) for x in range(4)]
    ex.shutdown(wait=True)
    assert [f.result(timeout=0)[0] for f in fs] == [0, 1, 4, 9]
    assert not processes.wait_gone(ex.worker_pids, 0)


def test_shutdown_cancel_futures_ends_pending_work(processes):
    ex = dockkit.Executor(workers=2)
    assert ex.submit(abs, -1).result(timeout=60) == 1
    fs = [ex.submit(time.sleep, 60) for _ in range(6)]
    started = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 30
    assert all(f.done() for f in fs)
    assert all(f.cancelled() or isinstance(f.exception(), BrokenExecutor) for f in fs)
    assert not processes.wait_gone(ex.worker_pids, 0)


ROOT_SCRIPT = """
import sys, time
import dockkit

ex = dockkit.Executor(workers=2)
assert list(ex.map(abs, [-1, -2])) == [1, 2]
busy = ex.submit(time.sleep, 120)  # one worker is inside a task when the root goes
time.sleep(0.3)
print(" ".join(map(str, ex.worker_pids)), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("fate", [signal.SIGKILL, signal.SIGSTOP], ids=["root dies", "root hangs"])
def test_workers_leave_within_ten_seconds_when_their_root_dies_or_hangs(processes, tmp_path, fate):
    # dead: the supervisor's pipes close; hung: alive with pipes open, but its broker is
    # silent, and the workers' watchdogs notice
    script = tmp_path / "root.py"
    script.write_text(ROOT_SCRIPT)
    root = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in root.stdout.readline().split()]
        assert len(pids) == 2 and all(processes.alive(pid) for pid in pids)
        root.send_signal(fate)
        assert not processes.wait_gone(pids, 10)
    finally:
        root.kill()
        root.wait()
        root.stdout.close()


# --- laziness ---------------------------------------------------------------------------------------------------------
def consume_5001_of_an_endless_map(executor) -> int:
    """How many input items a lazy map read by the time 5001 results were consumed."""
    source = CountingIterable(limit=10_000_000)
    results = executor.map(abs, source)
    for expected, value in enumerate(results):
        assert value == expected
        if expected == 5000:
            break
    results.close()
    return source.consumed


# Read but not yet consumed: at most MAX_AHEAD_ITEMS, give or take the batch being read.
READ_AHEAD_LIMIT = 5001 + MAX_AHEAD_ITEMS + MAX_BATCH


def test_lazy_map_reads_a_bounded_amount_ahead(executor):
    assert consume_5001_of_an_endless_map(executor) <= READ_AHEAD_LIMIT
    still_works(executor)


def test_read_ahead_does_not_grow_with_the_worker_count():
    # 16 workers allow hundreds of batches in flight and waiting (millions of items);
    # the bound on items read ahead holds all the same
    with dockkit.Executor(workers=16) as ex:
        assert consume_5001_of_an_endless_map(ex) <= READ_AHEAD_LIMIT


def test_lazy_map_with_a_slow_first_task_does_not_read_everything(executor):
    # while the caller waits for the first result, the other results pile up: how many
    # the map holds must be bounded, not the whole input
    source = CountingIterable(limit=10_000_000)
    results = executor.map(slow_first, source)
    assert next(results) == 0
    assert list(itertools.islice(results, 5000)) == list(range(1, 5001))
    results.close()
    assert source.consumed < 1_000_000, source.consumed
    still_works(executor)


def test_shutdown_waits_for_the_batches_of_a_running_map(tmp_path):
    ex = dockkit.Executor(workers=2)
    results = ex.map(record_run_then_sleep, [str(tmp_path)] * 4, [0.5] * 4)
    wait_for_runs(tmp_path, 1)
    ex.shutdown(wait=True)  # the map's batches finish first, as submitted futures do
    assert len(results_so_far := list(results)) == 4 and set(results_so_far) <= set(ex.worker_pids)


def test_futures_shutdown_stops_the_default_executor_and_a_new_one_follows(processes):
    assert list(futures.map(abs, [-1, -2])) == [1, 2]
    old = default_executor()
    futures.shutdown()
    assert not processes.wait_gone(old.worker_pids, 10)
    assert futures.submit(abs, -3).result(timeout=60) == 3
    assert default_executor() is not old


# --- start-up failures and the last output ---------------------------------------------------------------------------
def _children() -> list[int]:
    """Live child processes of this test process (forked and spawned workers alike)."""
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] not in "ZX":
                found.append(int(entry))
    return found


def test_a_broker_that_cannot_bind_fails_the_executor_and_leaves_no_worker(processes):
    before = set(_children())
    # TEST-NET-1 is never an address of this machine: the broker's bind must fail
    with pytest.raises(dockkit.DockkitError, match="192.0.2.1") as failure:
        dockkit.Executor(workers=2, bind="192.0.2.1")
    assert "cannot listen" in str(failure.value)
    assert not processes.wait_gone(set(_children()) - before, 10)


PARTIAL_OUTPUT_SCRIPT = """
import time
import dockkit
from dockkit import futures

def writes_then_waits():
    print("the last words", end="")  # no newline: sits in the worker's buffer
    futures.submit(time.sleep, 30).result()  # a nested wait, interrupted by shutdown

with dockkit.Executor(workers=1) as ex:
    ex.submit(writes_then_waits)
    time.sleep(1.5)
    ex.shutdown(wait=False, cancel_futures=True)
"""


def test_a_worker_stopped_during_a_nested_wait_keeps_its_last_output(tmp_path):
    script = tmp_path / "partial.py"
    script.write_text(PARTIAL_OUTPUT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[w0] the last words" in done.stdout, (done.stdout, done.stderr)


def _lock_at_seven(x):
    import threading

    return threading.Lock() if x == 7 else x


def test_a_result_that_cannot_travel_names_its_item_of_the_map(executor):
    from dockkit.errors import SerializationError

    with pytest.raises(SerializationError, match=r"a task's result cannot be pickled on .*_thread\.lock") as raised:
        list(executor.map(_lock_at_seven, range(20)))
    assert raised.value.__notes__ == ["map(_lock_at_seven): item 7"]
    assert list(executor.map(abs, range(-3, 3))) == [3, 2, 1, 0, 1, 2]  # the pool lives on
