"""``convergence serve``: migrate, start every plugin's listeners, stop cleanly on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import signal

import gevent
from gevent.event import Event

from . import cluster
from .core import Core
from .listeners import raise_file_limit
from .systemd import notify

log = logging.getLogger(__name__)


class ListenError(Exception):
    """A listener could not bind its address."""


def describe(server) -> str:
    host, port = server.address[:2]
    return f"{type(server).__name__} on {host}:{port}"


def start(core: Core) -> list:
    """Fire ``on_startup`` and start the listeners (the store is migrated already); return them."""
    core.hook.on_startup(core=core)
    servers = [s for group in core.hook.add_listeners(core=core) for s in group or ()]
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


def join_cluster(core: Core, worker: int | None = None) -> None:
    """With a ``[cluster]`` table or several workers, make this process a cluster member
    (core/cluster.py): ConfigError on SQLite, ListenError when Redis cannot be reached."""
    config = core.config
    if not cluster.wanted(config):
        return
    if core.db.is_sqlite:
        raise config.error("[cluster] and [server] workers > 1 need PostgreSQL ([server] database); "
                           "SQLite is one process's database")
    node_id = config["cluster"]["node_id"] or cluster.default_node_id(config, worker)
    if config["cluster"]["node_id"] and worker is not None:
        node_id += f"/w{worker}"
    member = cluster.Cluster(core, node_id)
    try:
        member.start()
    except OSError as exc:
        raise ListenError(f"cannot join the cluster: {exc}") from exc
    core.cluster = member


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
        join_cluster(core, worker)
        servers = start(core)
        interval = core.config["server"]["stats_interval"]
        counting = gevent.spawn(log_counts, core, interval) if interval else None
        log.info("convergence serving %s; stop with Ctrl-C or SIGTERM", core.domain)
        notify("READY=1")  # systemd Type=notify (docs/deploy.md)
        done.wait()
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
