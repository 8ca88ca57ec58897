"""compose/docker-compose.yml for real: config, up with the local worker image, key login, down.

The compose directory is copied to a temporary one, so make-env.sh writes its keys
and .env there, not into the checkout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.names import unique_name

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60  # s for the three sshd to take a login


def _compose_command() -> list[str]:
    """``docker-compose`` (v1) or ``docker compose`` (v2), whichever this machine has."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    reason = "neither docker-compose nor `docker compose` is installed"
    if os.environ.get("CI"):
        pytest.fail(f"compose must be tested in CI: {reason}")
    pytest.skip(reason)


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count < 65536 and all(_is_free(first + k) for k in range(count)):
            return first
    raise RuntimeError("no run of free ports on 127.0.0.1")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def compose_dir(tmp_path, worker_image):
    folder = tmp_path / "compose"
    shutil.copytree(ROOT / "compose", folder, ignore=shutil.ignore_patterns(".env", "keys"))
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "marker.txt").write_text("mounted\n")
    done = subprocess.run([str(folder / "make-env.sh"), worker_image, str(workdir), str(_free_ports(3))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return folder, workdir


def test_compose_file_is_valid(compose_dir, worker_image):
    folder, workdir = compose_dir
    done = subprocess.run([*_compose_command(), "-f", str(folder / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=folder)
    assert done.returncode == 0, done.stderr
    assert f"image: {worker_image}" in done.stdout
    assert all(f"node{n}:" in done.stdout for n in range(3))


def test_compose_brings_up_nodes_that_take_a_key_login(compose_dir, docker_client):
    folder, workdir = compose_dir
    project = unique_name("compose")
    compose = [*_compose_command(), "-p", project, "-f", str(folder / "docker-compose.yml")]
    try:
        up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=120, cwd=folder)
        assert up.returncode == 0, up.stderr
        for node in ("node0", "node1", "node2"):
            out = _login(folder / "keys" / "ssh_config", node, f"hostname; cat {workdir}/marker.txt")
            assert out.split() == [node, "mounted"]
    finally:
        down = subprocess.run([*compose, "down", "-v"], capture_output=True, text=True, timeout=120, cwd=folder)
    assert down.returncode == 0, down.stderr
    assert not docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})


def _login(ssh_config: Path, node: str, command: str) -> str:
    """Key login with the generated ssh_config and pinned host keys; retried while sshd starts."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        done = subprocess.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                               node, command], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            return done.stdout
        if "Host key verification failed" in done.stderr or time.monotonic() > deadline:
            pytest.fail(f"ssh {node}: {done.stderr}")
        time.sleep(0.2)
