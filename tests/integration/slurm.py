"""A SLURM cluster in containers: slurmctld on one, slurmd on three, munge with a shared key.

The image is the worker image built on a base that also holds Debian's ``slurm-wlm``
and ``munge`` (built offline with mmdebstrap, like the worker's own base), so every
node has SLURM, Python and the dockkit under test at the same paths, as HPC nodes
sharing a file system do. A labelled volume mounted at ``/shared`` on every container
stands in for that shared file system; jobs run from there.

No container runs sshd: runs inside these jobs can only start workers through srun.

    with SlurmBed(client, image, run_id) as bed:
        job = bed.sbatch("#!/bin/sh\\ndockkit run job.py", nodes=3, tasks_per_node=2)
        bed.wait(job)               # -> {"JobState": "COMPLETED", "ExitCode": "0:0", ...}
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import tarfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import docker
import docker.errors

from dockkit.cluster.base_image import BASE_PACKAGES, VENV, build_debian_image, image_exists
from dockkit.cluster.engine import LABEL
from dockkit.cluster.image import ensure_worker_image
from tests.integration.beds import Bed

RUN_LABEL = "org.dockkit.test-run"
SLURM_BASE = "dockkit-test-slurm-base:bookworm"
CONTROLLER = "slurmctl"
SHARED = "/shared"
READY_TIMEOUT = 60  # s for every slurmd to show idle
JOB_TIMEOUT = 180  # s for a test job to end

# What testbed checks found working in containers on cgroup v1 without systemd.
SLURM_CONF = """\
ClusterName=dockkit-test
SlurmctldHost={controller}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
ReturnToService=2
MinJobAge=600
NodeName={nodes} CPUs=2 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

# munged refuses a key it does not own; slurmctld and slurmd stay in the foreground.
_START = """\
set -e
install -o munge -g munge -m 0400 /etc/dockkit-slurm/munge.key /etc/munge/munge.key
install -m 0644 /etc/dockkit-slurm/slurm.conf /etc/slurm/slurm.conf
mkdir -p /run/munge /var/spool/slurmd /var/spool/slurmctld
chown munge /run/munge
su -s /bin/sh munge -c munged
if [ "$DOCKKIT_SLURM_ROLE" = controller ]; then exec slurmctld -D; else exec slurmd -D; fi
"""


def ensure_slurm_image(client: docker.DockerClient, workdir: Path, log=print) -> str:
    """The worker image on a base with SLURM and munge, plus what a root inside a SLURM job
    imports (python-hostlist, which a pip install of dockkit brings); each built once, offline."""
    if not image_exists(client, SLURM_BASE):
        build_debian_image(client, SLURM_BASE, (*BASE_PACKAGES, "slurm-wlm", "munge"),
                           hooks=[f'chroot "$1" python3 -m venv {VENV}'], log=log)
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"python-hostlist=={metadata.version('python-hostlist')}\n")
    return ensure_worker_image(client, base_image=SLURM_BASE, requirements=requirements, log=log)


@dataclass
class SlurmBed(Bed):
    """A controller and ``n`` compute nodes ``sn1..snN`` on one labelled network."""

    docker: docker.DockerClient
    image: str
    run_id: str
    n: int = 3
    log: callable = print
    nodes: list = field(default_factory=list)  # compute containers, in node order
    controller: object = None
    _network: object = None
    _volume: object = None

    @property
    def node_names(self) -> list[str]:
        return [f"sn{i}" for i in range(1, self.n + 1)]

    def _start(self) -> None:
        labels = {LABEL: "true", RUN_LABEL: self.run_id}
        prefix = f"dockkit-test-{self.run_id}"
        self._network = self.docker.networks.create(f"{prefix}-slurm", driver="bridge", labels=labels)
        self._volume = self.docker.volumes.create(f"{prefix}-shared", labels=labels)
        conf = SLURM_CONF.format(controller=CONTROLLER, nodes=",".join(self.node_names))
        files = {"munge.key": os.urandom(1024), "slurm.conf": conf.encode()}
        for name in [CONTROLLER, *self.node_names]:
            role = "controller" if name == CONTROLLER else "node"
            container = self.docker.containers.create(
                self.image, ["-c", _START], entrypoint=["sh"], name=f"{prefix}-{name}", hostname=name,
                labels=labels, environment={"DOCKKIT_SLURM_ROLE": role},
                volumes={self._volume.name: {"bind": SHARED, "mode": "rw"}}, working_dir=SHARED,
                network=self._network.name)
            self._network.disconnect(container)  # again, with the alias the others resolve
            self._network.connect(container, aliases=[name])
            container.put_archive("/etc", _tar({f"dockkit-slurm/{k}": v for k, v in files.items()}))
            container.start()
            if role == "controller":
                self.controller = container
            else:
                self.nodes.append(container)
        self._await_idle()

    def _await_idle(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code, out = self.sh("sinfo -h -N -o '%N %t'")
            idle = {line.split()[0] for line in out.splitlines() if line.split()[1:] == ["idle"]}
            if idle >= set(self.node_names):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(c.logs(tail=10).decode(errors="replace") for c in [self.controller, *self.nodes])
                raise RuntimeError(f"SLURM nodes not idle after {READY_TIMEOUT} s: {out}\n{logs}")
            time.sleep(0.5)

    # --- using it --------------------------------------------------------------------------
    def sh(self, command: str, container=None) -> tuple[int, str]:
        """Run a shell command in a container (default: the controller); output merged."""
        code, out = (container or self.controller).exec_run(["sh", "-c", command], workdir=SHARED)
        return code, out.decode(errors="replace")

    def put(self, files: dict[str, str], directory: str) -> None:
        """Write text files under ``/shared/<directory>`` (every node sees them)."""
        self.controller.exec_run(["mkdir", "-p", f"{SHARED}/{directory}"])
        self.controller.put_archive(f"{SHARED}/{directory}",
                                    _tar({name: text.encode() for name, text in files.items()}))

    def sbatch(self, directory: str, script: str, *options: str) -> str:
        """Submit ``script`` (a file in ``/shared/<directory>``) from there; return the job id."""
        code, out = self.sh(f"cd {SHARED}/{directory} && sbatch --parsable "
                            f"{' '.join(map(shlex.quote, options))} {shlex.quote(script)}")
        if code != 0:
            raise RuntimeError(f"sbatch failed ({code}): {out}")
        return out.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields."""
        code, out = self.sh(f"scontrol show job -o {job_id}")
        return dict(word.split("=", 1) for word in out.split() if "=" in word)

    def wait(self, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, str]:
        """Wait until the job has ended; its ``scontrol show job`` fields."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if fields.get("JobState") not in (None, "PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return fields
            if time.monotonic() > deadline:
                self.sh(f"scancel {job_id}")
                raise TimeoutError(f"job {job_id} still {fields.get('JobState')} after {timeout} s")
            time.sleep(0.3)

    def processes(self, pattern: str) -> dict[str, list[str]]:
        """Per container, the command lines matching ``pattern`` (pgrep -f -a)."""
        found = {}
        for container in [self.controller, *self.nodes]:
            code, out = self.sh(f"pgrep -a -f {shlex.quote(pattern)} || true", container)
            lines = [line for line in out.splitlines() if "pgrep" not in line]
            if lines:
                found[container.name] = lines
        return found

    def close(self) -> None:
        """Remove every container, the volume and the network; safe after a partial start."""
        flt = {"label": f"{RUN_LABEL}={self.run_id}"}
        for container in self.docker.containers.list(all=True, filters=flt):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        for resource in (self._volume, self._network):
            if resource is not None:
                with contextlib.suppress(docker.errors.APIError):
                    resource.remove()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
