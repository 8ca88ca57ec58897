"""``dockkit.Executor``: a ``concurrent.futures.Executor`` over the broker.

::

    caller threads                 broker thread                  worker processes
    submit/map ──Client──► queue ───► Broker (ROUTER) ◄── tcp ──► WorkerLoop × N
        ▲                                   │
        └──── Client.deliver ◄──────────────┘ (results, failures, worker counts)

An Executor owns one broker, one client and the workers it starts: local ones
through a :class:`~dockkit.launch.supervisor.WorkerGroup`, or remote ones through the
SSH launcher when ``hosts`` is given. ``shutdown`` stops them all and is
idempotent. :func:`default_executor` is the reusable executor underneath the
module-level ``dockkit.futures`` functions: created on first use and replaced
when it breaks, like loky's ``get_reusable_executor``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import base64
import logging
import sys
import threading
import uuid

from dockkit.runtime import protocol as P
from dockkit.runtime.client import Client
from dockkit.runtime.context import current
from dockkit.errors import BrokenExecutor, ConfigError
from dockkit.launch.supervisor import WorkerGroup

log = logging.getLogger("dockkit.executor")

LOCAL_OPTIONS = ("python", "path", "env", "prolog")


class Executor(concurrent.futures.Executor):
    """Run functions on worker processes, locally or on SSH hosts.

    Args:
        workers: number of worker processes (default: this machine's CPU count).
        hosts: SSH hosts (``HostSpec``, strings, or a hostfile via ``hostfile=``); None = local.
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
        bind: address the broker binds (loopback unless remote workers connect directly).
        python, path, env, prolog: the workers' interpreter, working directory, extra
            environment and a shell command run before they start (local and SSH alike).
        **launch_options: passed to the SSH launcher (tunnel, ssh_config, ...).

    Raises:
        ConfigError: bad worker count or host list.
        LaunchError: remote hosts could not be started (SSH launcher).
    """

    def __init__(self, workers: int | None = None, *, hosts=None, hostfile=None,
                 max_retries: int = 3, main: str | None = None, argv=(), bind: str | None = None,
                 heartbeat_timeout: float = 10.0, encrypt: bool | None = None, **launch_options):
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries!r}")
        if not heartbeat_timeout > 2 * P.HEARTBEAT_INTERVAL:
            raise ConfigError(f"heartbeat_timeout must be more than {2 * P.HEARTBEAT_INTERVAL:g} s, "
                              f"got {heartbeat_timeout!r}")
        self._secret = base64.urlsafe_b64encode(os.urandom(32)).decode()  # not `secrets`: slow import
        self._shutdown_lock = threading.Lock()
        self._constants: set[str] = set()
        self._closed = False
        self._run_id = uuid.uuid4().hex[:8]
        remote = bool(hosts or hostfile)
        local: dict = {}
        self._launcher = None
        self._group = None
        if remote:
            from dockkit.launch.ssh.launcher import SSHLauncher  # only remote runs load paramiko

            self._launcher = SSHLauncher(hosts=hosts, hostfile=hostfile, workers=workers,
                                         **launch_options)
            bind = bind or self._launcher.bind_address
            workers = self._launcher.total_workers
        else:
            local = {k: launch_options.pop(k) for k in LOCAL_OPTIONS if k in launch_options}
            unknown = sorted(k for k, v in launch_options.items() if v)
            if unknown:
                raise ConfigError(f"options {unknown} only apply with hosts=")
        self.workers = workers or os.cpu_count() or 1
        if not remote:
            # Local workers start first and import while the broker is set up: their
            # interpreter start-up is most of an executor's start-up time.
            names = [(f"w{i}", f"{self._run_id}/w{i}") for i in range(self.workers)]
            self._group = WorkerGroup(
                names, on_exit=lambda *exit: self._broker.report_exit(*exit),
                python=local.get("python") or sys.executable, env=local.get("env"),
                cwd=local.get("path"), prolog=local.get("prolog"),
                # a script run needs workers that import it afresh; others may fork (faster)
                allow_fork=main is None).spawn()
        # loads zmq: after the spawn, on purpose
        from dockkit.runtime.auth import binds_loopback_only, new_curve_keys, peer_curve_keys
        from dockkit.runtime.broker import Broker

        bind = bind or "127.0.0.1"
        if encrypt is None:
            encrypt = not binds_loopback_only(bind)
        curve = new_curve_keys() if encrypt else None
        self._curve = curve  # the run's keys, as _secret is its password
        self._client = Client(self._send, workers=self.workers)
        self._broker = Broker(secret=self._secret.encode(), host=bind, curve=curve,
                              max_retries=max_retries, heartbeat_timeout=heartbeat_timeout,
                              on_local=self._on_broker_message).start()
        config = {"address": self._broker.address, "secret": self._secret,
                  "workers": self.workers, "heartbeat_timeout": heartbeat_timeout,
                  "debug": bool(os.environ.get("DOCKKIT_DEBUG"))}
        if curve:
            config["curve"] = peer_curve_keys(curve)
        if main:
            config.update(main=os.path.abspath(main), argv=list(argv), cwd=local.get("path") or os.getcwd())
        try:
            if self._launcher is not None:
                self._launcher.start(self._broker, config, run_id=self._run_id)
                # remote workers take a moment to connect; every host should take part
                # from the first task on (and a launch that fails, fails here)
                self.wait_for_workers()
            else:
                self._start_local(config)
        except BaseException:
            self.shutdown(wait=False)
            raise

    def _start_local(self, config: dict) -> None:
        # Local workers see this process's import path, as multiprocessing's spawn does, so
        # functions of modules it imported from a path added at run time (tests, notebooks)
        # are found there too.
        config = {**config, "sys_path": list(sys.path)}
        self._broker.expect("localhost", self._group.identities)
        self._group.start(config)

    def _send(self, frames) -> None:
        self._broker.send_local(frames)

    def _on_broker_message(self, kind, frames) -> None:
        if kind == P.STOP:
            self._client.fail_all(BrokenExecutor("the executor's broker has stopped"))
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
        return self._group.pids if self._group else []

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
            ConfigError: a name was already set on this executor (constants are read-only).
        """
        self._check_open()
        taken = sorted(set(values) & self._constants)
        if taken:
            raise ConfigError(f"shared constants are read-only; already set: {', '.join(taken)}")
        self._send([P.SETCONST, b"", *_dumps(values)])
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
        if self._group is not None:
            self._group.stop()
        if self._launcher is not None:
            self._launcher.stop()
        self._broker.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._client._check_usable()


def _dumps(values):
    from dockkit.runtime.serialize import dumps

    return dumps(values)


def _with_progress(results, iterables):
    from dockkit.progress import track

    return track(results, iterables)


# --- the reusable default executor -------------------------------------------------------------
_default_lock = threading.Lock()
_default: Executor | None = None
_default_options: dict = {}


def configure_default(**options) -> None:
    """Set the options of the default executor (used by ``dockkit run``); closes a running one."""
    global _default_options
    shutdown_default()
    _default_options = dict(options)


def default_executor() -> Executor:
    """The executor behind ``dockkit.futures``: created on first use, replaced when broken."""
    global _default
    with _default_lock:
        if _default is None or _default._closed or _default._client.broken is not None:
            if _default is not None:
                _default.shutdown(wait=False)
            options = dict(_default_options)
            wait = options.pop("wait_for_workers", False)
            _default = Executor(**options)
            if wait and _default._launcher is None:  # a remote executor waited as it started
                _default.wait_for_workers()
            if current().constants:  # what shared.setConst sent to the executor it replaces
                _default.set_constants(dict(current().constants))
        return _default


def shutdown_default(wait: bool = True) -> None:
    """Shut the default executor down, if one is running."""
    global _default
    with _default_lock:
        executor, _default = _default, None
    if executor is not None:
        executor.shutdown(wait=wait)


atexit.register(shutdown_default, False)
