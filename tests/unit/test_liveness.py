"""Heartbeats both ways, and the bounds that keep a run alive and its memory flat.

A worker that hangs is given up on after ``heartbeat_timeout`` and its batch runs
elsewhere (a hung root, and how far a lazy map reads ahead: see test_executor_local);
tiny tasks travel in batches.
"""

from __future__ import annotations

import os
import signal
import time

import dockkit
from tests.contract import still_works

def first_run_hangs(directory: str) -> int:
    """The first call records its pid and sleeps; any later call returns at once."""
    runs = os.listdir(directory)
    with open(os.path.join(directory, f"run-{os.getpid()}-{len(runs)}"), "w"):
        pass
    if not runs:
        time.sleep(60)
    return os.getpid()


def test_a_hung_worker_is_given_up_and_its_task_runs_elsewhere(processes, tmp_path):
    with dockkit.Executor(workers=2, heartbeat_timeout=3.0) as ex:
        ex.wait_for_workers()
        future = ex.submit(first_run_hangs, str(tmp_path))
        deadline = time.monotonic() + 30
        while not os.listdir(tmp_path):
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.02)
        hung = int(os.listdir(tmp_path)[0].split("-")[1])
        os.kill(hung, signal.SIGSTOP)
        try:
            ran_on = future.result(timeout=30)
            assert ran_on != hung and ran_on in ex.worker_pids
            assert len(os.listdir(tmp_path)) == 2
            assert ex.stats()["requeued"] == 1
            still_works(ex)
        finally:
            os.kill(hung, signal.SIGCONT)
        # awake again, it finds the broker has told it to stop
        assert not processes.wait_gone([hung], 10)


def test_tiny_tasks_travel_in_batches():
    with dockkit.Executor(workers=2) as ex:
        before = ex.stats()
        assert sum(ex.map(abs, range(100_000))) == sum(range(100_000))
        after = ex.stats()
        assert after["tasks"] - before["tasks"] == 100_000
        assert 2 <= after["batches"] - before["batches"] <= 100, (before, after)


def test_an_agent_given_up_as_silent_is_told_to_stop_when_it_speaks_again(caplog):
    import zmq

    from dockkit.runtime import protocol as P
    from tests.unit.test_security import raw_dealer, receive

    with dockkit.Executor(workers=1, heartbeat_timeout=2.5) as ex:
        context = zmq.Context()
        try:
            agent = raw_dealer(context, ex.address, user=P.AUTH_USER, password=ex._secret.encode())
            agent.send_multipart(P.hello_agent("paused", [b"paused/w0"]))
            assert receive(agent, 10_000)[0] == P.WELCOME
            deadline = time.monotonic() + 30
            while agent.identity in ex._broker.agents:  # silent (a paused host): given up on
                assert time.monotonic() < deadline, "the silent agent was never given up on"
                time.sleep(0.05)
            # awake again, it reports what became of its worker meanwhile
            agent.send_multipart(P.exited(b"paused/w0", "was killed by SIGTERM"))
            answers = []
            while (message := receive(agent, 5_000)) is not None and message[0] != P.STOP:
                answers.append(message[0])
            assert message is not None, answers  # told to stop
            still_works(ex)
        finally:
            context.destroy(linger=0)
    # a late report of a host given up on is expected, not a malformed message
    assert not [r for r in caplog.records if "malformed" in r.getMessage()], caplog.text
