"""The examples, run as a user runs them: through the real CLI, on local workers.

Each runs with small sizes in a copy of ``examples/`` (they may write files there)
and is judged by what it prints and writes, checked against values computed here
independently, not by its exit status alone.
"""

from __future__ import annotations

import csv
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("examples")
    shutil.copytree(EXAMPLES, directory, dirs_exist_ok=True)
    return directory


def run_example(workdir: Path, script: str, *args: str, workers: int = 2,
                status: int = 0) -> subprocess.CompletedProcess:
    """``python -m dockkit -n WORKERS SCRIPT ARGS`` in ``workdir``; fails unless it exits ``status``."""
    result = subprocess.run([sys.executable, "-m", "dockkit", "-n", str(workers), script, *args],
                            cwd=workdir, capture_output=True, text=True, timeout=90,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == status, f"{result.stdout}\n--- stderr ---\n{result.stderr}"
    return result


def load(workdir: Path, script: str) -> dict:
    """The example's module-level names, to compute expected values here (its main part not run)."""
    return runpy.run_path(str(workdir / script), run_name="example_under_test")


def test_every_example_says_how_to_run_it_and_guards_its_root_part():
    for script in SCRIPTS:
        text = (EXAMPLES / script).read_text()
        assert text.startswith('"""'), script
        assert f"dockkit run examples/{script}" in text, script
        assert 'if __name__ == "__main__":' in text, script
    assert {"ga_onemax.py", "monte_carlo_pi.py", "numpy_blocks.py", "param_sweep.py", "recursive.py",
            "shared_constants.py", "shell_commands.py"} <= set(SCRIPTS)
    requirements = (EXAMPLES / "requirements.txt").read_text().split()
    assert {re.split(r"[<>=]", line)[0] for line in requirements} == {"deap", "numpy"}


def test_monte_carlo_pi_counts_exactly_what_its_seeds_give(workdir):
    out = run_example(workdir, "monte_carlo_pi.py", "--tasks", "12", "--points", "20000").stdout
    inside, total = map(int, re.search(r"inside: (\d+) of (\d+) points", out).groups())
    hits = load(workdir, "monte_carlo_pi.py")["hits"]
    assert total == 12 * 20000
    assert inside == sum(hits(seed, 20000) for seed in range(12))  # map and mapReduce agreed with it
    estimate = float(re.search(r"pi is about ([\d.]+)", out).group(1))
    assert estimate == pytest.approx(4 * inside / total, abs=1e-6)
    assert abs(estimate - math.pi) < 0.05


def test_ga_onemax_reaches_the_optimum(workdir):
    out = run_example(workdir, "ga_onemax.py", "--length", "40", "--population", "80",
                      "--generations", "40", "--seed", "3").stdout
    assert "best individual: 40 of 40 ones after 40 generations (seed 3)" in out, out
    firsts = [int(m) for m in re.findall(r"generation \d+: best (\d+)", out)]
    assert len(firsts) == 5 and firsts[0] < 40, out  # it evolved: generation 0 was not optimal


def test_ga_onemax_is_the_same_run_on_any_number_of_workers(workdir):
    small = ("--length", "30", "--population", "40", "--generations", "20", "--seed", "5")
    one, three = (run_example(workdir, "ga_onemax.py", *small, workers=n).stdout for n in (1, 3))
    assert one == three and one.count("generation ") == 3, one


def test_param_sweep_writes_one_csv_row_per_grid_point(workdir):
    (workdir / "results.csv").unlink(missing_ok=True)
    out = run_example(workdir, "param_sweep.py", "--steps", "3000").stdout
    module = load(workdir, "param_sweep.py")
    with open(workdir / "results.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    grid = [(lr, m) for lr in module["LEARNING_RATES"] for m in module["MOMENTA"]]
    assert [(float(r["learning_rate"]), float(r["momentum"])) for r in rows] == grid
    expected = module["descend"](*grid[7], 3000, 1e-6)  # one row, recomputed here
    assert float(rows[7]["loss"]) == pytest.approx(expected["loss"])
    assert rows[7]["converged_at"] == str(expected["converged_at"])
    converged = [r for r in rows if r["converged_at"].isdigit()]
    assert 0 < len(converged) < len(rows)
    assert f"wrote {len(rows)} rows to results.csv; {len(converged)} runs converged" in out, out
    best = min(rows, key=lambda r: float(r["loss"]))
    assert f"best: learning_rate={best['learning_rate']} momentum={best['momentum']}" in out, out


def test_shell_commands_collects_exit_codes_and_output(workdir):
    out = run_example(workdir, "shell_commands.py").stdout
    host = os.uname().nodename
    assert f"[exit 0] {host}: echo hello from $(hostname) -> hello from {host}" in out, out
    assert "sort | head -n 1 -> a\n" in out, out
    assert re.search(r"\[exit [1-9]\d*\] \S+: ls /no/such/path -> ls: ", out), out
    assert "[exit 3] " in out and "5 commands, 2 failed" in out, out


def test_shell_commands_reports_timeouts_and_fails_when_a_command_does(workdir):
    out = run_example(workdir, "shell_commands.py", "--timeout", "1", "--", "echo one",
                      "sleep 37.25; echo late", "echo oops >&2; exit 7", status=1).stdout
    lines = out.splitlines()
    assert lines[0].startswith("[exit 0] ") and lines[0].endswith("echo one -> one"), out
    assert lines[1].startswith("[timeout] ") and "killed after 1.0 s" in lines[1], out
    assert lines[2].startswith("[exit 7] ") and lines[2].endswith("-> oops"), out
    assert lines[3] == "3 commands, 2 failed", out
    assert not running_with_args(b"sleep\x0037.25\x00"), "the timed-out command's children live on"


def running_with_args(args: bytes) -> list[int]:
    """PIDs of the processes whose command line contains ``args`` (NUL-separated)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if args in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # it ended meanwhile
            pass
    return pids


def test_numpy_blocks_come_back_verified_with_a_rate(workdir):
    out = run_example(workdir, "numpy_blocks.py", "--blocks", "6", "--mb", "2").stdout
    assert "verified 6 blocks of 2.0 MB" in out, out
    moved, rate = re.search(r"moved (\d+) MB in [\d.]+ s: (\d+) MB/s", out).groups()
    assert int(moved) == 24 and int(rate) > 0, out


def test_recursive_quicksort_nests_tasks_on_a_single_worker(workdir):
    # One worker: every task that waits on its halves must let that worker run them.
    out = run_example(workdir, "recursive.py", "--size", "30000", "--cutoff", "1000", workers=1).stdout
    assert "equal to sorted(): True" in out, out
    tasks, depth = map(int, re.search(r"in (\d+) tasks, (\d+) levels deep", out).groups())
    assert tasks >= 31 and tasks % 2 == 1 and depth >= 5, out  # a binary tree of tasks


def test_shared_constants_counts_twin_primes_from_one_table(workdir):
    out = run_example(workdir, "shared_constants.py", "--limit", "1000000", "--tasks", "7").stdout
    assert "lookup table: 1.0 MB" in out, out
    assert "twin prime pairs below 1000000: 8169" in out, out  # the known count


def test_notebook_local_steps_run_as_written():
    text = (EXAMPLES / "notebook.md").read_text()
    section = text.split("## 1.")[1].split("## 2.")[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S)) + "\nex.shutdown()\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["332833500", str(2 ** 100)]
