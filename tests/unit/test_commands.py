"""Pure command builders for remote hosts (no sshd needed)."""

import shlex

import pytest

from dockkit.launch.commands import python_command, remote_command, with_prolog
from dockkit.errors import ConfigError


def test_remote_command_plain():
    assert remote_command("python3", ["dockkit.launch.agent", "--port", "5555"]) == (
        "exec python3 -m dockkit.launch.agent --port 5555"
    )


def test_remote_command_cwd_prolog_env_quoted():
    cmd = remote_command(
        "/opt/my venv/bin/python",
        ["dockkit.launch.agent", "a b", "it's"],
        cwd="/data/my project",
        prolog="source ~/env.sh; ",
        env={"DOCKKIT_DEBUG": "1", "X": "$(rm -rf /)"},
    )
    assert cmd == (
        "cd '/data/my project' && { source ~/env.sh;\n} && "
        "DOCKKIT_DEBUG=1 X='$(rm -rf /)' exec '/opt/my venv/bin/python' -m dockkit.launch.agent 'a b' 'it'\"'\"'s'"
    )
    assert shlex.split(cmd.split("exec ", 1)[1]) == ["/opt/my venv/bin/python", "-m", "dockkit.launch.agent", "a b", "it's"]


def test_remote_command_home_relative_paths():
    cmd = remote_command("~/venv/bin/python", ["m"], cwd="~/work dir")
    assert cmd == "cd \"$HOME\"/'work dir' && exec \"$HOME\"/venv/bin/python -m m"


@pytest.mark.parametrize("kwargs", [{"module_args": []}, {"module_args": ["m"], "env": {"BAD-NAME": "1"}}])
def test_remote_command_rejects(kwargs):
    with pytest.raises(ConfigError):
        remote_command("python3", **kwargs)


def test_with_prolog():
    assert with_prolog(None, "exec x") == "exec x"
    assert with_prolog("  ", "exec x") == "exec x"
    assert with_prolog(". ~/venv/bin/activate # comment", "exec x") == (
        "{ . ~/venv/bin/activate # comment\n} && exec x"
    )


def test_python_command_runs_code_like_the_agent_runs_its_module():
    # the launcher's probe: same interpreter spelling, directory and prolog as the agent
    probe = python_command("~/venv/bin/python", ["-c", "print('hi there')", "/a b.py"],
                           cwd="/srv/job", prolog="source env.sh")
    agent = remote_command("~/venv/bin/python", ["dockkit.launch.agent"], cwd="/srv/job", prolog="source env.sh")
    assert probe == "cd /srv/job && { source env.sh\n} && exec \"$HOME\"/venv/bin/python -c 'print('\"'\"'hi there'\"'\"')' '/a b.py'"
    assert probe.rsplit(" -c ", 1)[0] == agent.rsplit(" -m ", 1)[0]


def test_python_command_needs_arguments():
    with pytest.raises(ConfigError):
        python_command("python3", [])


def test_broker_binds_the_advertised_address_when_it_is_ours():
    from dockkit.launch.ssh.launcher import bind_address

    assert bind_address(None, tunnel=True) == "127.0.0.1"
    assert bind_address("192.0.2.1", tunnel=True) == "127.0.0.1"  # a tunnel ignores it
    assert bind_address(None, tunnel=False) == "0.0.0.0"  # each host connects on its own route
    assert bind_address("127.0.0.1", tunnel=False) == "127.0.0.1"
    assert bind_address("localhost", tunnel=False) == "127.0.0.1"  # a name is resolved
    # not an address of this machine (NAT in front of it), or a name only the hosts know
    assert bind_address("192.0.2.1", tunnel=False) == "0.0.0.0"
    assert bind_address("no-such-host.invalid", tunnel=False) == "0.0.0.0"
