"""One trial: a run under observation, the tasks' own log, and what the run left behind.

Every process a trial starts carries the trial's marker in its environment, and
so does every process those start (workers inherit the root's environment,
forked or spawned), so "what this trial left" is read from ``/proc`` without
guessing from command lines, and a trial cleans up only what is its own.
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from benchmarks.env import ROOT, child_env
from benchmarks.faults.job import REPORT_MARK
from dockkit import Executor

MARKER = "DOCKKIT_CHAOS_TRIAL"
GRACE_S = 15.0  # how long a run's processes may take to go after its end
ERROR = re.compile(r"^(?:[\w.]+\.)?(?P<name>\w+(?:Error|Exception|Interrupt))\b")
DEFAULT_RETRIES = inspect.signature(Executor).parameters["max_retries"].default


@dataclass
class Outcome:
    """What one trial saw.

    ``correct`` is None where the fault leaves no result to check (the root killed);
    ``noticed_s`` is None where nothing noticed the fault.
    """

    correct: bool | None
    duplicates: int
    noticed_s: float | None
    status: int | None
    error: str | None = None    # the exception the user saw, by name
    lingering: int = 0          # the run's processes still there when it ended
    left: int = 0               # ... and GRACE_S later
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """One fault of the suite: how a trial of it runs, and how the report speaks of it.

    ``trial`` is called with ``max_retries`` (and, for a Docker fault, the cluster first, or
    what ``context()`` made), once per trial and per value of ``retries``.
    """

    key: str
    title: str
    trial: Callable[..., Outcome]
    does: str       # what one trial does, for the report
    noticed: str    # what "noticed after" measures in this fault
    retries: tuple[int, ...] = (DEFAULT_RETRIES,)
    docker: bool = False
    memory: str | None = None  # a Docker fault's nodes need this memory limit (a cluster of their own)
    context: Callable[[], object] | None = None  # a Docker fault's own context, not the section's cluster


class TaskLog:
    """The file every task appends ``round item pid time host`` to: what ran, where, and how often."""

    def __init__(self, path: Path):
        self.path = path

    def _fields(self) -> list[list[str]]:
        try:
            return [line.split() for line in self.path.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def records(self) -> list[tuple[int, int, int, float]]:
        return [(int(r), int(x), int(pid), float(t)) for r, x, pid, t, _ in self._fields()]

    def ran_on(self, host: str | None, *, after: float, before: float = float("inf")) -> int:
        """Tasks that ran on ``host`` (its hostname; None: anywhere) and ended between ``after``
        and ``before`` (``time.time()``)."""
        return sum(1 for *_, t, where in self._fields()
                   if host in (None, where) and after < float(t) < before)

    def duplicates(self) -> int:
        """Task runs beyond the first of each (round, item)."""
        counts = collections.Counter((r, x) for r, x, _, _ in self.records())
        return sum(n - 1 for n in counts.values())

    def wait_for(self, count: int, *, alive, timeout: float = 60.0) -> bool:
        """Wait until ``count`` tasks have run (the map is under way), or ``alive()`` fails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            try:
                if self.path.read_bytes().count(b"\n") >= count:
                    return True
            except FileNotFoundError:
                pass
            time.sleep(0.002)
        return False


def marked_pids(marker: str) -> list[int]:
    """Live processes (zombies excluded) whose environment holds this trial's marker."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state not in ("Z", "X"):
            found.append(int(entry))
    return found


def worker_pids(root: int) -> list[int]:
    """The worker processes a local root started (``python -m dockkit.runtime.worker``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if parent == root and b"dockkit.runtime.worker" in command:
            found.append(int(entry))
    return sorted(found)


class ObservedRun:
    """A command of the trial, its stdout and stderr lines timed (monotonic) as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self.ended_at: float | None = None
        self._arrived = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self._readers:
            reader.start()
        # the moment it ended, whenever the trial looks: a trial busy with its fault may wait later
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        self.process.wait()
        self.ended_at = time.monotonic()

    def _read(self, stream, lines: list) -> None:
        for line in stream:
            with self._arrived:
                lines.append((time.monotonic(), line.rstrip("\n")))
                self._arrived.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def lines(self) -> list[tuple[float, str]]:
        """Both streams' lines so far, in order of arrival."""
        return sorted(self.out + self.err)

    def wait_for_line(self, pattern: re.Pattern, *, timeout: float, since: float = 0.0):
        """The first line at or after ``since`` matching ``pattern``: (time, match), or None."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for at, line in self.lines():
                    if at >= since and (match := pattern.search(line)):
                        return at, match
                left = deadline - time.monotonic()
                if left <= 0 or (not self.running() and not any(r.is_alive() for r in self._readers)):
                    return None
                self._arrived.wait(min(left, 0.05))

    def wait(self, timeout: float) -> int | None:
        """The exit status (negative: the signal that ended it), or None if still running."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._watcher.join(timeout=5)
        for reader in self._readers:
            reader.join(timeout=5)
        return status

    def reports(self) -> dict[int, dict]:
        """The job's reports by round (see :mod:`benchmarks.faults.job`)."""
        found = (json.loads(line[len(REPORT_MARK):]) for _, line in self.out if line.startswith(REPORT_MARK))
        return {report["round"]: report for report in found}

    def error(self) -> str | None:
        """The name of the exception the script ended with, from its traceback's last line."""
        for _, line in reversed(self.lines()):
            if match := ERROR.match(line):
                return match["name"]
        return None



class Trial:
    """The scope of one trial: a scratch directory, the marker, the task log, the runs.

    Args:
        log_dir: where the task log goes (a directory the tasks can reach: on a
            cluster, one mounted into every node); a fresh scratch directory by default.
        seen_as: that directory as the tasks see it, if not at the same path.
        env: more environment variables for the trial's commands.
    """

    def __init__(self, log_dir: Path | None = None, *, seen_as: PurePosixPath | None = None,
                 env: dict[str, str] | None = None):
        self.marker = uuid.uuid4().hex
        self.scratch = Path(tempfile.mkdtemp(prefix="chaos-"))
        self.log = TaskLog((log_dir or self.scratch) / f"tasks-{self.marker[:12]}.log")
        self.job_log = str(seen_as / self.log.path.name) if seen_as else str(self.log.path)
        self.runs: list[ObservedRun] = []
        self._env = env or {}

    def __enter__(self) -> "Trial":
        return self

    def __exit__(self, *exc) -> None:
        for run in self.runs:
            if run.running():
                run.process.kill()
                run.wait(10)
        self.kill_survivors()
        self.log.path.unlink(missing_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def env(self) -> dict[str, str]:
        return {**child_env(), **self._env, MARKER: self.marker}

    def start(self, argv: list[str]) -> ObservedRun:
        run = ObservedRun(argv, self.env)
        self.runs.append(run)
        return run

    def dockkit_run(self, *options: str, job: list[str]) -> ObservedRun:
        """``dockkit run [options] benchmarks/faults/job.py LOG job...``."""
        return self.start([sys.executable, "-m", "dockkit.cli", "run", *options,
                           "benchmarks/faults/job.py", self.job_log, *job])

    def processes(self) -> int:
        """How many of the trial's processes run now."""
        return len(marked_pids(self.marker))

    def settle(self, since: float, *, elsewhere: Callable[[], int] = lambda: 0) -> tuple[int, float | None]:
        """Wait until GRACE_S after ``since`` for the trial's processes (here, and those
        ``elsewhere()`` counts) to go: how many stayed, and when the last went (seconds
        after ``since``; None if some stayed)."""
        while (left := self.processes() + elsewhere()) and time.monotonic() - since < GRACE_S:
            time.sleep(0.02)
        return left, None if left else time.monotonic() - since

    def kill_survivors(self) -> None:
        """End what the trial left (after counting it), so no trial inherits another's processes."""
        for pid in marked_pids(self.marker):
            for signum in (signal.SIGCONT, signal.SIGKILL):  # a stopped process must wake to die
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
