"""Faults on this machine: a worker killed or stopped mid-map, the root killed, stopped
or interrupted, results that cannot travel as they are.

Each trial is one ``dockkit run --local -n 4`` of :mod:`benchmarks.faults.job`, a
real root with real worker processes; the fault is a real signal, sent once the
job's tasks have started to record themselves (the map is under way).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import time

from benchmarks.faults.job import ROUNDS
from benchmarks.faults.trial import DEFAULT_RETRIES, Fault, ObservedRun, Outcome, Trial, worker_pids

WORKERS = 4
ITEMS = 200
UNDER_WAY = 20          # tasks recorded before the fault is injected
HEARTBEAT_S = 3         # --heartbeat-timeout of the stopped-worker trial
RUN_TIMEOUT_S = 120.0   # a run still going after this is a hang: recorded, then killed
PAYLOAD_ERRORS = {"unpicklable": "SerializationError", "reduce-raises": "SerializationError", "large": None}
BOTH = (0, DEFAULT_RETRIES)


def _options(max_retries: int, *extra: str) -> list[str]:
    return ["--local", "-n", str(WORKERS), "--max-retries", str(max_retries), *extra]


def _loss_of(pid: int) -> re.Pattern:
    return re.compile(rf"dockkit: worker \S+ \(pid {pid}\) on ")


def finish(run: ObservedRun) -> int | None:
    """The run's exit status; a run that hangs is killed and has None."""
    status = run.wait(RUN_TIMEOUT_S)
    if status is None:
        run.process.kill()
        run.wait(10)
    return status


def maps_correct(run: ObservedRun, status: int | None, allowed_error: str | None) -> bool:
    """Every map returned exactly its list, or (where ``allowed_error``) the script ended with that error."""
    reports = run.reports()
    if not all(report["correct"] for report in reports.values()):
        return False
    if len(reports) == ROUNDS and status == 0:
        return True
    return allowed_error is not None and status == 1 and run.error() == allowed_error


def _map_outcome(trial: Trial, run: ObservedRun, *, allowed_error: str | None, noticed_s: float | None,
                 **detail) -> Outcome:
    status = finish(run)
    lingering = trial.processes()
    left, _ = trial.settle(time.monotonic())
    return Outcome(correct=maps_correct(run, status, allowed_error), duplicates=trial.log.duplicates(),
                   noticed_s=noticed_s, status=status, error=run.error(), lingering=lingering, left=left,
                   detail=detail)


def worker_killed(max_retries: int) -> Outcome:
    with Trial() as trial:
        run = trial.dockkit_run(*_options(max_retries), job=["map", str(ITEMS)])
        if not trial.log.wait_for(UNDER_WAY, alive=run.running):
            return _map_outcome(trial, run, allowed_error=None, noticed_s=None, injected=False)
        victim = worker_pids(run.pid)[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        seen = run.wait_for_line(_loss_of(victim), timeout=RUN_TIMEOUT_S, since=killed_at)
        allowed = "WorkerLostError" if max_retries == 0 else None
        return _map_outcome(trial, run, allowed_error=allowed,
                            noticed_s=seen[0] - killed_at if seen else None)


def worker_stopped(max_retries: int) -> Outcome:
    with Trial() as trial:
        run = trial.dockkit_run(*_options(max_retries, "--heartbeat-timeout", str(HEARTBEAT_S)),
                                job=["map", str(ITEMS)])
        if not trial.log.wait_for(UNDER_WAY, alive=run.running):
            return _map_outcome(trial, run, allowed_error=None, noticed_s=None, injected=False)
        victim = worker_pids(run.pid)[0]
        stopped_at = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        seen = run.wait_for_line(_loss_of(victim), timeout=HEARTBEAT_S + 10, since=stopped_at)
        resumed = time.time()
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
        allowed = "WorkerLostError" if max_retries == 0 else None
        outcome = _map_outcome(trial, run, allowed_error=allowed,
                               noticed_s=seen[0] - stopped_at if seen else None)
        # tasks the worker finished after it woke: their results must be dropped
        outcome.detail["late"] = sum(1 for _, _, pid, at in trial.log.records()
                                     if pid == victim and at > resumed)
        return outcome


def interruptible() -> None:
    """Let runs take SIGINT as they would from a terminal.

    A shell starts its background jobs with SIGINT ignored, children inherit that, and
    a Python root that inherits it ignores Ctrl-C too (it would then just finish).
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def root_signalled(signum: int, max_retries: int) -> Outcome:
    interruptible()
    with Trial() as trial:
        run = trial.dockkit_run(*_options(max_retries), job=["map", str(ITEMS)])
        trial.log.wait_for(UNDER_WAY, alive=run.running)
        signalled_at = time.monotonic()
        os.kill(run.pid, signum)
        left, gone_after = trial.settle(signalled_at)
        status = finish(run)
        return Outcome(correct=None, duplicates=trial.log.duplicates(), noticed_s=gone_after, status=status,
                       error=run.error(), left=left)


def root_stopped(max_retries: int) -> Outcome:
    """The root hangs (SIGSTOP): its workers must leave on their own; the root itself stays
    stopped until the trial kills it, so it is not counted as left behind."""
    with Trial() as trial:
        run = trial.dockkit_run(*_options(max_retries), job=["map", str(ITEMS)])
        trial.log.wait_for(UNDER_WAY, alive=run.running)
        stopped_at = time.monotonic()
        os.kill(run.pid, signal.SIGSTOP)
        try:
            left, gone_after = trial.settle(stopped_at, elsewhere=lambda: -1)  # all but the root
        finally:
            run.process.kill()
            # a stopped process must wake to die; the run's watcher may have reaped it already
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.pid, signal.SIGCONT)
        status = finish(run)
        return Outcome(correct=None, duplicates=trial.log.duplicates(), noticed_s=gone_after, status=status,
                       error=run.error(), left=left)


def bad_result(kind: str, max_retries: int) -> Outcome:
    with Trial() as trial:
        run = trial.dockkit_run(*_options(max_retries), job=["payload", kind])
        status = finish(run)
        lingering = trial.processes()
        left, _ = trial.settle(time.monotonic())
        reports = run.reports()
        first, following = reports.get(0), reports.get(1)
        expected = PAYLOAD_ERRORS[kind]
        said = first and first["error"]
        if expected is None:
            first_right = bool(first and first["correct"])
        else:
            first_right = bool(said and said.startswith(expected + ":"))
        return Outcome(correct=status == 0 and first_right and bool(following and following["correct"]),
                       duplicates=trial.log.duplicates(), noticed_s=first and first["seconds"], status=status,
                       error=said.partition(":")[0] if said else run.error(), lingering=lingering, left=left,
                       detail={"message": said} if said else {})


FAULTS = [
    Fault("worker-kill", "worker SIGKILLed mid-map", worker_killed, retries=BOTH,
          does=f"`dockkit run --local -n {WORKERS}` runs a job whose script maps a task over {ITEMS} "
               "items (each sleeps 10 ms, then appends a line to the task log), twice. Once "
               f"{UNDER_WAY} tasks have recorded themselves, the trial SIGKILLs one worker process "
               "(a child of the root running `python -m dockkit.runtime.worker`).",
          noticed="from the SIGKILL to the line in which the root's broker names the worker as lost"),
    Fault("worker-stop", f"worker SIGSTOPped past `--heartbeat-timeout {HEARTBEAT_S}`", worker_stopped,
          retries=BOTH,
          does=f"The same job with `--heartbeat-timeout {HEARTBEAT_S}`; once {UNDER_WAY} tasks have "
               "recorded themselves the trial SIGSTOPs one worker, waits for the broker to give up on "
               "it (or 13 s), then SIGCONTs it. Tasks the worker finishes after it wakes are counted "
               "from the task log: their results must not reach the script.",
          noticed="from the SIGSTOP to the line in which the broker gives up on the silent worker"),
    Fault("root-kill", "root SIGKILLed mid-map", functools.partial(root_signalled, signal.SIGKILL),
          does=f"The same job; once {UNDER_WAY} tasks have recorded themselves the trial SIGKILLs the "
               "root (the `dockkit run` process, which runs the script and the broker), then watches "
               "the processes of the run for 15 s.",
          noticed="from the SIGKILL until no process of the run is left"),
    Fault("root-int", "root SIGINTed mid-map (Ctrl-C)", functools.partial(root_signalled, signal.SIGINT),
          does="As above, with SIGINT (what Ctrl-C sends) instead of SIGKILL.",
          noticed="from the SIGINT until no process of the run is left, the root included"),
    Fault("root-stop", "root SIGSTOPped mid-map (hung)", root_stopped,
          does="As above, with SIGSTOP: the root hangs, its broker with it, and stays stopped for "
               "15 s while the trial watches its workers (the root itself is then killed, and not "
               "counted).",
          noticed="from the SIGSTOP until no worker of the run is left"),
    Fault("result-unpicklable", "a task returns an unpicklable object",
          functools.partial(bad_result, "unpicklable"),
          does="The job maps a task over 8 items; item 3 returns a `threading.Lock`. The script "
               "catches what the map raises, then maps 200 plain tasks on the same pool.",
          noticed="from the map's call to the error it raised, timed in the script"),
    Fault("result-reduce-raises", "a task's result raises inside `__reduce__`",
          functools.partial(bad_result, "reduce-raises"),
          does="As above; item 3 returns an object whose `__reduce__` raises `RuntimeError`.",
          noticed="from the map's call to the error it raised, timed in the script"),
    Fault("result-large", "a task returns 2.5 GiB", functools.partial(bad_result, "large"),
          does="As above; item 3 returns `bytes` of 2.5 GiB (past every 32-bit size). dockkit has no "
               "size limit of its own, so the result must arrive whole; the script checks its length.",
          noticed="from the map's call to its results, the 2.5 GiB included, timed in the script"),
]
