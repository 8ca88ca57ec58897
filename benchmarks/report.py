"""The report: one table (rich on the terminal, Markdown in the docs), JSON, chart.

Rows are the figures, columns the systems, and the last two columns dockkit's target
and whether it is met. A cell that has no figure says why through a numbered note
under the table: not installed, crashed, timed out, too slow, skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks import results as res

STEM = "benchmarks"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def rate(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def seconds(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def ratio(v: float) -> str:
    return f"{v:.3f}"


def whole(v: float) -> str:
    return f"{v:,.0f}"


def yes_no(v: bool) -> str:
    return "yes" if v else "no"


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure (``key``) of a case, or a derived one."""

    key: str  # "<case id>:<metric>", the same key the targets use
    label: str
    fmt: Callable

    @property
    def case_id(self) -> str:
        return self.key.split(":")[0]

    @property
    def metric(self) -> str:
        return self.key.split(":")[1]


def rows_for(data: dict) -> list[Row]:
    cases = {c["id"]: c for c in data["cases"]}
    rows = []
    size = {case_id: whole(c["size"]) for case_id, c in cases.items()}
    for case_id in ("W1", "W1-1M"):
        if case_id in cases:
            rows.append(Row(f"{case_id}:tasks_per_s", f"W1 tiny · {size[case_id]} tasks · tasks/s", rate))
    if "W2" in cases:
        on = f"{size['W2']} on {cases['W2']['workers']}"
        rows.append(Row("W2:seconds", f"W2 sleep 10 ms · {on} · s", seconds))
        rows.append(Row("W2:efficiency", "W2 · efficiency", ratio))
    if "W3" in cases:
        rows.append(Row("W3:efficiency", f"W3 cpu 10 ms · {size['W3']} calls · efficiency", ratio))
    if "W4" in cases:
        rows.append(Row("W4:mb_per_s", f"W4 {size['W4']} × 1 MiB · MB/s", whole))
    if "W5" in cases:
        rows.append(Row("W5:seconds", "W5 startup to first result · s", seconds))
    for case_id in ("W6-lambda", "W6-closure"):
        if case_id in cases:
            label = f"W6 {cases[case_id]['title']} from __main__"
            rows.append(Row(f"{case_id}:supported", label, yes_no))
    streams = [c for c in data["cases"] if c["workload"] == "W7"]
    for c in streams:
        rows.append(Row(f"{c['id']}:items_per_s", f"W7 {c['title']} · items/s", rate))
        rows.append(Row(f"{c['id']}:peak_rss_mb", f"W7 {c['title']} · root peak RSS MB", whole))
    if len(streams) >= 2:
        rows.append(Row("W7:rss_growth", f"W7 RSS growth {streams[0]['title'][7:]}→"
                        f"{streams[-1]['title'][7:]} · MB", whole))
    return rows


class Notes:
    """Numbered footnotes, one per distinct text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def _cell_text(data: dict, row: Row, system: str, notes: Notes) -> str:
    label = data["systems"][system]["label"]
    cells = data["results"]
    if row.key == "W7:rss_growth":
        ids = [c["id"] for c in data["cases"] if c["workload"] == "W7"]
        growth = res.rss_growth(cells, system, ids[0], ids[-1])
        return "—" if growth is None else whole(growth)
    cell = cells[row.case_id][system]
    status, reason = cell["status"], cell.get("reason")
    if status == "unavailable":
        return "n/a"
    if status in ("error", "timeout", "skipped"):
        return f"{status} {notes.ref(_about(label, reason))}"
    if status == "too_slow":
        return _too_slow(data, row, label, cell["median"], notes)
    value = cell["median"].get(row.metric)
    if value is None:
        return "—"
    text = row.fmt(value)
    if row.metric == "supported" and not value:
        text += " " + notes.ref(_about(label, _why_not(cell)))
    if cell.get("failed_runs"):
        failed = f"{cell['failed_runs']} run(s) failed, the median is of the rest"
        text += " " + notes.ref(f"{label} {row.case_id}: {failed}: {reason}")
    return text


def _too_slow(data: dict, row: Row, label: str, m: dict, notes: Notes) -> str:
    """A run stopped past its budget: W7 with the rate it had reached, W1 with the
    rate it stayed under (its map never returned, so nothing else is known)."""
    case = next(c for c in data["cases"] if c["id"] == row.case_id)
    stopped = f"{label} {row.case_id}: too slow, stopped past the {case['budget']:.0f} s budget"
    if row.metric == "items_per_s" and row.metric in m:
        note = f"{stopped} with {whole(m['items'])} items in {m['seconds']:.0f} s; longer streams skipped"
        return f"{rate(m[row.metric])} too slow {notes.ref(note)}"
    if row.metric == "tasks_per_s" and "tasks_per_s_below" in m:
        note = (f"{stopped}: its map of {whole(case['size'])} tasks had not returned after "
                f"{m['seconds']:.0f} s")
        return f"< {rate(m['tasks_per_s_below'])} too slow {notes.ref(note)}"
    return "—"


def _about(label: str, reason: str | None) -> str:
    """A note's text: same reason, same note (object addresses do not count)."""
    reason = re.sub(r" at 0x[0-9a-f]+", "", reason or "no reason given")
    return reason if reason.startswith("--quick") else f"{label}: {reason}"


def _why_not(cell: dict) -> str:
    return next((r.get("reason") for r in cell["runs"] if r.get("reason")), "no reason given")


def _target_texts(data: dict, row: Row) -> tuple[str, str]:
    target = next((t for t in data["targets"] if t["row"] == row.key), None)
    if target is None:
        return "", ""
    goal, threshold = target["goal"], target["threshold"]
    if target["derived"] and threshold is not None:
        goal += f" (→ {'≥' if target['higher'] else '≤'} {row.fmt(threshold)})"
    if target["note"]:
        goal += f" ({target['note']})"
    met = {True: "yes", False: "no", None: "n/a"}[target["met"]]
    return goal, met


def table_data(data: dict) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body rows and notes of the one table, as plain strings."""
    systems = list(data["systems"])
    notes = Notes()
    header = ["figure", *(data["systems"][s]["label"] for s in systems), "dockkit target", "met?"]
    version = ["version"]
    for s in systems:
        info = data["systems"][s]
        if info["available"]:
            version.append(info["version"])
        else:
            version.append(f"not available {notes.ref(_about(info['label'], info['reason']))}")
    body = [version + ["", ""]]
    for row in rows_for(data):
        body.append([row.label, *(_cell_text(data, row, s, notes) for s in systems),
                     *_target_texts(data, row)])
    return header, body, notes.texts


def print_report(data: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    header, body, notes = table_data(data)
    meta = data["meta"]
    table = Table(title=f"dockkit benchmarks — median of {meta['reps']} fresh-process run(s), "
                  f"{meta['cpus']} CPUs, Python {meta['python']}",
                  caption="\n".join(f"[{i}] {text}" for i, text in enumerate(notes, 1)) or None,
                  caption_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 or i >= len(header) - 2 else "right",
                         style="bold" if name == "dockkit" else None, overflow="fold")
    for line in body:
        met = line[-1]
        styled = line[:-1] + [{"yes": "[green]yes[/]", "no": "[red]no[/]"}.get(met, met)]
        table.add_row(*styled)
    console.print(table)
    console.print(f"Cluster (Docker): {data['cluster']['status']}: {data['cluster']['reason']}")
    engines = data.get("engines", {"status": "not measured", "reason": "an older run"})
    console.print(f"Over separate engines: {engines['status']}: {engines['reason']}")
    scale = data.get("scale", {"status": "not measured", "reason": "an older run"})
    console.print(f"Scale: {scale['status']}: {scale['reason']}")
    console.print(f"Written: {_shown(out)}/{STEM}.json, .png, .md")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def md_escape(text: str) -> str:
    """Plain text as Markdown shows it: no stray emphasis, tags or column breaks."""
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("_", "\\_"), ("*", "\\*"),
                          ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text


def markdown_table(data: dict) -> str:
    header, body, notes = table_data(data)

    def line(cells):
        return "| " + " | ".join(map(md_escape, cells)) + " |"

    align = ["---"] + ["---:"] * (len(header) - 3) + ["---", "---"]
    text = [line(header), "| " + " | ".join(align) + " |", *map(line, body)]
    if notes:
        text += ["", *(f"[{i}] {md_escape(note)}  " for i, note in enumerate(notes, 1))]
    return "\n".join(text)


def write_all(data: dict, out: Path) -> None:
    """Write ``benchmarks.json``, ``benchmarks.png`` (if matplotlib is there) and ``.md``."""
    from benchmarks import chart, markdown

    out.mkdir(parents=True, exist_ok=True)
    data["meta"]["chart"] = chart.draw(data, out / f"{STEM}.png")
    data["meta"]["scale_chart"] = chart.draw_scale(data.get("scale", {}), out / f"{STEM}-scale.png")
    (out / f"{STEM}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (out / f"{STEM}.md").write_text(markdown.render(data, markdown_table(data)))
