"""<message/> stanzas ⇄ core Messages (RFC 6121 §5, §8.5), offline delay stamps, carbons (XEP-0280).

``outbound`` turns a client's message into an :class:`XmppMessage` and hands it to ``core.send``:
the router and ``resolve_recipient`` decide where it goes (other XMPP resources, SIP, HTTP, echo,
the offline store). A :class:`RoutingError` comes back as an error message (RFC 6120 §8.3) —
except to an error message (§8.3.1). A message to an account that does not exist gets
``service-unavailable`` rather than the core's ``item-not-found`` (RFC 6121 §8.5.1: no account
harvesting). ``element`` renders a core message for a session, with the XEP-0203 delay stamp of an
offline message and, for an error from another protocol (``Message.error``), the <error/> child
(RFC 6120 §8.3.2) with the condition and the body as its text. Payloads the core does not model (chat states, receipts, encryption) travel in
``XmppMessage.extensions`` to XMPP recipients (a XEP-0066 URL without a body becomes the body); the offline store keeps only the core fields, and
only takes messages with a body or subject unless a XEP-0334 ``<store/>`` or ``<no-store/>`` hint
says otherwise (``store_hint``).

Carbons (XEP-0280 §6): a chat message (or a normal one with a body) that a session sends goes as
a ``<sent/>`` copy to the account's other carbons-enabled sessions; one delivered to a full JID
goes as a ``<received/>`` copy to the recipient account's other carbons-enabled sessions (a
bare-JID message already reaches each available session). ``<private/>`` (XEP-0280 §7) and
``<no-copy/>`` (XEP-0334) opt out, and so does a message to one's own account.
"""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import timezone

from convergence import Address, AddressError, Message, RoutingError
from convergence.message import MESSAGE_TYPES, new_id

from .stanza_ids import message_start, without_our_ids
from .stanzas import ERROR_TYPES, STANZA_ERROR_NS, StanzaError, error_reply, iq_result, tag
from .stream import serialize

CARBONS_NS = "urn:xmpp:carbons:2"
FORWARD_NS = "urn:xmpp:forward:0"
DELAY_NS = "urn:xmpp:delay"
HINTS_NS = "urn:xmpp:hints"
MESSAGE, BODY, SUBJECT, THREAD = tag("message"), tag("body"), tag("subject"), tag("thread")
#: XEP-0066 §4 out-of-band URL: a file shared with HTTP File Upload (XEP-0363) comes with its URL
#: as the body too (Conversations, Gajim); a message with the URL alone gets it as its body, so a
#: phone or an HTTP client receives the link as text.
OOB_URL = "{jabber:x:oob}x/{jabber:x:oob}url"
ERROR = tag("error")
CORE_CHILDREN = (BODY, SUBJECT, THREAD)
NO_CARBONS = (tag("private", CARBONS_NS), tag("no-copy", HINTS_NS))
STORE, NO_STORE = tag("store", HINTS_NS), tag("no-store", HINTS_NS)

@dataclasses.dataclass(frozen=True)
class XmppMessage(Message):
    """A core Message that keeps the stanza's other payloads for XMPP recipients."""

    extensions: tuple = ()
    #: the XEP-0359 stanza id the server gives it (the archive id, archive.py): ``id`` is the sender's
    stanza_id: str = dataclasses.field(default_factory=new_id)

    def reply(self, **changes) -> Message:  # a reply does not repeat the payloads
        return super().reply(extensions=(), stanza_id=new_id(), **changes)

    @property
    def store_hint(self) -> bool | None:
        """XEP-0334 §4 for the router's offline store: ``<store/>`` True, ``<no-store/>`` False,
        neither None (stored when there is a body or subject)."""
        names = {x.tag for x in self.extensions}
        if NO_STORE in names:
            return False
        return True if STORE in names else None


def outbound(service, session, element: ET.Element) -> None:
    """A <message/> from a bound session (``from`` stamped): route it, answer errors, copy carbons."""
    kind = element.get("type", "normal")
    if kind not in MESSAGE_TYPES:
        kind = "normal"  # RFC 6121 §5.2.2: an unknown type is treated as normal
    try:
        recipient = Address.from_jid(element.get("to")) if element.get("to") else session.account
    except AddressError as exc:
        if kind != "error":
            session.send(error_reply(element, StanzaError("jid-malformed", str(exc))))
        return
    message = XmppMessage(
        session.address, recipient, body=element.findtext(BODY) or element.findtext(OOB_URL) or "",
        subject=element.findtext(SUBJECT), thread=element.findtext(THREAD), type=kind,
        id=element.get("id") or new_id(),
        extensions=without_our_ids(
            tuple(child for child in element if child.tag not in CORE_CHILDREN), service.domain))
    try:
        service.core.send(message, "xmpp")
    except RoutingError as exc:
        if kind != "error":
            session.send(error_reply(element, StanzaError(_condition(exc, recipient, service), exc.text,
                                                          "wait" if exc.retry_after is not None else None,
                                                          app=getattr(exc, "app", None))))
        return
    if _carbon_eligible(message) and recipient.bare != session.account:
        for other in service.sessions(session.account):
            if other is not session and other.carbons:
                other.send(_carbon("sent", element, other))


def _condition(exc: RoutingError, recipient: Address, service) -> str:
    if exc.condition == "item-not-found" and recipient.domain == service.domain:
        return "service-unavailable"  # RFC 6121 §8.5.1
    return exc.condition if exc.condition in ERROR_TYPES else "undefined-condition"


def element(service, message: Message, stanza_id: bool = True) -> ET.Element:
    """The <message/> stanza for ``message`` (RFC 6121 §5.2), with a delay stamp if it was stored
    and, with ``stanza_id``, the XEP-0359 stanza id the account's archive knows it by."""
    stanza = ET.Element(MESSAGE, {"from": message.sender.jid, "to": message.recipient.jid,
                                  "type": message.type, "id": message.id})
    for name, text in ((SUBJECT, message.subject), (BODY, message.body), (THREAD, message.thread)):
        if text:
            ET.SubElement(stanza, name).text = text
    extensions = getattr(message, "extensions", ())
    stanza.extend(extensions)
    if message.error and not any(x.tag == ERROR for x in extensions):
        error = ET.SubElement(stanza, ERROR, type=ERROR_TYPES.get(message.error, "cancel"))
        ET.SubElement(error, tag(message.error, STANZA_ERROR_NS))
        if message.body:
            ET.SubElement(error, tag("text", STANZA_ERROR_NS)).text = message.body
    if message.stamp is not None:  # XEP-0203 §4: when the server first received it
        stamp = message.stamp.replace(tzinfo=message.stamp.tzinfo or timezone.utc)
        ET.SubElement(stanza, tag("delay", DELAY_NS), {
            "from": service.domain,
            "stamp": stamp.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}).text = "Offline storage"
    if stanza_id and (sid := service.archive.stanza_id_element(message)) is not None:
        stanza.append(sid)
    return stanza


def stanza(service, message: Message) -> bytes:
    """``serialize(element(service, message))``: the same bytes, written without the element
    tree for a message with no error or delay stamp (the router's hot path: a session receiving
    it, ``Session.deliver``). The archive, which sees the message next, reuses the text."""
    if message.error or message.stamp is not None or not (
            message.body or message.subject or message.thread or getattr(message, "extensions", ())):
        return serialize(element(service, message))
    archive = service.archive
    start = message_start(message, message.sender.jid, message.recipient.jid)
    archive.rendered = (message, start)
    return f"{start}{archive.stanza_id_text(message)}</message>".encode()


def delivered(service, session, message: Message) -> None:
    """``message`` went to ``session``: <received/> carbons for the account's other sessions."""
    others = [s for s in service.sessions(session.account) if s is not session and s.carbons]
    if not others or message.recipient != session.address or not _carbon_eligible(message) \
            or message.sender.bare == session.account:  # the cheap test first: usually no other session
        return
    forwarded = element(service, message)
    for other in others:
        other.send(_carbon("received", forwarded, other))


def _carbon_eligible(message: Message) -> bool:
    """XEP-0280 §6: chat messages, normal ones with a body; not opted out."""
    if message.type != "chat" and not (message.type == "normal" and message.body):
        return False
    return not any(x.tag in NO_CARBONS for x in getattr(message, "extensions", ()))


def _carbon(kind: str, forwarded: ET.Element, to) -> ET.Element:
    """XEP-0280 §6.2/§6.3: the copy, from the account's bare JID, wrapping the original."""
    copy = ET.Element(MESSAGE, {"from": to.account.jid, "to": to.address.jid, "type": "chat"})
    ET.SubElement(ET.SubElement(copy, tag(kind, CARBONS_NS)), tag("forwarded", FORWARD_NS)).append(forwarded)
    return copy


def _carbons_enabled(enabled: bool):
    def handle(service, session, stanza):
        if stanza.get("type") != "set":
            raise StanzaError("bad-request", "carbons are switched with an IQ set")
        session.carbons = enabled
        return iq_result(stanza)
    return handle


def register_iq(router) -> None:
    """Carbons on and off (XEP-0280 §4), and offline storage (XEP-0160 §4) as a feature."""
    router.register(tag("enable", CARBONS_NS), _carbons_enabled(True), features=(CARBONS_NS,))
    router.register(tag("disable", CARBONS_NS), _carbons_enabled(False))
    router.feature("msgoffline")
