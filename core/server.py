"""``convergence serve``: migrate, start every plugin's listeners, stop cleanly on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import os
import signal
import socket

import gevent
from gevent.baseserver import BaseServer
from gevent.event import Event

from . import cluster
from .core import Core
from .listeners import raise_file_limit
from .supervisor import WORKER_READY
from .systemd import notify

log = logging.getLogger(__name__)


class ListenError(Exception):
    """A listener could not bind its address."""


def describe(server) -> str:
    host, port = server.address[:2]
    return f"{type(server).__name__} on {host}:{port}"


def shared_socket(server):
    """A listening socket for the gevent ``server`` bound with SO_REUSEPORT, so that every worker
    binds the same address and the kernel spreads connections over them (core/supervisor.py)."""
    host, port = server.address[:2]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(getattr(server, "backlog", None) or 128)
    except OSError:
        sock.close()
        raise
    return sock


def start(core: Core, worker: int | None = None) -> list:
    """Fire ``on_startup`` and start the listeners (the store is migrated already); return them.
    A ``worker`` under the supervisor shares each gevent listener's port (SO_REUSEPORT), and
    each listener that opens its own socket and can share it (a ``share()`` method: SIP's UDP);
    one that cannot runs in worker 0 only."""
    core.hook.on_startup(core=core)
    servers = [s for group in core.hook.add_listeners(core=core) for s in group or ()]
    if worker is not None:
        shareable = [s for s in servers if isinstance(s, BaseServer) and getattr(s, "socket", None) is None]
        for s in shareable:
            try:
                s.set_listener(shared_socket(s))
            except OSError as exc:
                raise ListenError(f"cannot listen: {describe(s)}: {exc.strerror or exc}") from exc
        for s in [s for s in servers if s not in shareable and hasattr(s, "share")]:
            s.share()  # binds with SO_REUSEPORT itself when it starts
            shareable.append(s)
        if worker != 0:
            skipped = [s for s in servers if s not in shareable]
            for s in skipped:
                log.info("not listening: %s (it cannot share its port: worker 0 has it)", describe(s))
            servers = shareable
    started = []
    for server in servers:
        try:
            server.start()
        except OSError as exc:
            for s in started:
                s.stop()
            raise ListenError(f"cannot listen: {describe(server)}: {exc.strerror or exc}") from exc
        started.append(server)
        log.info("listening: %s", describe(server))
    core.listeners = started  # every one accepting: what GET /health/ready checks
    return started


def stop(core: Core, servers: list, timeout: float = 3.0) -> None:
    """Close the listeners (waiting up to ``timeout`` for handlers), fire ``on_shutdown``, close the store."""
    gevent.joinall([gevent.spawn(s.stop, timeout) for s in servers], timeout=timeout + 1)
    core.hook.on_shutdown(core=core)
    core.close()


def log_counts(core: Core, interval: float) -> None:
    """Every ``interval`` seconds, one line counting the messages routed meanwhile, by outcome
    (operators expect them, as Prosody and Kamailio print them); nothing when none was."""
    while True:
        gevent.sleep(interval)
        if counts := core.router.take_counts():
            log.info("messages in the last %g s: %s", interval,
                     ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))


def check_cluster_database(core: Core, workers: int = 1) -> None:
    """ConfigError when a cluster ([cluster], ``workers`` > 1) is asked for on SQLite."""
    if (workers > 1 or cluster.wanted(core.config)) and core.db.is_sqlite:
        raise core.config.error("[cluster] and [server] workers > 1 need PostgreSQL ([server] "
                                "database); SQLite is one process's database")


def join_cluster(core: Core, worker: int | None = None, on_evicted=None) -> None:
    """With a ``[cluster]`` table, several workers or as a ``worker``, make this process a cluster member
    (core/cluster.py): ConfigError on SQLite or when a live process holds the node id, ListenError
    when Redis cannot be reached. ``on_evicted``: called if another process takes the id later."""
    config = core.config
    if worker is None and not cluster.wanted(config):
        return
    check_cluster_database(core, 2 if worker is not None else 1)
    node_id = config["cluster"]["node_id"] or cluster.default_node_id(config, worker)
    if config["cluster"]["node_id"] and worker is not None:
        node_id += f"/w{worker}"
    member = cluster.Cluster(core, node_id, on_evicted)
    try:
        member.start()
    except OSError as exc:
        raise ListenError(f"cannot join the cluster: {exc}") from exc
    except cluster.IdTaken as exc:
        raise config.error(str(exc)) from None
    core.cluster = member
    for handler in logging.getLogger().handlers:  # each node's log names it
        handler.setFormatter(logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s"))


def serve(core: Core, worker: int | None = None) -> None:
    """Run until SIGTERM or SIGINT (``worker``: this process's number under the supervisor)."""
    raise_file_limit()  # every connection holds a descriptor
    done = Event()  # handlers first: a signal during start-up must still stop cleanly
    handlers = [gevent.signal_handler(sig, done.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    servers = []
    try:
        log.info("database: %s", core.database_location)
        try:  # first: a second server on this data_dir stops here, before touching any port
            core.control.listen()
        except OSError as exc:
            raise ListenError(f"cannot listen: {core.control.describe()}: {exc.strerror or exc}") from exc
        join_cluster(core, worker, done.set)
        servers = start(core, worker)
        interval = core.config["server"]["stats_interval"]
        counting = gevent.spawn(log_counts, core, interval) if interval else None
        if worker is None:
            log.info("convergence serving %s; stop with Ctrl-C or SIGTERM", core.domain)
        else:  # for the supervisor, which logs it: not through logging, whatever log_level hides
            print(f"{WORKER_READY} {worker} (pid {os.getpid()})", flush=True)
        notify("READY=1")  # systemd Type=notify (docs/deploy.md)
        done.wait()
        if core.cluster is not None and core.cluster.evicted:  # exit status 2, one line
            raise ListenError(f"cluster: {core.cluster.evicted}")
    finally:
        if servers:  # started: a failed start says only why (cli prints the ListenError)
            log.info("shutting down")
            notify("STOPPING=1")
            if counting is not None:
                counting.kill(block=False)
        for handler in handlers:
            handler.cancel()
        core.control.stop()
        if core.cluster is not None:
            core.cluster.stop()
        stop(core, servers)
