"""From raw runs to cells: medians, statuses, and the targets dockkit must meet.

A *cell* is one system on one case: its ``status`` (``ok``, ``too_slow``,
``unavailable``, ``error``, ``timeout``, ``skipped``), its ``runs`` (the figures of
each fresh process) and the ``median`` of every figure over the runs that finished.
Everything here is plain data, so the JSON file is these dicts as they are.
"""

from __future__ import annotations

import statistics

#: Statuses that say nothing against the system's code (not counted by ``--strict``).
BENIGN = {"ok", "too_slow", "unavailable", "skipped"}

#: The peers dockkit must beat a hundredfold on W1.
_HEAVY_PEERS = ("scoop", "dask", "ray")


def new_cell() -> dict:
    return {"status": "pending", "reason": None, "runs": [], "median": {}}


def add_run(cell: dict, result: dict) -> None:
    """Fold one child result (``status``, ``metrics``/``reason``) into ``cell``."""
    status = result["status"]
    if status == "ok":
        metrics = result["metrics"]
        cell["runs"].append(metrics)
        if metrics.get("too_slow"):
            cell["status"] = "too_slow"
        elif cell["status"] in ("pending", "error"):
            cell["status"] = "ok"
        return
    cell["reason"] = result.get("reason")
    if cell["runs"]:
        cell["failed_runs"] = cell.get("failed_runs", 0) + 1
    else:
        cell["status"] = status


def finish(cell: dict) -> dict:
    """Compute medians; a cell whose runs disagree on a yes/no keeps the worst."""
    runs = cell["runs"]
    if not runs:
        if cell["status"] == "pending":
            cell["status"] = "skipped"
        return cell
    median: dict = {}
    for key in runs[0]:
        values = [run[key] for run in runs if key in run]
        if all(isinstance(v, bool) for v in values):
            median[key] = all(values) if key == "supported" else any(values)
        elif all(isinstance(v, (int, float)) for v in values):
            median[key] = statistics.median(values)
        else:
            median[key] = values[-1]
    cell["median"] = median
    return cell


def figure(results: dict, case_id: str, system: str, key: str):
    """The median ``key`` of a cell, or ``None`` when the cell has none."""
    cell = results.get(case_id, {}).get(system)
    if not cell or cell["status"] not in ("ok", "too_slow"):
        return None
    return cell["median"].get(key)


def rss_growth(results: dict, system: str, small: str, large: str) -> float | None:
    """W7: peak root memory at the large stream minus at the small one (MB)."""
    low = figure(results, small, system, "peak_rss_mb")
    high = figure(results, large, system, "peak_rss_mb")
    complete = all(
        results.get(c, {}).get(system, {}).get("status") == "ok" for c in (small, large)
    )
    if low is None or high is None or not complete:
        return None
    return high - low


def _verdict(value, threshold, higher_is_better=True) -> bool | None:
    if value is None or threshold is None:
        return None
    return value >= threshold if higher_is_better else value <= threshold


def targets(results: dict, stream_cases: list[str]) -> list[dict]:
    """The issue's targets, resolved against this run's peer figures.

    Returns:
        One dict per target: ``workload``, ``row`` (the table row it sits beside),
        ``goal`` (the text), ``threshold`` (the number it became, or ``None``),
        ``value`` (dockkit's) and ``met`` (``True``/``False``/``None`` = not known).
    """
    rows = []

    def add(workload, row, goal, threshold, value, higher=True, note="", derived=False):
        rows.append(
            {"workload": workload, "row": row, "goal": goal, "threshold": threshold,
             "value": value, "met": _verdict(value, threshold, higher), "higher": higher,
             "derived": derived, "note": note}
        )

    w1 = {p: figure(results, "W1", p, "tasks_per_s") for p in ("pool", *_HEAVY_PEERS)}
    missing = [p for p, v in w1.items() if v is None]
    heavy = [w1[p] for p in _HEAVY_PEERS if w1[p] is not None]
    bars = ([w1["pool"]] if w1["pool"] else []) + ([100 * max(heavy)] if heavy else [])
    add("W1", "W1:tasks_per_s", "≥ Pool.map and ≥ 100× SCOOP/Dask/Ray",
        max(bars) if bars else None, figure(results, "W1", "dockkit", "tasks_per_s"),
        note=f"without {', '.join(missing)}" if missing and bars else "", derived=True)
    if "W1-1M" in results:  # the same bar without the noise (the slow peers stop at the budget)
        pool_large = figure(results, "W1-1M", "pool", "tasks_per_s")
        add("W1", "W1-1M:tasks_per_s", "≥ Pool.map", pool_large,
            figure(results, "W1-1M", "dockkit", "tasks_per_s"), derived=True)
    add("W2", "W2:efficiency", "efficiency ≥ 0.95", 0.95,
        figure(results, "W2", "dockkit", "efficiency"))
    pool_w3 = figure(results, "W3", "pool", "efficiency")
    add("W3", "W3:efficiency", "≥ 0.98 × Pool's efficiency",
        0.98 * pool_w3 if pool_w3 else None, figure(results, "W3", "dockkit", "efficiency"),
        derived=True)
    pool_w4 = figure(results, "W4", "pool", "mb_per_s")
    add("W4", "W4:mb_per_s", "≥ 2× Pool.map",
        2 * pool_w4 if pool_w4 else None, figure(results, "W4", "dockkit", "mb_per_s"),
        derived=True)
    add("W5", "W5:seconds", "≤ 0.15 s", 0.15,
        figure(results, "W5", "dockkit", "seconds"), higher=False)
    for case_id in ("W6-lambda", "W6-closure"):
        supported = figure(results, case_id, "dockkit", "supported")
        add("W6", f"{case_id}:supported", "yes", True, supported,
            note="" if supported is not None else "not measured")
    if len(stream_cases) >= 2:
        growth = rss_growth(results, "dockkit", stream_cases[0], stream_cases[-1])
        add("W7", "W7:rss_growth", "root memory within 50 MB from the smallest "
            "to the largest stream", 50.0, growth, higher=False)
    return rows


def strict_failures(results: dict, available: set[str]) -> list[str]:
    """Cells of available systems that crashed or hung (W6 "no" is an answer, not one)."""
    bad = []
    for case_id, cells in results.items():
        for system, cell in cells.items():
            if system in available and (cell["status"] not in BENIGN or cell.get("failed_runs")):
                bad.append(f"{system} {case_id}: {cell['status']}: {cell.get('reason')}")
    return bad
