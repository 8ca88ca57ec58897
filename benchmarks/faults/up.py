"""``dockkit up`` interrupted at a random moment: ``down`` must leave nothing, and ``up`` must work again.

Each trial makes a cluster of its own (``chaos-up-…``, with a state directory of its
own), sends SIGINT or SIGKILL to its ``dockkit up`` after a random delay, then runs
``dockkit down`` and counts what Docker still holds with the cluster's label
(containers, networks, volumes); then ``up`` and ``down`` once more, as a user would
to start again. The section's cluster plays no part.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dockkit
from benchmarks.env import ROOT, child_env
from benchmarks.faults.local import interruptible
from benchmarks.faults.trial import Fault, Outcome

NODES = 3
LATEST_S = 2.5     # the signal comes at a uniform random delay up to this (an `up` of 3 nodes takes ~2.2 s here)
UP_TIMEOUT_S = 300.0
PACKAGE = Path(dockkit.__file__).resolve().parent
FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+, in (?P<function>\S+)', re.MULTILINE)


def labelled(name: str) -> int:
    """Containers, networks and volumes that Docker holds with the cluster's label."""
    from dockkit.cluster.engine import docker_client
    from dockkit.cluster.nodes import CLUSTER_LABEL

    client = docker_client()
    label = {"label": f"{CLUSTER_LABEL}={name}"}
    try:
        return (len(client.containers.list(all=True, filters=label)) + len(client.networks.list(filters=label))
                + len(client.volumes.list(filters=label)))
    finally:
        client.close()


class Scratch:
    """A cluster name and state directory for one trial; removed with whatever is left at the end."""

    def __init__(self):
        self.name = f"chaos-up-{uuid.uuid4().hex[:6]}"
        self.state = Path(tempfile.mkdtemp(prefix="chaos-up-state-"))
        self.env = {**child_env(), "DOCKKIT_STATE_DIR": str(self.state)}

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "dockkit.cli", *args, "--name", self.name], cwd=ROOT,
                                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def cli(self, *args: str) -> tuple[int | None, str]:
        process = self.start(*args)
        try:
            out, _ = process.communicate(timeout=UP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            return None, out
        return process.returncode, out

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        self.cli("down")  # a backstop: the trial has already taken it down, unless it failed
        shutil.rmtree(self.state, ignore_errors=True)


def up_interrupted(signum: int, _cluster, max_retries: int) -> Outcome:
    """One trial (``max_retries`` plays no part; nor does the section's cluster)."""
    interruptible()
    with Scratch() as scratch:
        up = scratch.start("up", "--nodes", str(NODES))
        delay = random.uniform(0.0, LATEST_S)
        time.sleep(delay)
        running = up.poll() is None
        signalled_at = time.monotonic()
        up.send_signal(signum)
        try:
            said, _ = up.communicate(timeout=UP_TIMEOUT_S)
            status, ended_s = up.returncode, time.monotonic() - signalled_at
        except subprocess.TimeoutExpired:
            up.kill()
            said, _ = up.communicate()
            status, ended_s = None, None
        after_up = labelled(scratch.name)
        down, down_said = scratch.cli("down")
        after_down = labelled(scratch.name)
        again, again_said = scratch.cli("up", "--nodes", str(NODES))
        final, _ = scratch.cli("down")
        after_all = labelled(scratch.name)
    last_words = [line for line in (said or "").splitlines() if line.strip()]
    return Outcome(correct=down == 0 and after_down == 0 and again == 0 and final == 0 and after_all == 0,
                   duplicates=0, noticed_s=ended_s, status=status,
                   error=_error(last_words[-1]) if last_words and status not in (0, None) else None,
                   lingering=after_up, left=after_down + after_all,
                   detail={"delay_s": delay, "running": running, "traceback": whose_traceback(said or ""),
                           # what it said as it stopped (a SIGKILLed one says nothing)
                           "last_word": last_words[-1] if last_words and signum != signal.SIGKILL else None,
                           "down_said": None if down == 0 else down_said.strip()[-300:],
                           "again_said": None if again == 0 else again_said.strip()[-300:]})


def whose_traceback(said: str) -> str | None:
    """Who printed the traceback in ``said``, if any: ``"dockkit"`` or ``"startup"``.

    A SIGINT that lands while Python is still starting (``site``, ``runpy``, the
    imports at module level) raises KeyboardInterrupt before any of dockkit's
    code runs, and the interpreter prints the traceback: dockkit can't catch it.
    Once a function of dockkit's is on the stack, a Ctrl-C must end in one line.
    """
    if "Traceback (most recent call last)" not in said:
        return None
    for frame in FRAME.finditer(said):
        if frame["function"] != "<module>" and Path(frame["path"]).resolve().is_relative_to(PACKAGE):
            return "dockkit"
    return "startup"


def _error(line: str) -> str | None:
    from benchmarks.faults.trial import ERROR

    match = ERROR.match(line)
    return match["name"] if match else None


_DOES = ("`dockkit up --nodes 3 --name chaos-up-…` makes a cluster (the worker image is already built); "
         f"after a random delay of 0 to {LATEST_S:g} s (an `up` takes about 2.2 s here), the trial sends "
         "it {signal}. Then `dockkit down --name chaos-up-…`, and a count of what Docker holds with the "
         "cluster's label (containers, networks, volumes); then `up` and `down` again, as a user starting "
         "over would. Correct: both `down`s and the second `up` succeeded, and nothing labelled was left. "
         "*Left behind* counts labelled objects after each `down`; in brackets, those there when the "
         "interrupted `up` ended, before any `down`.")
FAULTS = [
    Fault("up-int", "`dockkit up` interrupted (SIGINT, Ctrl-C) at a random moment",
          functools.partial(up_interrupted, signal.SIGINT), docker=True,
          does=_DOES.format(signal="SIGINT, what Ctrl-C sends"),
          noticed="from the signal to the end of the interrupted `up`"),
    Fault("up-kill", "`dockkit up` SIGKILLed at a random moment",
          functools.partial(up_interrupted, signal.SIGKILL), docker=True,
          does=_DOES.format(signal="SIGKILL"),
          noticed="from the signal to the end of the interrupted `up`"),
]
