"""Pure command builders for remote hosts (no sshd needed)."""

import shlex

import pytest

from dockkit.commands import remote_command
from dockkit.errors import ConfigError



def test_remote_command_plain():
    assert remote_command("python3", ["dockkit.agent", "--port", "5555"]) == (
        "exec python3 -m dockkit.agent --port 5555"
    )


def test_remote_command_cwd_prolog_env_quoted():
    cmd = remote_command(
        "/opt/my venv/bin/python",
        ["dockkit.agent", "a b", "it's"],
        cwd="/data/my project",
        prolog="source ~/env.sh; ",
        env={"DOCKKIT_DEBUG": "1", "X": "$(rm -rf /)"},
    )
    assert cmd == (
        "cd '/data/my project' && { source ~/env.sh;\n} && "
        "DOCKKIT_DEBUG=1 X='$(rm -rf /)' exec '/opt/my venv/bin/python' -m dockkit.agent 'a b' 'it'\"'\"'s'"
    )
    assert shlex.split(cmd.split("exec ", 1)[1]) == ["/opt/my venv/bin/python", "-m", "dockkit.agent", "a b", "it's"]


def test_remote_command_home_relative_paths():
    cmd = remote_command("~/venv/bin/python", ["m"], cwd="~/work dir")
    assert cmd == "cd \"$HOME\"/'work dir' && exec \"$HOME\"/venv/bin/python -m m"


@pytest.mark.parametrize("kwargs", [{"module_args": []}, {"module_args": ["m"], "env": {"BAD-NAME": "1"}}])
def test_remote_command_rejects(kwargs):
    with pytest.raises(ConfigError):
        remote_command("python3", **kwargs)
