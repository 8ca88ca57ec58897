"""``dockkit.shared`` in the root: ``getConst`` waits for a constant a running task sets.

SCOOP's root waits up to ``timeout`` for a constant to arrive; so does dockkit's, on
a condition the broker thread notifies (no polling). The tasks run on real local
workers of the default executor, as a SCOOP program's would.
"""

from __future__ import annotations

import time
import uuid

import pytest

from dockkit import futures, shared


def set_later_then_wait_for_ack(name, value, ack, delay):
    """Set ``name`` after ``delay`` s, then stay running until the root answers with ``ack``."""
    time.sleep(delay)
    shared.setConst(**{name: value})
    return shared.getConst(ack, timeout=60)


@pytest.mark.parametrize("timeout", [30, None], ids=["timeout", "no-timeout"])
def test_the_root_waits_for_a_constant_that_a_running_task_sets(timeout):
    name, ack = f"later_{uuid.uuid4().hex}", f"ack_{uuid.uuid4().hex}"
    task = futures.submit(set_later_then_wait_for_ack, name, {"table": [1, 2]}, ack, 0.5)
    assert shared.getConst(name, timeout=timeout) == {"table": [1, 2]}
    assert not task.done()  # it waits for the root's answer: the root did not wait for its end
    shared.setConst(**{ack: "seen"})
    assert task.result(timeout=60) == "seen"


def test_the_root_gives_the_default_when_the_constant_does_not_come_in_time():
    name = f"never_{uuid.uuid4().hex}"
    started = time.monotonic()
    assert shared.getConst(name, timeout=0.3) is None  # SCOOP's answer
    assert time.monotonic() - started >= 0.25  # it did wait (how much longer is the machine's)
    assert shared.getConst(name, timeout=0.3, default="absent") == "absent"
    assert shared.getConst(name, timeout=0, default="absent") == "absent"
    assert shared.getConst(name, timeout=-1, default="absent") == "absent"  # SCOOP's: no wait
