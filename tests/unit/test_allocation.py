"""Hosts from SLURM, PBS and SGE allocations, and `--dry-run`'s plan for every source of hosts.

The SLURM lists are those of SLURM's own documentation and man pages, with the
expansions `scontrol show hostnames` gives for them; PBS and SGE files are in the
formats those schedulers write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dockkit.errors import AllocationError
from dockkit.launch.allocation import Allocation, detect, expand_tasks_per_node, pbs, sge, slurm

DOCKKIT = os.path.join(os.path.dirname(sys.executable), "dockkit")


@pytest.mark.parametrize("nodelist, hosts", [
    ("cn[01-03,07],gpu-[1-2]", ["cn01", "cn02", "cn03", "cn07", "gpu-1", "gpu-2"]),
    ("tux[0-3,7]", ["tux0", "tux1", "tux2", "tux3", "tux7"]),
    ("linux[000-002]", ["linux000", "linux001", "linux002"]),  # zero padding kept
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("single", ["single"]),
    ("a,b[9-11]", ["a", "b9", "b10", "b11"]),
])
def test_slurm_node_lists_expand_as_scontrol_does(nodelist, hosts):
    assert [host for host, _ in slurm(nodelist, None).slots] == hosts


@pytest.mark.parametrize("text, counts", [
    ("2(x3),4", [2, 2, 2, 4]),
    ("16", [16]),
    ("1(x2)", [1, 1]),
    ("3,1(x2),8", [3, 1, 1, 8]),
])
def test_slurm_tasks_per_node(text, counts):
    assert expand_tasks_per_node(text, len(counts)) == counts


def test_a_slurm_job_gives_hosts_and_counts():
    environ = {"SLURM_JOB_NODELIST": "cn[01-03],gpu7", "SLURM_TASKS_PER_NODE": "2(x3),4"}
    allocation = detect(environ)
    assert allocation.slots == (("cn01", 2), ("cn02", 2), ("cn03", 2), ("gpu7", 4))
    assert allocation.total == 10
    assert allocation.host_words() == ["cn01*2", "cn02*2", "cn03*2", "gpu7*4"]
    assert allocation.describe() == "SLURM allocation: 4 host(s), 10 slot(s) (SLURM_JOB_NODELIST=cn[01-03],gpu7)"


def test_n_caps_the_total_and_spreads_over_hosts_in_turn():
    allocation = Allocation("SLURM", "x", (("a", 2), ("b", 2), ("c", 4)))
    assert allocation.host_words(3) == ["a*1", "b*1", "c*1"]
    assert allocation.host_words(7) == ["a*2", "b*2", "c*3"]
    assert allocation.host_words(10) == ["a*3", "b*3", "c*4"]  # past the slots: round the hosts


def test_a_pbs_node_file_has_one_line_per_slot(tmp_path):
    nodefile = tmp_path / "aggregate"
    nodefile.write_text("n01.cluster\nn01.cluster\nn02.cluster\nn01.cluster\n\n")
    allocation = detect({"PBS_NODEFILE": str(nodefile)})
    assert allocation.scheduler == "PBS" and allocation.slots == (("n01.cluster", 3), ("n02.cluster", 1))


def test_an_sge_pe_hostfile(tmp_path):
    hostfile = tmp_path / "pe_hostfile"
    hostfile.write_text("node1.example 4 all.q@node1.example UNDEFINED\n"
                        "node2.example 2 all.q@node2.example <NULL>\n")
    allocation = detect({"PE_HOSTFILE": str(hostfile)})
    assert allocation.scheduler == "SGE" and allocation.slots == (("node1.example", 4), ("node2.example", 2))


def test_an_sge_host_in_several_queues_has_the_sum_of_its_slots(tmp_path, monkeypatch):
    hostfile = tmp_path / "pe_hostfile"
    hostfile.write_text("node1 2 all.q@node1 UNDEFINED\n"
                        "node2 1 all.q@node2 UNDEFINED\n"
                        "node1 3 gpu.q@node1 UNDEFINED\n")
    monkeypatch.setenv("PE_HOSTFILE", str(hostfile))
    allocation = detect()
    assert allocation.slots == (("node1", 5), ("node2", 1)) and allocation.total == 6
    assert allocation.host_words() == ["node1*5", "node2*1"]
    assert allocation.host_words(3) == ["node1*2", "node2*1"]


def test_outside_a_job_there_is_no_allocation():
    assert detect({"HOME": "/root"}) is None


@pytest.mark.parametrize("make, message", [
    (lambda tmp: slurm("cn[01-03", None), "SLURM_JOB_NODELIST='cn[01-03' is not a SLURM host list"),
    (lambda tmp: slurm("cn[1-2]", "2(x3)"), "gives 3 count(s) for the 2 host(s)"),
    (lambda tmp: expand_tasks_per_node("2(y3)", 3), "SLURM_TASKS_PER_NODE='2(y3)': '2(y3)' is not a count"),
    # a repeat is checked against the hosts before it is expanded: no MemoryError
    (lambda tmp: slurm("cn1", "1(x99999999999)"), "gives 99999999999 count(s) for the 1 host(s)"),
    (lambda tmp: slurm("cn[1-2]", "2(x0),1,1"), "'2(x0)' is not a count like 4 or 2(x3), both at least 1"),
    (lambda tmp: pbs(str(tmp / "missing")), "/missing: cannot be read"),
    (lambda tmp: pbs(_write(tmp / "nodes", b"n01\n\xff\xfe\n")), "/nodes: is not a text file of host names"),
    (lambda tmp: sge(_write(tmp / "pe", b"n01 2 all.q \xe9\n")), "/pe: is not a text file of host names"),
    (lambda tmp: sge(_write(tmp / "pe", "node1 many all.q UNDEFINED\n")), "/pe:1: 'node1 many all.q UNDEFINED' is not"),
    (lambda tmp: sge(_write(tmp / "empty", "\n")), "names no host"),
])
def test_malformed_allocations_name_the_variable_or_file_and_the_way_out(tmp_path, make, message):
    with pytest.raises(AllocationError) as raised:
        make(tmp_path)
    text = str(raised.value)
    assert message in text, text
    variable = text.split("=")[0]
    assert text.endswith(f"; fix or unset {variable}, or give --hosts/--hostfile"), text


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# --- dry runs, through the real command ---------------------------------------------------------------
def dry_run(tmp_path, *args, env=None, form=(DOCKKIT, "run")) -> list[str]:
    """The plan's lines of a dry run that succeeds."""
    result = dry_run_result(tmp_path, *args, env=env, form=form)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def dry_run_result(tmp_path, *args, env=None, form=(DOCKKIT, "run")) -> subprocess.CompletedProcess:
    """A dry run of job.py in ``tmp_path``, outside any batch job but for ``env``."""
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        open("ran.txt", "w").write("the script ran")
    """))
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "PBS_", "PE_"))}
    environ.update(DOCKKIT_STATE_DIR=str(tmp_path / "state"), **(env or {}))
    result = subprocess.run([*form, "--dry-run", *args, "job.py"], cwd=tmp_path, env=environ,
                            capture_output=True, text=True, timeout=60)
    assert not (tmp_path / "ran.txt").exists(), "a dry run ran the script"
    return result


def test_dry_run_of_a_local_run(tmp_path):
    lines = dry_run(tmp_path, "-n", "3")
    assert lines[:2] == ["hosts:    this machine", "launcher: local processes"]
    assert lines[3:] == ["workers:  3 on 1 host(s)", "  localhost  3"]


def test_dry_run_over_hosts_and_a_hostfile(tmp_path):
    (tmp_path / "hosts.txt").write_text("# lab\nc 2\n")
    lines = dry_run(tmp_path, "--hosts", "a", "b:3", "--hostfile", "hosts.txt", "--tunnel", "-n", "7")
    assert lines[0] == "hosts:    a b:3 (and hostfile hosts.txt)"
    assert lines[1] == "launcher: SSH, workers reach the root through SSH tunnels"
    assert lines[3:] == ["workers:  7 on 3 host(s)", "  a  2", "  b  3", "  c  2"]


def test_dry_run_in_a_slurm_job_with_python_m(tmp_path):
    lines = dry_run(tmp_path, "-n", "5", form=(sys.executable, "-m", "dockkit"),
                    env={"SLURM_JOB_NODELIST": "cn[01-03]", "SLURM_TASKS_PER_NODE": "2(x2),4"})
    assert lines[0] == "hosts:    SLURM allocation: 3 host(s), 8 slot(s) (SLURM_JOB_NODELIST=cn[01-03])"
    assert lines[3:] == ["workers:  5 on 3 host(s)", "  cn01  2", "  cn02  2", "  cn03  1"]


@pytest.mark.parametrize("variable, text, hosts", [
    ("PBS_NODEFILE", "n1\nn1\nn2\n", ["  n1  2", "  n2  1"]),
    ("PE_HOSTFILE", "s1 3 all.q UNDEFINED\ns2 1 all.q UNDEFINED\n", ["  s1  3", "  s2  1"]),
    ("PE_HOSTFILE", "s1 2 all.q UNDEFINED\ns2 1 all.q UNDEFINED\ns1 1 gpu.q UNDEFINED\n", ["  s1  3", "  s2  1"]),
])
def test_dry_run_in_pbs_and_sge_jobs(tmp_path, variable, text, hosts):
    (tmp_path / "alloc").write_text(text)
    lines = dry_run(tmp_path, env={variable: str(tmp_path / "alloc")})
    assert lines[4:] == hosts


@pytest.mark.parametrize("nodelist", ["cn[01-03]", "cn[01-03"])  # a malformed allocation is not read
def test_hosts_given_in_a_job_win_with_a_note(tmp_path, nodelist):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PBS_", "PE_"))}
    environ.update(SLURM_JOB_NODELIST=nodelist, DOCKKIT_STATE_DIR=str(tmp_path / "state"))
    result = subprocess.run([DOCKKIT, "run", "--hosts", "nosuchhost-for-test", "--", "missing.py"],
                            cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)
    note = f"dockkit: --hosts/--hostfile given: not using the SLURM allocation (SLURM_JOB_NODELIST={nodelist})"
    assert result.stderr.splitlines()[0] == note, result.stderr
    assert "script not found: 'missing.py'" in result.stderr and "not a SLURM host list" not in result.stderr


@pytest.mark.parametrize("nodelist", ["cn[01-03]", "cn[01-03"])
def test_a_dry_run_with_hosts_in_a_job_plans_them_with_the_note(tmp_path, nodelist):
    result = dry_run_result(tmp_path, "--hosts", "localhost", "--", env={"SLURM_JOB_NODELIST": nodelist})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "hosts:    localhost"
    assert result.stderr.splitlines() == [
        f"dockkit: --hosts/--hostfile given: not using the SLURM allocation (SLURM_JOB_NODELIST={nodelist})"]


def test_a_malformed_allocation_without_hosts_is_one_line_with_the_way_out(tmp_path):
    result = dry_run_result(tmp_path, env={"SLURM_JOB_NODELIST": "cn[01-03"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "dockkit: error: SLURM_JOB_NODELIST='cn[01-03' is not a SLURM host list: unbalanced brackets; "
        "fix or unset SLURM_JOB_NODELIST, or give --hosts/--hostfile"]
