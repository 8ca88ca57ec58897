"""One trial of each local fault of ``make chaos``, through the suite's own code.

Keeps the suite from rotting, and holds dockkit to what ``docs/reliability.md``
reports: after each fault the results are right (or the error says why they are
not), no task runs twice with ``max_retries=0``, nothing is left behind, and the
exit status is the documented one. Speed is never asserted.
"""

from __future__ import annotations

import signal
import traceback

import pytest

from benchmarks.chaos import FAULTS, run_fault
from benchmarks.faults.report import FaultResult, page
from benchmarks.faults.trial import Outcome

LOCAL = [fault for fault in FAULTS if not fault.docker]
#: (exit status, error the user saw) per fault and max_retries.
EXPECTED = {
    ("worker-kill", 0): (1, "WorkerLostError"), ("worker-kill", 3): (0, None),
    ("worker-stop", 0): (1, "WorkerLostError"), ("worker-stop", 3): (0, None),
    ("root-kill", 3): (-signal.SIGKILL, None), ("root-int", 3): (130, None),
    ("root-stop", 3): (-signal.SIGKILL, None),
    ("result-unpicklable", 3): (0, "SerializationError"), ("result-reduce-raises", 3): (0, "SerializationError"),
    ("result-large", 3): (0, None), ("flood", 3): (0, None), ("flood-curve", 3): (0, None),
}


@pytest.fixture(scope="module")
def results() -> dict[str, FaultResult]:
    return {fault.key: run_fault(fault, 1) for fault in LOCAL}


@pytest.mark.parametrize("key, max_retries", sorted(EXPECTED))
def test_a_fault_is_handled_as_documented(results, key, max_retries):
    (outcome,) = results[key].outcomes[max_retries]
    assert (outcome.status, outcome.error) == EXPECTED[key, max_retries], outcome
    assert outcome.correct in (True, None), outcome
    assert outcome.left == 0 and outcome.lingering == 0, outcome
    assert outcome.detail.get("injected", True), outcome
    if max_retries == 0 or not key.startswith("worker-"):
        assert outcome.duplicates == 0, outcome  # only a lost worker's batch may run again
    if key.startswith(("worker-", "flood")):
        assert outcome.noticed_s is not None, outcome


@pytest.mark.parametrize("key, encrypted", [("flood", False), ("flood-curve", True)])
def test_the_flood_gets_nowhere(results, key, encrypted):
    (outcome,) = results[key].outcomes[3]
    assert outcome.detail["encrypted"] is encrypted
    assert outcome.detail["frames"] >= 10_000 and outcome.detail["refused"] > 0
    assert outcome.detail["accepted"] == 0
    assert not outcome.detail["unpickled"] and not outcome.detail["ran"]


def test_the_page_names_every_fault(results):
    meta = {"date": "today", "cpus": 2, "version": "0", "python": "3", "local": 1, "docker": 1,
            "wall": "1 min", "unmeasured": ["something"]}
    text = page(list(results.values()), meta)
    assert all(f"| {fault.title} |" in text and f"### {fault.title}" in text for fault in LOCAL)
    assert "## Not yet measured\n\n- something" in text


def test_the_page_says_what_down_said_after_an_engine_was_lost():
    (fault,) = [fault for fault in FAULTS if fault.key == "engine-lost"]
    said = "dockkit: error: taking down cluster c: 1 Docker Engine(s) did not answer (tcp://ENGINE:2375: …)"
    detail = {"bed_s": 15.0, "up_s": 20.0, "shipped": True, "down_s": 5.0, "down_status": 1, "down_lines": 1,
              "down_named": True, "down_said": said, "containers_left": 0, "trial_s": 90.0,
              "lost_said": "dockkit: host node1 lost"}
    outcomes = {setting: [Outcome(correct=True, duplicates=0, noticed_s=0.1, status=0, detail=detail)]
                for setting in fault.retries}
    text = page([FaultResult(fault, outcomes)], {"date": "today", "cpus": 2, "version": "0", "python": "3",
                                                 "local": 1, "docker": 1, "wall": "1 min", "unmeasured": []})
    assert f"### {fault.title}" in text
    assert f"it said: `` {said} ``" in text and "named the lost engine in 2 of 2" in text
    assert "the first line that said it: `dockkit: host node1 lost`" in text
    assert "after `down` (containers, networks, volumes with the cluster's label): 0, in 0 of 2" in text


def test_a_traceback_is_dockkits_once_its_code_runs_and_pythons_while_it_starts():
    from benchmarks.faults.up import PACKAGE, whose_traceback
    from dockkit.cli import expand_hosts

    try:
        expand_hosts(None)
    except TypeError:
        raised_in_dockkit = traceback.format_exc()
    while_importing = (  # what a SIGINT during `python -m dockkit.cli`'s imports printed
        "Traceback (most recent call last):\n"
        '  File "<frozen runpy>", line 189, in _run_module_as_main\n'
        '  File "<frozen runpy>", line 112, in _get_module_details\n'
        f'  File "{PACKAGE / "__init__.py"}", line 19, in <module>\n'
        "    from dockkit.errors import (BrokenExecutor, DockkitError, RemoteError, SerializationError,\n"
        f'  File "{PACKAGE / "errors.py"}", line 12, in <module>\n'
        "    import concurrent.futures\n"
        '  File "/usr/lib/python3.11/collections/__init__.py", line 436, in namedtuple\n'
        "KeyboardInterrupt\n")
    assert whose_traceback("dockkit: making 3 nodes\nAborted.\n") is None
    assert whose_traceback(raised_in_dockkit) == "dockkit"
    assert whose_traceback(while_importing) == "startup"
