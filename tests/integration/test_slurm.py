"""dockkit inside real SLURM jobs: sbatch and salloc on a SLURM cluster in containers.

The bed (tests/integration/slurm.py): slurmctld on one container, slurmd on three
(sn1..sn3, 2 CPUs each), munge with a shared key, a shared volume at /shared, and no
sshd anywhere: a run can only start its workers through srun.
"""

import math
import re
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from dockkit.launch.allocation import slurm
from tests.integration.slurm import SlurmBed, ensure_slurm_image
from tests.names import TEST_RUN

pytestmark = pytest.mark.timeout(600)

JOB = textwrap.dedent("""
    import socket, sys, time
    from dockkit import futures

    def square(x):
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
        return socket.gethostname(), x * x

    if __name__ == "__main__":
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
        results = list(futures.map(square, range(n)))
        print("hosts", ",".join(sorted({host for host, _ in results})))
        print("sum", sum(value for _, value in results))
        sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
""")


@pytest.fixture(scope="module")
def bed(docker_client, tmp_path_factory):
    image = ensure_slurm_image(docker_client, tmp_path_factory.mktemp("slurm-image"))
    with SlurmBed(docker_client, image, f"{TEST_RUN}-{uuid.uuid4().hex[:8]}") as bed:
        yield bed


def submit(bed, name, command, *options):
    bed.put({"job.py": JOB, "job.sh": f"#!/bin/sh\n{command}\n"}, name)
    return bed.sbatch(name, "job.sh", "--output=out.txt", *options)


def output(bed, name) -> str:
    return bed.sh(f"cat /shared/{name}/out.txt")[1]


def test_a_batch_job_runs_workers_on_every_node_through_srun(bed):
    job = submit(bed, "every-node", "dockkit run job.py", "--nodes=3", "--ntasks-per-node=2")
    fields = bed.wait(job)
    out = output(bed, "every-node")
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), out
    assert "hosts sn1,sn2,sn3" in out
    assert f"sum {sum(x * x for x in range(300))}" in out
    assert "dockkit: using the SLURM allocation: 3 host(s), 6 slot(s)" in out
    assert "starting 6 workers on 3 node(s) with srun" in out
    assert "cpu binding" not in out
    assert bed.processes("dockkit") == {}  # nothing left after the job
    assert bed.processes("sshd") == {}  # and it never needed SSH


def test_the_script_exit_status_becomes_the_job_s(bed):
    job = submit(bed, "exit-status", "dockkit run job.py 20 0 3", "--nodes=2")
    fields = bed.wait(job)
    assert (fields["JobState"], fields["ExitCode"]) == ("FAILED", "3:0"), output(bed, "exit-status")
    assert f"sum {sum(x * x for x in range(20))}" in output(bed, "exit-status")
    assert bed.processes("dockkit") == {}  # a failing script leaves nothing either


def test_salloc_with_the_root_outside_the_nodes(bed):
    # The controller is no compute node: the root runs there, the agents on the three nodes.
    bed.put({"job.py": JOB}, "salloc")
    code, out = bed.sh("cd /shared/salloc && salloc --nodes=3 --ntasks-per-node=1 dockkit run job.py 50")
    assert code == 0, out
    assert "hosts sn1,sn2,sn3" in out
    assert f"sum {sum(x * x for x in range(50))}" in out


def test_a_dry_run_in_a_job_plans_srun(bed):
    bed.put({"job.py": "open('ran.txt', 'w').write('ran')\n"}, "dry")
    code, out = bed.sh("cd /shared/dry && salloc --nodes=2 --ntasks-per-node=2 dockkit run --dry-run job.py")
    assert code == 0, out
    assert "launcher: srun, one agent per node in one job step" in out
    assert "workers:  4 on 2 host(s)" in out
    assert bed.sh("test -e /shared/dry/ran.txt")[0] != 0


def test_a_killed_root_leaves_nothing_on_any_node_while_the_job_goes_on(bed):
    # The job outlives its root by a minute, so SLURM's own clean-up at the job's end
    # cannot be what removes the agents, nor can the agents' heartbeat timeout (60 s):
    # their lifeline, srun's stdin, must.
    job = submit(bed, "kill-root", "dockkit run --heartbeat-timeout 60 job.py 2000 0.5; sleep 60",
                 "--nodes=3", "--ntasks-per-node=2")
    deadline = time.monotonic() + 60
    while len(bed.processes("dockkit.launch.agent")) < 3:
        assert time.monotonic() < deadline, output(bed, "kill-root")
        time.sleep(0.3)
    code, out = bed.sh("pkill -KILL -f '[d]ockkit run --heartbeat-timeout'", bed.nodes[0])
    assert code == 0, out
    deadline = time.monotonic() + 15
    while bed.processes("dockkit") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert bed.processes("dockkit") == {}
    assert bed.job(job)["JobState"] == "RUNNING"
    bed.sh(f"scancel {job}")


@pytest.mark.parametrize("hostlist", [
    "cn[01-03,07],gpu-[1-2]",
    "rack[1-2]-n[08-11]",
    "a,b[9-11],c[0007-0009]",
    "node[1,3-4,010]",
])
def test_hostlists_expand_as_slurm_expands_them(bed, hostlist):
    code, out = bed.sh(f"scontrol show hostnames '{hostlist}'")
    assert code == 0, out
    assert [host for host, _ in slurm(hostlist, None).slots] == out.split()


def test_the_example_batch_script_estimates_pi(bed):
    root = Path(__file__).resolve().parents[2] / "examples"
    bed.put({name: (root / name).read_text() for name in ("slurm_job.sh", "monte_carlo_pi.py")},
            "example/examples")
    job = bed.sbatch("example", "examples/slurm_job.sh", "--output=out.txt")
    fields = bed.wait(job)
    out = bed.sh("cat /shared/example/out.txt")[1]
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), out
    assert "inside: " in out and "of 9600000 points" in out
    assert abs(float(re.search(r"pi is about ([\d.]+)", out).group(1)) - math.pi) < 0.01
    assert "3 host(s), 6 slot(s)" in out
