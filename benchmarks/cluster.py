"""The optional Docker-cluster section: a hook, not yet a benchmark.

When ``dockkit.Cluster`` lands, this section will bring a cluster up, run the same
cases over its containers and take it down. Until then it reports why it was
skipped. It is kept apart from the local table on purpose: figures over a Docker
network are not comparable with the local pools.
"""

from __future__ import annotations

import subprocess
import sys

_CHECK = "import dockkit; dockkit.Cluster"


def section(env: dict[str, str]) -> dict:
    """Return ``{"status": "skipped", "reason": …}`` (the only status so far).

    The check runs in a child interpreter so that a half-written ``dockkit`` can
    never break the report.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": "importing dockkit.Cluster took over 60 s"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"exit {proc.returncode}"
        return {"status": "skipped", "reason": f"dockkit.Cluster is not importable ({why})"}
    return {"status": "skipped",
            "reason": "dockkit.Cluster is importable; the cluster cases are not written yet"}
