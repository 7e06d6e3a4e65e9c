"""The XMPP plugin's object for one core: owns its :class:`~.service.C2SService` and takes the
core's hooks for it.

``on_startup`` (``__init__.py``) builds one per core and registers it on that core's plugin
manager as ``xmpp:server``; tests and other code reach the running service through
``core.pm.get_plugin("xmpp:server").service``. ``add_listeners`` returns the STARTTLS listener
(``[xmpp] listen``) and the optional Direct TLS one (``tls_listen``). The core's ``on_presence``,
and ``on_register``/``on_login``/``on_logout`` for non-XMPP endpoints, go to the presence
broadcast (``presence.account_changed``); ``on_account`` ends the sessions of a deleted account
or a changed password (``ENDED_BY``) and pushes the change to rosters (``roster_push``);
``on_shutdown`` ends every session with a ``system-shutdown`` stream error and unregisters the
object. With ``[xmpp] s2s_listen`` set it also owns the federation (``s2s_transport.Federation``):
its listener, and ``resolve_recipient`` routes other domains' addresses over it
(``s2s_routing``). See docs/xmpp.md.
"""
from __future__ import annotations

import logging
from types import MappingProxyType

from convergence import hookimpl
from convergence.metrics import Collector, family

from . import (cluster_relay, component, component_cluster, component_transport,
               presence as broadcast, roster_push, s2s_routing, s2s_transport, sm_cluster,
               subscription_handling, transport, visibility, websocket_http)
from .muc_service import MucService, muc_domain
from .service import C2SService

log = logging.getLogger(__name__)

#: RFC 6120 §4.9.3 stream errors for the sessions of a changed account: a deleted account is no
#: longer authorized (§4.9.3.12); a new password revokes the authentication of every stream, which
#: must negotiate again (§4.9.3.16 ``reset``), as Prosody does.
ENDED_BY = MappingProxyType({"deleted": ("not-authorized", "the account was deleted"),
                             "changed": ("reset", "the password was changed; log in again")})


#: Seconds the shutdown waits at most for WebSocket sessions to close: each has two to flush its
#: stream error (``close_after_flush``), then gives back what it did not write, one store write per
#: message, before the store closes (three seconds in all lost messages of a slow reader on a
#: loaded PostgreSQL). The wait ends as soon as the last one has closed.
WEBSOCKET_STOP_TIMEOUT = 10.0


class XmppServer:
    """The XMPP plugin for one core (registered as ``xmpp:server`` on its plugin manager)."""

    def __init__(self, core, settings: dict):
        self.core = core
        self.service = C2SService(core, settings)
        self.service.later = transport.later  # XEP-0198 hibernation timers
        self.service.moves = sm_cluster.SessionMoves(self.service)  # XEP-0198 across nodes
        self.federation = None  # server-to-server, when [xmpp] s2s_listen is set
        self.websockets = transport.OpenConnections()  # sessions over WebSocket (RFC 7395)
        if settings["s2s_listen"]:
            self.federation = s2s_transport.Federation(core, settings)
            self.federation.on_stanza = s2s_routing.Inbound(self.service, self.federation).receive
            self.service.federation = self.federation  # presence to contacts of other domains
        domain = muc_domain(settings["muc_domain"], core.domain)  # group chat (XEP-0045)
        self.muc = self.service.muc = MucService(self.service, settings, domain) if domain else None
        self.service.archive.start()  # retention runs (XEP-0313 archive)
        table = component.check_domains(settings["components"], core.domain, domain)
        self.components = None  # external components (XEP-0114), when [xmpp] component_listen is set
        if settings["component_listen"]:
            self.components = self.service.components = component.Components(self.service, settings, table)
            self.components.on_stanza = s2s_routing.Inbound(self.service, self.components).receive
            self.components.elsewhere = component_cluster.ComponentHolders(core, self.components)

    @hookimpl
    def add_listeners(self):
        servers = transport.listeners(self.service)
        if self.federation is not None:
            servers.append(s2s_transport.listener(self.federation, self.service.settings))
        if self.components is not None:
            servers.append(component_transport.ComponentListener(
                self.service.settings["component_listen"], self.components, self.service.settings))
        return servers

    @hookimpl
    def add_blueprints(self):
        """XMPP over WebSocket and XEP-0156 discovery on the HTTP listener (``websocket_http``)."""
        return [websocket_http.blueprint(self.service, self.websockets)]

    @hookimpl
    def resolve_recipient(self, address):
        """Addresses of other domains go out over federation (``s2s_routing``); the MUC
        domain's go to its rooms (``muc_service``)."""
        if self.muc is not None and address.domain == self.muc.domain:
            return self.muc.route
        if self.components is not None and self.components.serves(address.domain):
            return self.components.route(address.domain)  # an external component (XEP-0114)
        if self.federation is None or address.domain == self.core.domain:
            return None
        return s2s_routing.RemoteDomainRoute(self.service, self.federation, address.domain)

    @hookimpl
    def screen_message(self, message, source):
        """Messages across a block list (XEP-0191 §3.3) are refused, whatever their protocol."""
        self.service.blocking.screen(message, source)

    @hookimpl
    def screen_presence(self, watcher, account):
        """Presence is not shown across a block list, either way (XEP-0191 §3.3): to a SIP
        watcher or an HTTP event stream as to an XMPP session."""
        return self.service.blocking.hides(account, watcher)

    @hookimpl
    def on_message(self, message):
        """Every message the router accepted, from any protocol: the archive (XEP-0313). The
        message was delivered: a failure here is logged, not turned into an error for its sender."""
        try:
            self.service.archive.observe(message)
        except Exception:
            log.exception("archiving message %s failed", message.id)

    @hookimpl
    def on_presence(self, account, presence):
        broadcast.account_changed(self.service, account, presence)

    @hookimpl
    def on_subscription_request(self, account, contact):
        """A watcher without a roster (SIP SUBSCRIBE) asks: the XMPP roster puts it to ``contact``."""
        subscription_handling.requested(self.service, account, contact)

    @hookimpl
    def on_cluster_cast(self, kind, data):
        """Roster pushes and presence stanzas for sessions here from another node
        (``cluster_relay``); a room's stanzas for the node that holds it, or from it for
        occupants here (``muc_cluster``): a room's message is answered with its outcome."""
        if kind.startswith("xmpp.muc."):
            return self.muc.owners.received(kind, data) if self.muc is not None else None
        if kind.startswith("xmpp.component."):
            return self.components.elsewhere.received(kind, data) if self.components is not None else None
        if kind.startswith("xmpp."):
            cluster_relay.received(self.service, kind, data, visibility.deliver, roster_push.push)
        return None

    @hookimpl
    def on_cluster_resync(self):
        """Casts may have been missed (Redis was away): the cached block lists are read again."""
        self.service.blocking.reread()

    @hookimpl
    def on_cluster_node_lost(self, node):
        """Sessions here that were in a room the lost node held are told they are out (332)."""
        if self.muc is not None:
            self.muc.owners.node_lost(node)

    @hookimpl
    def on_register(self, account, endpoint):
        self._endpoint_changed(account, endpoint)

    @hookimpl
    def on_login(self, account, endpoint):
        self._endpoint_changed(account, endpoint)

    @hookimpl
    def on_logout(self, account, endpoint):
        self._endpoint_changed(account, endpoint)

    def _endpoint_changed(self, account, endpoint) -> None:
        """A SIP binding or HTTP stream came or went: XMPP watchers see it as a resource."""
        if endpoint.protocol != "xmpp":
            broadcast.account_changed(self.service, account)
            if self.muc is not None:
                self.muc.endpoint_changed(account)  # a phone in a room whose binding went

    @hookimpl
    def on_account(self, account, change, endpoint):
        if change in ENDED_BY:  # the session that asked (in-band registration) is its handler's business
            for session in self.service.sessions(account):
                if session is not endpoint:
                    session.close(*ENDED_BY[change])
        roster_push.account_changed(self.service, account, change)
        if change == "deleted":
            self.service.blocking.forget(account)

    @hookimpl
    def add_metrics(self, registry):
        self.core.metrics.count_failures("xmpp", self.service.limiter)
        registry.register(XmppCollector(self.service))
        if self.federation is not None:
            registry.register(S2SCollector(self.federation))
        if self.components is not None:
            registry.register(ComponentCollector(self.components))

    @hookimpl
    def on_shutdown(self):
        self.service.shutdown()
        self.websockets.wait(WEBSOCKET_STOP_TIMEOUT)  # they give back what they did not write
        self.service.archive.close()  # writes what is still queued
        if self.federation is not None:
            self.federation.shutdown()
        if self.components is not None:
            self.components.shutdown()
        if self.muc is not None:
            self.muc.owners.stop()
        self.core.pm.unregister(self)


class XmppCollector(Collector):
    """The C2SService's figures, read at each scrape (docs/operations.md, Metrics)."""

    def collect(self):
        service = self.source
        yield family("gauge", "convergence_xmpp_c2s_streams", "Open XMPP client streams (c2s), "
                     "bound to a resource or still negotiating", service.open_streams())
        yield family("gauge", "convergence_xmpp_c2s_sessions", "XMPP client sessions bound to a "
                     "resource (RFC 6120 §7)", len(service.all_sessions()))
        yield family("gauge", "convergence_xmpp_c2s_hibernated", "XMPP sessions whose connection "
                     "died, waiting to be resumed (XEP-0198)", service.resumptions.hibernated())
        yield family("counter", "convergence_xmpp_slow_reader_disconnects", "XMPP connections "
                     "closed because the client did not read ([xmpp] max_queued bytes were "
                     "waiting)", service.slow_readers)


class S2SCollector(Collector):
    """The federation's figures (server-to-server, RFC 6120), read at each scrape."""

    def collect(self):
        federation = self.source
        yield family("gauge", "convergence_xmpp_s2s_streams", "Open XMPP server-to-server "
                     "streams by direction, authenticated or still negotiating",
                     ("direction", {"in": len(federation.inbound_streams),
                                    "out": len(federation.outbound)}))
        yield family("gauge", "convergence_xmpp_s2s_queued", "Stanzas waiting for a "
                     "server-to-server stream to be set up",
                     sum(len(q) for q in federation.queues.values()))


class ComponentCollector(Collector):
    """The external components' figures (XEP-0114), read at each scrape."""

    def collect(self):
        components = self.source
        yield family("gauge", "convergence_xmpp_component_streams", "Open XMPP component streams "
                     "(XEP-0114), authenticated or still negotiating", len(components.streams))
        yield family("gauge", "convergence_xmpp_components_connected", "Component domains with an "
                     "authenticated stream (XEP-0114)", len(components.connected))
