"""A launcher of one's own, passed as ``Executor(launcher=...)``: the executor drives it
through the interface of :mod:`dockkit.launch.base` alone. This one wraps the local
launcher, so its workers are real processes on this machine."""

from __future__ import annotations

import os

import dockkit
from dockkit.launch.base import Launcher
from dockkit.launch.local import LocalLauncher


def pid(_):
    return os.getpid()


class RecordingLauncher(Launcher):
    """Local workers behind the bare interface; records what the executor asks of it."""

    wait_at_start = False

    def __init__(self, workers: int):
        self._local = LocalLauncher(workers)
        self.bind_address = self._local.bind_address
        self.total_workers = self._local.total_workers
        self.calls: list[str] = []

    def prepare(self) -> None:
        self.calls.append("prepare")
        self._local.prepare()

    def start(self, broker, config) -> None:
        self.calls.append("start")
        self._local.start(broker, config)

    def stop(self) -> None:
        self.calls.append("stop")
        self._local.stop()


class RecordingLauncherWithPids(RecordingLauncher):
    @property
    def pids(self) -> list[int]:
        return self._local.pids


def test_an_executor_runs_on_a_launcher_of_ones_own_and_stops_it(processes):
    launcher = RecordingLauncherWithPids(2)
    with dockkit.Executor(launcher=launcher) as executor:
        assert executor.workers == 2
        workers = executor.worker_pids
        assert sorted(workers) == sorted(launcher._local.pids) and len(set(workers)) == 2
        assert all(processes.alive(p) for p in workers)
        assert set(executor.map(pid, range(200))) <= set(workers)
        assert launcher.calls == ["prepare", "start"]
    assert launcher.calls[:3] == ["prepare", "start", "stop"]
    assert not processes.wait_gone(workers, 10)


def test_a_launcher_that_does_not_say_its_pids_gets_the_interfaces_default(processes):
    launcher = RecordingLauncher(1)
    with dockkit.Executor(launcher=launcher) as executor:
        assert executor.worker_pids == []  # as for workers on other hosts
        assert executor.submit(pid, 0).result(timeout=60) in launcher._local.pids
        workers = launcher._local.pids
    assert not processes.wait_gone(workers, 10)
