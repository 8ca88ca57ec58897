"""One measurement in a fresh interpreter; prints one JSON line for the orchestrator.

    python benchmarks/child.py --system pool --case W1 [--quick]
    python -m scoop -n 2 benchmarks/child.py --system scoop --case W1
    python benchmarks/child.py --probe ray

The result line starts with :data:`RESULT_MARK` so that whatever a library prints on
stdout (SCOOP's and Ray's logs) cannot be mistaken for it. Its ``status`` is ``ok``,
``unavailable`` (the library is missing: the reason says why) or ``error``.
"""

import time

_T0 = time.perf_counter()  # W5 starts here, before the harness or any library is imported

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

if __package__ in (None, ""):  # run as a file (also how SCOOP's launcher runs it)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULT_MARK = "@@bench-result@@ "

#: Set by the orchestrator for launched systems (SCOOP): the wall-clock time at which
#: it started the launcher, so W5 counts the launcher and not only this process.
T0_ENV = "BENCH_T0_WALL"

#: Seconds a system gets to stop once its figures are out; less after a failed map,
#: which leaves some pools unable to stop at all.
STOP_GRACE_S = 15.0
FAILED_STOP_GRACE_S = 2.0

# W6 maps these, and they must live in ``__main__``: that is the whole point. Each one
# sleeps a little so that every system spreads them, and names the process that ran it.
add_one = lambda x: (time.sleep(0.005), x + 1, os.getpid())[1:]  # noqa: E731


def make_adder(n):
    def add(x):
        time.sleep(0.005)
        return x + n, os.getpid()

    return add


def since_start() -> float:
    """Seconds since this measurement began (see :data:`T0_ENV`)."""
    wall = os.environ.get(T0_ENV)
    if wall:
        return time.time() - float(wall)
    return time.perf_counter() - _T0


def emit(result: dict) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def _failure(exc: BaseException) -> dict:
    from benchmarks.systems import Unavailable

    if isinstance(exc, Unavailable):
        return {"status": "unavailable", "reason": str(exc)}
    import traceback

    traceback.print_exc()  # for whoever reads the child's stderr; the report keeps one line
    reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return {"status": "error", "reason": reason}


def probe(name: str) -> dict:
    """Import a system's library and report its version."""
    from benchmarks.systems import SYSTEMS

    try:
        return {"status": "ok", "version": SYSTEMS[name]().probe()}
    except Exception as exc:
        return _failure(exc)


def run_case(name: str, case_id: str, quick: bool) -> None:
    """Measure one case, report it, then stop the system."""
    from benchmarks.measure import measure
    from benchmarks.systems import SYSTEMS
    from benchmarks.workloads import find_case

    case = find_case(case_id, quick)
    system = SYSTEMS[name]()
    main_fns = {"W6-lambda": add_one, "W6-closure": make_adder(1)}
    grace = STOP_GRACE_S

    def give_up(metrics: dict) -> None:  # a map past its budget: report, stop, leave
        emit({"status": "ok", "metrics": metrics})
        _stop_within(system, FAILED_STOP_GRACE_S)
        os._exit(0)

    try:
        metrics = measure(system, case, since_start, main_fns, give_up)
        emit({"status": "ok", "metrics": metrics})
        if metrics.get("supported") is False:
            grace = FAILED_STOP_GRACE_S
    except Exception as exc:
        emit(_failure(exc))
        grace = FAILED_STOP_GRACE_S
    _stop_within(system, grace)


def _stop_within(system, grace: float) -> None:
    """Stop politely; past ``grace`` seconds leave at once (the harness then kills the
    process group). A stdlib ProcessPoolExecutor, for one, can hang in ``shutdown``
    after a task failed to pickle."""
    import threading

    def stop():
        try:
            system.stop()
        except Exception:
            import traceback

            traceback.print_exc()

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    stopper.join(grace)
    if stopper.is_alive():
        sys.stderr.write(f"stop did not return within {grace:.0f} s; exiting\n")
        sys.stderr.flush()
        os._exit(0)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system")
    parser.add_argument("--case")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--probe", metavar="SYSTEM")
    args = parser.parse_args(argv)
    if args.probe:
        emit(probe(args.probe))
    elif args.system and args.case:
        run_case(args.system, args.case, args.quick)
    else:
        parser.error("give --probe SYSTEM, or --system and --case")


if __name__ == "__main__":
    main()  # no sys.exit: SCOOP runs this file inside a future and reports SystemExit
