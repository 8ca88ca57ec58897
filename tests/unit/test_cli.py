"""``dockkit run`` and ``python -m dockkit`` on small scripts, as a user runs them.

Every test starts the real command in a subprocess, with its own state directory
(so a cluster that happens to be up is not used) and the script in ``tmp_path``.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKKIT = Path(sys.executable).with_name("dockkit")
FORMS = {"dockkit run": [str(DOCKKIT), "run"], "python -m dockkit": [sys.executable, "-m", "dockkit"]}


def environment(tmp_path: Path) -> dict:
    return {**os.environ, "DOCKKIT_STATE_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def dockkit(tmp_path: Path, *args, form="dockkit run", timeout=90) -> subprocess.CompletedProcess:
    return subprocess.run([*FORMS[form], *map(str, args)], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=sorted(FORMS))
def form(request):
    if request.param == "dockkit run":
        assert DOCKKIT.exists(), f"the dockkit command is not installed next to {sys.executable}"
    return request.param


# --- exit status ---------------------------------------------------------------------------------------
def test_success_exits_0(tmp_path, form):
    script = write(tmp_path, "ok.py", """
        from dockkit import futures

        def negate(x):
            return -x

        if __name__ == "__main__":
            print("sum", sum(futures.map(negate, range(10))))
    """)
    done = dockkit(tmp_path, "-n", 2, script, form=form)
    assert done.returncode == 0, done.stderr
    assert "sum -45" in done.stdout.splitlines()


def test_script_arguments_reach_the_script(tmp_path, form):
    script = write(tmp_path, "args.py", """
        import sys
        print("argv", sys.argv[1:])
    """)
    done = dockkit(tmp_path, "-n", 1, script, "one", "--two", "3", form=form)
    assert done.returncode == 0, done.stderr
    assert "argv ['one', '--two', '3']" in done.stdout


def test_sys_exit_status_is_the_exit_status(tmp_path, form):
    plain = write(tmp_path, "exit3.py", "import sys\nsys.exit(3)\n")
    assert dockkit(tmp_path, "-n", 1, plain, form=form).returncode == 3
    after_map = write(tmp_path, "exit4.py", """
        import sys
        from dockkit import futures

        if __name__ == "__main__":
            assert list(futures.map(abs, [-1, -2])) == [1, 2]
            sys.exit(4)
    """)
    done = dockkit(tmp_path, "-n", 2, after_map, form=form)
    assert done.returncode == 4, done.stderr


def test_uncaught_exception_exits_1_with_traceback(tmp_path, form):
    script = write(tmp_path, "raises.py", """
        def fail():
            raise RuntimeError("the script failed on purpose")

        fail()
    """)
    done = dockkit(tmp_path, "-n", 1, script, form=form)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: the script failed on purpose" in done.stderr
    assert "in fail" in done.stderr


def test_failing_map_exits_1_with_the_remote_traceback(tmp_path):
    script = write(tmp_path, "map_raises.py", """
        from dockkit import futures

        def check(x):
            if x == 3:
                raise ValueError(f"bad item {x}")
            return x

        if __name__ == "__main__":
            print(list(futures.map(check, range(10))))
    """)
    done = dockkit(tmp_path, "-n", 2, script)
    assert done.returncode == 1
    assert "ValueError: bad item 3" in done.stderr
    assert re.search(r"Traceback on worker w\d+ \(pid \d+\)", done.stderr), done.stderr
    # both parts read as Python prints them: the script's frames with their lines, not dockkit's
    assert done.stderr.count(f'File "{script}", line 6, in check\n    raise ValueError(f"bad item {{x}}")') == 1
    assert done.stderr.count(f'File "{script}", line 10, in <module>\n    print(list(futures.map(') == 1
    assert "dockkit" not in "".join(line for line in done.stderr.splitlines(keepends=True)
                                    if line.startswith("  File ")), done.stderr
    assert "<dynamic-code>" not in done.stderr


def test_missing_script_is_one_line_and_exit_1(tmp_path, form):
    done = dockkit(tmp_path, "-n", 1, "no_such_script.py", form=form)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dockkit: error:") and "no_such_script.py" in lines[0]
    assert "Traceback" not in done.stderr


# --- output and workers ----------------------------------------------------------------------------------
def test_worker_output_is_relayed_with_a_prefix(tmp_path):
    script = write(tmp_path, "prints.py", """
        import sys
        from dockkit import futures

        def shout(x):
            print(f"hello from task {x}")
            print(f"warning from task {x}", file=sys.stderr)
            return x

        if __name__ == "__main__":
            assert list(futures.map(shout, range(6))) == list(range(6))
            print("root done")
    """)
    done = dockkit(tmp_path, "-n", 2, script)
    assert done.returncode == 0, done.stderr
    out = [re.fullmatch(r"\[w[01]\] hello from task (\d)", line) for line in done.stdout.splitlines()]
    assert sorted(int(m.group(1)) for m in out if m) == list(range(6)), done.stdout
    err = [re.fullmatch(r"\[w[01]\] warning from task (\d)", line) for line in done.stderr.splitlines()]
    assert sorted(int(m.group(1)) for m in err if m) == list(range(6)), done.stderr
    assert "root done" in done.stdout.splitlines()


def test_n_workers_means_that_many_processes(tmp_path):
    script = write(tmp_path, "pids.py", """
        import os, time
        from dockkit import futures

        def pid(_):
            time.sleep(0.05)
            return os.getpid()

        if __name__ == "__main__":
            pids = set(futures.map(pid, range(200)))
            print("pids", len(pids), os.getpid() in pids)
    """)
    done = dockkit(tmp_path, "-n", 4, script)
    assert done.returncode == 0, done.stderr
    assert "pids 4 False" in done.stdout.splitlines(), done.stdout


def test_example_pids_on_16_workers(tmp_path):
    done = dockkit(tmp_path, REPO / "examples" / "pids.py", "-n", 16, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"1000 tasks in [\d.]+ s on 16 distinct pids", done.stderr), done.stderr


# --- the script on the workers --------------------------------------------------------------------------
def test_lambda_and_class_of_main_in_map(tmp_path, form):
    script = write(tmp_path, "main_defs.py", """
        from dockkit import futures

        class Vec:
            def __init__(self, x):
                self.x = x

            def __repr__(self):
                return f"Vec({self.x})"

        SCALE = 3

        if __name__ == "__main__":
            out = list(futures.map(lambda v: Vec(v.x * SCALE), [Vec(1), Vec(2)]))
            assert all(type(v) is Vec for v in out), [type(v) for v in out]
            print(out)
    """)
    done = dockkit(tmp_path, "-n", 2, script, form=form)
    assert done.returncode == 0, done.stderr
    assert "[Vec(3), Vec(6)]" in done.stdout.splitlines()


def test_script_is_imported_on_workers_under_a_non_main_name(tmp_path):
    # like DEAP's creator.create: the script's import registers a class in another module,
    # and tasks (and their results) rely on it existing on every worker
    write(tmp_path, "registry.py", """
        IMPORTED_AS = []

        def create(name):
            globals()[name] = type(name, (), {"__module__": __name__})
    """)
    script = write(tmp_path, "side_effect.py", """
        import registry
        from dockkit import futures

        registry.IMPORTED_AS.append(__name__)
        registry.create("Individual")

        def probe(_):
            return list(registry.IMPORTED_AS), registry.Individual()

        if __name__ == "__main__":
            print("the main part runs once", flush=True)
            results = list(futures.map(probe, range(6)))
            names = {tuple(imported) for imported, _ in results}
            assert len(names) == 1, names
            (imported,) = names
            assert len(imported) == 1 and imported[0] != "__main__", imported
            assert all(type(ind) is registry.Individual for _, ind in results)
            print("imported on workers as", imported[0])
    """)
    done = dockkit(tmp_path, "-n", 2, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("the main part runs once") == 1, done.stdout
    assert "imported on workers as" in done.stdout



UNGUARDED = {
    "map": "print(sum(futures.map(abs, range(-10, 0))))",
    "submit": "print(futures.submit(abs, -3).result())",
}


@pytest.mark.parametrize("top_level", sorted(UNGUARDED))
def test_tasks_at_a_scripts_top_level_fail_in_words_not_in_a_hang(tmp_path, form, top_level):
    # Workers import the script; without a main guard its top level would run on each
    # of them too, every worker waiting on the others for ever.
    script = write(tmp_path, "unguarded.py", "from dockkit import futures\n\n" + UNGUARDED[top_level] + "\n")
    done = dockkit(tmp_path, "-n", 2, script, form=form, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "UnguardedScriptError: unguarded.py starts dockkit tasks at its top level" in done.stderr
    assert 'under `if __name__ == "__main__":`' in done.stderr


def test_an_executor_at_a_scripts_top_level_runs_in_the_root_only(tmp_path):
    # The run's workers import the script too: none may start executors of its own.
    script = write(tmp_path, "own_executor.py", """
        import dockkit

        with dockkit.Executor(2) as ex:
            print("own executor's answer", ex.submit(abs, -3).result(), flush=True)
    """)
    done = dockkit(tmp_path, "-n", 2, script, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["own executor's answer 3"], done.stdout


# --- Ctrl-C ---------------------------------------------------------------------------------------------------
def test_ctrl_c_exits_130_and_stops_every_worker(tmp_path, processes):
    script = write(tmp_path, "long.py", """
        import time
        from dockkit import futures
        from dockkit.executor import default_executor

        def nap(x):
            time.sleep(120)
            return x

        if __name__ == "__main__":
            assert list(futures.map(abs, [-1, -2])) == [1, 2]
            print("pids", *default_executor().worker_pids, flush=True)
            list(futures.map(nap, range(4)))
    """)
    # a terminal's Ctrl-C signals the whole foreground process group: root and workers
    root = subprocess.Popen([*FORMS["dockkit run"], "-n", "2", str(script)], cwd=tmp_path,
                            env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = root.stdout.readline()
        assert line.startswith("pids "), (line, root.stderr.read() if root.poll() is not None else "")
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == 2 and all(processes.alive(pid) for pid in pids)
        os.killpg(root.pid, signal.SIGINT)
        assert root.wait(timeout=30) == 130
        assert "interrupted" in root.stderr.read()
        assert not processes.wait_gone(pids, 10)
    finally:
        if root.poll() is None:
            os.killpg(root.pid, signal.SIGKILL)
        root.wait()
        root.stdout.close()
        root.stderr.close()


def test_a_finished_run_leaves_no_worker(tmp_path, processes):
    script = write(tmp_path, "pids_out.py", """
        from dockkit import futures
        from dockkit.executor import default_executor

        if __name__ == "__main__":
            list(futures.map(abs, range(4)))
            print("pids", *default_executor().worker_pids)
    """)
    done = dockkit(tmp_path, "-n", 3, script)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("pids ")]
    pids = [int(p) for p in line.split()[1:]]
    assert len(pids) == 3
    assert not processes.wait_gone(pids, 10)


def test_distinct_worker_names_in_output(tmp_path):
    script = write(tmp_path, "names.py", """
        import time
        from dockkit import futures
        from dockkit.runtime.context import current

        def name(_):
            time.sleep(0.05)
            print("I am", current().worker)
            return current().worker

        if __name__ == "__main__":
            print(sorted(set(futures.map(name, range(40)))))
    """)
    done = dockkit(tmp_path, "-n", 2, script)
    assert done.returncode == 0, done.stderr
    assert "['w0', 'w1']" in done.stdout.splitlines()
    prefixes = collections.Counter(re.findall(r"^\[(w\d)\] I am (w\d)$", done.stdout, re.M))
    assert prefixes and all(prefix == name for prefix, name in prefixes), prefixes


# --- what a run shows: the logger, the progress bar ---------------------------------------------------
def test_logger_records_name_host_and_worker(tmp_path):
    script = write(tmp_path, "logs.py", """
        import dockkit
        from dockkit import futures

        def chat(x):
            dockkit.logger.info("hello from task %d", x)
            return x

        if __name__ == "__main__":
            dockkit.logger.info("hello from the root")
            assert list(futures.map(chat, range(4))) == [0, 1, 2, 3]
    """)
    done = dockkit(tmp_path, "-n", 2, script)
    assert done.returncode == 0, done.stderr
    host = os.uname().nodename
    assert re.search(rf"INFO +{re.escape(host)}/root hello from the root", done.stderr), done.stderr
    from_tasks = re.findall(rf"^\[(w\d)\] .*INFO +{re.escape(host)}/(w\d) hello from task \d",
                            done.stderr, re.M)
    assert len(from_tasks) == 4 and all(prefix == worker for prefix, worker in from_tasks), done.stderr


PROGRESS_SCRIPT = """
    import time
    from dockkit import futures

    def nap(x):
        time.sleep(0.01)
        return x

    if __name__ == "__main__":
        assert list(futures.map(nap, range(300))) == list(range(300))
        print("done")
"""


def test_progress_bar_on_a_terminal_only(tmp_path):
    import pty

    script = write(tmp_path, "bar.py", PROGRESS_SCRIPT)
    primary, secondary = pty.openpty()
    root = subprocess.Popen([*FORMS["dockkit run"], "-n", "2", "--progress", str(script)],
                            cwd=tmp_path, env={**environment(tmp_path), "COLUMNS": "100"},
                            stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    screen = b""
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end closed: the run is over
                break
            if not chunk:
                break
            screen += chunk
        assert root.wait(timeout=90) == 0
        assert root.stdout.read().strip().endswith("done")
    finally:
        os.close(primary)
        if root.poll() is None:
            root.kill()
        root.stdout.close()
    counts = [int(n) for n in re.findall(rb"(\d+)/300", screen)]
    assert counts and max(counts) <= 300 and len(set(counts)) >= 2, screen[-2000:]
    # not on a terminal: no bar, the output stays clean
    piped = dockkit(tmp_path, "-n", 2, "--progress", script)
    assert piped.returncode == 0 and "/300" not in piped.stderr, piped.stderr


def test_run_local_with_no_cluster_up_adds_no_note(tmp_path):
    write(tmp_path, "job.py", """
        from dockkit import futures
        if __name__ == "__main__":
            print(sum(futures.map(abs, [-1, -2, -3])))
    """)
    result = dockkit(tmp_path, "--local", "job.py", "-n", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "6"
    assert "cluster" not in result.stderr, result.stderr  # the user asked for local workers
    result = dockkit(tmp_path, "job.py", "-n", "2")
    assert "dockkit: no cluster 'dockkit' is up; running on local workers" in result.stderr


def test_a_scripts_own_debug_flag_is_not_dockkits(tmp_path):
    result = dockkit(tmp_path, "missing.py", "--", "--debug")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "dockkit: error: script not found: 'missing.py' (run it from the directory that holds it, "
        "or give its path)"]


@pytest.mark.parametrize("command", [["status"], ["logs"], ["exec", "node1", "true"], ["ssh", "node1"],
                                     ["cp", "node1:/x", "."]])
def test_debug_before_any_command_shows_the_traceback(tmp_path, command):
    plain = subprocess.run([str(DOCKKIT), *command, "--name", "none-here"], cwd=tmp_path,
                           env=environment(tmp_path), capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    debug = subprocess.run([str(DOCKKIT), "--debug", *command, "--name", "none-here"], cwd=tmp_path,
                           env=environment(tmp_path), capture_output=True, text=True, timeout=60)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("dockkit.errors.ClusterError: no cluster named")


@pytest.mark.parametrize("args, message", [
    (["--nodes", "10000"], "10000 is not in the range 1<=x<=256"),
    (["--nodes", "0"], "0 is not in the range 1<=x<=256"),
    (["--cpus", "0"], "0.0 is not in the range x>0"),
])
def test_up_refuses_impossible_sizes_before_touching_docker(tmp_path, args, message):
    result = subprocess.run([str(DOCKKIT), "up", *args], cwd=tmp_path, env=environment(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("options, message", [
    ({"nodes": 257}, "a cluster has 1 to 256 nodes"),
    ({"nodes": 2, "cpus": 0}, "cpus must be more than 0"),
])
def test_the_sdk_refuses_impossible_sizes(options, message):
    from dockkit.cluster.cluster import Cluster
    from dockkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Cluster(**options)


@pytest.mark.parametrize("args, message", [
    (["--hostfile", "hosts.txt"], "dockkit: error: hosts.txt:2: worker count 'abc' must be a whole number"),
    (["--hosts", "a:0"], "dockkit: error: worker count 0 for host 'a' must be at least 1"),
])
def test_bad_hosts_fail_in_one_line_before_the_script_runs(tmp_path, form, args, message):
    (tmp_path / "hosts.txt").write_text("# two hosts\nnode1 abc\n")
    write(tmp_path, "job.py", """
        open("ran.txt", "w").write("the script's own work")
    """)
    result = dockkit(tmp_path, *args, "job.py", form=form)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert not (tmp_path / "ran.txt").exists()
