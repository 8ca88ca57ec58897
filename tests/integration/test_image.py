"""The worker image: cached builds, key-only sshd with pinned host keys, the venv over SSH."""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import time
import zipfile

import cloudpickle
import paramiko
import pytest

from dockkit.cluster import base_image
from dockkit.cluster import engine
from dockkit.cluster import image
from dockkit.cluster.engine import LABEL
from dockkit.cluster.nodes import node_keys_archive, start_with_stdin
from dockkit.errors import DockerError, ImageError
from dockkit.launch.ssh.keys import generate_keypair, known_hosts_line

HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _strict_client(known_hosts) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, out, err = client.exec_command(command, timeout=30)
    status = out.channel.recv_exit_status()
    return status, out.read().decode(), err.read().decode()


def test_second_ensure_reuses_the_image(docker_client, worker_image):
    messages: list[str] = []
    start = time.monotonic()
    tag = image.ensure_worker_image(docker_client, log=messages.append)
    elapsed = time.monotonic() - start
    assert tag == worker_image
    assert tag.startswith(f"{image.WORKER_REPOSITORY}:")
    assert not any("building" in m for m in messages), messages
    assert elapsed < 15, f"a cached ensure took {elapsed:.1f}s"
    assert docker_client.images.get(tag).labels.get(engine.LABEL) == "true"
    assert any(row.tag == tag for row in image.list_images(docker_client))


def test_image_bakes_in_no_keys(docker_client, worker_image):
    out = docker_client.containers.run(
        worker_image, ["-c", "ls /etc/ssh/ssh_host_* /root/.ssh/authorized_keys 2>/dev/null; true"],
        entrypoint=["sh"], remove=True, network_mode="none", labels={LABEL: "true"})
    assert out.strip() == b""


def test_key_login_through_ssh_config(ssh_nodes):
    config = paramiko.SSHConfig.from_path(str(ssh_nodes.ssh_config_path))
    for node in ssh_nodes:
        opts = config.lookup(node.alias)
        assert opts["stricthostkeychecking"] == "yes"
        with _strict_client(opts["userknownhostsfile"]) as client:
            client.connect(opts["hostname"], port=int(opts["port"]), username=opts["user"],
                           key_filename=opts["identityfile"][0], look_for_keys=False,
                           allow_agent=False, timeout=10)
            status, out, err = _run(client, "hostname")
        assert (status, out.strip()) == (0, node.alias), err


def test_wrong_pinned_host_key_is_refused(ssh_nodes, tmp_path):
    node = ssh_nodes[0]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(known_hosts_line(node.hostname, node.port, generate_keypair().public_line) + "\n")
    with _strict_client(wrong) as client, pytest.raises(paramiko.BadHostKeyException):
        client.connect(node.hostname, port=node.port, username="root",
                       key_filename=str(ssh_nodes.client_key_path), look_for_keys=False,
                       allow_agent=False, timeout=10)


def test_unknown_host_key_is_refused(ssh_nodes, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    node = ssh_nodes[1]
    with _strict_client(empty) as client, pytest.raises(paramiko.SSHException, match="not found"):
        client.connect(node.hostname, port=node.port, username="root",
                       key_filename=str(ssh_nodes.client_key_path), look_for_keys=False,
                       allow_agent=False, timeout=10)


def test_unauthorized_client_key_is_refused(ssh_nodes, tmp_path):
    other = generate_keypair().write(tmp_path / "other_key")
    with pytest.raises(paramiko.AuthenticationException):
        ssh_nodes.connect("node2", key_filename=str(other)).close()


def test_venv_python_over_ssh_matches_the_host(ssh_nodes):
    code = ("import sys, dockkit, zmq, cloudpickle, paramiko; "
            "print(sys.executable, '%d.%d' % sys.version_info[:2], cloudpickle.__version__)")
    with ssh_nodes.connect("node1") as client:
        status, out, err = _run(client, f'python -c "{code}"')
    assert status == 0, err
    executable, version, cloudpickle_version = out.split()
    assert executable.startswith(image.VENV + "/")
    assert version == HOST_PYTHON
    assert cloudpickle_version == cloudpickle.__version__


def test_tcp_forwarding_is_allowed(ssh_nodes):
    with ssh_nodes.connect("node0") as client:
        channel = client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
        try:
            channel.settimeout(10)
            assert channel.recv(64).startswith(b"SSH-2.0-")
        finally:
            channel.close()


def test_exec_helper_sees_sshd(ssh_nodes):
    result = ssh_nodes.exec("node2", "ps -e -o comm=")
    assert result.exit_code == 0, result.output
    assert "sshd" in result.output.split()


def test_keys_from_environment_variables(docker_client, worker_image, tmp_path):
    """The compose-friendly way: base64 keys in DOCKKIT_HOST_KEY / DOCKKIT_AUTHORIZED_KEYS."""
    client_key, host_key = generate_keypair(), generate_keypair()
    key_path = client_key.write(tmp_path / "id")
    env = {"DOCKKIT_HOST_KEY": base64.b64encode(host_key.private_openssh).decode(),
           "DOCKKIT_AUTHORIZED_KEYS": base64.b64encode(client_key.public_line.encode()).decode()}
    # A published loopback port, as the cluster uses: a container's docker0 address can be
    # briefly unreachable while the host still holds the last container's neighbour entry.
    container = docker_client.containers.run(worker_image, detach=True, environment=env,
                                             ports={"22/tcp": ("127.0.0.1", None)},
                                             labels={LABEL: "true"})
    try:
        _wait_listening(container)
        assert _login_status(container, host_key, key_path, tmp_path) == 0
    finally:
        container.remove(force=True)


def _login_status(container, host_key, key_path, tmp_path) -> int:
    """Log in on the container's published loopback port, its host key pinned; run `true`."""
    container.reload()
    port = int(container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", port, host_key.public_line) + "\n")
    with _strict_client(known) as client:
        client.connect("127.0.0.1", port=port, username="root", key_filename=str(key_path),
                       look_for_keys=False, allow_agent=False, timeout=10)
        return _run(client, "true")[0]


def _stdin_node(docker_client, worker_image):
    """A container as `dockkit up` makes one: stdin open once, keys expected on it."""
    return docker_client.containers.create(worker_image, stdin_open=True, detach=False,
                                           environment={"DOCKKIT_KEYS": "stdin"},
                                           ports={"22/tcp": ("127.0.0.1", None)}, labels={LABEL: "true"})


def test_keys_sent_on_stdin_serve_a_login_and_outlive_a_restart(docker_client, worker_image, tmp_path):
    client_key, host_key = generate_keypair(), generate_keypair()
    key_path = client_key.write(tmp_path / "id")
    container = _stdin_node(docker_client, worker_image)
    try:
        start_with_stdin(container, node_keys_archive(host_key, client_key.public_line))
        _wait_listening(container)
        assert _login_status(container, host_key, key_path, tmp_path) == 0
        config = docker_client.api.inspect_container(container.id)["Config"]
        assert host_key.private_openssh.decode().splitlines()[1] not in repr(config)  # not in its config
        listening = container.logs().count(b"Server listening on")
        container.restart(timeout=5)  # nothing comes on stdin now: the keys are in place
        deadline = time.monotonic() + 30
        while container.logs().count(b"Server listening on") <= listening and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _login_status(container, host_key, key_path, tmp_path) == 0
    finally:
        container.remove(force=True)


def test_a_node_whose_keys_never_come_on_stdin_says_so(docker_client, worker_image):
    container = _stdin_node(docker_client, worker_image)
    try:
        start_with_stdin(container, b"")  # started, then end-of-file at once
        assert container.wait(timeout=30)["StatusCode"] == 1
        assert b"no key archive came on stdin" in container.logs()
    finally:
        container.remove(force=True)


def test_node_without_authorized_keys_refuses_to_start(docker_client, worker_image):
    container = docker_client.containers.run(worker_image, detach=True, network_mode="none",
                                             labels={LABEL: "true"})
    try:
        assert container.wait(timeout=30)["StatusCode"] == 1
        assert b"no authorized key" in container.logs()
    finally:
        container.remove(force=True)


def test_missing_named_base_image_is_an_image_error(docker_client):
    with pytest.raises(ImageError, match="dockkit-no-such-base:0"):
        base_image.ensure_base_image(docker_client, "dockkit-no-such-base:0", log=lambda m: None)


def test_missing_mmdebstrap_says_what_to_do(monkeypatch):
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)
    with pytest.raises(ImageError, match="apt-get install mmdebstrap"):
        base_image.build_offline_base(client=None, log=lambda m: None)


def test_unreachable_engine_is_a_docker_error(tmp_path):
    with pytest.raises(DockerError, match="cannot reach the Docker Engine"):
        engine.docker_client(f"unix://{tmp_path}/no-such.sock")


def _wait_listening(container, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            break
        if b"Server listening on" in container.logs():
            return
        time.sleep(0.1)
    pytest.fail(f"sshd did not start:\n{container.logs().decode(errors='replace')}")


def test_the_default_base_is_tried_first_then_the_offline_one(docker_client, worker_image):
    default, offline = base_image.default_base_image(), base_image.offline_base_image()
    assert default == f"python:{HOST_PYTHON}-slim"
    was_local = base_image.image_exists(docker_client, default)
    messages: list[str] = []
    base = base_image.ensure_base_image(docker_client, log=messages.append)
    if was_local:  # a machine that has it: it is used as it is, never pulled
        assert (base, messages) == (default, [])
        return
    assert messages[0] == f"dockkit: pulling {default}"
    if base == default:  # a registry answered
        assert base_image.image_exists(docker_client, default)
        return
    # no registry (this project's CI): the pull fails for real and the log says what is used
    assert base == offline
    assert messages[1].startswith(f"dockkit: cannot pull {default}: ")
    assert messages[2] in (f"dockkit: {default} cannot be pulled; using the offline base {offline}",
                           f"dockkit: {default} cannot be pulled; building the offline base {offline} "
                           "from the host's apt sources")


def test_requirements_are_baked_in_and_change_the_tag(docker_client, worker_image, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(image._cache_dir() / "wheels", cache / "wheels")  # the deps, fetched for worker_image
    _write_wheel(cache / "wheels", "dockkit_test_probe", "0.1", {"dockkit_test_probe.py": b"VALUE = 'baked in'\n"})
    monkeypatch.setenv("DOCKKIT_CACHE_DIR", str(cache))  # pip finds the probe there, with no index
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dockkit-test-probe==0.1\n")
    tag = image.ensure_worker_image(docker_client, requirements=requirements, log=lambda m: None)
    try:
        assert tag != worker_image and tag.startswith(f"{image.WORKER_REPOSITORY}:")
        out = docker_client.containers.run(
            tag, ["-c", "import dockkit_test_probe as p; print(p.VALUE)"], entrypoint=[f"{image.VENV}/bin/python"],
            remove=True, network_mode="none", labels={LABEL: "true"})
        assert out.strip() == b"baked in"
        messages: list[str] = []
        assert image.ensure_worker_image(docker_client, requirements=requirements, log=messages.append) == tag
        assert not any("building" in m for m in messages), messages
    finally:
        docker_client.images.remove(tag)


def _write_wheel(directory, name: str, version: str, files: dict[str, bytes]) -> None:
    """A minimal pure-Python wheel, with the RECORD pip expects."""
    info = f"{name}-{version}.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: dockkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, data in {**files, f"{info}/RECORD": record.encode()}.items():
            wheel.writestr(path, data)
