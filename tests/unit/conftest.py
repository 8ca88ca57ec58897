"""Fixtures of the unit tests: looking at worker processes through ``/proc``; a ZeroMQ context."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import zmq


class Processes:
    """Whether processes still run; a zombie (exited, not yet reaped) counts as gone.

    Workers may be started as ``python -m dockkit.runtime.worker`` or forked from their root, so a
    pid is all we go by (pids are not reused within a test's few seconds).
    """

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")

    @staticmethod
    def cpu_seconds(pid: int) -> float:
        """CPU time (user and system) the process has used so far."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_gone(self, pids, timeout: float) -> list[int]:
        """Wait up to ``timeout`` seconds for every pid to go; returns those still alive."""
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for pid in pids if self.alive(pid)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)


@pytest.fixture(scope="session")
def processes() -> Processes:
    return Processes()


@pytest.fixture
def zmq_context():
    """A ZeroMQ context of the test's own, destroyed with whatever sockets it still has."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)
