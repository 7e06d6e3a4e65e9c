"""Federation and the core's router: messages to remote domains go out over s2s, stanzas from
authenticated peers come in as core messages (RFC 6120 §10, RFC 6121 §8; issue 13).

Outbound: ``XmppServer.resolve_recipient`` answers a remote address with a
:class:`RemoteDomainRoute`, so every protocol's sender (an XMPP session, a SIP phone's MESSAGE,
``POST /api/messages``) reaches remote users through ``core.send`` without knowing about
federation. Only senders of our own domain are routed out (no open relay: a message from another
domain to another domain is ``forbidden``, a SIP 403). A stanza that cannot be delivered (the
peer cannot be reached or authenticated) comes back to its sender as an error message
(``Message.failed``): an XMPP error stanza, or for a phone the error MESSAGE mapped by RFC 7247.

Inbound: a ``<message/>`` from an authenticated peer becomes an ``XmppMessage`` (payloads kept)
and goes through ``core.send`` like a local one: to every live endpoint of the account (XMPP,
SIP, HTTP) or the offline store. An error from the router goes back to the remote sender as an
error stanza (an account that does not exist is ``service-unavailable``, RFC 6121 §8.5.1). IQs
for a bound local resource are passed to it; IQs for the server answer disco, ping and version
(XEP-0030, XEP-0199, XEP-0092) through the plugin's IQ router; anything else is
``service-unavailable``. Presence (RFC 6121 §3, §4): subscription stanzas go through the same
state machine as local ones (``subscription_handling.received``); a probe is answered with the
account's presence when the remote contact may see it (``from``/``both``), else ignored (§4.3.2:
no presence leak); available and unavailable presence reach the account's available resources
when it sees the contact (``to``/``both``), or the named resource (directed presence).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from convergence import Address, AddressError, RoutingError
from convergence.message import MESSAGE_TYPES, new_id

from . import cluster_relay, messages, pep, s2s_pep, s2s_presence
from .stanza_ids import without_our_ids
from .discovery import DISCO_INFO, DISCO_ITEMS, PING, VERSION
from .stanzas import ERROR_TYPES, STANZA_ERROR_NS, StanzaError, error_reply, tag
from .subscription_handling import received as subscription_received
from .subscriptions import KINDS
from .visibility import deliver, show

log = logging.getLogger(__name__)

#: IQ payloads a remote entity may ask the server itself about (no account data).
SERVER_QUERIES = frozenset({tag("query", DISCO_INFO), tag("query", DISCO_ITEMS), tag("ping", PING),
                            tag("query", VERSION)})
MESSAGE, IQ, PRESENCE, ERROR = tag("message"), tag("iq"), tag("presence"), tag("error")
CORE_CHILDREN = (tag("body"), tag("subject"), tag("thread"))


class RemoteDomainRoute:
    """The route to every address of one remote domain (``resolve_recipient``)."""

    def __init__(self, service, federation, domain: str):
        self.service = service
        self.federation = federation
        self.domain = domain

    def deliver(self, message) -> str:
        if message.sender.domain != self.federation.domain:
            raise RoutingError("forbidden", "this server relays only its own users' messages")
        core = self.service.core

        def bounce(condition: str, text: str) -> None:
            if message.type != "error":
                try:
                    core.send(message.failed(condition, text), "xmpp")
                except RoutingError as exc:
                    log.info("s2s: the error for %s could not reach %s: %s", message.id,
                             message.sender, exc)

        self.federation.send(self.domain, messages.element(self.service, message), bounce)
        return "delivered"


class Inbound:
    """Stanzas from authenticated peers (``Federation.on_stanza``)."""

    def __init__(self, service, federation):
        self.service = service
        self.federation = federation

    def reply(self, element: ET.Element) -> None:
        """Send ``element`` back to the domain it is addressed to (best effort)."""
        try:
            domain = Address.from_jid(element.get("to")).domain
            self.federation.send(domain, element)
        except (AddressError, RoutingError) as exc:
            log.info("s2s: cannot answer %s: %s", element.get("to"), exc)

    def receive(self, element: ET.Element) -> None:
        try:
            if element.tag == MESSAGE:
                self._message(element)
            elif element.tag == IQ:
                self._iq(element)
            else:
                self._presence(element)
        except Exception:  # a bug must not end the stream of every user of that domain
            log.exception("s2s: error handling a stanza from %s", element.get("from"))

    def _addresses(self, element: ET.Element):
        try:
            return Address.from_jid(element.get("from")), Address.from_jid(element.get("to"))
        except AddressError as exc:
            if element.get("type") != "error":
                self.reply(error_reply(element, StanzaError("jid-malformed", str(exc))))
            return None

    def _message(self, element: ET.Element) -> None:
        addresses = self._addresses(element)
        if addresses is None:
            return
        sender, recipient = addresses
        kind = element.get("type", "normal")
        kind = kind if kind in MESSAGE_TYPES else "normal"
        condition = None
        if kind == "error":
            error = element.find(ERROR)
            condition = next((c.tag.rpartition("}")[2] for c in error if c.tag.startswith(
                "{" + STANZA_ERROR_NS) and not c.tag.endswith("}text")), "undefined-condition") \
                if error is not None else "undefined-condition"
        message = messages.XmppMessage(
            sender, recipient, body=element.findtext(tag("body")) or "",
            subject=element.findtext(tag("subject")), thread=element.findtext(tag("thread")),
            type=kind, id=element.get("id") or new_id(), error=condition,
            extensions=without_our_ids(tuple(c for c in element if c.tag not in CORE_CHILDREN),
                                               self.service.domain))
        try:
            self.service.core.send(message, "xmpp")
        except RoutingError as exc:
            if kind != "error":
                local = recipient.domain == self.federation.domain
                name = "service-unavailable" if exc.condition == "item-not-found" and local else (
                    exc.condition if exc.condition in ERROR_TYPES else "undefined-condition")
                self.reply(error_reply(element, StanzaError(name, exc.text)))

    def _iq(self, element: ET.Element) -> None:
        addresses = self._addresses(element)
        if addresses is None:
            return
        sender, recipient = addresses
        kind = element.get("type")
        if recipient.local and recipient.resource:
            session = self.service.session(recipient)
            if session is not None:
                session.send(element)
                return
            if cluster_relay.iq(self.service, recipient, element):
                return  # the session is on another cluster node
        if kind not in ("get", "set"):
            if recipient.local is None:  # an answer the server awaits (caps, XEP-0115 §6.3)
                self.service.iq.dispatch(self.service, _Remote(self, sender), element)
            return
        if recipient.local is None and len(element) == 1 and element[0].tag in SERVER_QUERIES:
            self.service.iq.dispatch(self.service, _Remote(self, sender), element)
            return
        self.reply(error_reply(element, StanzaError("service-unavailable")))

    def _presence(self, element: ET.Element) -> None:
        addresses = self._addresses(element)
        if addresses is None:
            return
        sender, recipient = addresses
        kind, service = element.get("type"), self.service
        s2s_pep.learn(service, sender, element, lambda address: pep.send_last_remote(service, address))
        if recipient.local is None:
            return  # presence to the server itself: nothing to do
        if kind in KINDS:
            subscription_received(service, recipient, sender, kind, element)
        elif kind == "probe":
            if s2s_presence.shows_to(service, recipient.bare, sender):
                show(service, recipient.bare, [s2s_presence.RemoteWatcher(service, sender)])
        elif kind in (None, "unavailable"):
            if recipient.resource or s2s_presence.sees(service, recipient.bare, sender):
                deliver(service, recipient, element)
        elif kind == "error" and recipient.resource:
            deliver(service, recipient, element)


class _Remote:
    """What the IQ router needs of a sender (``send``), for a remote entity: answers go back over
    the federation. It is no session: it has no account, so only ``SERVER_QUERIES`` reach it."""

    __slots__ = ("inbound", "address")

    def __init__(self, inbound: Inbound, address: Address):
        self.inbound = inbound
        self.address = address

    def send(self, element: ET.Element) -> bool:
        self.inbound.reply(element)
        return True
