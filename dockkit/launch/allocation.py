"""Hosts from a batch scheduler's allocation: SLURM, PBS/Torque and SGE/UGE.

Inside a batch job the scheduler has already chosen the hosts and how many tasks
each may run; ``dockkit run`` and ``python -m dockkit`` use them when no
``--hosts`` or ``--hostfile`` is given, as SCOOP does:

- SLURM: ``SLURM_JOB_NODELIST`` in SLURM's hostlist syntax (``cn[01-03,07]``,
  expanded by python-hostlist), counts from ``SLURM_TASKS_PER_NODE`` (``2(x3),4``);
- PBS/Torque: ``PBS_NODEFILE``, one line per slot;
- SGE/UGE: ``PE_HOSTFILE``, lines of ``host slots queue processors``.

A malformed variable or file is an :class:`~dockkit.errors.AllocationError` that names it
and says what to do.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from dataclasses import dataclass

from dockkit.errors import AllocationError

_TASKS = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


@dataclass(frozen=True)
class Allocation:
    """The hosts a scheduler gave this job, in its order, with the slots of each."""

    scheduler: str
    source: str  # what it was read from, for messages: a variable or a file
    slots: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.slots)

    def host_words(self, workers: int | None = None) -> list[str]:
        """``--hosts`` words (``host*count``): every slot, or ``workers`` of them.

        ``workers`` below the slots fills hosts in turn, one worker at a time, up to
        each host's slots; above them, the extra workers go round the hosts in turn.
        """
        counts = Counter()
        if workers is None:
            counts.update(dict(self.slots))
        else:
            free = dict(self.slots)
            for host in itertools.islice(self._turns(free), workers):
                counts[host] += 1
        return [f"{host}*{counts[host]}" for host, _ in self.slots if counts[host]]

    def _turns(self, free: dict):
        """Hosts in turn while they have free slots; then every host in turn."""
        while any(free.values()):
            for host, _ in self.slots:
                if free[host]:
                    free[host] -= 1
                    yield host
        yield from itertools.cycle(host for host, _ in self.slots)

    def describe(self) -> str:
        return (f"{self.scheduler} allocation: {len(self.slots)} host(s), {self.total} slot(s) "
                f"({self.source})")


# The variable that names each scheduler's allocation, in the order detect() looks for them.
_VARIABLES = (("SLURM", "SLURM_JOB_NODELIST"), ("PBS", "PBS_NODEFILE"), ("SGE", "PE_HOSTFILE"))


def named(environ=None) -> str | None:
    """``SLURM allocation (SLURM_JOB_NODELIST=cn[01-03])``: the allocation the environment
    names, without reading it (a malformed one too); None outside a batch job."""
    environ = os.environ if environ is None else environ
    for scheduler, variable in _VARIABLES:
        if environ.get(variable):
            return f"{scheduler} allocation ({variable}={environ[variable]})"
    return None


def detect(environ=None) -> Allocation | None:
    """The allocation of the batch job this process runs in, or None outside one.

    Raises:
        AllocationError: the scheduler's variable or file is malformed.
    """
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_JOB_NODELIST"):
        return slurm(environ["SLURM_JOB_NODELIST"], environ.get("SLURM_TASKS_PER_NODE"))
    if environ.get("PBS_NODEFILE"):
        return pbs(environ["PBS_NODEFILE"])
    if environ.get("PE_HOSTFILE"):
        return sge(environ["PE_HOSTFILE"])
    return None


def slurm(nodelist: str, tasks_per_node: str | None) -> Allocation:
    """SLURM's node list and task counts (one slot per node when no counts are given)."""
    import hostlist  # python-hostlist: only inside a SLURM job

    try:
        hosts = hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as exc:
        raise _malformed("SLURM_JOB_NODELIST",
                         f"SLURM_JOB_NODELIST={nodelist!r} is not a SLURM host list: {exc}") from None
    if not hosts:
        raise _malformed("SLURM_JOB_NODELIST", f"SLURM_JOB_NODELIST={nodelist!r} names no host")
    counts = expand_tasks_per_node(tasks_per_node, len(hosts)) if tasks_per_node else [1] * len(hosts)
    return Allocation("SLURM", f"SLURM_JOB_NODELIST={nodelist}", tuple(zip(hosts, counts)))


def expand_tasks_per_node(text: str, hosts: int) -> list[int]:
    """``2(x3),4`` for 4 hosts -> ``[2, 2, 2, 4]``.

    Raises:
        AllocationError: a part is not a count like 4 or 2(x3) (both at least 1), or the
            counts are not one per host.
    """
    runs = []
    for part in text.split(","):
        match = _TASKS.match(part.strip())
        if not match or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
            raise _malformed("SLURM_TASKS_PER_NODE", f"SLURM_TASKS_PER_NODE={text!r}: {part!r} is not a "
                                                     "count like 4 or 2(x3), both at least 1")
        runs.append((int(match.group(1)), int(match.group(2) or 1)))
    # the total before the list: a repeat like 1(x99999999999) is refused, never built
    given = sum(repeat for _, repeat in runs)
    if given != hosts:
        raise _malformed("SLURM_TASKS_PER_NODE", f"SLURM_TASKS_PER_NODE={text!r} gives {given} count(s) "
                                                 f"for the {hosts} host(s) of SLURM_JOB_NODELIST")
    return [count for count, repeat in runs for _ in range(repeat)]


def pbs(path: str) -> Allocation:
    """PBS/Torque's node file: one line per slot, hosts in order of first appearance."""
    lines = _lines(path, "PBS_NODEFILE")
    return Allocation("PBS", f"PBS_NODEFILE={path}", _per_host((line.split()[0], 1) for _, line in lines))


def sge(path: str) -> Allocation:
    """SGE/UGE's PE_HOSTFILE: ``host slots queue processors`` per line."""
    slots = []
    for number, line in _lines(path, "PE_HOSTFILE"):
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise _malformed("PE_HOSTFILE", f"PE_HOSTFILE={path}:{number}: {line!r} is not "
                                            "'host slots queue processors'")
        slots.append((fields[0], int(fields[1])))
    # a host with slots in several queues has a line for each
    return Allocation("SGE", f"PE_HOSTFILE={path}", _per_host(slots))


def _per_host(slots) -> tuple[tuple[str, int], ...]:
    """``(host, slots)`` pairs summed per host, hosts in order of first appearance."""
    counts: Counter = Counter()
    for host, count in slots:
        counts[host] += count
    return tuple(counts.items())


def _lines(path: str, variable: str):
    try:
        with open(path, encoding="utf-8") as file:
            lines = [(n, line.strip()) for n, line in enumerate(file, 1) if line.strip()]
    except OSError as exc:
        raise _malformed(variable, f"{variable}={path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise _malformed(variable, f"{variable}={path}: is not a text file of host names "
                                   "(it holds bytes that are not UTF-8)") from None
    if not lines:
        raise _malformed(variable, f"{variable}={path} names no host")
    return lines


def _malformed(variable: str, problem: str) -> AllocationError:
    """The error for a malformed allocation: what is wrong, then the ways out."""
    return AllocationError(f"{problem}; fix or unset {variable}, or give --hosts/--hostfile")
