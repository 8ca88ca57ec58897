"""``dockkit run --dry-run``: what a run would start, and where, without starting anything."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from dockkit.launch.hosts import distribute, read_hosts


@dataclass(frozen=True)
class Plan:
    """Where the root runs, how workers start, and how many on which host."""

    source: str
    launcher: str
    root: str
    hosts: tuple[tuple[str, int], ...]

    def lines(self) -> list[str]:
        total = sum(count for _, count in self.hosts)
        width = max(len(host) for host, _ in self.hosts)
        return [f"hosts:    {self.source}",
                f"launcher: {self.launcher}",
                f"root:     {self.root}",
                f"workers:  {total} on {len(self.hosts)} host(s)",
                *(f"  {host:<{width}}  {count}" for host, count in self.hosts)]


def local_plan(workers: int | None) -> Plan:
    count = workers or os.cpu_count() or 1
    return Plan("this machine", "local processes", f"here ({socket.gethostname()})",
                (("localhost", count),))


def hosts_plan(hosts, hostfile, workers: int | None, *, source: str, tunnel: bool,
               launcher: str = "ssh") -> Plan:
    """The plan of a run over ``--hosts``/``--hostfile`` words (or an allocation's), by SSH or srun."""
    rows = distribute(read_hosts(hosts, hostfile), workers)
    if launcher == "srun":
        how = "srun, one agent per node in one job step; workers connect straight back to the root"
    elif tunnel:
        how = "SSH, workers reach the root through SSH tunnels"
    else:
        how = "SSH, workers connect straight back to the root"
    return Plan(source, how, f"here ({socket.gethostname()})",
                tuple((spec.host, count) for spec, count in rows))


def cluster_plan(cluster, workers: int | None) -> Plan:
    """The plan of a run on a Docker cluster that is up."""
    nodes = cluster.status()
    rows = tuple((spec.host, count) for spec, count in distribute(read_hosts(cluster.hosts_for(workers), None),
                                                                    workers))
    head = nodes[0]
    return Plan(f"cluster {cluster.name!r} ({len(nodes)} node(s), up)",
                "SSH inside the cluster, started from the head node",
                f"{head.name} (container {head.container}); this directory is copied to every node",
                rows)
