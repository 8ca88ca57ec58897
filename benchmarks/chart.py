"""The charts (matplotlib, optional): one small panel per workload, one bar per system;
and the scale section's figures against the number of workers."""

from __future__ import annotations

from pathlib import Path

from benchmarks import results as res

_COLORS = {"dockkit": "#d62728", "pool": "#1f77b4", "processpool": "#6baed6", "loky": "#9467bd",
           "dask": "#ff7f0e", "ray": "#2ca02c", "scoop": "#8c564b"}

# (case id, metric, title, log scale, target line or None)
_PANELS = [
    ("W1", "tasks_per_s", "W1 tiny tasks · tasks/s (higher is better)", True, None),
    ("W1-1M", "tasks_per_s", "W1 tiny tasks, large · tasks/s", False, None),
    ("W2", "efficiency", "W2 sleep 10 ms · efficiency", False, 0.95),
    ("W3", "efficiency", "W3 cpu 10 ms · efficiency", False, None),
    ("W4", "mb_per_s", "W4 1 MiB payloads · MB/s", True, None),
    ("W5", "seconds", "W5 startup to first result · s (lower is better)", True, 0.15),
]


def _status(data: dict, case_id: str, system: str) -> str:
    cell = data["results"].get(case_id, {}).get(system)
    return cell["status"] if cell else "skipped"


def _bars(ax, data, case_id, metric, log, target) -> None:
    systems = list(data["systems"])
    labels = [data["systems"][s]["label"] for s in systems]
    values = [res.figure(data["results"], case_id, s, metric) for s in systems]
    for i, (system, value) in enumerate(zip(systems, values)):
        if value is None or (log and value <= 0):
            status = _status(data, case_id, system).replace("_", " ")
            ax.text(i, 0.02, status, rotation=90, ha="center", va="bottom", fontsize=7,
                    color="grey", transform=ax.get_xaxis_transform())
            continue
        ax.bar(i, value, color=_COLORS.get(system, "grey"))
    if log and any(v for v in values if v):
        ax.set_yscale("log")
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
        ax.annotate("target", (len(systems) - 0.5, target), fontsize=7, ha="right", va="bottom")
    ax.set_xticks(range(len(systems)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(systems) - 0.4)
    ax.tick_params(axis="y", labelsize=8)


def _streams(ax, data, metric, title, log) -> None:
    streams = [c["id"] for c in data["cases"] if c["workload"] == "W7"]
    systems = list(data["systems"])
    width = 0.8 / max(len(streams), 1)
    for j, case_id in enumerate(streams):
        for i, system in enumerate(systems):
            value = res.figure(data["results"], case_id, system, metric)
            partial = _status(data, case_id, system) != "ok"  # stopped by the budget
            if value is None or (partial and metric != "items_per_s"):
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, value, width * 0.95, color=_COLORS.get(system, "grey"),
                   alpha=1.0 - 0.45 * j, label=case_id if i == 0 else None)
            if partial:
                ax.annotate("too slow", (x, value), fontsize=6, ha="center", va="bottom",
                            rotation=90, color="grey")
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(systems)), [data["systems"][s]["label"] for s in systems],
                  rotation=35, ha="right", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=7, title="lighter = longer", title_fontsize=6)


def _lambdas(ax, data) -> None:
    ax.axis("off")
    ax.set_title("W6 map a lambda / closure from __main__", fontsize=9)
    lines = []
    for system, info in data["systems"].items():
        answers = []
        for case_id in ("W6-lambda", "W6-closure"):
            value = res.figure(data["results"], case_id, system, "supported")
            answers.append("n/a" if value is None else ("yes" if value else "no"))
        lines.append(f"{info['label']:<12} {answers[0]:>4} / {answers[1]}")
    ax.text(0.02, 0.95, "\n".join(lines), family="monospace", fontsize=8, va="top",
            transform=ax.transAxes)


def draw(data: dict, path: Path) -> str:
    """Draw the chart to ``path``; return what happened, for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"not drawn: {exc} (pip install the 'bench' extra)"
    present = {c["id"] for c in data["cases"]}
    fig, axes = plt.subplots(3, 3, figsize=(13, 12))
    axes = list(axes.flat)
    sizes = {c["id"]: c["size"] for c in data["cases"]}
    for ax, (case_id, metric, title, log, target) in zip(axes, _PANELS):
        if case_id in present:
            ax.set_title(title.replace("large", f"{sizes[case_id]:,}"), fontsize=9)
            _bars(ax, data, case_id, metric, log, target)
        else:
            ax.axis("off")
    streams = axes[len(_PANELS):]
    if any(c["workload"] == "W7" for c in data["cases"]):
        _streams(streams[0], data, "items_per_s", "W7 stream · items/s", True)
        _streams(streams[1], data, "peak_rss_mb", "W7 stream · root peak RSS MB (complete runs)",
                 False)
    else:
        streams[0].axis("off")
        streams[1].axis("off")
    _lambdas(streams[2], data)
    meta = data["meta"]
    fig.suptitle(f"dockkit and its peers — median of {meta['reps']} fresh-process run(s), "
                 f"{meta['cpus']} CPUs, Python {meta['python']} ({meta['date']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "drawn"


# (series, label, where, system, line style)
_SCALE_SERIES = [
    ("dockkit", "dockkit, local", "local", "dockkit", "-o"),
    ("pool", "mp.Pool, local", "local", "pool", "--s"),
    ("cluster", "dockkit, Docker cluster (4 workers a node)", "cluster", "dockkit", ":^"),
]


def draw_scale(scale: dict, path: Path) -> str:
    """Draw the scale section to ``path``: tasks/s and efficiency against workers."""
    from benchmarks.scale import lines

    if scale.get("status") != "measured":
        return "not drawn: the section was not measured"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"not drawn: {exc} (pip install the 'bench' extra)"
    points = lines(scale)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [("W1", "W1 tiny tasks · tasks/s", True), ("W2", "W2 sleep 10 ms · efficiency", False)]
    for ax, (workload, title, log) in zip(axes, panels):
        for series, label, where, system, style in _SCALE_SERIES:
            shown = [(p["workers"], p[f"{system}:{workload}"]) for p in points
                     if p["where"] == where and p[f"{system}:{workload}"] is not None]
            if shown:
                xs, ys = zip(*sorted(shown))
                ax.plot(xs, ys, style, color=_COLORS.get(system if where == "local" else "ray"),
                        label=label)
        ax.set_xscale("log", base=2)
        workers = sorted({p["workers"] for p in points})
        ax.set_xticks(workers, [str(n) for n in workers], fontsize=8)
        ax.set_xlabel("workers", fontsize=9)
        if log:
            ax.set_yscale("log")
        else:
            ax.axhline(0.95, color="black", linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("dockkit against the number of workers, on this machine's "
                 "cores (local pools and containers alike)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "drawn"
