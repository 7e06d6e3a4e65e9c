"""External components (XEP-0114 Jabber Component Protocol, v1.6) as a sans-IO stream and the
per-core table of connected components. No gevent, socket or ssl imports: the listener
(``component_transport.py``) hands each accepted connection's bytes to a :class:`ComponentStream`.

A component is a trusted program (a gateway, a bot, a bridge) that serves a domain of its own,
e.g. ``gateway.example.org``, configured with a shared secret in ``[xmpp] components``:

1. the component opens ``<stream:stream xmlns='jabber:component:accept' to='gateway.example.org'>``
   (XEP-0114 §3); we answer with a header carrying ``from`` and a fresh ``id`` (§3, example 2).
   Another content namespace is ``invalid-namespace``; a domain not configured ``host-unknown``;
2. it sends ``<handshake>`` with the hex SHA-1 of the stream id followed by the secret (§3,
   example 3). We compare in constant time (``hmac.compare_digest``): a match is answered with an
   empty ``<handshake/>`` (example 4), anything else is the stream error ``not-authorized`` (§3)
   and a warning in the log. Anything but a handshake before that is ``not-authorized`` too;
3. then stanzas flow both ways in ``jabber:component:accept`` (renamed to ``jabber:client``
   inside the plugin, as s2s does with ``jabber:server``). A stanza whose ``from`` is not the
   component's domain or a JID at it is ``invalid-from`` (RFC 6120 §4.9.3.9); one without a
   ``to`` is ``improper-addressing`` (§4.9.3.7); another element ``unsupported-stanza-type``.

One stream per component domain: a second authenticated stream for the same domain replaces the
first, which ends with the stream error ``conflict`` (RFC 6120 §4.9.3.3; Prosody does the same).
The stream machinery (parser and limits, stream errors, the close) is ``s2s.S2SStream``'s; an
authenticated component stream is never closed for being idle: after ``s2s_keepalive`` silent
seconds it gets a whitespace keep-alive (RFC 6120 §4.6.1), which finds a dead peer.

:class:`Components` is what the plugin routes through: ``send(domain, element)`` writes a
stanza (``jabber:client`` names) to the component serving ``domain`` — in a cluster through the
node it is connected to (``elsewhere``: ``component_cluster.py``) — or raises RoutingError
``service-unavailable`` when it is not connected; ``route(domain)`` is the core router's route to
that domain (``resolve_recipient``); stanzas from a component go to ``on_stanza`` (the
``s2s_routing.Inbound`` of the components, which delivers them like s2s inbound stanzas).
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import secrets
import time
import xml.etree.ElementTree as ET
from types import MappingProxyType

from convergence import AddressError, RoutingError
from convergence.addresses import normalize_domain
from convergence.config import ConfigError

from . import messages
from .s2s import STANZAS, S2SStream, domain_of, jid_domain, renamed
from .stream import CLIENT_NS, serialize, stream_header

log = logging.getLogger(__name__)

COMPONENT_NS = "jabber:component:accept"
HANDSHAKE = f"{{{COMPONENT_NS}}}handshake"


def handshake(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: the lower-case hex SHA-1 of the stream id concatenated with the secret."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


def components_setting(value) -> MappingProxyType:
    """``[xmpp] components``: a table of component domain = "shared secret" (both non-empty)."""
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError('expected a table of domain = "secret", e.g. { "gateway.example.org" = "…" }')
    try:
        return MappingProxyType({normalize_domain(k): v for k, v in value.items()})
    except AddressError as exc:
        raise ValueError(f'expected a table of domain = "secret" ({exc})') from None


def check_domains(table: dict[str, str], domain: str, muc: str | None) -> dict[str, str]:
    """The component domains may be neither the server's own domain nor the MUC domain (their
    addresses belong to the accounts and the rooms): ConfigError naming the clash."""
    for name in table:
        if name == domain:
            raise ConfigError(f"[xmpp] components: {name!r} is the server's own domain; a component "
                              f'needs a domain of its own, such as "gateway.{domain}"')
        if name == muc:
            raise ConfigError(f"[xmpp] components: {name!r} is the group chat domain (muc_domain)")
    return table


class ComponentStream(S2SStream):
    """One component's stream (XEP-0114 §3): the header, the handshake, then stanzas. What
    ``S2SStream`` calls its ``federation`` is here the :class:`Components` of the core."""

    direction = "component"

    def __init__(self, components: Components, link, peer):
        super().__init__(components, link, peer)
        self.remote: str | None = None  # the component domain its header asked for
        self.ready = False  # handshake accepted

    def authenticated_any(self) -> bool:
        return self.ready

    def _send_header(self, to: str | None = None) -> None:
        self.header_sent = True
        self.link.send(stream_header(self.remote or self.federation.domain, None, self.stream_id
                                     or secrets.token_hex(16), version=None, ns=COMPONENT_NS))

    def _open(self, attrs: dict) -> None:
        self.stream_id = secrets.token_hex(16)
        self.remote = domain_of(attrs.get("to"))
        if self.remote not in self.federation.secrets:
            self.remote = None
        self._send_header()
        if attrs.get("xmlns") != COMPONENT_NS:
            return self.close("invalid-namespace", f"a component stream's namespace is {COMPONENT_NS}")
        if self.remote is None:
            return self.close("host-unknown", f"no component {attrs.get('to')!r} is configured here")

    def _received(self, element: ET.Element) -> None:
        if not self.ready:
            if element.tag != HANDSHAKE:
                return self.close("not-authorized", "send the handshake first (XEP-0114 §3)")
            return self._handshake(element.text or "")
        uri, _, local = element.tag[1:].partition("}")
        if uri != COMPONENT_NS or local not in STANZAS:
            return self.close("unsupported-stanza-type", f"{element.tag} is not a stanza")
        if jid_domain(element.get("from")) != self.remote:
            return self.close("invalid-from", f"'from' must be {self.remote} or a JID at it")
        if jid_domain(element.get("to")) is None:
            return self.close("improper-addressing", "a stanza from a component needs a valid 'to'")
        self.last_stanza = self.federation.now()
        self.federation.inbound(self, renamed(element, COMPONENT_NS, CLIENT_NS))

    def _handshake(self, digest: str) -> None:
        expected = handshake(self.stream_id, self.federation.secrets[self.remote])
        if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode()):
            log.warning("component: wrong handshake for %s from %s", self.remote, self.peer[0])
            return self.close("not-authorized", "wrong handshake (shared secret)")
        self.ready = True
        self.last_stanza = self.federation.now()
        self.send(ET.Element(HANDSHAKE))
        log.info("component: %s connected from %s", self.remote, self.peer[0])
        self.federation.authenticated(self)

    # ---- output and timers ----
    def send(self, element: ET.Element) -> bool:
        if self.closed:
            return False
        return self.link.send(serialize(element, COMPONENT_NS))

    def send_stanza(self, element: ET.Element) -> bool:
        """A stanza from the plugin (``jabber:client`` names; a renamed copy, the element may go
        elsewhere too) onto this stream."""
        self.last_stanza = self.federation.now()
        return self.send(renamed(copy.deepcopy(element), CLIENT_NS, COMPONENT_NS))

    def idle_timeout(self) -> float:
        if not self.ready:
            return super().idle_timeout()
        return self.settings["s2s_keepalive"]

    def idle(self) -> None:
        if not self.ready:
            return super().idle()
        self.link.send(b" ")


class ComponentRoute:
    """The core router's route to a component domain (``resolve_recipient``): a message from a
    local user, a phone or the HTTP API goes to the component as a ``<message/>``."""

    protocol = "component"

    def __init__(self, components: Components, domain: str):
        self.components = components
        self.domain = domain

    def deliver(self, message) -> str:
        element = messages.element(self.components.service, message)
        node = self.components.holder(self.domain)
        if node is not None:  # connected to another cluster node: it confirms (component_cluster)
            return self.components.elsewhere.deliver(node, self.domain, element)
        self.components.send_here(self.domain, element)
        return "delivered"


class Components:
    """The component domains of one core and their streams (see the module docstring)."""

    def __init__(self, service, settings: dict, table: dict[str, str]):
        self.service = service  # the C2SService: its domain, disco items
        self.settings = settings
        self.domain: str = service.domain
        self.secrets = table
        self.now = time.monotonic
        self.streams: set[ComponentStream] = set()  # every open stream, negotiating or not
        self.connected: dict[str, ComponentStream] = {}  # component domain -> its stream
        self.stopping = False
        self.on_stanza = lambda element: None  # set by XmppServer: s2s_routing.Inbound.receive
        #: in a cluster, the nodes holding the components not connected here
        #: (``component_cluster.ComponentHolders``, set by XmppServer); None: this process only
        self.elsewhere = None
        service.iq.server_items_from(self.items)

    def serves(self, domain: str) -> bool:
        return domain in self.secrets

    def items(self) -> list[tuple[str, str]]:
        """The server's disco#items (XEP-0030 §4): each connected component."""
        return [(domain, domain) for domain in sorted(self.connected)]

    def route(self, domain: str) -> ComponentRoute:
        return ComponentRoute(self, domain)

    def holder(self, domain: str) -> str | None:
        """The other cluster node the component serving ``domain`` is connected to, if it is
        not connected here; None otherwise (and without a cluster)."""
        if domain in self.connected or self.elsewhere is None:
            return None
        return self.elsewhere.holder(domain)

    def send(self, domain: str, element: ET.Element, bounce=None) -> None:
        """``element`` (``jabber:client`` names) to the component serving ``domain``, here or on
        the cluster node it is connected to; RoutingError ``service-unavailable`` when it is not
        connected (or its stream here could not take it)."""
        node = self.holder(domain)
        if node is not None:
            return self.elsewhere.send(node, domain, element)
        self.send_here(domain, element)

    def send_here(self, domain: str, element: ET.Element) -> None:
        """``element`` to the component's stream in this process; RoutingError as ``send``."""
        stream = self.connected.get(domain)
        if stream is None or not stream.send_stanza(element):
            raise RoutingError("service-unavailable", f"the component {domain} is not connected")

    # ---- callbacks of the streams ----
    def opened(self, stream: ComponentStream) -> None:
        self.streams.add(stream)

    def authenticated(self, stream: ComponentStream) -> None:
        old = self.connected.get(stream.remote)
        self.connected[stream.remote] = stream
        if old is not None:
            log.warning("component: %s connected again from %s; the older stream ends (conflict)",
                        stream.remote, stream.peer[0])
            old.close("conflict", "the component connected again")
        if self.elsewhere is not None:
            self.elsewhere.connected(stream.remote)  # and a stream on another node ends too

    def inbound(self, stream: ComponentStream, element: ET.Element) -> None:
        self.on_stanza(element)

    def stream_ended(self, stream: ComponentStream, reason: str) -> None:
        log.info("component stream %s (%s) ended: %s", stream.peer, stream.remote, reason)
        self.streams.discard(stream)
        if stream.remote is not None and self.connected.get(stream.remote) is stream:
            del self.connected[stream.remote]
            if self.elsewhere is not None:
                self.elsewhere.disconnected(stream.remote)

    def shutdown(self) -> None:
        self.stopping = True
        for stream in list(self.streams):
            stream.close("system-shutdown", "the server is shutting down")
