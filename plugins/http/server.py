"""The HTTP plugin's object for one core (``http:server``): the listener, the API's open event
streams and the HTTP user.

``on_startup`` (in ``__init__.py``) builds it and registers it on the core's plugin manager; it
takes the hooks that need the running plugin and unregisters itself at ``on_shutdown``. Other
plugins reach it as ``core.pm.get_plugin("http:server")``: ``user`` is the HTTP user's address
and ``callback_url`` the deprecated ``[http] callback_url`` (the callback plugin reads both).
"""
from __future__ import annotations

import logging

import gevent

from convergence import RoutingError, hookimpl
from convergence.listeners import AddressLimit, GuardedWSGIServer
from convergence.metrics import Collector, family
from convergence.router import DELIVERED
from convergence.services import answer

from .app import create_app
from .events import Streams
from .expose import http_user
from .metrics import blueprint as health_pages, metrics_app
from .uploads import Uploads

log = logging.getLogger(__name__)

#: the name (``core.cluster.owner``) the one process of a cluster that purges uploads holds
PURGER = "http.upload:purge"


def base_url(settings: dict, domain: str) -> str:
    """Where clients reach the HTTP listener: ``[http] public_url``, else ``http://host:port`` of
    ``listen`` (the domain for a wildcard host; IPv6 in brackets)."""
    if settings["public_url"]:
        return settings["public_url"]
    host, port = settings["listen"]
    host = domain if host in ("0.0.0.0", "::", "") else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HttpUserRoute:
    """The HTTP user's route while no other plugin claims it (the callback plugin does when it has
    a URL): it answers every message with the same body, subject, thread and type, and never
    answers an error (RFC 6120 §8.3.1)."""

    def __init__(self, core):
        self.core = core

    def deliver(self, message) -> str:
        if message.type != "error":
            answer(self.core, message.reply())
        return DELIVERED


class HttpServer:
    """The HTTP plugin on one core; ``settings`` is its ``[http]`` table."""

    def __init__(self, core, settings: dict):
        self.core = core
        self.settings = settings
        self.user = http_user(core)
        self.callback_url = settings["callback_url"]
        self.streams = Streams(core)
        self.route = HttpUserRoute(core)
        self.auth = None  # the API's Authenticator, once the application is built
        #: HTTP File Upload (XEP-0363): slots other plugins ask for, the files PUT and GET here
        self.uploads = Uploads(core.db, core.config.data_dir / "uploads",
                               base_url(settings, core.domain))
        self._purging = None
        self._purging_node = None  # the node that purges, last time this one asked (in a cluster)

    @hookimpl
    def add_listeners(self):
        """The HTTP listener; with ``[http] metrics_listen``, a second one for ``/metrics`` and
        the health checks (the health checks stay on the first too)."""
        settings = self.settings
        app = create_app(self.core)
        separate = settings["metrics_listen"]
        app.register_blueprint(health_pages(settings["metrics"] and separate is None))
        self.auth = app.extensions.get("convergence.http.auth")
        listeners = [GuardedWSGIServer(settings["listen"], app,
                                       AddressLimit.from_settings("HTTP", settings),
                                       settings["header_timeout"], settings["body_timeout"])]
        if separate is not None:
            listeners.append(GuardedWSGIServer(separate, metrics_app(self.core), None,
                                               settings["header_timeout"], settings["body_timeout"]))
        self._purging = gevent.spawn(self._purge, settings["upload_purge_interval"])
        return listeners

    def _purge(self, interval: float) -> None:
        """Every ``interval`` seconds, delete lapsed upload slots and expired files — in a
        cluster, on the one process that holds ``PURGER`` (``_purges_here``)."""
        while True:
            try:
                if self._purges_here():
                    purged = self.uploads.purge()
                    if purged:
                        log.info("uploads: purged %d lapsed slots and expired files", purged)
            except OSError as exc:  # out of descriptors, a full or read-only disk: one line
                log.error("uploads: purge failed, trying again in %g s: %s", interval, exc)
            except Exception:  # the database was away: try again next time
                log.exception("uploads: purge failed")
            gevent.sleep(interval)

    def _purges_here(self) -> bool:
        """Whether this process purges: always alone; in a cluster, when it holds ``PURGER``
        (``core.cluster.owner``: the first process to ask claims it, and keeps it while its
        heartbeat lives; once it stops or is lost, the next to ask takes it over). While Redis
        is unreachable, only if it held it already."""
        cluster = self.core.cluster
        if cluster is None:
            return True
        try:
            node = cluster.owner(PURGER)
        except RoutingError:
            return False
        if node != self._purging_node:
            self._purging_node = node
            log.info("uploads: %s purges the cluster's uploads (%s)",
                     "this node" if node == cluster.node_id else f"node {node}", PURGER)
        return node == cluster.node_id

    @hookimpl
    def add_metrics(self, registry):
        if self.auth is not None:
            self.core.metrics.count_failures("http", self.auth.limiter)
        registry.register(HttpCollector(self.streams))

    @hookimpl
    def resolve_recipient(self, address):
        return self.route if address.bare == self.user else None

    @hookimpl
    def on_account(self, account, change):
        self.streams.account_changed(account, change)  # streams of a deleted account or old password end

    @hookimpl
    def on_presence(self, account, presence):
        self.streams.presence_changed(account, presence)  # to the API event streams that see it

    @hookimpl
    def on_screen_changed(self, account):
        self.streams.screen_changed(account)  # a block list: presence shown or withdrawn

    @hookimpl
    def on_shutdown(self):
        self.core.presence.set_service(self.user, None)  # ExposeURL made it available
        if self._purging is not None:
            self._purging.kill()
        self.core.pm.unregister(self)


class HttpCollector(Collector):
    """The HTTP plugin's figures, read from its ``Streams`` at each scrape."""

    def collect(self):
        yield family("gauge", "convergence_http_event_streams", "Open API event streams "
                     "(Server-Sent Events, GET /api/events)", self.source.count())
        yield family("counter", "convergence_http_event_stream_overflows", "API event streams "
                     "ended because their client did not read ([http] sse_queue events were "
                     "waiting)", self.source.overflows)
