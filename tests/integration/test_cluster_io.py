"""A cluster run's files for real: outputs that come home, and `dockkit cp` both ways.

One 2-node cluster serves the module; each test works in a project directory of its
own, run through the CLI as a user runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

import dockkit
from dockkit.launch.warm import PS_ARGV, run_processes
from tests.integration.test_cluster import dockkit_cli
from tests.names import unique_name

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes don't have this module


@pytest.fixture(scope="module")
def state_env(tmp_path_factory, worker_image):
    return dict(os.environ, DOCKKIT_STATE_DIR=str(tmp_path_factory.mktemp("io-state")))


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("shared-data")
    (directory / "table.txt").write_text("\n".join(str(i * i) for i in range(100)))
    return directory


@pytest.fixture(scope="module")
def cluster(state_env, docker_client, shared_data):
    name = unique_name("io")
    result = dockkit_cli("up", "--nodes", "2", "--name", name, "--workers-per-node", "1",
                         "--volume", f"{shared_data}:/data:ro", env=state_env)
    assert result.returncode == 0, result.stderr
    saved = os.environ.get("DOCKKIT_STATE_DIR")
    os.environ["DOCKKIT_STATE_DIR"] = state_env["DOCKKIT_STATE_DIR"]  # for the SDK calls here
    try:
        yield dockkit.Cluster(name=name)
    finally:
        dockkit_cli("down", "--name", name, env=state_env)
        if saved is None:
            os.environ.pop("DOCKKIT_STATE_DIR", None)
        else:
            os.environ["DOCKKIT_STATE_DIR"] = saved


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("x\n1\n2\n")
    (tmp_path / "old.txt").write_text("the run deletes this on the head node\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    return tmp_path


def write_job(project: Path, body: str) -> None:
    (project / "job.py").write_text(textwrap.dedent(body))


def run(cluster, state_env, project, *args):
    return dockkit_cli("run", "--name", cluster.name, *args, "job.py", env=state_env, cwd=project,
                       cluster=cluster)


def test_outputs_come_home_and_deleted_files_are_only_reported(cluster, state_env, project):
    write_job(project, """
        import os, sys
        from dockkit import futures

        if __name__ == "__main__":
            squares = list(futures.map(lambda x: x * x, range(10)))
            os.makedirs("out", exist_ok=True)
            with open("out/results.csv", "w") as f:
                f.write(",".join(map(str, squares)))
            with open("data/in.csv", "a") as f:
                f.write("3\\n")
            with open("run.log", "w") as f:
                f.write("ignored by .gitignore")
            os.remove("old.txt")
            sys.exit(3)
    """)
    result = run(cluster, state_env, project)
    assert result.returncode == 3, result.stderr  # the script's status, fetch or not
    assert (project / "out" / "results.csv").read_text() == ",".join(str(x * x) for x in range(10))
    assert (project / "data" / "in.csv").read_text() == "x\n1\n2\n3\n"
    assert not (project / "run.log").exists()
    assert (project / "old.txt").exists()
    assert "dockkit: fetched 2 files (0.0 MB): data/in.csv, out/results.csv" in result.stderr
    assert "the run deleted 1 file(s) in node0, kept here: old.txt" in result.stderr
    assert not list(project.rglob(".*.csv.*")), "a temporary file was left behind"


def test_no_fetch_leaves_the_outputs_on_the_head(cluster, state_env, project):
    write_job(project, """
        if __name__ == "__main__":
            open("result.txt", "w").write("made on the head")
    """)
    result = run(cluster, state_env, project, "--no-fetch")
    assert result.returncode == 0, result.stderr
    assert not (project / "result.txt").exists() and "fetched" not in result.stderr
    copied = cluster.copy_from("node0", str(project / "result.txt"), project)
    assert copied == [project / "result.txt"]
    assert (project / "result.txt").read_text() == "made on the head"


def test_outputs_over_the_limit_are_refused_with_the_largest_named(cluster, state_env, project):
    write_job(project, """
        if __name__ == "__main__":
            open("big.bin", "wb").write(b"x" * 1_500_000)
            open("small.txt", "w").write("small")
    """)
    result = run(cluster, state_env, project, "--max-fetch", "1")
    assert result.returncode == 0, result.stderr
    assert not (project / "big.bin").exists() and not (project / "small.txt").exists()
    assert "1.5 MB is over the 1 MB limit (largest: big.bin (1.5 MB), small.txt (0.0 MB))" in result.stderr


def test_each_run_fetches_its_own_outputs_not_what_earlier_runs_left_on_the_head(cluster, state_env, project):
    # The head's copy outlives a run: what earlier runs left there as it is (not fetched,
    # over the limit, or deleted here since) must not come home with a later run's outputs.
    write_job(project, """
        import sys
        if __name__ == "__main__":
            name, size = sys.argv[1], int(sys.argv[2])
            open(name, "wb").write(b"x" * size)
    """)

    def run_writing(name, size, *options):
        result = dockkit_cli("run", "--name", cluster.name, *options, "job.py", name, str(size),
                             env=state_env, cwd=project, cluster=cluster)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stderr.splitlines()
                if line.startswith(("dockkit: fetched", "dockkit: not fetching"))]

    assert run_writing("kept-there.txt", 10, "--no-fetch") == []
    assert run_writing("big.bin", 1_500_000, "--max-fetch", "1")[0].startswith(
        "dockkit: not fetching the run's 1 new or changed files")
    assert run_writing("second.txt", 20) == ["dockkit: fetched 1 file (0.0 MB): second.txt"]
    (project / "second.txt").unlink()  # deleted here: the next run leaves it deleted
    assert run_writing("third.txt", 30) == ["dockkit: fetched 1 file (0.0 MB): third.txt"]
    assert not (project / "kept-there.txt").exists() and not (project / "big.bin").exists()
    assert not (project / "second.txt").exists()
    assert run_writing("second.txt", 21) == ["dockkit: fetched 1 file (0.0 MB): second.txt"]  # changed again
    assert (project / "second.txt").stat().st_size == 21


def test_cp_a_directory_to_a_node_and_back(cluster, state_env, tmp_path):
    source = tmp_path / "inputs"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    result = dockkit_cli("cp", "--name", cluster.name, str(source), "node1:/srv/data", env=state_env)
    assert result.returncode == 0, result.stderr
    listing = cluster.container("node1").exec_run(["find", "/srv/data", "-type", "f"]).output.decode()
    assert sorted(listing.split()) == ["/srv/data/a.txt", "/srv/data/sub/b.bin"]
    back = tmp_path / "back"
    back.mkdir()
    result = dockkit_cli("cp", "--name", cluster.name, "node1:/srv/data", str(back), env=state_env)
    assert result.returncode == 0, result.stderr
    assert (back / "data" / "a.txt").read_text() == "a"
    assert (back / "data" / "sub" / "b.bin").read_bytes() == (source / "sub" / "b.bin").read_bytes()
    assert [p.name for p in back.iterdir()] == ["data"], "a staging directory was left behind"


def test_cp_all_copies_to_every_node_and_gathers_per_node(cluster, state_env, tmp_path):
    (tmp_path / "seed.txt").write_text("42")
    result = dockkit_cli("cp", "--name", cluster.name, str(tmp_path / "seed.txt"), "all:/srv/seed.txt",
                         env=state_env)
    assert result.returncode == 0, result.stderr
    for node in ("node0", "node1"):
        cluster.container(node).exec_run(["sh", "-c", f"echo {node} >> /srv/seed.txt"])
    result = dockkit_cli("cp", "--name", cluster.name, "all:/srv/seed.txt", str(tmp_path / "gathered"),
                         env=state_env)
    assert result.returncode == 0, result.stderr
    for node in ("node0", "node1"):
        assert (tmp_path / "gathered" / node / "seed.txt").read_text() == f"42{node}\n"


@pytest.mark.parametrize("source, destination, message", [
    ("node9:/etc/hostname", ".", "no node 'node9' in cluster"),
    ("node0:/no/such/file", ".", "node0: /no/such/file: no such file or directory"),
    ("missing-here.txt", "node0:/tmp/x", "missing-here.txt: no such file or directory here"),
    ("node0:/etc", "a-file.txt", "cannot copy directory /etc onto"),
    ("all:/etc/hostname", "a-file.txt", "a-file.txt is a file; `all:` gathers"),
    ("a-dir", "node0:/etc/hostname", "cannot copy directory a-dir onto /etc/hostname, which is a file"),
    ("a-file.txt", "node0:/no/such/dir/x", "/no/such/dir: no such directory; make it first"),
    ("a-file.txt", "node0:/no-such-dir/", "/no-such-dir/: no such directory; make it first or drop"),
])
def test_cp_bad_input_is_one_line_and_copies_nothing(cluster, state_env, tmp_path, source, destination,
                                                     message):
    (tmp_path / "a-file.txt").write_text("keep me")
    (tmp_path / "a-dir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = dockkit_cli("cp", "--name", cluster.name, source, destination, env=state_env, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockkit: error: ") and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "a-file.txt").read_text() == "keep me"
    hostname = cluster.container("node0").exec_run(["cat", "/etc/hostname"])
    assert hostname.exit_code == 0 and hostname.output.strip()


def test_cp_all_checks_every_node_before_copying_anything(cluster, state_env, tmp_path):
    # node1 alone has the file to gather, and a file where node0 has none: `all:` either way
    # must refuse before the first node is copied, not half-way through.
    cluster.container("node1").exec_run(["sh", "-c", "echo one > /srv/only-here && echo f > /srv/clash"])
    result = dockkit_cli("cp", "--name", cluster.name, "all:/srv/only-here", str(tmp_path / "gathered"),
                         env=state_env)
    assert result.returncode == 1 and "/srv/only-here: no such file or directory" in result.stderr
    assert not (tmp_path / "gathered").exists()
    (tmp_path / "clash" / "sub").mkdir(parents=True)
    result = dockkit_cli("cp", "--name", cluster.name, str(tmp_path / "clash"), "all:/srv/clash", env=state_env)
    assert result.returncode == 1 and "onto /srv/clash, which is a file" in result.stderr, result.stderr
    assert cluster.container("node0").exec_run(["test", "-e", "/srv/clash"]).exit_code == 1


def test_a_volume_is_seen_by_every_node_and_never_copied(cluster, state_env, project, shared_data):
    write_job(project, """
        import socket
        from dockkit import futures

        def look_up(i):
            with open("/data/table.txt") as f:
                return socket.gethostname(), int(f.read().split()[i])

        def try_to_write(_):
            try:
                open("/data/new.txt", "w")
            except OSError as exc:
                return exc.errno
            return 0

        if __name__ == "__main__":
            found = list(futures.map(look_up, range(100)))
            print("values", [value for _, value in found] == [i * i for i in range(100)])
            print("hosts", sorted({host for host, _ in found}))
            print("write errors", sorted(set(futures.map(try_to_write, range(8)))))
    """)
    result = run(cluster, state_env, project)
    assert result.returncode == 0, result.stderr
    assert "values True" in result.stdout
    assert "hosts ['node0', 'node1']" in result.stdout
    assert "write errors [30]" in result.stdout  # EROFS: mounted read-only, as asked
    assert sorted(p.name for p in shared_data.iterdir()) == ["table.txt"]
    assert cluster.state().volumes == [f"{shared_data}:/data:ro"]


def test_a_root_killed_in_the_head_is_explained(cluster, state_env, project):
    write_job(project, """
        import os, signal
        if __name__ == "__main__":
            open("before.txt", "w").write("written before the kill")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = run(cluster, state_env, project)
    assert result.returncode == 137, result.stderr
    assert "dockkit: the run's root process in node0 was killed by SIGKILL (exit status 137) " \
           "(out of memory?)" in result.stderr
    assert (project / "before.txt").read_text() == "written before the kill"  # its outputs still come home


def _dockkit_processes(cluster) -> dict[str, list[str]]:
    """Every node's run processes (roots, agents, workers; not its warm agent server), as ``ps`` shows them."""
    return {node: run_processes(cluster.container(node).exec_run(list(PS_ARGV)).output.decode())
            for node in ("node0", "node1")}


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_the_run_ends_with_the_dockkit_run_that_started_it(cluster, state_env, project, how):
    write_job(project, """
        import time
        from dockkit import futures

        def slow(x):
            time.sleep(0.5)
            return x

        if __name__ == "__main__":
            print("started", flush=True)
            print(sum(futures.map(slow, range(1000))))
    """)
    process = subprocess.Popen([sys.executable, "-m", "dockkit.cli", "run", "--name", cluster.name, "job.py"],
                               cwd=project, env=state_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        assert process.stdout.readline() == b"started\n"
        time.sleep(1)  # tasks running on both nodes
        assert _dockkit_processes(cluster)["node1"], "no worker ever started on node1"
        process.send_signal(how)
        process.wait(timeout=60)
    finally:
        process.kill()
    deadline = time.monotonic() + 30
    while any(_dockkit_processes(cluster).values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _dockkit_processes(cluster) == {"node0": [], "node1": []}


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1_000_000))  # zero-filled: every page is touched


def test_a_task_past_the_memory_limit_fails_alone_and_says_out_of_memory(state_env, docker_client):
    from dockkit.errors import WorkerLostError

    with dockkit.Cluster(1, name=unique_name("oom"), memory="256m", workers_per_node=3,
                         log=lambda message: None) as small:
        with small.executor(workers=3, max_retries=3) as ex:
            ex.wait_for_workers()
            error = ex.submit(allocate, 1024).exception(timeout=120)
            assert isinstance(error, WorkerLostError), error
            assert "ran out of memory" in str(error) and "out-of-memory killer" in str(error)
            assert "it ran 1 time" not in str(error)  # given up on at once, not retried
            assert ex.submit(allocate, 10).result(timeout=60) == 10_000_000  # the pool goes on
            assert ex.stats()["workers"] == 2  # one worker lost, not one per retry


def test_dry_run_on_a_cluster_starts_nothing(cluster, state_env, project):
    write_job(project, """
        open("ran.txt", "w").write("the script ran")
    """)
    result = dockkit_cli("run", "--name", cluster.name, "--dry-run", "job.py", env=state_env, cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"hosts:    cluster {cluster.name!r} (2 node(s), up)"
    assert lines[2].startswith("root:     node0 (container ")
    assert lines[3:] == ["workers:  2 on 2 host(s)", "  node0  1", "  node1  1"]
    assert not (project / "ran.txt").exists() and "copied" not in result.stderr
