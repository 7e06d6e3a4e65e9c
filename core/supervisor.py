"""``convergence serve`` with ``[server] workers`` (or ``--workers``) above 1: the supervisor.

The supervisor serves nothing itself. It starts N worker processes (``convergence serve --worker
I`` with the same configuration), each a full server and a cluster member (core/cluster.py), which
share every listener: a listener built on a gevent server gets a socket bound with
``SO_REUSEPORT``, so the kernel spreads connections (and, for UDP, datagrams by source address)
over the workers; a listener that opens its own socket shares its port if it can (``share()``:
SIP's UDP), else runs in worker 0 only (docs/cluster.md). The supervisor

- starts them one after the other (the next once the one before serves, or after
  ``START_TIMEOUT``), so that what the first creates in ``data_dir`` the others find made;
- forwards the workers' output, one line at a time, and says ``convergence serving … with N
  workers`` once each of them said it serves;
- restarts a worker that exits while it should run, with a log line naming its status and a
  back-off (0.5 s doubling up to 30 s; reset once a worker ran for a minute) — except one that
  exits with status 2 before it ever served (its configuration, database or a listener is
  unusable): then it stops every worker and exits with status 2;
- on SIGTERM or SIGINT stops every worker with SIGTERM (SIGKILL after ``STOP_TIMEOUT`` seconds)
  and exits with status 0.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import gevent
from gevent.event import Event

log = logging.getLogger(__name__)

BACKOFF = (0.5, 30.0)  # first and longest wait before restarting a worker that died
STABLE = 60.0  # seconds a worker must run for its back-off to start again from the first
STOP_TIMEOUT = 10.0  # seconds workers get to stop on SIGTERM before SIGKILL
START_TIMEOUT = 60.0  # seconds the next worker waits at most for the one before to serve
UNUSABLE = 2  # a worker's exit status for configuration, database or listener trouble (cli.py)
#: what a worker writes to its output (not through logging: any log_level) once its listeners
#: accept (server.serve); the supervisor logs it at INFO and starts the next worker
WORKER_READY = "worker serving"


def worker_command(config_path: str | None, index: int) -> list[str]:
    """The command line of worker ``index``: this Python, this package, the same configuration."""
    command = [sys.executable, "-c", "from convergence.main import main; main()"]
    if config_path:
        command += ["--config", str(config_path)]
    return command + ["serve", "--worker", str(index)]


class Worker:
    """One worker process: started, watched and restarted by its own greenlet."""

    def __init__(self, index: int, command: list[str], ready, failed):
        self.index, self.command, self.ready, self.failed = index, command, ready, failed
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.backoff = BACKOFF[0]
        self.started = Event()  # set once it said it serves, the first time

    def run(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, text=True, bufsize=1)
            log.info("worker %d started (pid %d)", self.index, self.proc.pid)
            for line in self.proc.stdout:
                if line.startswith(WORKER_READY):  # the worker's own line, not a log line
                    log.info("%s", line.rstrip("\n"))
                    self.started.set()
                    self.ready(self.index)
                    continue
                sys.stdout.write(line)
            status = self.proc.wait()
            if self.stopping:
                return
            if status == UNUSABLE and not self.started.is_set():
                self.failed(self.index)  # its configuration, database or listener: no use retrying
                return
            if time.monotonic() - started >= STABLE:
                self.backoff = BACKOFF[0]
            log.error("worker %d (pid %d) %s; restarting it in %.1f s", self.index, self.proc.pid,
                      describe_status(status), self.backoff)
            gevent.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, BACKOFF[1])

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def describe_status(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def supervise(config_path: str | None, workers: int, domain: str) -> int:
    """Run ``workers`` workers until SIGTERM or SIGINT; return the exit status: 0, or 2 when a
    worker could not start (it exited with status 2 before it served: configuration, database or
    listener; its one-line reason is in the output)."""
    done = Event()
    handlers = [gevent.signal_handler(sig, done.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    ready: set[int] = set()
    failed: list[int] = []

    def on_failed(index: int) -> None:
        log.error("worker %d could not start (exit status %d, its reason above); stopping", index, UNUSABLE)
        failed.append(index)
        done.set()

    def on_ready(index: int) -> None:
        first = len(ready) < workers
        ready.add(index)
        if first and len(ready) == workers:
            log.info("convergence serving %s with %d workers (supervisor pid %d); stop with SIGTERM",
                     domain, workers, os.getpid())

    pool = [Worker(i, worker_command(config_path, i), on_ready, on_failed) for i in range(workers)]
    watchers = []
    try:
        for worker in pool:  # one after the other: what the first creates (a self-signed
            watchers.append(gevent.spawn(worker.run))  # certificate, say) the next finds made
            gevent.wait([done, worker.started], count=1, timeout=START_TIMEOUT)
            if done.is_set():
                break
        done.wait()
        log.info("supervisor: stopping %d workers", workers)
    finally:
        for handler in handlers:
            handler.cancel()
        for worker in pool:
            worker.stopping = True
            worker.signal(signal.SIGTERM)
        if not gevent.joinall(watchers, timeout=STOP_TIMEOUT, raise_error=False) or \
                any(not w.dead for w in watchers):
            for worker in pool:
                worker.signal(signal.SIGKILL)
            gevent.joinall(watchers, timeout=2)
    return UNUSABLE if failed else 0
