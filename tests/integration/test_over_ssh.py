"""A node's container reached through its own sshd (how a swarm node whose engine was not
given is reached), against real sshd containers: commands, their streams and exit status,
the lifeline, and copies in and out."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid

import pytest

from dockkit.cluster.copying import GO_MODE_DIR
from dockkit.cluster.over_ssh import ContainerOverSSH
from dockkit.cluster.state import NodeInfo
from dockkit.errors import ClusterError, ConfigError
from tests.integration.streams import Apart


@pytest.fixture
def node(ssh_nodes):
    target = ssh_nodes[0]
    info = NodeInfo(target.alias, target.container.id[:12], "", target.hostname, target.port,
                    target.host_key.public_line, 1, "running")
    # the manager is asked only for the task's state and the service's logs, not used here
    return ContainerOverSSH(info, service=target.container.name, cluster="over-ssh",
                            ssh_config=ssh_nodes.ssh_config_path, manager=None)


def test_a_command_streams_stdout_and_stderr_apart_in_its_directory_and_environment(node):
    streams = Apart()
    status = node.exec_streaming(["sh", "-c", 'pwd; echo "$A"; echo "$B"; echo warn >&2; exit 5'],
                                 stream=streams, workdir="/tmp", environment={"A": "x y", "B": "it's $HOME"})
    assert (status, streams.out, streams.err) == (5, b"/tmp\nx y\nit's $HOME\n", b"warn\n")


def test_stdin_arrives_byte_for_byte_and_large_output_whole(node):
    data = os.urandom(3_000_000)
    streams = Apart()
    assert node.exec_streaming(["sha256sum"], stream=streams, stdin_data=data) == 0
    assert streams.out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    streams = Apart()
    assert node.exec_streaming(["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x"], stream=streams) == 0
    assert streams.out == b"x" * 5_000_000


def test_a_command_killed_by_a_signal_reports_128_plus_its_number(node):
    assert node.exec_streaming(["sh", "-c", "kill -TERM $$"], stream=Apart()) == 128 + signal.SIGTERM


def test_the_lifeline_ends_when_the_caller_dies(node, ssh_nodes):
    """stdin stays open while the caller lives; killed, its connection closes and the command
    reads end-of-file: nothing it started outlives the caller."""
    marker = f"/tmp/lifeline-{uuid.uuid4().hex[:8]}"
    caller = textwrap.dedent(f"""
        from dockkit.cluster.over_ssh import ContainerOverSSH
        from dockkit.cluster.state import NodeInfo
        node = ContainerOverSSH(NodeInfo({node.node.name!r}, "", "", "", 0, "", 1, "running"), service="s",
                                cluster="c", ssh_config={str(ssh_nodes.ssh_config_path)!r}, manager=None)
        node.exec_streaming(["sh", "-c", "echo started; cat > /dev/null; echo ended > {marker}"], lifeline=True,
                            stdin_data=b"some input")
    """)
    process = subprocess.Popen([sys.executable, "-c", caller], stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"started\n"
        time.sleep(0.5)
        assert ssh_nodes.exec(0, f"test -e {marker}").exit_code != 0  # stdin still open
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 15
    while ssh_nodes.exec(0, f"cat {marker}").output != "ended\n":
        assert time.monotonic() < deadline, "the command never saw its stdin end"
        time.sleep(0.2)


def test_archives_go_in_and_come_out(node, ssh_nodes):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("box/a.txt", b"alpha"), ("box/sub/b.bin", bytes(range(256)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ssh_nodes.exec(0, "rm -rf /tmp/in && mkdir /tmp/in")
    assert node.put_archive("/tmp/in", buffer.getvalue())
    assert ssh_nodes.exec(0, "cat /tmp/in/box/a.txt").output == "alpha"

    chunks, stat = node.get_archive("/tmp/in/box")
    assert stat["mode"] & GO_MODE_DIR
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["box/a.txt", "box/sub/b.bin"]
        assert tar.extractfile("box/sub/b.bin").read() == bytes(range(256))
    chunks, stat = node.get_archive("/tmp/in/box/a.txt")
    assert not stat["mode"] & GO_MODE_DIR

    with pytest.raises(ConfigError, match="/tmp/in/nothing: no such file or directory"):
        node.get_archive("/tmp/in/nothing")
    with pytest.raises(ClusterError, match="copying into /tmp/missing-dir"):
        node.put_archive("/tmp/missing-dir", buffer.getvalue())


def test_exec_run_collects_or_demultiplexes(node):
    result = node.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, sorted(result.output.split())) == (3, [b"err", b"out"])
    result = node.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert result == (0, (b"out\n", b"err\n"))


def test_a_connection_that_ends_without_a_status_is_an_error_not_a_status(node):
    """The node's sshd gone mid-command (its container or swarm node died) is said, not read
    as the command's exit status."""
    # the inner shell's parent is the login shell, and its parent the session's sshd
    with pytest.raises(ClusterError, match="ended before its command did"):
        node.exec_streaming(["sh", "-c", "kill -9 $(ps -o ppid= -p $PPID); sleep 30"], stream=Apart())
