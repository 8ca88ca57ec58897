"""``python -m benchmarks.chaos`` (``make chaos``): faults injected into real runs, and a page of how they went.

    python -m benchmarks.chaos [--faults worker-kill,flood,…] [--out docs/reliability.md]

Each fault (see :mod:`benchmarks.faults`) runs ``CHAOS_TRIALS`` times per setting
of ``max_retries`` (default: 20 for local faults, 5 for faults that need Docker
containers), every trial in fresh processes. The local faults come first; the
Docker ones share one cluster, made for them and removed after them (those that
need a memory limit, a small one of their own; those that need another context,
such as a Docker Engine to lose, that context). The page,
``docs/reliability.md``, is written whole from the outcomes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import dockkit
from benchmarks.env import ROOT
from benchmarks.faults import cluster, engines, flood, local, ssh, up
from benchmarks.faults.report import FaultResult, page, table
from benchmarks.faults.trial import Fault

LOCAL_TRIALS = 20
DOCKER_TRIALS = 5
FAULTS: list[Fault] = [*local.FAULTS, flood.FAULT, flood.CURVE_FAULT, *cluster.FAULTS, *ssh.FAULTS, *up.FAULTS,
                       engines.FAULT]
UNMEASURED = [
    "Delayed packets: this kernel has no `tc netem`, so a bad link is measured as lost packets "
    "(which TCP's retransmissions turn into delays), a cut and a pause.",
]


def trial_counts() -> tuple[int, int]:
    """(local, Docker) trials per fault and setting: ``CHAOS_TRIALS`` sets both."""
    override = os.environ.get("CHAOS_TRIALS")
    if override:
        return int(override), int(override)
    return LOCAL_TRIALS, DOCKER_TRIALS


def run_fault(fault: Fault, trials: int, *context) -> FaultResult:
    """``trials`` trials of ``fault`` per setting; ``context`` goes first to each (the cluster)."""
    result = FaultResult(fault)
    for setting in fault.retries:
        started = time.perf_counter()
        result.outcomes[setting] = [fault.trial(*context, setting) for _ in range(trials)]
        print(f"chaos: {fault.key} max_retries={setting}: {trials} trial(s) in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return result


def run_suite(faults: list[Fault], local_trials: int, docker_trials: int) -> list[FaultResult]:
    results = [run_fault(fault, local_trials) for fault in faults if not fault.docker]
    # one section's cluster per memory limit the Docker faults need (most need none), and one
    # context of each kind the others need instead
    for needs in dict.fromkeys((fault.context, fault.memory) for fault in faults if fault.docker):
        docker_faults = [fault for fault in faults if fault.docker and (fault.context, fault.memory) == needs]
        context, memory = needs
        try:
            with context() if context else cluster.ChaosCluster(memory=memory) as nodes:
                results += [run_fault(fault, docker_trials, nodes) for fault in docker_faults]
        except cluster.ClusterUnavailable as exc:
            results += [FaultResult(fault, skipped=str(exc)) for fault in docker_faults]
    return results


def _select(text: str) -> list[Fault]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    known = {fault.key: fault for fault in FAULTS}
    unknown = [key for key in keys if key not in known]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown) or 'empty list'}; "
                                         f"choose from {', '.join(known)}")
    return [fault for fault in FAULTS if fault.key in keys]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=_select, default=FAULTS,
                        help=f"comma-separated subset of {','.join(f.key for f in FAULTS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    local_trials, docker_trials = trial_counts()
    started = time.perf_counter()
    results = run_suite(args.faults, local_trials, docker_trials)
    wall = time.perf_counter() - started
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "version": dockkit.__version__, "python": platform.python_version(),
            "local": local_trials, "docker": docker_trials, "wall": f"{wall // 60:.0f} min {wall % 60:.0f} s",
            "unmeasured": [fault.title + ": not part of this run (--faults)" for fault in FAULTS
                           if fault not in args.faults] + UNMEASURED}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(results, meta))
    print(table(results))
    print(f"chaos: wrote {args.out} in {meta['wall']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
