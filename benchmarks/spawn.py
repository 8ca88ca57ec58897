"""Run one measurement child (:mod:`benchmarks.child`) and read its result line.

The orchestration (:mod:`benchmarks.run`) and the scale section (:mod:`benchmarks.scale`)
both start children this way; they share this module and do not import each other.

Each child runs in its own session and its whole process group is killed after it,
so a hung peer or a leftover worker never reaches the next measurement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.child import RESULT_MARK, T0_ENV
from benchmarks.env import ROOT
from benchmarks.systems import SYSTEMS
from benchmarks.workloads import Case

CHILD = ROOT / "benchmarks" / "child.py"


def child_command(system: str, case: Case, quick: bool) -> list[str]:
    args = [str(CHILD), "--system", system, "--case", case.id] + (["--quick"] if quick else [])
    if SYSTEMS[system].launched:  # SCOOP: its launcher starts the workers and the root
        return [sys.executable, "-m", "scoop", "-n", str(case.workers), *args]
    return [sys.executable, *args]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_line(text: str) -> str:
    """The last non-blank line of a child's output, or ``"no output"``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_child(cmd: list[str], timeout: float, env: dict[str, str], launched: bool = False) -> dict:
    """Run one child to its result line; never raises for the child's sake.

    ``launched``: the child runs under its system's launcher, so W5's clock starts
    here, as the launcher starts (see ``child.T0_ENV``).
    """
    if launched:
        env = {**env, T0_ENV: repr(time.time())}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                # Orphaned workers can hold the pipes open after the child exits.
                timed_out = time.monotonic() > deadline
                if timed_out or proc.poll() is not None:
                    _kill_group(proc.pid)
                    out, err = proc.communicate()
                    break
    finally:
        _kill_group(proc.pid)  # stragglers: workers, schedulers, raylets
    found = [line for line in out.splitlines() if line.startswith(RESULT_MARK)]
    if found:
        result = json.loads(found[-1][len(RESULT_MARK):])
    elif timed_out:
        result = {"status": "timeout", "reason": f"no result within {timeout:.0f} s"}
    else:
        result = {"status": "error", "reason": f"exit {proc.returncode}: {last_line(err)}"}
    if result.get("reason"):
        result["reason"] = portable(result["reason"])
    return result


def portable(text: str) -> str:
    """Reasons end up in the docs: say paths relative to the checkout and the venv."""
    for path, name in ((sys.prefix, "<venv>"), (str(ROOT), "."), (str(Path.home()), "~")):
        text = text.replace(path, name)
    return text
