"""Strangers flood the broker's port while maps run; none may get in.

    python -m benchmarks.faults.flood LOG SCRATCH [plain|curve]    (one trial's run; prints CHAOS {json})

What the flood sends, and around which maps, is said in :data:`FAULT` (the report's
words); :data:`CURVE_FAULT` floods a broker that encrypts with CurveZMQ, as SSH and
cluster runs do, forced here with ``Executor(encrypt=True)``. A stranger counts as accepted if any reply reaches it, or if the broker
lists it among its workers or agents; the broker's own log says how many
handshakes it refused. The intruders are those of ``tests/unit/test_security.py``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import pickle
import re
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import zmq

import dockkit
from benchmarks.faults.job import REPORT_MARK, record
from benchmarks.faults.trial import Fault, Outcome, Trial
from dockkit.runtime import protocol as P
from tests.unit.test_security import hello, raw_dealer, send_unless_refused, submit_touch

WORKERS = 4
MIN_FRAMES = 10_000
FRAMES_PER_CONNECTION = 100
MAP_ITEMS = 2_000
MIN_SECONDS = 1.0
#: ZMTP 3.0 greeting of a NULL-mechanism client: a mechanism the broker does not speak.
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\x00" + bytes(31)
REFUSED_ONE = re.compile(r"refused a connection from ")
REFUSED_SUM = re.compile(r"\((\d+) in all\)")


class Trap:
    """Pickles into a payload whose unpickling creates ``path``: proof that someone unpickled it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def zmtp_frame(body: bytes, more: bool) -> bytes:
    flags = int(more)
    if len(body) < 256:
        return bytes([flags, len(body)]) + body
    return bytes([flags | 2]) + struct.pack("!Q", len(body)) + body


class Flood(threading.Thread):
    """The flooding thread: strangers of every kind, in turn, until stopped and MIN_FRAMES are out."""

    def __init__(self, address: str, scratch: Path, *, server_key: bytes | None = None):
        super().__init__(name="chaos-flood", daemon=True)
        host, port = address.rsplit("//", 1)[1].rsplit(":", 1)
        self._target = (host.strip("[]"), int(port))
        self._address = address
        self._server_key = server_key  # a CURVE broker's public key: strangers may know it
        self._trap = pickle.dumps(Trap(scratch / "unpickled"))
        self._ran_marker = scratch / "ran"
        self._stop_flooding = threading.Event()
        self.started_at = 0.0
        self.frames = self.connections = self.replies = 0
        self.strangers: set[bytes] = set()

    def run(self) -> None:
        self.started_at = time.monotonic()
        context = zmq.Context()
        try:
            while not self._stop_flooding.is_set() or self.frames < MIN_FRAMES:
                for greeting in (GREETING, os.urandom(len(GREETING))):
                    self._raw_connection(greeting)
                self._dealer(context, user=P.AUTH_USER, password=b"not-the-secret")
                if self._server_key:
                    self._dealer(context, curve=self._server_key)
                else:
                    self._dealer(context)
        finally:
            context.destroy(linger=0)

    def stop(self) -> None:
        self._stop_flooding.set()
        self.join()

    def _raw_connection(self, greeting: bytes) -> None:
        frames = [self._trap if i % 2 else os.urandom(64) for i in range(FRAMES_PER_CONNECTION)]
        stream = greeting + b"".join(zmtp_frame(f, more=i % 10 != 9) for i, f in enumerate(frames))
        try:
            with socket.create_connection(self._target, timeout=2) as sock:
                self.connections += 1
                sock.sendall(stream)
                self.frames += len(frames)
        except OSError:  # the broker hung up first: what it should do
            pass

    def _dealer(self, context: zmq.Context, *, curve: bytes | None = None, **credentials) -> None:
        if curve:  # a CURVE client with keys of its own, not the run's
            sock = context.socket(zmq.DEALER)
            sock.curve_serverkey = curve
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.connect(self._address)
        else:
            sock = raw_dealer(context, self._address, **credentials)
        sock.sndtimeo = 0  # refused peers can't take messages: a flood moves on at once
        self.connections += 1
        self.strangers.add(sock.identity)
        try:
            for message in (hello(), submit_touch(self._ran_marker), [P.SETCONST, b"", self._trap]):
                if send_unless_refused(sock, message):
                    self.frames += len(message)
            if sock.poll(5):
                self.replies += 1
        finally:
            sock.close(linger=0)


class RefusalCount(logging.Handler):
    """Reads the broker's refusal lines: how many, and when the first was said."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.said = 0
        self.summed = 0
        self.first_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if REFUSED_ONE.search(text):
            self.said += 1
        elif match := REFUSED_SUM.search(text):
            self.summed = max(self.summed, int(match[1]))
        else:
            return
        if self.first_at is None:
            self.first_at = time.monotonic()

    @property
    def refused(self) -> int:
        return max(self.said, self.summed)


def _maps(executor, log: str, rounds: list[int], until) -> tuple[bool, float]:
    """Maps of MAP_ITEMS tiny tasks until ``until()`` and MIN_SECONDS: (all right, tasks/s)."""
    started = time.perf_counter()
    correct, tasks = True, 0
    while True:
        round_ = rounds[0] = rounds[0] + 1
        results = list(executor.map(record, [log] * MAP_ITEMS, [round_] * MAP_ITEMS, [0.0] * MAP_ITEMS,
                                    range(MAP_ITEMS)))
        correct &= results == [x * x for x in range(MAP_ITEMS)]
        tasks += MAP_ITEMS
        if time.perf_counter() - started >= MIN_SECONDS and until():
            return correct, tasks / (time.perf_counter() - started)


def main(log: str, scratch: Path, encrypt: bool = False) -> dict:
    refusals = RefusalCount()
    logging.getLogger("dockkit.broker").addHandler(refusals)
    rounds = [0]
    with dockkit.Executor(workers=WORKERS, encrypt=encrypt) as executor:
        executor.wait_for_workers()
        quiet_right, quiet_rate = _maps(executor, log, rounds, until=lambda: True)
        server_key = executor._curve["server_public"].encode() if executor._curve else None
        flood = Flood(executor.address, scratch, server_key=server_key)
        flood.start()
        flood_right, flood_rate = _maps(executor, log, rounds, until=lambda: flood.frames >= MIN_FRAMES)
        flood.stop()
        after_right, _ = _maps(executor, log, rounds, until=lambda: True)
        admitted = [p for p in (*executor._broker.workers, *executor._broker.agents) if p in flood.strangers]
    return {"round": 0, "correct": quiet_right and flood_right and after_right, "encrypted": bool(server_key),
            "tasks_per_s": round(quiet_rate), "flood_tasks_per_s": round(flood_rate),
            "frames": flood.frames, "connections": flood.connections,
            "accepted": flood.replies + len(admitted), "refused": refusals.refused,
            "unpickled": (scratch / "unpickled").exists(), "ran": (scratch / "ran").exists(),
            "noticed_s": None if refusals.first_at is None else refusals.first_at - flood.started_at}


def flooded(mechanism: str, max_retries: int) -> Outcome:
    """One trial: the run above in a process of its own (``max_retries`` plays no part)."""
    with Trial() as trial:
        run = trial.start([sys.executable, "-m", "benchmarks.faults.flood", str(trial.log.path),
                           str(trial.scratch), mechanism])
        status = run.wait(180)
        if status is None:
            run.process.kill()
            run.wait(10)
        lingering = trial.processes()
        left, _ = trial.settle(time.monotonic())
        seen = run.reports().get(0, {})
        safe = (seen.get("accepted") == 0 and not seen.get("unpickled") and not seen.get("ran")
                and seen.get("encrypted") == (mechanism == "curve"))
        return Outcome(correct=bool(seen.get("correct")) and safe, duplicates=trial.log.duplicates(),
                       noticed_s=seen.get("noticed_s"), status=status, error=run.error(),
                       lingering=lingering, left=left, detail=seen)


FAULT = Fault(
    "flood", "broker port flooded by strangers", functools.partial(flooded, "plain"),
    does=f"A program starts `dockkit.Executor(workers={WORKERS})` and runs maps of {MAP_ITEMS:,} tiny tasks "
         f"(each records itself) for {MIN_SECONDS:.0f} s; then a thread of the same program floods the "
         f"broker's port while the maps go on, until it has written {MIN_FRAMES:,} frames or more: raw "
         f"TCP connections (half opening with a ZMTP greeting, half with garbage, then "
         f"{FRAMES_PER_CONNECTION} frames each, every other one a pickle that would create a marker "
         "file if anything unpickled it), and ZeroMQ DEALERs with a wrong PLAIN password and with "
         "none, each sending a worker's HELLO, a SUBMIT whose task would create another marker file, "
         "and that pickle. A last map follows the flood. The flooding thread shares the root's "
         "interpreter lock, so the throughput it costs is an upper bound.",
    noticed="from the flood's first connection to the broker's first refusal in its log")
CURVE_FAULT = Fault(
    "flood-curve", "encrypted (CurveZMQ) broker flooded by strangers", functools.partial(flooded, "curve"),
    does="As above, against a broker that encrypts with CurveZMQ, as the broker of an SSH or cluster "
         "run does (`dockkit.Executor(workers=4, encrypt=True)`; its workers too are on this "
         "machine). The ZeroMQ strangers are DEALERs with a wrong PLAIN password, and CURVE clients "
         "that know the broker's public key (it is no secret) but hold a key pair of their own.",
    noticed=FAULT.noticed)


if __name__ == "__main__":
    mechanism = sys.argv[3] if len(sys.argv) > 3 else "plain"
    print(REPORT_MARK + json.dumps(main(sys.argv[1], Path(sys.argv[2]), encrypt=mechanism == "curve")),
          flush=True)
