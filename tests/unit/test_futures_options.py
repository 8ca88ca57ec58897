"""SCOOP-only keywords (``parallelLevel=2``) of the ``futures`` functions: ignored with one warning.

The warning names the function called and points at the caller's line, whichever
entry point took the keyword; inside tasks nothing warns (see test_scoop_compat for
a whole run through ``python -m dockkit``).
"""

from __future__ import annotations

import operator
import warnings

import pytest

from dockkit import futures

CALLS = {  # each entry point, called with a keyword SCOOP has and dockkit ignores
    "map": lambda: list(futures.map(abs, [-1, -2], parallelLevel=2)),
    "map_as_completed": lambda: sorted(futures.map_as_completed(abs, [-1, -2], parallelLevel=2)),
    "mapReduce": lambda: futures.mapReduce(abs, operator.add, [-1, -2], parallelLevel=2),
    "mapScan": lambda: futures.mapScan(abs, operator.add, [-1, -2], parallelLevel=2),
}
RESULTS = {"map": [1, 2], "map_as_completed": [1, 2], "mapReduce": 3, "mapScan": [1, 3]}


@pytest.fixture(autouse=True)
def nothing_warned_yet(monkeypatch):
    """Each test starts as a fresh process does: no keyword warned about."""
    monkeypatch.setattr(futures, "_warned_options", set())


def _ignore_warnings(record) -> list[warnings.WarningMessage]:
    return [w for w in record if "dockkit ignores" in str(w.message)]


@pytest.mark.parametrize("function", list(CALLS))
def test_the_warning_names_the_function_and_points_at_the_callers_line(function):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert CALLS[function]() == RESULTS[function]  # the keyword never reaches the function
    [warning] = _ignore_warnings(record)
    assert str(warning.message) == f"dockkit ignores these futures.{function} options: parallelLevel"
    assert (warning.filename, warning.lineno) == (__file__, CALLS[function].__code__.co_firstlineno)


def test_each_keyword_is_warned_about_once_whichever_function_took_it():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for function in CALLS:
            CALLS[function]()
        futures.mapScan(abs, operator.add, [1], parallelLevel=3, purgeFrequency=10)
    assert [str(w.message) for w in _ignore_warnings(record)] == [
        "dockkit ignores these futures.map options: parallelLevel",
        "dockkit ignores these futures.mapScan options: purgeFrequency"]


def nested_map_with_scoop_keywords(n):
    return sum(futures.map(abs, range(-n, 0), parallelLevel=2))


def test_a_nested_call_in_a_task_does_not_warn_on_the_worker():
    # the root's own call warns once; the tasks' nested calls (a worker each) say nothing
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        nested = list(futures.map(nested_map_with_scoop_keywords, range(8), parallelLevel=2))
    assert nested == [n * (n + 1) // 2 for n in range(8)]
    assert len(_ignore_warnings(record)) == 1
    warned_in_tasks = futures.submit(_warnings_of, nested_map_with_scoop_keywords, 3).result(timeout=60)
    assert warned_in_tasks == (6, [])


def _warnings_of(function, *args):
    """Run ``function`` in a task; return its result and the warnings it raised there. The
    worker may have been forked from a root that warned already: it starts afresh here."""
    futures._warned_options.clear()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = function(*args)
    return result, [str(w.message) for w in record]
