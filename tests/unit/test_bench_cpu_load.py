"""The cluster section's busy machine: real CPU-bound processes while its block runs, none after."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.cluster import cpu_load


def spinners() -> dict[int, int]:
    """This process's children that spin, with the CPU ticks each has used."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and b"while True: pass" in command:
            found[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    return found


def test_the_load_spins_as_many_processes_as_asked_and_leaves_none_even_on_an_error():
    with pytest.raises(RuntimeError):
        with cpu_load(2):
            before = spinners()
            time.sleep(0.3)
            after = spinners()
            assert len(before) == 2
            assert all(after[pid] > ticks for pid, ticks in before.items())  # each one burns CPU
            raise RuntimeError("the measured run failed")
    assert spinners() == {}
    assert not any(Path(f"/proc/{pid}").exists() for pid in before)  # reaped, not left as zombies
