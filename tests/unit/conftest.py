"""Fixtures of the unit tests: looking at worker processes through ``/proc``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


class Processes:
    """Whether dockkit worker processes still run (a zombie or a reused pid counts as gone)."""

    @staticmethod
    def alive(pid: int) -> bool:
        proc = Path(f"/proc/{pid}")
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X") and b"dockkit.worker" in cmdline

    def wait_gone(self, pids, timeout: float) -> list[int]:
        """Wait up to ``timeout`` seconds for every pid to go; returns those still alive."""
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for pid in pids if self.alive(pid)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    @staticmethod
    def worker_pids() -> set[int]:
        """Every running ``python -m dockkit.worker`` on this machine."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and Processes.alive(int(entry.name)):
                found.add(int(entry.name))
        return found


@pytest.fixture(scope="session")
def processes() -> Processes:
    return Processes()
