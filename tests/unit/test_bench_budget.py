"""W1 at a large size: a map past its time budget is given up, and the table says so
(speed is never asserted). A stand-in system's map outlasts the budget, as a slow peer's does.
"""

import math
import threading
import time

import pytest

from benchmarks import measure, report
from benchmarks.systems import System
from benchmarks.workloads import Case


class Squares(System):
    """Squares in this process; ``map`` blocks until ``release`` is set, like a peer
    still submitting a large map."""

    def __init__(self, release: threading.Event | None = None) -> None:
        super().__init__()
        self.release = release

    def start(self, workers: int) -> None:
        self.workers = workers

    def map(self, fn, items):
        items = list(items)
        if self.release is not None and len(items) > 2 * self.workers:  # not the warm-up
            assert self.release.wait(10), "give_up was never called"
        return iter([fn(x) for x in items])


def test_a_w1_map_past_its_budget_is_given_up_with_the_rate_it_stayed_under():
    case = Case("W1-1M", "W1", "tiny tasks, large", 2, 1000, 30.0, budget=0.2)
    given, release = [], threading.Event()

    def give_up(metrics):
        given.append(metrics)
        release.set()

    measure.tiny(Squares(release), case, give_up)
    [metrics] = given
    assert metrics["too_slow"] is True and metrics["seconds"] >= case.budget
    assert math.isclose(metrics["tasks_per_s_below"], case.size / metrics["seconds"])
    assert "tasks_per_s" not in metrics  # no rate is claimed for a map that never returned


def test_a_w1_map_within_its_budget_reports_its_rate_and_no_give_up():
    case = Case("W1-1M", "W1", "tiny tasks, large", 2, 1000, 30.0, budget=5.0)
    given = []
    figures = measure.tiny(Squares(), case, given.append)
    assert given == [] and math.isclose(figures["tasks_per_s"], case.size / figures["seconds"])


def _one_row_data(cell: dict) -> dict:
    case = {"id": "W1-1M", "workload": "W1", "title": "tiny tasks, large", "workers": 2,
            "size": 1_000_000, "timeout": 120.0, "budget": 60.0, "repeat": True}
    return {"systems": {"dask": {"label": "Dask", "available": True, "version": "1"}},
            "cases": [case], "results": {"W1-1M": {"dask": cell}}, "targets": []}


def test_the_table_shows_a_given_up_w1_map_as_too_slow_with_a_bound_and_a_note():
    metrics = {"seconds": 60.2, "tasks_per_s_below": 1_000_000 / 60.2, "too_slow": True}
    cell = {"status": "too_slow", "reason": None, "runs": [metrics], "median": metrics}
    _, body, notes = report.table_data(_one_row_data(cell))
    assert body[1] == ["W1 tiny · 1,000,000 tasks · tasks/s", "< 17k too slow [1]", "", ""]
    assert notes == ["Dask W1-1M: too slow, stopped past the 60 s budget: its map of 1,000,000 "
                     "tasks had not returned after 60 s"]


class Failing(Squares):
    def map(self, fn, items):
        items = list(items)
        if len(items) > 2 * self.workers:
            raise RuntimeError("boom")
        return super().map(fn, items)


def test_a_w1_map_that_fails_within_its_budget_is_never_reported_too_slow():
    case = Case("W1-1M", "W1", "tiny tasks, large", 2, 1000, 30.0, budget=0.1)
    given = []
    with pytest.raises(RuntimeError, match="boom"):
        measure.tiny(Failing(), case, given.append)
    time.sleep(0.3)
    assert given == []
