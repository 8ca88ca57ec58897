"""Warm starts on real processes and a real unix socket: the server forks the agent (or the
root) a client asks for, on the client's own stdin, stdout, stderr and directory; the client
relays its exit status and its stop; a client killed outright takes its agent along; a
forked root ends as a Python does; and with no server the client becomes the agent itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockkit.launch.warm import (AGENT_MODULE, AGENT_NAME, PS_ARGV, ROOT_MODULE, ROOT_NAME, SERVER_NAME, client_args,
                                 run_processes)
from dockkit.runtime.protocol import AgentConfig, WorkerConfig


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def agent_config(files: int = 0) -> bytes:
    """An agent's configuration for a broker that is not there: it starts its worker and
    waits, until its stdin ends or it is stopped."""
    worker = WorkerConfig(address=f"tcp://127.0.0.1:{_free_port()}", secret="s", workers=1,
                          heartbeat_timeout=60.0)
    return AgentConfig(worker, identity="run/0/agent", workers=[("h:w0", "run/0/w0")], files=files).to_json()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "warm" / "agents.sock"
    process = subprocess.Popen([sys.executable, "-m", "dockkit.launch.warm", str(path)],
                               stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the server never made its socket"
        time.sleep(0.02)
    yield process, path
    process.kill()
    process.wait()


def start_client(path, tmp_path, env=None, module=AGENT_MODULE, args=()) -> subprocess.Popen:
    workdir = tmp_path / "workdir"
    workdir.mkdir(exist_ok=True)
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("PYTHON") or name == "PYTHONUNBUFFERED"}
    return subprocess.Popen([sys.executable, *client_args(module, args, path=str(path))], cwd=workdir,
                            env={**environment, **(env or {})},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def forked_agent(server_pid: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agents = [pid for pid in children_of(server_pid) if comm(pid) == AGENT_NAME]
        if agents:
            return agents[0]
        time.sleep(0.02)
    raise AssertionError("the server forked no agent")


def running_agent(server_pid: int, path, tmp_path) -> tuple[subprocess.Popen, int, list[int]]:
    """A client, the agent the server forked for it, and the agent's workers, once they started."""
    client = start_client(path, tmp_path)
    client.stdin.write(agent_config())
    client.stdin.flush()
    agent = forked_agent(server_pid)
    deadline = time.monotonic() + 30
    while not children_of(agent) and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = children_of(agent)
    assert workers, "the agent started no worker"
    return client, agent, workers


def test_the_server_forks_the_agent_in_the_clients_place_and_relays_its_end(server, tmp_path, processes):
    process, path = server
    assert comm(process.pid) == SERVER_NAME
    client, agent, workers = running_agent(process.pid, path, tmp_path)
    assert os.readlink(f"/proc/{agent}/cwd") == str(tmp_path / "workdir")
    assert os.getpgid(agent) == agent  # a group of its own, which its workers join
    client.stdin.close()  # the SSH session ends: the agent stops, and the client with its status
    assert client.wait(timeout=30) == 0, client.stderr.read().decode()
    assert processes.wait_gone([agent, *workers], timeout=10) == []


def test_a_runs_processes_are_told_from_the_warm_server_in_a_listing(server, tmp_path, processes):
    process, path = server
    client, agent, workers = running_agent(process.pid, path, tmp_path)
    ours = {process.pid, client.pid, agent, *workers}

    def listed() -> set[int]:
        lines = run_processes(subprocess.run(PS_ARGV, capture_output=True, text=True, check=True).stdout)
        return {int(line.split()[0]) for line in lines} & ours

    assert listed() == ours - {process.pid}, "the client, its agent and the workers are the run's"
    client.stdin.close()
    assert client.wait(timeout=30) == 0
    assert processes.wait_gone(list(ours - {process.pid, client.pid}), timeout=10) == []
    assert listed() == set() and process.poll() is None  # the server stays, and is no run's


def test_the_agents_status_and_output_reach_the_client(server, tmp_path):
    _process, path = server
    garbage = b"not a tar at all" * 64
    client = start_client(path, tmp_path)
    _out, err = client.communicate(agent_config(files=len(garbage)) + garbage, timeout=60)
    assert client.returncode == 2
    assert b"could not unpack the run's files" in err, err


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_or_killed_client_takes_its_agent_and_workers_along(server, tmp_path, processes, how):
    process, path = server
    client, agent, workers = running_agent(process.pid, path, tmp_path)
    group = [agent, *workers]
    client.send_signal(how)
    assert client.wait(timeout=30) in (0, -signal.SIGKILL)
    assert processes.wait_gone(group, timeout=10) == [], "the agent outlived its client"
    assert process.poll() is None  # the server goes on serving


def test_without_a_server_the_client_becomes_the_agent(tmp_path):
    garbage = b"not a tar at all" * 64
    client = start_client(tmp_path / "no-server.sock", tmp_path)
    _out, err = client.communicate(agent_config(files=len(garbage)) + garbage, timeout=60)
    assert client.returncode == 2
    assert b"could not unpack the run's files" in err, err


def test_a_run_that_sets_a_python_variable_gets_a_fresh_interpreter(server, tmp_path):
    # PYTHONHASHSEED and the like act when an interpreter starts: the server's started long ago.
    process, path = server
    client = start_client(path, tmp_path, env={"PYTHONHASHSEED": "0"})
    client.stdin.write(agent_config())
    client.stdin.flush()
    deadline = time.monotonic() + 30
    while b"dockkit.launch.agent" not in Path(f"/proc/{client.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the client never became the agent"
        time.sleep(0.02)
    assert b"PYTHONHASHSEED=0" in Path(f"/proc/{client.pid}/environ").read_bytes().split(b"\0")
    assert children_of(process.pid) == []
    client.stdin.close()
    assert client.wait(timeout=30) == 0, client.stderr.read().decode()


ROOT_SCRIPT = """\
import atexit, os, sys, threading, time
from dockkit import futures

def square(x):
    return x * x

def late():
    time.sleep(0.3)
    print("a thread the script left running finished", flush=True)

if __name__ == "__main__":
    atexit.register(print, "atexit ran")
    print("comm", open("/proc/self/comm").read().strip(), "parent", os.getppid())
    print("args", sys.argv[1:], "cwd", os.getcwd(), "seed", os.environ.get("SEED"))
    print("squares", sum(futures.map(square, range(10))))
    threading.Thread(target=late).start()
    sys.exit(int(sys.argv[1]))
"""


def test_the_server_forks_a_root_that_runs_the_script_and_ends_as_python_would(server, tmp_path):
    # The head of a cluster starts its run's root this way: `python -m dockkit` without the imports.
    process, path = server
    (tmp_path / "workdir").mkdir()
    (tmp_path / "workdir" / "job.py").write_text(ROOT_SCRIPT)
    client = start_client(path, tmp_path, env={"SEED": "7"}, module=ROOT_MODULE,
                          args=["-n", "2", "job.py", "3"])
    out, err = client.communicate(timeout=90)
    lines = out.decode().splitlines()
    assert client.returncode == 3, err.decode()  # the script's own status, through the client
    assert f"comm {ROOT_NAME} parent {process.pid}" in lines, out
    assert f"args ['3'] cwd {tmp_path / 'workdir'} seed 7" in lines, out
    assert "squares 285" in lines
    # Its exit is a Python's: threads joined, then atexit, then the status.
    assert lines[-2:] == ["a thread the script left running finished", "atexit ran"], out
    assert process.poll() is None


ECHO_SCRIPT = """\
import os, sys
if __name__ == "__main__":
    print(ascii(sys.argv[1:]), ascii(os.environb.get(b"ODD")), ascii(os.getcwdb()))
"""


def test_arguments_and_variables_reach_the_forked_root_byte_for_byte(server, tmp_path):
    # The client's request is NUL-separated: spaces, '=', newlines and bytes that are not
    # UTF-8 must come through as a fresh interpreter would have them.
    _process, path = server
    (tmp_path / "workdir").mkdir()
    (tmp_path / "workdir" / "echo.py").write_text(ECHO_SCRIPT)
    args = ["a b", "x=y", "line\nbreak", "", os.fsdecode(b"caf\xe9")]
    odd = b"1=2 \xff\n3"
    client = start_client(path, tmp_path, env={"ODD": os.fsdecode(odd)}, module=ROOT_MODULE,
                          args=["-n", "1", "echo.py", *args])
    out, err = client.communicate(timeout=90)
    assert client.returncode == 0, err.decode()
    expected = f"{ascii(args)} {ascii(odd)} {ascii(os.fsencode(tmp_path / 'workdir'))}"
    assert out.decode().splitlines() == [expected]


def test_an_unreadable_request_is_refused_on_the_clients_own_stderr(server, tmp_path):
    # A client of another request format (a JSON one, say): the server says so where that
    # client's user reads, hangs up, and serves the next client as before.
    process, path = server
    stdin_r, stdin_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    request = b'{"module": "dockkit.launch.agent"}'
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(path))
        socket.send_fds(conn, [len(request).to_bytes(4, "big") + request], [stdin_r, stderr_w, stderr_w])
        for fd in (stdin_r, stderr_w):
            os.close(fd)
        assert conn.recv(4) == b""  # no exit status: hung up
    with os.fdopen(stderr_r, "rb") as said:
        assert said.read().startswith(b"dockkit-warm: an unreadable request: ")
    os.close(stdin_w)
    assert children_of(process.pid) == []
    client = start_client(path, tmp_path, module="http.server")  # still serving
    assert client.communicate(timeout=30)[1] == b"dockkit-warm: no warm start for module 'http.server'\n"


def test_a_server_that_hangs_up_without_a_status_is_named_by_the_client(tmp_path):
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX) as mute:
        mute.bind(str(path))
        mute.listen(1)
        client = start_client(path, tmp_path)
        conn, _ = mute.accept()
        _data, fds, _flags, _address = socket.recv_fds(conn, 65536, 3)
        for fd in fds:  # the client's own pipes: held here, they would keep its output open
            os.close(fd)
        conn.close()
        _out, err = client.communicate(timeout=30)
    assert client.returncode == 255, err
    assert err.decode() == (f"dockkit: the warm server at {path} hung up without an exit status "
                            "(its log, the node's, says why)\n")


def test_a_failing_root_says_what_python_m_dockkit_says(server, tmp_path):
    _process, path = server
    client = start_client(path, tmp_path, module=ROOT_MODULE, args=["missing.py"])
    _out, err = client.communicate(timeout=60)
    plain = subprocess.run([sys.executable, "-m", "dockkit", "missing.py"], cwd=tmp_path / "workdir",
                           capture_output=True, timeout=60)
    assert b"script not found: 'missing.py'" in err
    assert (client.returncode, err) == (plain.returncode, plain.stderr)


def test_the_server_starts_no_module_but_the_agent_and_the_root(server, tmp_path):
    process, path = server
    client = start_client(path, tmp_path, module="http.server")
    _out, err = client.communicate(timeout=30)
    assert client.returncode == 255
    assert b"no warm start for module 'http.server'" in err, err
    assert children_of(process.pid) == []


def test_without_a_server_the_client_runs_the_root_as_python_m(tmp_path):
    (tmp_path / "workdir").mkdir()
    (tmp_path / "workdir" / "job.py").write_text(ROOT_SCRIPT)
    client = start_client(tmp_path / "no-server.sock", tmp_path, module=ROOT_MODULE, args=["-n", "1", "job.py", "0"])
    out, err = client.communicate(timeout=90)
    assert client.returncode == 0, err.decode()
    assert "squares 285" in out.decode().splitlines()
