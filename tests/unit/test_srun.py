"""The srun launcher's parts that need no SLURM: its command line, its per-node
configuration table, and the errors it gives outside a SLURM job. Real jobs run in
tests/integration/test_slurm.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockkit.errors import ConfigError, ProtocolError
from dockkit.launch.agent import read_config
from dockkit.launch.choose import make_launcher
from dockkit.launch.srun import SrunLauncher, in_slurm_job, srun_version, step_command
from dockkit.runtime.protocol import AgentConfig, WorkerConfig
from tests.unit.test_allocation import dry_run, dry_run_result

DOCKKIT = os.path.join(os.path.dirname(sys.executable), "dockkit")


def fake_srun(directory: Path, version_output: str) -> Path:
    """An executable ``srun`` in ``directory`` that prints ``version_output`` whatever it is asked."""
    directory.mkdir(exist_ok=True)
    srun = directory / "srun"
    srun.write_text(f"#!/bin/sh\necho '{version_output}'\n")
    srun.chmod(0o755)
    return srun


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


def test_an_srun_whose_version_cannot_be_read_still_gets_overlap(tmp_path):
    assert srun_version(str(fake_srun(tmp_path / "bin", "slurm 23.02.7"))) == (23, 2, 7)
    assert srun_version(str(fake_srun(tmp_path / "bin", "srun: error: no slurm.conf"))) == ()
    assert srun_version(str(tmp_path / "no-such-srun")) == ()
    assert "--overlap" in step_command("srun", ["a"], "true", ())


def test_a_slurm_job_without_a_node_list_is_refused_naming_it(monkeypatch, tmp_path):
    for variable in ("SLURM_JOB_NODELIST", "SLURM_TASKS_PER_NODE", "PBS_NODEFILE", "PE_HOSTFILE"):
        monkeypatch.delenv(variable, raising=False)
    fake_srun(tmp_path / "bin", "slurm 23.02.7")
    job = {"SLURM_JOB_ID": "42", "PATH": str(tmp_path / "bin")}
    for variable, value in job.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST is not set in this SLURM job"):
        SrunLauncher(workers=2)
    expected = ["dockkit: error: SLURM_JOB_NODELIST is not set in this SLURM job, so srun has no nodes to "
                "start workers on: run inside a job that has nodes (sbatch or salloc), or give --hosts/--hostfile"]
    planned = dry_run_result(tmp_path, "--launcher", "srun", env=job)  # it writes job.py
    assert (planned.returncode, planned.stderr.splitlines()) == (1, expected)
    run = subprocess.run([DOCKKIT, "run", "--launcher", "srun", "job.py"], cwd=tmp_path,
                         env={**os.environ, "DOCKKIT_STATE_DIR": str(tmp_path / "state")},
                         capture_output=True, text=True, timeout=60)
    # one line, without a note about local workers, and the script never ran
    assert (run.returncode, run.stderr.splitlines()) == (1, expected)
    assert not (tmp_path / "ran.txt").exists()


def test_in_a_slurm_job_srun_is_chosen_and_launcher_ssh_overrides_it(tmp_path):
    fake_srun(tmp_path / "bin", "slurm 23.02.7")
    job = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "cn[1-2]", "PATH": str(tmp_path / "bin")}
    chosen = dry_run(tmp_path, env=job)
    assert chosen[1].startswith("launcher: srun, one agent per node in one job step")
    assert chosen[4:] == ["  cn1  1", "  cn2  1"]
    overridden = dry_run(tmp_path, "--launcher", "ssh", env=job)
    assert overridden[1] == "launcher: SSH, workers connect straight back to the root"
    assert overridden[4:] == ["  cn1  1", "  cn2  1"]


def test_a_slurm_job_without_srun_on_path_starts_workers_over_ssh_with_a_note(tmp_path):
    (tmp_path / "bin").mkdir()  # no srun in it
    result = dry_run_result(tmp_path, env={"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "cn[1-2]",
                                           "PATH": str(tmp_path / "bin")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "launcher: SSH, workers connect straight back to the root"
    assert result.stderr.splitlines() == ["dockkit: no srun on PATH in this SLURM job: starting workers over SSH"]


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
