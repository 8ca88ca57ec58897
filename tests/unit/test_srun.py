"""The srun launcher's parts that need no SLURM: its command line, its per-node
configuration table, and the errors it gives outside a SLURM job. Real jobs run in
tests/integration/test_slurm.py."""

import os
import subprocess
import sys

import pytest

from dockkit.errors import ConfigError, ProtocolError
from dockkit.launch.agent import read_config
from dockkit.launch.base import make_launcher
from dockkit.launch.srun import SrunLauncher, in_slurm_job, step_command
from dockkit.runtime.protocol import AgentConfig, WorkerConfig

DOCKKIT = os.path.join(os.path.dirname(sys.executable), "dockkit")


def agent_config(host: str) -> AgentConfig:
    worker = WorkerConfig(address="tcp://10.0.0.1:5000", secret="s3cret", host=host)
    return AgentConfig(worker, identity=f"run/{host}/agent", workers=[(f"{host}:w0", f"run/{host}/w0")])


def test_each_agent_takes_its_own_entry_of_the_table(monkeypatch):
    line = AgentConfig.table_to_json({"sn1": agent_config("sn1"), "sn2": agent_config("sn2")})
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line: every task reads the same stdin
    monkeypatch.setenv("SLURMD_NODENAME", "sn2")
    config = read_config(line, ["--from-table"])
    assert (config.identity, config.workers, config.worker.host) == ("run/sn2/agent", [("sn2:w0", "run/sn2/w0")], "sn2")
    assert config.worker.secret == "s3cret"


def test_a_node_missing_from_the_table_is_named():
    line = AgentConfig.table_to_json({"sn1": agent_config("sn1")})
    with pytest.raises(ProtocolError, match=r"no entry for host 'sn9' \(it has: sn1\)"):
        AgentConfig.from_table(line, "sn9")


def test_without_the_flag_the_agent_reads_its_own_configuration():
    assert read_config(agent_config("h").to_json(), []).identity == "run/h/agent"


def test_the_step_is_one_task_per_node_with_stdin_to_every_task():
    command = step_command("/usr/bin/srun", ["sn1", "sn2", "sn3"], "exec python3 -m dockkit.launch.agent",
                           (22, 5, 8))
    assert command[0] == "/usr/bin/srun" and command[-3:] == ["sh", "-c", "exec python3 -m dockkit.launch.agent"]
    for option in ("--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--nodelist=sn1,sn2,sn3", "--input=all",
                   "--kill-on-bad-exit=0", "--cpu-bind=none", "--overlap"):
        assert option in command
    # before 20.11 steps shared CPUs anyway, and srun had no --overlap
    assert "--overlap" not in step_command("srun", ["a"], "true", (20, 2))


def test_outside_a_slurm_job_srun_is_refused_with_the_way_out(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not in_slurm_job()
    with pytest.raises(ConfigError, match="inside a SLURM job"):
        SrunLauncher(hosts=["a"])
    (tmp_path / "job.py").write_text("print('ran')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run([DOCKKIT, "run", "--launcher", "srun", "job.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--launcher srun runs inside a SLURM job (sbatch or salloc)" in result.stderr
    assert "ran" not in result.stdout


def test_ssh_options_and_unknown_launchers_are_refused():
    with pytest.raises(ConfigError, match=r"\['tunnel'\] do not apply to the srun launcher"):
        make_launcher(2, launcher="srun", tunnel=True)
    with pytest.raises(ConfigError, match="unknown launcher 'mpi'"):
        make_launcher(2, launcher="mpi")
    with pytest.raises(ConfigError, match=r"\['tunnel'\] do not apply to local workers"):
        make_launcher(2, tunnel=True)
