"""External components in a cluster (issue 14, docs/cluster.md "Components"): a component
(XEP-0114) is connected to one process; every process routes to it.

The process whose listener authenticated a component takes its domain's name in the cluster
(``core.cluster.take``: the last to connect has it, as one process keeps the newer of two
streams); the one that had it before closes its stream with ``conflict`` (``xmpp.component.replaced``).
A process without the component's stream hands what it routes to that domain to the holder:

- ``xmpp.component.message``: a message (from an XMPP client, a phone, the HTTP API) *handed
  over*, confirmed like a message's hand-off: the sender's answer is the holder's;
- ``xmpp.component.out``: an IQ or presence stanza, cast.

What the component sends is routed where it is connected, as in one process: messages through
the router (to sessions and phones on every node), IQs to a session on another node through
``cluster_relay``. The stream ends: the name is released; the holder lost: the name goes with
its heartbeat, and messages to the domain bounce (``service-unavailable``) until the component
connects again, to any process.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from convergence import RoutingError

log = logging.getLogger(__name__)

MESSAGE, OUT, REPLACED = "xmpp.component.message", "xmpp.component.out", "xmpp.component.replaced"


class ComponentHolders:
    """Which process holds each component's stream, for one core's ``Components`` (``elsewhere``)."""

    def __init__(self, core, components):
        self.core, self.components = core, components

    @staticmethod
    def _name(domain: str) -> str:
        return f"xmpp.component:{domain}"

    def holder(self, domain: str) -> str | None:
        """The other node with the stream of the component serving ``domain``, or None."""
        cluster = self.core.cluster
        if cluster is None:
            return None
        node = cluster.owner(self._name(domain), claim=False)
        return None if node == cluster.node_id else node

    # ---- the stream here ----
    def connected(self, domain: str) -> None:
        cluster = self.core.cluster
        if cluster is not None and (before := cluster.take(self._name(domain))) is not None:
            cluster.cast({before}, REPLACED, {"domain": domain})

    def disconnected(self, domain: str) -> None:
        if self.core.cluster is not None:
            self.core.cluster.release(self._name(domain))

    # ---- to the holder ----
    def deliver(self, node: str, domain: str, element: ET.Element) -> str:
        return self.core.cluster.hand_over(node, MESSAGE, {"domain": domain, "xml": _xml(element)})

    def send(self, node: str, domain: str, element: ET.Element) -> None:
        self.core.cluster.cast({node}, OUT, {"domain": domain, "xml": _xml(element)})

    # ---- from other nodes (``on_cluster_cast``) ----
    def received(self, kind: str, data: dict) -> str | None:
        try:
            domain = str(data["domain"])
            if kind == REPLACED:
                stream = self.components.connected.get(domain)
                if stream is not None:
                    log.warning("component: %s connected to another node; the stream here ends (conflict)", domain)
                    stream.close("conflict", "the component connected again")
                return None
            element = ET.fromstring(data["xml"])
        except (KeyError, TypeError, ET.ParseError) as exc:
            log.warning("cluster: ignored a bad %s: %s", kind, exc)
            if kind == MESSAGE:
                raise RoutingError("bad-request", f"a bad {kind}") from None
            return None
        if kind == MESSAGE:
            self.components.send_here(domain, element)
            return "delivered"
        if kind == OUT:
            try:
                self.components.send_here(domain, element)
            except RoutingError as exc:
                log.info("component: a stanza from another node for %s was dropped: %s", domain, exc)
        return None


def _xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")
