"""Bringing a cluster run's outputs home from the head node.

The upload records every file it copied with its size and mtime (a tar keeps
both). After the run, the head lists its copy of the working directory; what is
new or changed there, under the upload's ignore rules, comes back to the same
place here. The head's copy outlives a run, so each run's listing is kept on this
machine: a file an earlier run left there as it still is (one not fetched with
``--no-fetch`` or over the limit, one deleted here since) is not this run's output
and stays where it is. Files the run deleted are reported, never deleted here.
Past a size limit nothing is fetched and the largest files are named, as the
upload does.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dockkit.cluster.sync import ignore_spec
from dockkit.config import state_dir, write_private
from dockkit.errors import ClusterError

DEFAULT_FETCH_LIMIT = 200_000_000  # 200 MB, as `dockkit run --max-fetch` counts
LIST_NAME = "dockkit-fetch.list"

# Lists the head's copy of the working directory, symlinks left out, as NUL-ended records
# "SIZE MTIME PATH": find, not Python, whose start would cost the run 25 ms more.
_LIST_FILES = ["find", "{root}", "-type", "f", "-printf", r"%s %T@ %P\0"]

Manifest = dict[str, tuple[int, int]]  # relative path -> (size, whole-second mtime)


@dataclass
class FetchPlan:
    """What differs between the uploaded tree and the head's copy after the run."""

    changed: list[tuple[str, int]] = field(default_factory=list)  # (relative path, size)
    deleted: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(size for _, size in self.changed)


def plan_fetch(root: Path, uploaded: Manifest, on_head: Manifest, before: Manifest | None = None) -> FetchPlan:
    """The new and changed files to bring back, and the uploaded files the run deleted.

    ``before`` is the head's listing after the previous run from ``root``: a file
    still as it was then is not this run's output.
    """
    spec = ignore_spec(root)
    skipped = _skipped_directories(root, on_head)
    plan = FetchPlan()
    for rel, entry in sorted(on_head.items()):
        if uploaded.get(rel) == entry or (before or {}).get(rel) == entry or _ignored(spec, skipped, rel):
            continue
        plan.changed.append((rel, entry[0]))
    plan.deleted = sorted(rel for rel in uploaded if rel not in on_head)
    return plan


def _skipped_directories(root: Path, on_head: Manifest) -> set[str]:
    """The directories the upload's walk never takes, found in the head's listing:
    virtualenvs (by their ``pyvenv.cfg``) and this machine's state directory."""
    skipped = {rel.removesuffix("pyvenv.cfg") for rel in on_head if PurePosixPath(rel).name == "pyvenv.cfg"}
    state = state_dir().resolve()
    if root.resolve() in state.parents:
        skipped.add(state.relative_to(root.resolve()).as_posix() + "/")
    return skipped


def _ignored(spec, skipped: set[str], rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    dirs = ["/".join(parts[:i]) + "/" for i in range(1, len(parts))]  # as the upload's walk asks
    return spec.match_file(rel) or any(spec.match_file(d) or d in skipped for d in dirs)


def list_head(container, root: Path) -> Manifest:
    """The head's copy of ``root``, as ``{relative path: (size, mtime)}``."""
    result = container.exec_run([arg.format(root=root) for arg in _LIST_FILES], demux=True)
    stdout, stderr = result.output
    if result.exit_code != 0:
        raise ClusterError(f"could not list {root} in the head node: "
                           f"{(stderr or b'').decode(errors='replace').strip()}")
    return parse_listing(stdout or b"")


def parse_listing(listing: bytes) -> Manifest:
    """``{relative path: (size, whole-second mtime)}`` from the records of ``_LIST_FILES``."""
    manifest = {}
    for record in listing.split(b"\0")[:-1]:
        size, mtime, rel = record.split(b" ", 2)
        manifest[os.fsdecode(rel)] = (int(size), int(float(mtime)))
    return manifest


def previous_listing(path: Path, head_id: str) -> Manifest:
    """The listing :func:`save_listing` kept at ``path``, if the head is still the same container."""
    try:
        saved = json.loads(path.read_text())
        if saved["head"] != head_id:
            return {}  # a new head holds a fresh copy: nothing of the old one is in it
        return {rel: (size, mtime) for rel, (size, mtime) in saved["files"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # none yet, or unreadable: as for a first run, every difference comes home


def save_listing(path: Path, head_id: str, listing: Manifest) -> None:
    write_private(path, json.dumps({"head": head_id, "files": listing}))


def fetch_files(container, root: Path, paths: list[str]) -> None:
    """Copy ``paths`` (relative to ``root``) from the head node to ``root`` here.

    Each file is written beside its place and renamed into it, so an interrupted
    fetch leaves whole files only.
    """
    listing = io.BytesIO()
    data = b"\0".join(map(os.fsencode, paths)) + b"\0"
    with tarfile.open(fileobj=listing, mode="w") as tar:
        info = tarfile.TarInfo(LIST_NAME)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    container.put_archive("/tmp", listing.getvalue())
    result = container.exec_run(["tar", "-C", str(root), "-cf", "-", "--null", "-T", f"/tmp/{LIST_NAME}"],
                                demux=True)
    container.exec_run(["rm", "-f", f"/tmp/{LIST_NAME}"])
    stdout, stderr = result.output
    if result.exit_code != 0:
        raise ClusterError(f"could not pack the outputs in the head node: "
                           f"{(stderr or b'').decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(stdout or b"")) as tar:
        for member in tar:
            if member.isfile():
                _write_whole(root, member.name, tar.extractfile(member).read(), member.mtime)


def _write_whole(root: Path, rel: str, data: bytes, mtime: int) -> None:
    target = (root / rel).resolve()
    if root.resolve() not in target.parents:
        raise ClusterError(f"the head node sent {rel!r}, a path outside {root}")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.utime(temporary, (mtime, mtime))
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def summary(plan: FetchPlan, shown: int = 5) -> str:
    """``fetched 3 files (1.2 MB): results.csv, plots/a.png, …``"""
    names = [rel for rel, _ in plan.changed]
    more = ", …" if len(names) > shown else ""
    return (f"fetched {len(names)} file{'s' if len(names) != 1 else ''} ({plan.size / 1e6:.1f} MB): "
            f"{', '.join(names[:shown])}{more}")


def over_limit_message(plan: FetchPlan, limit: int) -> str:
    largest = sorted(plan.changed, key=lambda item: item[1])[-3:][::-1]
    names = ", ".join(f"{rel} ({size / 1e6:.1f} MB)" for rel, size in largest)
    return (f"not fetching the run's {len(plan.changed)} new or changed files: {plan.size / 1e6:.1f} MB is "
            f"over the {limit / 1e6:.0f} MB limit (largest: {names}). They stay in the head node "
            "until `dockkit down`: copy what you need with `dockkit cp node0:PATH .`, or raise "
            "the limit (--max-fetch MB)")
