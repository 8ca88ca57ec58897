"""Where the suite lives, and the environment its child processes run in.

Kept apart so that the orchestration (:mod:`benchmarks.run`) and the cluster section
(:mod:`benchmarks.cluster`) share it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    """This process's environment, with the repository importable and output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a benchmark
    return env


def store_section(key: str, measure) -> None:
    """``python -m benchmarks.<section> [docs/benchmarks.json]``: measure one section alone
    and store it into a saved run (then redraw with ``python -m benchmarks --from-json``)."""
    import json
    import sys

    path = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "benchmarks.json")
    data = json.loads(path.read_text())
    data[key] = measure(child_env())
    path.write_text(json.dumps(data, indent=1))
    print(json.dumps(data[key], indent=1))
