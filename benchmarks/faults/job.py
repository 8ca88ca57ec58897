"""The script every chaos run executes under ``dockkit run``: maps whose tasks record themselves.

    dockkit run benchmarks/faults/job.py LOG map [ITEMS [SLEEP [ROUNDS]]]
    dockkit run benchmarks/faults/job.py LOG payload KIND

Each task appends ``round item pid time host`` to LOG in one short write in append mode
(lines from many processes never interleave, nor from several containers writing
to one mounted directory), or sends it to the trial's listener if LOG is ``tcp://HOST:PORT``
(nodes on another Docker Engine share no directory with this machine): how a trial counts
the tasks that ran twice. After each
map the script prints ``CHAOS {json}``: the round, whether its results were
exactly right, how long it took, and the error it raised, if any.

``map`` runs ROUNDS maps of ITEMS tasks that sleep SLEEP seconds, and lets an error
end the script, as a user's script would. ``payload`` makes one task of a map
return something that cannot travel as it is (KIND: ``unpicklable``,
``reduce-raises``, ``large``) or outgrow its node's memory (``oom``), reports what
that map raised, then runs a plain map on the same pool to show whether the pool
survived it.
"""

import functools
import json
import os
import socket
import sys
import threading
import time

from dockkit import futures

REPORT_MARK = "CHAOS "
LISTENER = "tcp://"  # a LOG of this form is a trial's listener, which appends each line it gets
LARGE_BYTES = 5 << 29  # 2.5 GiB: past every 32-bit size field on the way
OOM_BYTES = 1 << 30  # 1 GiB, written to: far past the memory limit of the nodes that run ``oom``
BAD_ITEM = 3
PAYLOAD_ITEMS = 8
ROUNDS = 2  # maps of a ``map`` run: the second shows whether the pool went on after the fault


def record(log: str, round_: int, sleep: float, x: int) -> int:
    time.sleep(sleep)
    line = f"{round_} {x} {os.getpid()} {time.time():.6f} {socket.gethostname()}\n"
    if log.startswith(LISTENER):
        host, port = log[len(LISTENER):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as listener:
            listener.sendall(line.encode())
    else:
        with open(log, "a") as tasks:
            tasks.write(line)
    return x * x


class RefusesPickling:
    def __reduce__(self):
        raise RuntimeError("this object refuses to be pickled")


def bad_result(log: str, kind: str, x: int):
    """``x * x``, except for item BAD_ITEM, which returns a result of the given kind."""
    record(log, 0, 0.0, x)
    if x != BAD_ITEM:
        return x * x
    if kind == "unpicklable":
        return threading.Lock()
    if kind == "reduce-raises":
        return RefusesPickling()
    if kind == "oom":
        return len(bytearray(b"\1") * OOM_BYTES)  # every page written: resident, not just reserved
    return bytes(LARGE_BYTES)


def report(round_: int, correct: bool, started: float, error: BaseException | None = None) -> None:
    print(REPORT_MARK + json.dumps({
        "round": round_, "correct": correct, "seconds": round(time.perf_counter() - started, 4),
        "error": None if error is None else f"{type(error).__name__}: {error}"}), flush=True)


def run_map(log: str, round_: int, items: int, sleep: float) -> None:
    started = time.perf_counter()
    results = list(futures.map(functools.partial(record, log, round_, sleep), range(items)))
    report(round_, results == [x * x for x in range(items)], started)


def run_payload(log: str, kind: str) -> None:
    started = time.perf_counter()
    try:
        results = list(futures.map(functools.partial(bad_result, log, kind), range(PAYLOAD_ITEMS)))
    except Exception as exc:  # what the user would see; the pool must go on
        report(0, False, started, exc)
    else:
        big = results[BAD_ITEM]
        results[BAD_ITEM] = BAD_ITEM * BAD_ITEM
        right = results == [x * x for x in range(PAYLOAD_ITEMS)]
        report(0, right and isinstance(big, bytes) and len(big) == LARGE_BYTES, started)
        del big, results  # 2.5 GiB: not while the next map runs
    run_map(log, 1, 200, 0.01)


def main(argv: list[str]) -> None:
    log, mode, *args = argv
    if mode == "payload":
        run_payload(log, args[0])
        return
    items, sleep, rounds = (int(args[0]) if args else 200, float(args[1]) if len(args) > 1 else 0.01,
                            int(args[2]) if len(args) > 2 else ROUNDS)
    for round_ in range(rounds):
        run_map(log, round_, items, sleep)


if __name__ == "__main__":
    main(sys.argv[1:])
