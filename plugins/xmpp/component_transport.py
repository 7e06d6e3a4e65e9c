"""The ``[xmpp] component_listen`` listener (XEP-0114): each accepted connection feeds a sans-IO
``component.ComponentStream`` through the same ``transport.feed`` loop as c2s and s2s streams.

Components are trusted programs holding a shared secret, and the protocol has no TLS: bind the
listener to loopback or a private network (docs/xmpp.md "Components"). At most
``component_max_streams`` streams are open at once (negotiating or not); another connection is
closed at once. Per source address the plugin's ``max_connections_per_address`` applies (loopback
is exempt by default). ``stop`` (SIGTERM) ends every stream with ``system-shutdown``.
"""
from __future__ import annotations

import logging

from convergence.connection import Connection
from convergence.listeners import AddressLimit

from . import transport
from .component import Components, ComponentStream

log = logging.getLogger(__name__)


def serve(components: Components, sock, peer, ended=lambda: None) -> None:
    """Serve one component connection (or close it at once when too many are open)."""
    settings = components.settings
    if len(components.streams) >= settings["component_max_streams"] or components.stopping:
        log.warning("component: refused a connection from %s: %d open (component_max_streams)",
                    peer[0], len(components.streams))
        sock.close()
        ended()
        return
    conn = Connection(sock, peer, max_queued=settings["max_queued"],
                      idle_timeout=settings["negotiation_timeout"])
    stream = ComponentStream(components, conn, peer)
    components.opened(stream)
    transport.feed(conn, stream, ended)


class ComponentListener(transport.C2SListener):
    """The ``component_listen`` listener: ends every component stream on ``stop``."""

    def __init__(self, address, components: Components, settings):
        super().__init__(address, components, AddressLimit.from_settings("XMPP component", settings))

    def serve(self, sock, peer, direct_tls, ended):
        serve(self.service, sock, peer, ended)
