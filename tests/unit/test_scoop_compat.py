"""SCOOP programs on dockkit: written against SCOOP's documented API, run as users run them.

Each program below uses only what SCOOP documents (``futures``, ``shared`` and the
module attributes), with ``scoop`` swapped for ``dockkit`` in its imports, and runs
through ``python -m dockkit`` as it would through ``python -m scoop``. The tests
check what each prints, not only its exit status.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dockkit
from dockkit.runtime.context import debug_requested

SCOOP_ATTRIBUTES = ["SIZE", "IS_RUNNING", "IS_ORIGIN", "worker", "DEBUG"]


def run_program(tmp_path: Path, source: str, *, workers: int = 3, status: int = 0,
                name: str = "program.py", options=(), env=None) -> subprocess.CompletedProcess:
    """Run ``source`` with ``python -m dockkit [options] -n workers``; ``env`` adds variables."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    result = subprocess.run([sys.executable, "-m", "dockkit", *options, "-n", str(workers), name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
    assert result.returncode == status, f"{result.stdout}\n--- stderr ---\n{result.stderr}"
    return result


def printed(result) -> dict[str, str]:
    """The ``key=value`` lines a program printed."""
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_module_attributes_in_the_root_and_in_tasks(tmp_path):
    result = run_program(tmp_path, """
        import dockkit as scoop
        from dockkit import futures

        def where(_):
            return (scoop.IS_ORIGIN, scoop.IS_RUNNING, scoop.SIZE, scoop.worker)

        if __name__ == "__main__":
            print(f"root={scoop.IS_ORIGIN},{scoop.IS_RUNNING},{scoop.SIZE},{scoop.worker},{scoop.DEBUG}")
            seen = list(futures.map(where, range(30)))
            print(f"tasks={sorted(set(s[:3] for s in seen))}")
            print(f"workers={sorted(set(s[3] for s in seen))}")
    """)
    out = printed(result)
    assert out["root"] == "True,True,3,root,False"
    assert out["tasks"] == "[(False, True, 3)]"
    workers = eval(out["workers"])  # noqa: S307 - a list of names this test's program printed
    assert workers and set(workers) <= {"w0", "w1", "w2"}


def test_wait_with_scoops_default_timeout_blocks_in_the_root_and_in_tasks(tmp_path):
    result = run_program(tmp_path, """
        import time
        from dockkit import futures

        def slow(x):
            time.sleep(0.3)
            return x * 2

        def waits_inside(n):
            fs = [futures.submit(slow, i) for i in range(n)]
            done, not_done = futures.wait(fs, timeout=-1)
            return len(done), len(not_done), sorted(f.result() for f in done)

        if __name__ == "__main__":
            fs = [futures.submit(slow, i) for i in range(4)]
            done, not_done = futures.wait(fs, -1)
            print(f"root={len(done)},{len(not_done)}")
            print(f"results={sorted(f.result() for f in done)}")
            print(f"inside={futures.submit(waits_inside, 3).result()}")
            print(f"completed={sorted(f.result() for f in futures.as_completed(fs, timeout=-1))}")
    """)
    assert printed(result) == {"root": "4,0", "results": "[0, 2, 4, 6]", "inside": "(3, 0, [0, 2, 4])",
                               "completed": "[0, 2, 4, 6]"}


def test_unknown_map_options_are_ignored_with_one_warning_naming_them(tmp_path):
    result = run_program(tmp_path, """
        import operator
        from dockkit import futures

        def double(x, **kwargs):
            assert not kwargs, kwargs  # never passed to the function
            return 2 * x

        def nested(n):  # on every worker: none of them warns again
            return sum(futures.map(double, range(n), parallelLevel=2))

        if __name__ == "__main__":
            print(f"map={list(futures.map(double, range(5), parallelLevel=2))}")
            print(f"again={list(futures.map(double, range(3), parallelLevel=2))}")
            print(f"unordered={sorted(futures.map_as_completed(double, range(3), parallelLevel=3))}")
            print(f"nested={list(futures.map(nested, range(12)))}")
            print(f"reduce={futures.mapReduce(double, operator.add, range(3), purgeFrequency=5)}")
    """)
    assert printed(result) == {"map": "[0, 2, 4, 6, 8]", "again": "[0, 2, 4]", "unordered": "[0, 2, 4]",
                               "nested": str([n * (n - 1) for n in range(12)]), "reduce": "6"}
    warnings = [line for line in result.stderr.splitlines() if "ignores" in line]
    assert warnings == [  # each at the program's own line, naming the function called
        f"{tmp_path / 'program.py'}:13: UserWarning: dockkit ignores these futures.map options: parallelLevel",
        f"{tmp_path / 'program.py'}:17: UserWarning: dockkit ignores these futures.mapReduce options: "
        "purgeFrequency"], result.stderr


def test_constants_set_in_a_task_reach_the_root_and_redefining_is_a_type_error(tmp_path):
    result = run_program(tmp_path, """
        from dockkit import futures, shared

        def set_table(n):
            shared.setConst(table=list(range(n)))
            return "set"

        def look_up(i):
            return shared.getConst("table", timeout=5)[i]

        if __name__ == "__main__":
            print(f"task={futures.submit(set_table, 10).result()}")
            print(f"root={shared.getConst('table')}")
            print(f"workers={list(futures.map(look_up, range(10)))}")
            try:
                shared.setConst(table=[])
            except TypeError as exc:  # what SCOOP raises
                print(f"redefined={type(exc).__name__}")
    """)
    out = printed(result)
    assert out["task"] == "set"
    assert out["root"] == str(list(range(10)))
    assert out["workers"] == str(list(range(10)))
    assert out["redefined"] == "ConstantRedefinedError"


def test_a_scoop_style_program_with_map_reduce_callbacks_and_closures(tmp_path):
    result = run_program(tmp_path, """
        import operator
        from dockkit import futures

        def square(x):
            return x * x

        if __name__ == "__main__":
            print(f"reduce={futures.mapReduce(square, operator.add, range(100))}")
            print(f"scan={futures.mapScan(square, operator.add, range(5))}")
            offset = 10
            print(f"closure={list(futures.map(lambda x: x + offset, range(3)))}")
            called = []
            future = futures.submit(square, 7)
            future.add_done_callback(lambda f: called.append(f.result()))
            future.result()
            futures.wait([future])
            print(f"callback={called}")
    """)
    out = printed(result)
    assert out["reduce"] == str(sum(x * x for x in range(100)))
    assert out["scan"] == "[0, 1, 5, 14, 30]"
    assert out["closure"] == "[10, 11, 12]"
    assert out["callback"] == "[49]"


@pytest.mark.parametrize("source, last_line, script_lines", [
    ("def f():\n    raise ValueError('boom')\nf()\n", "ValueError: boom", ["line 3, in <module>", "line 2, in f"]),
    ("x = (\n", "SyntaxError: '(' was never closed", ["line 1"]),
    ("import no_such_module_anywhere\n", "ModuleNotFoundError: No module named 'no_such_module_anywhere'",
     ["line 1, in <module>"]),
])
def test_a_failing_script_reads_as_under_plain_python(tmp_path, source, last_line, script_lines):
    result = run_program(tmp_path, source, status=1, name="broken.py")
    plain = subprocess.run([sys.executable, "broken.py"], cwd=tmp_path, capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == last_line
    assert result.stderr == plain.stderr  # frame for frame, as Python prints it
    for where in script_lines:
        assert f'broken.py", {where}' in result.stderr
    assert "runner.py" not in result.stderr and "runpy" not in result.stderr
    assert "[w" not in result.stderr  # the workers, failing the same import, add nothing


def test_a_script_that_imports_only_in_the_root_fails_its_tasks_with_the_reason(tmp_path):
    result = run_program(tmp_path, """
        from dockkit import futures

        if __name__ != "__main__":
            raise ImportError("this module is only for the root")

        try:
            list(futures.map(abs, [-1, -2]))
        except Exception as exc:
            print(f"error={type(exc).__name__}: {exc}")
    """)
    error = printed(result)["error"]
    assert error.startswith("RemoteError: worker w")
    assert "could not import program.py: ImportError: this module is only for the root" in error


def test_shutdown_waits_for_submitted_tasks_and_the_next_call_starts_new_workers(tmp_path):
    result = run_program(tmp_path, """
        import os, time
        import dockkit as scoop
        from dockkit import futures

        def slow_pid(_):
            time.sleep(0.5)
            return os.getpid()

        if __name__ == "__main__":
            before = set(futures.map(slow_pid, range(6)))
            pending = futures.submit(slow_pid, 0)
            futures.shutdown()  # wait=True, SCOOP's default: the submitted task ends first
            print(f"pending={pending.done()},{pending.exception() is None}")
            old = before | {pending.result()}
            after = set(futures.map(slow_pid, range(6)))
            print(f"workers={bool(after)},{bool(old & after)},{scoop.SIZE}")  # new ones, as many
    """)
    assert printed(result) == {"pending": "True,True", "workers": "True,False,3"}


def test_wait_first_exception_returns_at_the_first_failure_in_the_root_and_in_tasks(tmp_path):
    result = run_program(tmp_path, """
        import time
        from dockkit import futures

        def fails(x):
            time.sleep(0.2)
            raise ValueError(f"bad {x}")

        def slow(x):
            time.sleep(3)
            return x

        def waits_inside(_):  # a waiting worker may run slow() itself meanwhile: done may hold both
            failing = futures.submit(fails, 2)
            done, _ = futures.wait([futures.submit(slow, 1), failing], return_when=futures.FIRST_EXCEPTION)
            return failing in done, repr(failing.exception())

        if __name__ == "__main__":
            fs = [futures.submit(slow, 1), futures.submit(fails, 1), futures.submit(slow, 2)]
            done, not_done = futures.wait(fs, timeout=-1, return_when=futures.FIRST_EXCEPTION)
            print(f"root={len(done)},{len(not_done)},{[repr(f.exception()) for f in done]}")
            print(f"inside={futures.submit(waits_inside, 0).result()}")
            done, not_done = futures.wait([futures.submit(abs, -1)], return_when=futures.FIRST_EXCEPTION)
            print(f"none_failed={len(done)},{len(not_done)}")  # no failure: it waits for them all
    """)
    assert printed(result) == {"root": "1,2,[\"ValueError('bad 1')\"]",
                               "inside": "(True, \"ValueError('bad 2')\")", "none_failed": "1,0"}


def test_the_logger_names_host_and_worker_in_the_root_and_in_tasks(tmp_path):
    result = run_program(tmp_path, """
        import dockkit as scoop
        from dockkit import futures

        def task(i):
            scoop.logger.warning("from task %d", i)
            return i

        if __name__ == "__main__":
            scoop.logger.info("from the root")
            print(f"tasks={list(futures.map(task, range(6)))}")
    """)
    assert printed(result) == {"tasks": "[0, 1, 2, 3, 4, 5]"}
    host = re.escape(socket.gethostname())
    assert re.search(rf"^\[[^]]+\] INFO +{host}/root from the root$", result.stderr, re.M), result.stderr
    for i in range(6):  # each line from a worker: prefixed with its name, and naming it
        assert re.search(rf"^\[(w[0-2])\] \[[^]]+\] WARNING +{host}/\1 from task {i}$", result.stderr,
                         re.M), result.stderr


DEBUG_PROGRAM = """
    import dockkit as scoop
    from dockkit import futures

    def debug(_):
        return scoop.DEBUG

    if __name__ == "__main__":
        print(f"root={scoop.DEBUG}")
        print(f"tasks={sorted(set(futures.map(debug, range(12))))}")
"""


@pytest.mark.parametrize("options, env, on", [
    (["--debug"], {}, True),
    ([], {"DOCKKIT_DEBUG": "1"}, True),
    ([], {"DOCKKIT_DEBUG": "0"}, False),
    ([], {"DOCKKIT_DEBUG": "False"}, False),
], ids=["--debug", "DOCKKIT_DEBUG=1", "DOCKKIT_DEBUG=0", "DOCKKIT_DEBUG=False"])
def test_debug_in_the_root_and_in_tasks(tmp_path, options, env, on):
    result = run_program(tmp_path, DEBUG_PROGRAM, options=options,
                         env=dict({"DOCKKIT_DEBUG": ""}, **env))
    assert printed(result) == {"root": str(on), "tasks": f"[{on}]"}


@pytest.mark.parametrize("value, on", [
    ("1", True), ("yes", True), ("true", True), ("on", True),
    ("", False), ("0", False), ("false", False), ("FALSE", False), ("no", False), ("No", False),
    (" 0 ", False), ("off", False),
])
def test_dockkit_debug_values(monkeypatch, value, on):
    monkeypatch.setenv("DOCKKIT_DEBUG", value)
    assert debug_requested() is on


def test_debug_is_off_without_dockkit_debug(monkeypatch):
    monkeypatch.delenv("DOCKKIT_DEBUG", raising=False)
    assert debug_requested() is False


def test_scoops_module_attributes_are_listed():
    assert set(SCOOP_ATTRIBUTES) <= set(dir(dockkit))
    assert set(SCOOP_ATTRIBUTES) <= set(dockkit.__all__)
    assert {"Executor", "futures", "shared", "logger", "__version__"} <= set(dir(dockkit))


def test_star_import_binds_the_module_attributes_in_the_root_and_in_tasks(tmp_path):
    result = run_program(tmp_path, """
        from dockkit import *

        def where(_):
            import dockkit
            return dockkit.IS_ORIGIN, dockkit.SIZE, dockkit.worker

        if __name__ == "__main__":
            print(f"root={IS_ORIGIN},{IS_RUNNING},{SIZE},{worker},{DEBUG}")
            print(f"tasks={sorted(set(futures.map(where, range(12))))[0][:2]}")
            print(f"names={sorted(n for n in dir() if n in ('Executor', 'futures', 'shared', 'logger'))}")
    """, env={"DOCKKIT_DEBUG": ""})
    assert printed(result) == {"root": "True,True,3,root,False", "tasks": "(False, 3)",
                               "names": "['Executor', 'futures', 'logger', 'shared']"}
