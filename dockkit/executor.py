"""``dockkit.Executor``: a ``concurrent.futures.Executor`` over the broker.

::

    caller threads                 broker thread                  worker processes
    submit/map ──Client──► queue ───► Broker (ROUTER) ◄── tcp ──► WorkerLoop × N
        ▲                                   │
        └──── Client.deliver ◄──────────────┘ (results, failures, worker counts)

An Executor owns one broker, one client and one launcher (:mod:`dockkit.launch.base`),
which starts its workers: on this machine, over SSH when ``hosts`` is given, or
however the launcher passed in does it. ``shutdown`` stops them all and is
idempotent. :func:`default_executor` is the reusable executor underneath the
module-level ``dockkit.futures`` functions: created on first use and replaced
when it breaks, like loky's ``get_reusable_executor``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import base64
import logging
import os
import threading

from dockkit.errors import BrokenExecutor, ConfigError, SerializationError
from dockkit.launch.choose import make_launcher
from dockkit.runtime import protocol as P
from dockkit.runtime.client import Client
from dockkit.runtime.context import (add_constants, check_new_constants, current, debug_requested,
                                     refuse_tasks_while_importing)
from dockkit.runtime.serialize import load_constants

log = logging.getLogger("dockkit.executor")


class Executor(concurrent.futures.Executor):
    """Run functions on worker processes, locally or on SSH hosts.

    Args:
        workers: number of worker processes (default: this machine's CPU count).
        hosts: SSH hosts (``HostSpec``, strings, or a hostfile via ``hostfile=``); None = local.
        launcher: how the workers start: ``"srun"`` (inside a SLURM job: one job step
            over the allocation's nodes, no SSH), ``"ssh"``, or a launcher object (see
            :mod:`dockkit.launch.base`); default: SSH with ``hosts``, else local.
        max_retries: times a batch is re-run after its worker died; 0 for work that
            must never run twice.
        encrypt: CurveZMQ for the run's traffic. None (the default): when the broker binds
            an address other hosts reach directly (remote runs without a tunnel); local
            and tunnelled runs stay on loopback, authenticated but not encrypted here.
        heartbeat_timeout: seconds of silence after which a worker or host counts as
            lost (its batches run elsewhere); workers leave after 70 % of it without
            word from the broker, so a hung or vanished root leaves no worker behind.
        main: path of the user's script, imported on every worker under a non-main name.
        argv: ``sys.argv[1:]`` the workers see while importing ``main``.
        bind: address the broker binds (default: what the launcher needs).
        python, path, env, prolog: the workers' interpreter, working directory, extra
            environment and a shell command run before they start (local and SSH alike).
        **launch_options: passed to the SSH launcher (tunnel, ssh_config, ...).

    Raises:
        ConfigError: bad worker count or host list.
        LaunchError: remote hosts could not be started (SSH launcher).
    """

    def __init__(self, workers: int | None = None, *, hosts=None, hostfile=None, launcher=None,
                 max_retries: int = 3, main: str | None = None, argv=(), bind: str | None = None,
                 heartbeat_timeout: float = 10.0, encrypt: bool | None = None, **launch_options):
        refuse_tasks_while_importing()
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries!r}")
        if not heartbeat_timeout > 2 * P.HEARTBEAT_INTERVAL:
            raise ConfigError(f"heartbeat_timeout must be more than {2 * P.HEARTBEAT_INTERVAL:g} s, "
                              f"got {heartbeat_timeout!r}")
        self._secret = base64.urlsafe_b64encode(os.urandom(32)).decode()  # not `secrets`: slow import
        self._shutdown_lock = threading.Lock()
        self._closed = False
        self._constants: set[str] = set()
        self._broker = None
        if launcher is None or isinstance(launcher, str):
            launcher = make_launcher(workers, hosts=hosts, hostfile=hostfile, script=main is not None,
                                     launcher=launcher, **launch_options)
        self._launcher = launcher
        self.workers = self._launcher.total_workers
        self._client = Client(self._send, workers=self.workers)
        # Everything from the first worker started on is undone if any step fails or is
        # interrupted: no worker may outlive a half-made executor.
        try:
            self._launcher.prepare()
            peer_keys = self._start_broker(bind or self._launcher.bind_address, encrypt,
                                           max_retries, heartbeat_timeout)
            config = P.WorkerConfig(
                address=self._broker.address, secret=self._secret, workers=self.workers,
                heartbeat_timeout=heartbeat_timeout, debug=debug_requested(),
                curve=peer_keys,
                main=os.path.abspath(main) if main else None, argv=list(argv),
                cwd=os.getcwd() if main else None)
            self._launcher.start(self._broker, config)
            if self._launcher.wait_at_start:
                # remote workers take a moment to connect; every host should take part
                # from the first task on (and a launch that fails, fails here)
                self.wait_for_workers()
        except BaseException:
            self.shutdown(wait=False)
            raise

    def _start_broker(self, bind: str, encrypt: bool | None, max_retries: int,
                      heartbeat_timeout: float) -> dict | None:
        """Bind and start the broker; returns what the peers need of the run's CurveZMQ keys."""
        from dockkit.runtime.auth import binds_loopback_only, new_curve_keys, peer_curve_keys  # loads zmq
        from dockkit.runtime.broker import Broker

        if encrypt is None:
            encrypt = not binds_loopback_only(bind)
        self._curve = curve = new_curve_keys() if encrypt else None  # as _secret is its password
        self._broker = Broker(secret=self._secret.encode(), host=bind, curve=curve,
                              max_retries=max_retries, heartbeat_timeout=heartbeat_timeout,
                              on_local=self._on_broker_message).start()
        return peer_curve_keys(curve) if curve else None

    def _send(self, frames) -> None:
        self._broker.send_local(frames)

    def _on_broker_message(self, kind, frames) -> None:
        if kind == P.STOP:
            self._client.fail_all(BrokenExecutor("the executor's broker has stopped"))
        elif kind == P.SETCONST:  # set by a task: the root reads them too
            try:
                values = load_constants(frames[1:])
            except SerializationError as exc:  # a broken peer's; the run goes on
                log.warning("dockkit: ignored %s", exc)
                return
            self._constants.update(values)
            add_constants(values)  # and wakes a getConst of the root waiting for them
        else:
            self._client.deliver(kind, frames)
            if kind == P.INFO and (reason := self._broker.broken_reason()) is not None:
                # every worker is gone: the executor is broken (and a default one gets replaced)
                self._client.fail_all(BrokenExecutor(reason))

    def wait_for_workers(self, timeout: float | None = 60.0) -> int:
        """Wait until every worker started for this executor has connected (or died).

        Tasks run as soon as one worker is up; wait when every worker should take
        part from the first task on (``dockkit run`` does). Returns the number of
        live workers; fewer than started if some were slow to start within ``timeout``.
        """
        client = self._client
        if not client.waiter.wait(lambda: client.starting_workers == 0 or client.broken is not None,
                                  timeout):
            log.warning("dockkit: %d of %d workers did not connect within %g s; going on with %d",
                        client.starting_workers, self.workers, timeout, client.live_workers)
        return client.live_workers

    @property
    def address(self) -> str:
        """The broker's ``tcp://host:port``."""
        return self._broker.address

    def stats(self) -> dict:
        """Counters of this executor's broker: batches and tasks dispatched to workers,
        batches re-queued after a worker was lost, and the live worker count."""
        broker = self._broker
        return {"batches": broker.batches_dispatched, "tasks": broker.tasks_dispatched,
                "requeued": broker.batches_requeued, "workers": self._client.live_workers}

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of local workers (empty for remote runs)."""
        return list(self._launcher.pids)

    # --- the Executor contract ---------------------------------------------------------------
    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        """Schedule ``fn(*args, **kwargs)``; returns a standard Future."""
        self._check_open()
        return self._client.submit(fn, args, kwargs)

    def map(self, fn, *iterables, timeout=None, chunksize=None, progress=False):
        """Like the builtin ``map``, run on the workers: lazy inputs, ordered results.

        Args:
            chunksize: items per batch; None adapts it to measured task time.
            timeout: seconds from this call after which iteration raises TimeoutError.
            progress: show a progress bar on a terminal.
        """
        self._check_open()
        results = self._client.map(fn, iterables, timeout=timeout, chunksize=chunksize)
        return _with_progress(results, iterables) if progress else results

    def map_as_completed(self, fn, *iterables, timeout=None, chunksize=None):
        """Like ``map``, but yields each result as soon as it is ready."""
        self._check_open()
        return self._client.map(fn, iterables, timeout=timeout, chunksize=chunksize, ordered=False)

    def set_constants(self, values: dict) -> None:
        """Broadcast read-only values to every worker, now and later (``dockkit.shared``).

        Raises:
            ConstantRedefinedError: a name was already set (constants are read-only).
        """
        self._check_open()
        check_new_constants(values, self._constants)
        self._client.set_constants(values)
        self._constants.update(values)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the broker and every worker. Idempotent."""
        with self._shutdown_lock:
            if self._closed:
                return
            self._closed = True
        if cancel_futures:
            for future in self._client.pending_futures():
                future.cancel()
        elif wait:
            self._client.wait_idle()  # submitted futures and the batches of running maps
        self._client.fail_all(BrokenExecutor("the executor was shut down"))
        # Workers first: stopped while the broker still answers, they exit without
        # reconnect attempts; the broker's own STOP is the backstop.
        self._launcher.stop()
        if self._broker is not None:
            self._broker.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._client._check_usable()


def _with_progress(results, iterables):
    from dockkit.progress import track

    return track(results, iterables)


# --- the reusable default executor -------------------------------------------------------------
_default_lock = threading.Lock()
_default: Executor | None = None
_default_options: dict = {}
_starting: tuple[threading.Thread, list] | None = None  # a start begun by start_default_early


def configure_default(**options) -> None:
    """Set the options of the default executor (used by ``dockkit run``); closes a running one."""
    global _default_options
    shutdown_default()
    _default_options = dict(options)


def start_default_early() -> None:
    """Begin starting the default executor on a thread of its own, and return at once.

    ``dockkit run`` calls it before it runs the script, so the workers start while the
    script imports, and the first ``futures`` call finds them up (or waits for the rest
    of the start, and gets its error if it failed).
    """
    global _starting
    outcome: list = []

    def start() -> None:
        try:
            default_executor()
        except BaseException as exc:  # handed to the first caller, which raises it
            outcome.append(exc)

    thread = threading.Thread(target=start, name="dockkit-start", daemon=True)
    _starting = (thread, outcome)
    thread.start()


def _finish_early_start() -> BaseException | None:
    """Wait for a start begun early (from any thread but its own); returns its error."""
    global _starting
    starting = _starting
    if starting is None or starting[0] is threading.current_thread():
        return None
    starting[0].join()
    _starting = None
    return starting[1][0] if starting[1] else None


def default_executor() -> Executor:
    """The executor behind ``dockkit.futures``: created on first use, replaced when broken."""
    global _default
    error = _finish_early_start()
    if error is not None:
        raise error
    with _default_lock:
        if _default is None or _default._closed or _default._client.broken is not None:
            if _default is not None:
                _default.shutdown(wait=False)
            options = dict(_default_options)
            wait = options.pop("wait_for_workers", False)
            _default = Executor(**options)
            if wait and not _default._launcher.wait_at_start:  # else it waited as it started
                _default.wait_for_workers()
            if current().constants:  # what shared.setConst sent to the executor it replaces
                _default.set_constants(dict(current().constants))
        return _default


def shutdown_default(wait: bool = True) -> None:
    """Shut the default executor down, if one is running (or still starting)."""
    global _default
    _finish_early_start()
    with _default_lock:
        executor, _default = _default, None
    if executor is not None:
        executor.shutdown(wait=wait)


atexit.register(shutdown_default, False)
