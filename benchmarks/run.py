"""Orchestration: every system × case × repetition in a fresh process, then one report.

    python -m benchmarks [--quick] [--reps N] [--systems a,b] [--workloads W1,W4] [--table-only]

Data flow::

    probe each system once (import + version, in parallel child processes)
      │
      ▼
    for rep → case → system:            (interleaved, so drift hits every system alike)
      child.py --system S --case C      (SCOOP: python -m scoop -n N child.py …)
        └─ one "@@bench-result@@ {json}" line ──► results.add_run
      │
      ▼
    results.finish (medians) → results.targets → report (rich table, markdown) + chart

Each child runs in its own session and its whole process group is killed after it
(:mod:`benchmarks.spawn`), so a hung peer or a leftover worker never reaches the next
measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cluster, engines, report, results, scale
from benchmarks.child import RESULT_MARK
from benchmarks.env import ROOT, child_env
from benchmarks.spawn import CHILD, child_command, last_line, portable, run_child
from benchmarks.systems import SYSTEMS
from benchmarks.workloads import WORKLOADS, Case, build_cases

DOCS = ROOT / "docs"
SCRATCH = ROOT / "benchmarks" / "results"

#: ``--quick`` starts no run this many seconds after its own start, so a smoke test
#: that finds the heavy peers installed still ends within a minute, report included.
QUICK_DEADLINE_S = 40.0
PROBE_TIMEOUT_S = 120.0


def _csv(choices):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(choices)}"
            )
        return [c for c in choices if c in names]

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="dockkit side by side with its peers; every figure is the median of "
        "fresh-process runs.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one repetition, tiny sizes, under a minute")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per cell (default 5)")
    parser.add_argument("--systems", type=_csv(list(SYSTEMS)), default=list(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--workloads", type=_csv(list(WORKLOADS)), default=list(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write benchmarks.{json,png,md} (default: docs/ for a "
                        "complete run, benchmarks/results/ otherwise)")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: redraw the table, chart and page of a saved run")
    parser.add_argument("--table-only", action="store_true",
                        help="measure the local table alone, skipping the Docker cluster, engines "
                        "and scale sections (each runs alone: python -m benchmarks.<section>)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when an installed system crashes or hangs on a case")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.quick:
        args.reps = 1
    return args


def probe_all(names: list[str], env: dict[str, str]) -> dict[str, dict]:
    """Import every library once, in parallel, for availability and versions."""
    import json

    procs = {
        name: subprocess.Popen([sys.executable, str(CHILD), "--probe", name], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    }
    found = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            found[name] = {"status": "unavailable",
                           "reason": f"import took over {PROBE_TIMEOUT_S:.0f} s"}
            continue
        lines = [line for line in out.splitlines() if line.startswith(RESULT_MARK)]
        found[name] = (json.loads(lines[-1][len(RESULT_MARK):]) if lines else
                       {"status": "unavailable", "reason": last_line(err)})
        if found[name].get("reason"):
            found[name]["reason"] = portable(found[name]["reason"])
        if found[name]["status"] == "error":
            found[name]["status"] = "unavailable"
    return found


def plan(cases: list[Case], systems: list[str], reps: int, quick: bool):
    """The runs in order: rep → case → system; ``--quick`` goes system by system
    instead, lightest first, so its deadline trims the heaviest peers, never dockkit."""
    if quick:
        light_first = sorted(systems, key=lambda s: SYSTEMS[s].start_cost)
        return [(0, case, s) for s in light_first for case in cases]
    return [(rep, case, s) for rep in range(reps) for case in cases
            for s in systems if rep == 0 or case.repeat]


def _blocks(case: Case, result: dict, stream_cases: list[Case]) -> tuple[list[str], str] | None:
    """Cases to skip for this system after ``result``, and why (hangs aren't retried)."""
    status = result["status"]
    too_slow = status == "ok" and result["metrics"].get("too_slow")
    if status != "timeout" and not too_slow:
        return None
    why = "too slow" if too_slow else "timed out"
    later = [c.id for c in stream_cases if c.size > case.size] if case.workload == "W7" else []
    return [case.id, *later], f"{why} at {case.id}"


def measure_all(args, cases, env, available, cells, deadline: float | None) -> None:
    """Run the plan, folding every child's result into ``cells``."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    stream_cases = [c for c in cases if c.workload == "W7"]
    runs = [r for r in plan(cases, args.systems, args.reps, args.quick) if r[2] in available]
    blocked: dict[tuple[str, str], str] = {}
    out_of_time = f"--quick starts no run after {QUICK_DEADLINE_S:.0f} s"
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task("benchmarks", total=len(runs))
        for rep, case, system in runs:
            progress.update(task, description=f"{case.id:<10} {system:<12} rep {rep + 1}")
            progress.advance(task)
            cell = cells[case.id][system]
            timeout = case.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            if (system, case.id) in blocked or timeout < 1:
                cell["reason"] = cell["reason"] or blocked.get((system, case.id), out_of_time)
                continue
            result = run_child(child_command(system, case, args.quick), timeout, env,
                               launched=SYSTEMS[system].launched)
            if result["status"] == "timeout" and timeout < case.timeout:
                result = {"status": "skipped", "reason": out_of_time}
            results.add_run(cell, result)
            block = _blocks(case, result, stream_cases)
            for case_id in block[0] if block else []:
                blocked[(system, case_id)] = block[1]


def assemble(args, argv, cases, probes, cells, wall_s: float, env) -> dict:
    """Everything the report and ``benchmarks.json`` hold."""
    available = {s for s, p in probes.items() if p["status"] == "ok"}
    complete = (not args.quick and not args.table_only and args.systems == list(SYSTEMS)
                and args.workloads == list(WORKLOADS))
    given = argv if argv is not None else sys.argv[1:]
    data = {
        "meta": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python -m benchmarks", *given]),
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "cpu": report.cpu_model(),
            "cpus": os.cpu_count(),
            "reps": args.reps,
            "quick": args.quick,
            "complete": complete,
            "wall_s": round(wall_s, 1),
        },
        "systems": {
            s: {"label": SYSTEMS[s].label, "available": s in available,
                "version": probes[s].get("version"), "reason": probes[s].get("reason"),
                "map_api": SYSTEMS[s].map_api, "stream_api": SYSTEMS[s].stream_api}
            for s in args.systems
        },
        "cases": [case._asdict() for case in cases],
        "results": cells,
        **{name: ({"status": "skipped", "reason": "not part of a --table-only run"}
                  if args.table_only else module.section(env, quick=args.quick))
           for name, module in (("cluster", cluster), ("engines", engines), ("scale", scale))},
    }
    data["targets"] = results.targets(cells, [c.id for c in cases if c.workload == "W7"])
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        import json

        data = json.loads(args.from_json.read_text())
        streams = [c["id"] for c in data["cases"] if c["workload"] == "W7"]
        data["targets"] = results.targets(data["results"], streams)
        out = args.out or args.from_json.parent
        report.write_all(data, out)
        report.print_report(data, out)
        return 0
    started = time.monotonic()
    cases = [c for c in build_cases(args.quick) if c.workload in args.workloads]
    env = child_env()
    probes = probe_all(args.systems, env)
    available = {s for s, p in probes.items() if p["status"] == "ok"}
    cells = {c.id: {s: results.new_cell() for s in args.systems} for c in cases}
    for case in cases:
        for system in set(args.systems) - available:
            cells[case.id][system].update(status="unavailable", reason=probes[system]["reason"])

    deadline = started + QUICK_DEADLINE_S if args.quick else None
    measure_all(args, cases, env, available, cells, deadline)
    for row in cells.values():
        for cell in row.values():
            results.finish(cell)
    data = assemble(args, argv, cases, probes, cells, time.monotonic() - started, env)

    out = args.out or (DOCS if data["meta"]["complete"] else SCRATCH)
    report.write_all(data, out)
    report.print_report(data, out)
    failures = results.strict_failures(cells, available)
    if args.strict and failures:
        print("\n".join(["--strict: these runs crashed or hung:", *failures]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
